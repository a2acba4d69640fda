"""Alternatives to AttnGAN's BCE adversarial terms and the regularisers of its successors, all
off by default (see attnfast/trainer/gan_options.py):

- hinge loss (SAGAN, Zhang et al. 2019; DF-GAN, Tao et al. 2022) with GAN-CLS's mismatched-caption
  term kept, weighted as :func:`~attnfast.reference.gan_losses.discriminator_loss_from_logits`;
- DF-GAN's matching-aware zero-centred gradient penalty (MA-GP) k * E[(||grad_x D|| + ... )^p]
  on real images with their own sentence, and R1 (Mescheder et al., ICML 2018);
- MSGAN's mode-seeking term (Mao et al., CVPR 2019).
"""
import torch
import torch.nn.functional as F


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def hinge_discriminator_loss(real_cond, fake_cond, wrong_cond, real_uncond=None, fake_uncond=None):
    """One stage's hinge D loss on logits: relu(1 - D(real)) for real terms, relu(1 + D(.)) for the
    fake and mismatched terms; shapes as discriminator_loss_from_logits, the same averaging."""
    def real(x):
        return F.relu(1.0 - _f32(x)).mean()

    def fake(x):
        return F.relu(1.0 + _f32(x)).mean()

    if real_uncond is None:
        return real(real_cond) + (fake(fake_cond) + fake(wrong_cond)) / 2.0
    return (real(real_uncond) + real(real_cond)) / 2.0 + (fake(fake_uncond) + fake(fake_cond) + fake(wrong_cond)) / 3.0


def hinge_generator_loss(fake_cond, fake_uncond=None):
    """One stage's hinge G loss: -E[D(G(s), s)] [- E[D(G(s))]]."""
    loss = -_f32(fake_cond).mean()
    if fake_uncond is not None:
        loss = loss - _f32(fake_uncond).mean()
    return loss


def gradient_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample L2 norm (B,) of the concatenated, flattened gradients [(B, ...)]."""
    flat = torch.cat([_f32(g).reshape(g.shape[0], -1) for g in grads], dim=1)
    return flat.pow(2).sum(dim=1).sqrt()


def ma_gp(grad_image: torch.Tensor, grad_sentence: torch.Tensor, weight: float = 2.0, power: float = 6.0):
    """DF-GAN's MA-GP: weight * mean over the batch of ||(grad_x D, grad_e D)||^power, the gradient
    of D(x, e) at real images x (B, 3, H, W) with their own sentence e (B, E)."""
    return weight * gradient_norms([grad_image, grad_sentence]).pow(power).mean()


def r1_penalty(grad_image: torch.Tensor, weight: float = 10.0):
    """R1: weight / 2 * E[||grad_x D(x)||^2] at real images x (B, 3, H, W)."""
    return weight / 2.0 * gradient_norms([grad_image]).pow(2).mean()


def mode_seeking_loss(images_a: torch.Tensor, images_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    """MSGAN: 1 / (mean|G(c, z_a) - G(c, z_b)| / mean|z_a - z_b| + eps), images (B, 3, H, W) of the
    same conditions drawn from noises (B, Z); minimising it pushes apart images of distinct z."""
    ratio = (_f32(images_a) - _f32(images_b)).abs().mean() / (_f32(z_a) - _f32(z_b)).abs().mean()
    return 1.0 / (ratio + eps)
