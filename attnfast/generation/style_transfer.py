"""Style transfer by inverting the generator (GAN-INT-CLS, Sec. 4.4 / 5.4): z = S(image) from the
trained style encoder, then G(z, caption): the pose, layout and background of the image with the
content the caption names. ``python -m attnfast.sample --checkpoint gan.pt --style style.pt
--style-from IMAGE --caption "..."`` writes the grid (one row per style image: the image, then one
column per caption)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from attnfast.data.grid import save_image_grid
from attnfast.models.build import load_style_encoder, stage_resolutions
from .captions import encode_captions
from .core import generate
from .errors import GenerationError
from .loading import load_generator
from .noise import fixed_noise


def load_image(path, size: int) -> torch.Tensor:
    """An image file as a (1, 3, size, size) float tensor in [-1, 1] (RGB, bicubic resize, Pillow)."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"style image not found: {path}")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"style image {path} is not an image Pillow can read ({exc})") from exc
    return torch.from_numpy(pixels / 127.5 - 1.0).permute(2, 0, 1)[None].contiguous()


@torch.no_grad()
def transfer_images(netG, text_encoder, style_encoder, images, captions, cap_lens, words_num: int,
                    eps: torch.Tensor, amp: str = "off") -> torch.Tensor:
    """images (N, 3, S, S) in [-1, 1], captions (C, words_num) ids, cap_lens (C,), eps (1, ncf) ->
    (N, C, 3, S', S') last-stage images G(S(image n), caption c) with one fixed CA noise."""
    z = style_encoder(images).float()                                     # (N, z_dim)
    count, n_caps = z.shape[0], captions.shape[0]
    noise = z.repeat_interleave(n_caps, dim=0)                            # (N*C, z_dim)
    rows = torch.arange(n_caps).repeat(count)
    fakes, _ = generate(netG, text_encoder, captions[rows], cap_lens[rows], noise, words_num, amp,
                        eps=eps.expand(noise.shape[0], -1))
    last = fakes[-1]
    return last.view(count, n_caps, *last.shape[1:])


def style_transfer(checkpoint, style_checkpoint, image_paths: list, captions: list[str], out_path,
                   seed: int = 0, device: torch.device | None = None, amp: str = "off") -> dict:
    """Write the style-transfer grid PNG to ``out_path``; returns a summary."""
    device = device or torch.device("cpu")
    if not image_paths:
        raise GenerationError("--style-from needs at least one image")
    netG, text_encoder, vocab, config = load_generator(checkpoint, device)
    encoder, _ = load_style_encoder(style_checkpoint, device)
    if encoder.z_dim != config["model"]["z_dim"]:
        raise ValueError(f"{style_checkpoint}: the style encoder predicts z_dim {encoder.z_dim}, the "
                         f"generator of {checkpoint} takes {config['model']['z_dim']}")
    size = stage_resolutions(config)[-1]
    images = torch.cat([load_image(p, size) for p in image_paths]).to(device)
    words_num = config["dataset"]["words_num"]
    ids, lens, _, _ = encode_captions(captions, vocab, words_num)
    _, eps = fixed_noise(config, 1, seed)
    fakes = transfer_images(netG, text_encoder, encoder, images, ids, lens, words_num, eps.to(device), amp)
    tiles, labels = [], []
    for n, path in enumerate(image_paths):
        tiles.append(images[n].cpu())
        labels.append(f"style: {Path(path).name}")
        for c, caption in enumerate(captions):
            tiles.append(fakes[n, c].cpu())
            labels.append(caption)
    save_image_grid(torch.stack(tiles), out_path, ncol=len(captions) + 1, captions=labels)
    return {"style_images": len(image_paths), "captions": len(captions), "out": str(out_path)}
