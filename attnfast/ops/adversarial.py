"""The discriminator's adversarial loss in one call (issue 27): the same math as
:func:`attnfast.reference.gan_losses.discriminator_loss_from_logits`, one weighted BCE over the
concatenated logits instead of five BCE means and their weighted sum."""
import functools

import torch
import torch.nn.functional as F

from attnfast.reference.gan_losses import discriminator_loss_from_logits

__all__ = ["discriminator_loss_one_call"]


@functools.lru_cache(maxsize=64)
def _targets_and_weights(sizes: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and float64 weights of the concatenated logits of :func:`discriminator_loss_one_call`:
    per logit its term's target and the term's coefficient over the term's count (cast to the
    logits' dtype at use)."""
    if len(sizes) == 3:      # cond_real + (cond_fake + cond_wrong) / 2
        terms = ((1.0, 1.0), (0.0, 0.5), (0.0, 0.5))
    else:                    # (real + cond_real) / 2 + (fake + cond_fake + cond_wrong) / 3
        terms = ((1.0, 0.5), (0.0, 1.0 / 3.0), (0.0, 1.0 / 3.0), (1.0, 0.5), (0.0, 1.0 / 3.0))
    targets = torch.cat([torch.full((n,), t) for (t, _), n in zip(terms, sizes, strict=True)])
    weights = torch.cat([torch.full((n,), c / n, dtype=torch.float64) for (_, c), n in zip(terms, sizes, strict=True)])
    return targets.to(device), weights.to(device)


def discriminator_loss_one_call(real_cond, fake_cond, wrong_cond, real_uncond=None,
                                fake_uncond=None) -> torch.Tensor:
    """:func:`discriminator_loss_from_logits` as one weighted BCE over the concatenated logits (each
    logit with its term's target and weight coefficient / count): the same value up to the order of
    the float32 sums (tests/test_adversarial.py), in ~12 ops instead of ~60 (the D update's losses,
    issue 27). A term with no rows (B = 1: no mismatched pair) falls back to the reference."""
    parts = [real_cond, fake_cond, wrong_cond] + ([real_uncond, fake_uncond] if real_uncond is not None else [])
    sizes = tuple(int(p.shape[0]) for p in parts)
    if min(sizes) == 0 or any(p.dim() != 1 for p in parts):
        return discriminator_loss_from_logits(real_cond, fake_cond, wrong_cond, real_uncond, fake_uncond)
    logits = torch.cat(parts)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets, weights = _targets_and_weights(sizes, logits.device)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), weight=weights.to(logits.dtype),
                                              reduction="sum")
