"""Generated tensors to what the API returns: base64 PNG/JPEG files or raw RGB bytes, per-word
attention maps and the paper's per-word overlays (attnfast.viz).

The float -> uint8 conversion runs in numpy, not torch: it runs on the server's encoding threads,
where torch's intra-op pool (OpenMP) cost 40 ms of CPU per 16 images of 64x64 on a busy 2-core
machine against 0.1 ms in numpy (bench/serve_bench.py --null-model). PNG (zlib) and JPEG encoding
release the GIL, so the encoding threads use every core.
"""
import base64
import io

import numpy as np
import torch
from PIL import Image

from attnfast.viz import normalise_map, overlay_attention

FORMATS = {"png": "PNG", "jpeg": "JPEG"}     # "raw": no file, the bytes of the (H, W, 3) uint8 array
JPEG_QUALITY = 90


def uint8_images(images: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) float in [-1, 1] -> (N, S, S, 3) uint8, rounded as
    :func:`attnfast.data.to_uint8_images` (half to even), in numpy (see the module docstring)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected float images (N, 3, H, W), got {tuple(images.shape)}")
    array = images.detach().cpu().float().numpy()
    array = np.rint((np.clip(array, -1.0, 1.0) + np.float32(1.0)) * np.float32(127.5)).astype(np.uint8)
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1))


def encode_image(pixels: np.ndarray, fmt: str) -> str:
    """(H, W, 3) or (H, W) uint8 -> base64 text of the image file in ``fmt`` ("png" or "jpeg"), or
    with "raw" of the array's bytes in C order (RGB per pixel, row after row)."""
    if fmt == "raw":
        return base64.b64encode(np.ascontiguousarray(pixels).tobytes()).decode("ascii")
    buffer = io.BytesIO()
    options = {"quality": JPEG_QUALITY} if fmt == "jpeg" else {}
    Image.fromarray(pixels).save(buffer, format=FORMATS[fmt], **options)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode_images(images: torch.Tensor, fmt: str) -> list[str]:
    """(N, 3, S, S) float in [-1, 1] -> N base64 image files (or raw arrays, see :func:`encode_image`)."""
    return [encode_image(pixels, fmt) for pixels in uint8_images(images)]


def encode_attention(image: torch.Tensor, attention: torch.Tensor, tokens: list[str], fmt: str) -> list[dict]:
    """One image's attention: image (3, S, S) in [-1, 1], attention (T, h, w) of the last
    attentional stage, its ``tokens`` (the first len(tokens) rows are real words) ->
    [{"word", "map": base64 PNG (h, w) grey, min-max normalised, "overlay": base64 image (S, S):
    the map over the image as in the paper's figures}]."""
    maps = normalise_map(attention[:len(tokens)].float())
    grey = (maps * 255).round().to(torch.uint8).numpy()
    overlays = uint8_images(torch.stack([overlay_attention(image, a) for a in attention[:len(tokens)]]))
    return [{"word": word, "map": encode_image(grey[t], "png"), "overlay": encode_image(overlays[t], fmt)}
            for t, word in enumerate(tokens)]
