"""A directory of images (generated samples or real references) as uint8 RGB batches, for IS/FID."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def image_files(directory, recursive: bool = True) -> list[Path]:
    """Sorted image files (``IMAGE_SUFFIXES``, any case) under ``directory``.

    Raises:
        FileNotFoundError: ``directory`` is not a directory, or holds no image file.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"image directory not found: {str(root)!r}")
    pattern = root.rglob("*") if recursive else root.glob("*")
    files = sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {str(root)!r}")
    return files


def read_rgb(path) -> torch.Tensor:
    """One image file as uint8 RGB (3, H, W) (Pillow, any mode converted to RGB).

    Raises:
        ValueError: the file cannot be decoded (truncated, not an image), naming it.
    """
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)      # (H, W, 3)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"cannot read image {str(path)!r}: {exc}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1)                 # (3, H, W)


def iter_image_batches(files, batch_size: int = 50, limit: int | None = None) -> Iterator[torch.Tensor]:
    """uint8 RGB batches (B, 3, H, W) of ``files`` in order (the first ``limit`` if given): a batch
    holds up to ``batch_size`` consecutive images of one size (a size change starts a new one)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    files = list(files)[:limit] if limit is not None else list(files)
    batch: list[torch.Tensor] = []
    for path in files:
        image = read_rgb(path)
        if batch and (len(batch) == batch_size or image.shape != batch[0].shape):
            yield torch.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield torch.stack(batch)
