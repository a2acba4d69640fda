"""Images as AttnGAN reads them: CUB bounding boxes, the 1.5x box crop, and the original transform
(resize the short side to ``int(R * 76 / 64)``, random ``R x R`` crop, random horizontal flip, then
one image per stage resolution).

Follows the original ``datasets.py`` (``load_bbox``, ``get_imgs``) and ``main.py``'s
``image_transform`` with Pillow's bilinear resize (torchvision's default for PIL images).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .attngan_skips import BadDataError
from .shapes import to_tensor

__all__ = ["bbox_crop_box", "load_rgb", "read_bounding_boxes", "stage_images"]

# AttnGAN's margin: resize to R * 76 / 64 before the R x R crop.
_RESIZE_NUM, _RESIZE_DEN = 76, 64


def _read_table(path: Path, columns: int) -> list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"CUB metadata file not found: {path}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != columns:
            raise ValueError(f"{path}:{number}: expected {columns} fields, got {line!r}")
        rows.append(fields)
    return rows


def read_bounding_boxes(cub_dir: str | Path) -> dict[str, tuple[int, int, int, int]]:
    """``{key: (x, y, w, h)}`` from ``images.txt`` and ``bounding_boxes.txt`` of ``CUB_200_2011``.

    ``key`` is the image path without ``.jpg`` (``"001.Black_footed_Albatross/..._0046_18"``), the
    form of ``filenames.pickle``. Values are truncated to int as the original's ``astype(int)``.
    Rows are joined by image id (the original relies on both files listing ids in the same order).
    """
    cub_dir = Path(cub_dir)
    names = {fields[0]: fields[1] for fields in _read_table(cub_dir / "images.txt", 2)}
    boxes = {}
    bbox_path = cub_dir / "bounding_boxes.txt"
    for image_id, *values in _read_table(bbox_path, 5):
        if image_id not in names:
            raise ValueError(f"{bbox_path}: image id {image_id} is not in {cub_dir / 'images.txt'}")
        try:
            x, y, w, h = (int(float(v)) for v in values)
        except ValueError:
            raise ValueError(f"{bbox_path}: bad box {values} for image id {image_id}") from None
        boxes[Path(names[image_id]).with_suffix("").as_posix()] = (x, y, w, h)
    return boxes


def bbox_crop_box(bbox: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """The original's square crop around ``bbox = (x, y, w, h)``: side 1.5 * max(w, h) about the
    box centre, clipped to the image. Returns ``(x1, y1, x2, y2)`` for ``PIL.Image.crop``."""
    r = int(max(bbox[2], bbox[3]) * 0.75)
    center_x = int((2 * bbox[0] + bbox[2]) / 2)
    center_y = int((2 * bbox[1] + bbox[3]) / 2)
    return (max(0, center_x - r), max(0, center_y - r),
            min(width, center_x + r), min(height, center_y + r))


def load_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully as RGB; :class:`BadDataError` naming it when missing or corrupt
    (a truncated JPEG included)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise BadDataError(f"image missing: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadDataError(f"image corrupt: {path} ({exc})") from None


def stage_images(img: Image.Image, sizes: tuple[int, ...],
                 rng: np.random.Generator | None) -> list[torch.Tensor]:
    """One float32 (3, s, s) tensor in [-1, 1] per ``s`` in ``sizes`` (ascending).

    The largest side ``R``: short side resized to ``int(R * 76 / 64)``, then an ``R x R`` crop,
    random with a random horizontal flip when ``rng`` is given (the original's training
    transform), centred without flip when ``rng`` is None. Smaller sides are bilinear resizes of
    that crop (the original's ``transforms.Scale(imsize[i])``).
    """
    big = sizes[-1]
    short = int(big * _RESIZE_NUM / _RESIZE_DEN)
    w, h = img.size
    if w < h:
        new_w, new_h = short, int(short * h / w)
    else:
        new_w, new_h = int(short * w / h), short
    img = img.resize((new_w, new_h), Image.BILINEAR)
    if rng is None:
        top, left = round((new_h - big) / 2.0), round((new_w - big) / 2.0)
        flip = False
    else:
        top, left = int(rng.integers(0, new_h - big + 1)), int(rng.integers(0, new_w - big + 1))
        flip = bool(rng.random() < 0.5)
    img = img.crop((left, top, left + big, top + big))
    if flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    out = []
    for s in sizes:
        stage = img if s == big else img.resize((s, s), Image.BILINEAR)
        out.append(to_tensor(np.asarray(stage)))
    return out
