"""Attention figures as in the AttnGAN paper: per attentional stage, the generated image followed by
the attention map of each word of the caption laid over it."""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from attnfast.data.grid import make_grid_image
from attnfast.engine.files import atomic_write


def normalise_map(attn: torch.Tensor) -> torch.Tensor:
    """An attention map (..., h, w) >= 0 -> the same shape in [0, 1], min-max over its last two
    dimensions (each map to its own range: shows the contrast of a flat map too)."""
    low = attn.amin(dim=(-2, -1), keepdim=True)
    high = attn.amax(dim=(-2, -1), keepdim=True)
    return (attn - low) / (high - low).clamp(min=1e-12)


def overlay_attention(image: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """image (3, H, W) in [-1, 1], attn (h, w) >= 0 -> (3, H, W) in [-1, 1]: the image darkened
    where the word is not attended, a warm tint where it is (map normalised to its own range)."""
    size = image.shape[-2:]
    heat = F.interpolate(attn[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    heat = normalise_map(heat)
    base = (image.float() + 1) / 2                                          # [0, 1]
    tint = torch.stack([heat, heat * 0.55, torch.zeros_like(heat)])          # orange-red
    blended = base * (0.35 + 0.65 * heat) * 0.6 + tint * 0.4
    return blended.clamp(0, 1) * 2 - 1


def attention_figure(stage_images: list[torch.Tensor], stage_attn: list[torch.Tensor],
                     words: list[str], tile: int = 128, row_labels: list[str] | None = None) -> Image.Image:
    """One caption's figure.

    stage_images: per attentional stage, the image (3, H, W) it produced; stage_attn: per such
    stage, the attention (T, h, w) over its input regions; words: the caption's T words.
    Rows are stages; the first tile of a row is the image (labelled ``row_labels[k]``, by default
    "stage {side}px"), then one tile per word.
    """
    rows = []
    labels = row_labels or [f"stage {image.shape[-1]}px" for image in stage_images]
    for image, attn, label in zip(stage_images, stage_attn, labels, strict=True):
        image = F.interpolate(image[None].float(), size=(tile, tile), mode="bilinear",
                              align_corners=False)[0]
        tiles = [image] + [overlay_attention(image, attn[t]) for t in range(len(words))]
        rows.append(make_grid_image(torch.stack(tiles), ncol=len(tiles), captions=[label] + list(words)))
    width = max(r.width for r in rows)
    canvas = Image.new("RGB", (width, sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for row in rows:
        canvas.paste(row, (0, y))
        y += row.height
    return canvas


def save_png(image: Image.Image | np.ndarray, path: Path) -> None:
    """Write a PNG atomically."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    atomic_write(path, lambda stream: image.save(stream, format="PNG"))
