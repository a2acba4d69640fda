"""StackGAN++'s colour-consistency regulariser (Zhang et al., StackGAN++, Sec. 4.2).

For one image, with its N pixels x_k = (R, G, B)^T:
    mu = sum_k x_k / N,    Sigma = sum_k (x_k - mu)(x_k - mu)^T / N.
Between consecutive stages i-1 and i of the same input (batch of n images):
    L_Ci = 1/n sum_j ( lambda1 * ||mu_i^j - mu_{i-1}^j||_2^2 + lambda2 * ||Sigma_i^j - Sigma_{i-1}^j||_F^2 ).
The statistics are per image and do not depend on the resolution, so stages of different sizes are
compared directly (no resampling). The paper's values are lambda1 = 1, lambda2 = 5; the generator
adds alpha * sum_i L_Ci (alpha = 50 in the paper's unconditional experiments).
"""
import itertools

import torch

__all__ = ["LAMBDA1", "LAMBDA2", "colour_consistency_loss", "colour_statistics"]

LAMBDA1 = 1.0
LAMBDA2 = 5.0


def _check_images(name: str, images) -> torch.Tensor:
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"{name} must be a (B, 3, H, W) tensor, got {got}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {images.dtype}")
    return images


def colour_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image colour mean and covariance over pixels.

    images (B, 3, H, W) float -> mu (B, 3), sigma (B, 3, 3) (population covariance, divided by
    N = H*W), computed in float32 at least (float64 stays float64).
    """
    _check_images("images", images)
    work = torch.promote_types(images.dtype, torch.float32)
    pixels = images.to(work).flatten(2)                                   # (B, 3, N)
    mu = pixels.mean(dim=2)                                               # (B, 3)
    centred = pixels - mu[:, :, None]
    sigma = centred @ centred.transpose(1, 2) / pixels.shape[2]           # (B, 3, 3)
    return mu, sigma


def colour_consistency_loss(stages, lambda1: float = LAMBDA1, lambda2: float = LAMBDA2) -> torch.Tensor:
    """sum over consecutive stage pairs (i-1, i) of L_Ci (see the module docstring).

    stages: a list of >= 2 image batches [(B, 3, H_0, W_0), (B, 3, H_1, W_1), ...] of the same B
    inputs, low to high resolution. Returns a scalar (float32, or float64 for float64 inputs).
    """
    stages = list(stages)
    if len(stages) < 2:
        raise ValueError(f"colour consistency needs at least 2 stages, got {len(stages)}")
    for i, images in enumerate(stages):
        _check_images(f"stages[{i}]", images)
        if images.shape[0] != stages[0].shape[0]:
            raise ValueError(f"stages[{i}] holds {images.shape[0]} images, stages[0] {stages[0].shape[0]}")
    stats = [colour_statistics(images) for images in stages]
    total = 0.0
    for (mu_lo, sigma_lo), (mu_hi, sigma_hi) in itertools.pairwise(stats):
        mean_term = (mu_hi - mu_lo).pow(2).sum(dim=1)                     # (B,)
        cov_term = (sigma_hi - sigma_lo).pow(2).sum(dim=(1, 2))           # (B,) squared Frobenius
        total = total + (lambda1 * mean_term + lambda2 * cov_term).mean()
    return total
