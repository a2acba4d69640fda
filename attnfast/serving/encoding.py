"""Generated tensors to what the API returns: base64 PNG/JPEG images, per-word attention maps and
the paper's per-word overlays (attnfast.viz)."""
import base64
import io

import numpy as np
import torch
from PIL import Image

from attnfast.data import to_uint8_images
from attnfast.viz import normalise_map, overlay_attention

FORMATS = {"png": "PNG", "jpeg": "JPEG"}
JPEG_QUALITY = 90


def encode_image(pixels: np.ndarray, fmt: str) -> str:
    """(H, W, 3) or (H, W) uint8 -> base64 text of the image file in ``fmt`` ("png" or "jpeg")."""
    buffer = io.BytesIO()
    options = {"quality": JPEG_QUALITY} if fmt == "jpeg" else {}
    Image.fromarray(pixels).save(buffer, format=FORMATS[fmt], **options)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode_images(images: torch.Tensor, fmt: str) -> list[str]:
    """(N, 3, S, S) float in [-1, 1] -> N base64 image files."""
    return [encode_image(pixels, fmt) for pixels in to_uint8_images(images)]


def encode_attention(image: torch.Tensor, attention: torch.Tensor, tokens: list[str], fmt: str) -> list[dict]:
    """One image's attention: image (3, S, S) in [-1, 1], attention (T, h, w) of the last
    attentional stage, its ``tokens`` (the first len(tokens) rows are real words) ->
    [{"word", "map": base64 PNG (h, w) grey, min-max normalised, "overlay": base64 image (S, S):
    the map over the image as in the paper's figures}]."""
    maps = normalise_map(attention[:len(tokens)].float())
    grey = (maps * 255).round().to(torch.uint8).numpy()
    overlays = to_uint8_images(torch.stack([overlay_attention(image, a) for a in attention[:len(tokens)]]))
    return [{"word": word, "map": encode_image(grey[t], "png"), "overlay": encode_image(overlays[t], fmt)}
            for t, word in enumerate(tokens)]
