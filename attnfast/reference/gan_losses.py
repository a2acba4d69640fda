"""Adversarial losses of AttnGAN (``discriminator_loss`` / ``generator_loss``) on logits.

The original applies ``nn.Sigmoid`` in the discriminator and ``nn.BCELoss``; these functions take
the pre-sigmoid logits and use ``binary_cross_entropy_with_logits``: the same value without the
overflow (and it is allowed under autocast). The mismatched-caption term is GAN-CLS's: real image
i paired with caption i+1 (the original's ``real_features[:B-1]`` with ``conditions[1:B]``).
"""
import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss_from_logits(real_cond, fake_cond, wrong_cond, real_uncond=None,
                                   fake_uncond=None) -> torch.Tensor:
    """One stage's D loss.

    real_cond (B,): D(real_i, s_i); fake_cond (B,): D(G(s_i), s_i); wrong_cond (B-1,):
    D(real_i, s_{i+1}); real_uncond / fake_uncond (B,) or None when D has no unconditional head.
    """
    cond_real, cond_fake, cond_wrong = _bce(real_cond, 1.0), _bce(fake_cond, 0.0), _bce(wrong_cond, 0.0)
    if real_uncond is None:
        return cond_real + (cond_fake + cond_wrong) / 2.0
    real, fake = _bce(real_uncond, 1.0), _bce(fake_uncond, 0.0)
    return (real + cond_real) / 2.0 + (fake + cond_fake + cond_wrong) / 3.0


def generator_adv_loss_from_logits(fake_cond, fake_uncond=None) -> torch.Tensor:
    """One stage's adversarial G loss: BCE(D(G(s), s), 1) [+ BCE(D(G(s)), 1)]."""
    loss = _bce(fake_cond, 1.0)
    if fake_uncond is not None:
        loss = loss + _bce(fake_uncond, 1.0)
    return loss
