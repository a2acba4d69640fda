"""DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training",
NeurIPS 2020): random, differentiable colour / translation / cutout transforms applied to real
and fake images alike before the discriminator, so that D cannot memorise the training images
and G still receives gradients through the transform.

The transforms follow the paper's official ``DiffAugment_pytorch.py`` (brightness, saturation and
contrast jitter; translation by up to 1/8 of the side with zero fill; cutout of a square half the
side). Every random draw uses the global torch RNG on the images' device, so a run stays
reproducible and resumes exactly (the RNG state is in the checkpoint).
"""
import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")
_ALIASES = {"colour": "color"}


def parse_policy(policy: str | list | tuple | None) -> tuple[str, ...]:
    """``"color,translation,cutout"`` (or a list; "colour" accepted) -> the transforms in order;
    "" / None / [] -> () (off). Unknown names raise ValueError naming the known ones."""
    if policy is None:
        return ()
    names = policy.split(",") if isinstance(policy, str) else list(policy)
    parsed = []
    for name in names:
        name = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
        if not name:
            continue
        if name not in POLICIES:
            raise ValueError(f"unknown DiffAugment transform {name!r} (known: {', '.join(POLICIES)})")
        parsed.append(name)
    return tuple(parsed)


def rand_brightness(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) + U(-0.5, 0.5) per image."""
    return x + (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def rand_saturation(x: torch.Tensor) -> torch.Tensor:
    """Deviation from the per-pixel channel mean scaled by U(0, 2) per image."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean


def rand_contrast(x: torch.Tensor) -> torch.Tensor:
    """Deviation from the per-image mean scaled by U(0.5, 1.5)."""
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by integers in [-ratio*H, ratio*H] x [-ratio*W, ratio*W], zero fill."""
    batch, _, height, width = x.shape
    shift_h, shift_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dev = x.device
    tx = torch.randint(-shift_h, shift_h + 1, size=(batch, 1, 1), device=dev)
    ty = torch.randint(-shift_w, shift_w + 1, size=(batch, 1, 1), device=dev)
    grid_b, grid_x, grid_y = torch.meshgrid(torch.arange(batch, device=dev), torch.arange(height, device=dev),
                                            torch.arange(width, device=dev), indexing="ij")
    grid_x = torch.clamp(grid_x + tx + 1, 0, height + 1)
    grid_y = torch.clamp(grid_y + ty + 1, 0, width + 1)
    padded = F.pad(x, [1, 1, 1, 1])                                       # zero border
    return padded.permute(0, 2, 3, 1)[grid_b, grid_x, grid_y].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a (ratio*H) x (ratio*W) square at a random centre of each image (clipped at the edges)."""
    batch, _, height, width = x.shape
    cut_h, cut_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dev = x.device
    off_x = torch.randint(0, height + (1 - cut_h % 2), size=(batch, 1, 1), device=dev)
    off_y = torch.randint(0, width + (1 - cut_w % 2), size=(batch, 1, 1), device=dev)
    grid_b, grid_x, grid_y = torch.meshgrid(torch.arange(batch, device=dev), torch.arange(cut_h, device=dev),
                                            torch.arange(cut_w, device=dev), indexing="ij")
    grid_x = torch.clamp(grid_x + off_x - cut_h // 2, min=0, max=height - 1)
    grid_y = torch.clamp(grid_y + off_y - cut_w // 2, min=0, max=width - 1)
    mask = torch.ones(batch, height, width, dtype=x.dtype, device=dev)
    mask[grid_b, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


_TRANSFORMS = {"color": (rand_brightness, rand_saturation, rand_contrast),
               "translation": (rand_translation,), "cutout": (rand_cutout,)}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """x (B, C, H, W) float -> the same shape with the policy's transforms applied in order
    (each with fresh random parameters per image); ``policy`` () returns x unchanged."""
    for name in policy:
        for transform in _TRANSFORMS[name]:
            x = transform(x)
    return x.contiguous()
