"""Image grids as PNG files (Pillow), optionally with a caption under each tile."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from attnfast.engine.files import atomic_write

__all__ = ["make_grid_image", "save_image_grid", "to_uint8_images"]

_PAD = 2
_BORDER = (255, 255, 255)
_TEXT = (0, 0, 0)


def to_uint8_images(images) -> np.ndarray:
    """Images as uint8 ndarray (N, H, W, 3).

    Accepts a float tensor (N, 3, H, W) in [-1, 1], a list of (3, H, W) float tensors, or a uint8
    array/tensor (N, H, W, 3).
    """
    if isinstance(images, (list, tuple)):
        images = torch.stack([torch.as_tensor(x) for x in images])
    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
        if t.dtype == torch.uint8:
            return t.numpy()
        if t.dim() != 4 or t.shape[1] != 3:
            raise ValueError(f"expected float images (N, 3, H, W), got {tuple(t.shape)}")
        t = ((t.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return t.permute(0, 2, 3, 1).contiguous().numpy()
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


def _wrap(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}" if line else word
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    if line:
        lines.append(line)
    return lines


def make_grid_image(images, ncol: int = 8, captions: Sequence[str] | None = None) -> Image.Image:
    """Tile images (see :func:`to_uint8_images`) ``ncol`` per row into one RGB ``PIL.Image``.

    With ``captions`` (one per image), each tile gets its caption wrapped underneath; columns
    are then at least 160 px wide so the text stays readable.
    """
    arr = to_uint8_images(images)
    n, h, w, _ = arr.shape
    if n == 0:
        raise ValueError("no images to tile")
    if captions is not None and len(captions) != n:
        raise ValueError(f"{len(captions)} captions for {n} images")
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    font = ImageFont.load_default()
    col_w = w if captions is None else max(w, 160)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [] if captions is None else [_wrap(c, font, col_w, probe) for c in captions]
    line_h = 0
    text_h = 0
    if wrapped:
        _left, top, _right, bottom = probe.textbbox((0, 0), "Ag", font=font)
        line_h = bottom - top + 2
        text_h = line_h * max(len(lines) for lines in wrapped) + _PAD
    cell_w, cell_h = col_w + _PAD, h + text_h + _PAD
    canvas = Image.new("RGB", (ncol * cell_w + _PAD, nrow * cell_h + _PAD), _BORDER)
    draw = ImageDraw.Draw(canvas)
    for k in range(n):
        r, c = divmod(k, ncol)
        x, y = _PAD + c * cell_w, _PAD + r * cell_h
        canvas.paste(Image.fromarray(arr[k]), (x + (col_w - w) // 2, y))
        for j, line in enumerate(wrapped[k] if wrapped else ()):
            draw.text((x, y + h + _PAD + j * line_h), line, fill=_TEXT, font=font)
    return canvas


def save_image_grid(images, path: str | os.PathLike, ncol: int = 8,
                    captions: Sequence[str] | None = None) -> None:
    """Write :func:`make_grid_image` as a PNG atomically (temp file in the same folder, then rename)."""
    img = make_grid_image(images, ncol=ncol, captions=captions)
    atomic_write(path, lambda stream: img.save(stream, format="PNG"))
