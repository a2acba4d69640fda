"""The GAN training options of AttnGAN's successors (issue 20), read from the ``gan.`` section of a
config. All are off in the paper configs (birds.yaml, coco.yaml, converted original ymls and the
defaults); when off, nothing here computes anything or draws a random number, so training is
bit-identical to plain AttnGAN.

- ``gan.diffaugment``: DiffAugment policy ("color,translation,cutout"; "" = off) applied to real
  and fake images before every D (Zhao et al., NeurIPS 2020);
- ``gan.loss``: "bce" (AttnGAN) or "hinge" (SAGAN / DF-GAN), mismatched-caption term kept;
- ``gan.gp``: "none", "magp" (DF-GAN's matching-aware gradient penalty on real images with their
  own sentence: ``gan.gp_weight`` k = 2, ``gan.gp_power`` p = 6) or "r1" (``gan.gp_weight`` gamma,
  on D's unconditional head where it has one, else the conditional head);
- ``gan.spectral_norm``: spectral normalisation of every convolution of every D (Miyato et al., ICLR 2018);
- ``gan.g_betas`` / ``gan.d_betas``: Adam betas per network (TTUR, Heusel et al. 2017, with the
  separate ``gan.g_lr`` / ``gan.d_lr``); null = ``gan.betas``;
- ``gan.projection``: the projection discriminator's term <W s, sum_hw h> in every D's conditional
  head (Miyato & Koyama, ICLR 2018);
- ``gan.mode_seeking``: weight of MSGAN's mode-seeking term (Mao et al., CVPR 2019) on G, computed
  on a second draw of the first ``ceil(B/2)`` items with fresh noise.
"""
import logging
from dataclasses import dataclass

import torch
from torch import nn

from attnfast.ops.adversarial import discriminator_loss_one_call
from attnfast.reference import diffaugment as da
from attnfast.reference import gan_regularizers as reg
from attnfast.reference.gan_losses import discriminator_loss_from_logits, generator_adv_loss_from_logits

LOG = logging.getLogger("attnfast")
LOSSES = ("bce", "hinge")
PENALTIES = ("none", "magp", "r1")


def _betas(value, name: str) -> tuple[float, float]:
    betas = tuple(float(b) for b in value)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"{name} must be two numbers in [0, 1), got {value!r}")
    return betas


@dataclass(frozen=True)
class GANOptions:
    """The parsed, checked options (see the module docstring)."""

    augment: tuple[str, ...] = ()
    loss: str = "bce"
    gp: str = "none"
    gp_weight: float = 2.0
    gp_power: float = 6.0
    spectral_norm: bool = False
    projection: bool = False
    g_betas: tuple[float, float] = (0.5, 0.999)
    d_betas: tuple[float, float] = (0.5, 0.999)
    mode_seeking: float = 0.0

    @classmethod
    def from_config(cls, config: dict) -> "GANOptions":
        gan = config["gan"]
        loss = str(gan.get("loss", "bce")).lower()
        if loss not in LOSSES:
            raise ValueError(f"gan.loss must be one of {LOSSES}, got {gan.get('loss')!r}")
        gp = str(gan.get("gp", "none") or "none").lower()
        if gp not in PENALTIES:
            raise ValueError(f"gan.gp must be one of {PENALTIES}, got {gan.get('gp')!r}")
        gp_weight, gp_power = float(gan.get("gp_weight", 2.0)), float(gan.get("gp_power", 6.0))
        if gp_weight < 0:
            raise ValueError(f"gan.gp_weight must be >= 0, got {gp_weight}")
        if gp_power <= 0:
            raise ValueError(f"gan.gp_power must be > 0, got {gp_power}")
        mode_seeking = float(gan.get("mode_seeking", 0.0))
        if mode_seeking < 0:
            raise ValueError(f"gan.mode_seeking must be >= 0, got {mode_seeking}")
        if mode_seeking > 0 and int(gan["batch_size"]) < 2:
            raise ValueError("gan.mode_seeking > 0 needs gan.batch_size >= 2")
        try:
            augment = da.parse_policy(gan.get("diffaugment", ""))
        except ValueError as err:
            raise ValueError(f"gan.diffaugment: {err}") from None
        betas = gan["betas"]
        return cls(augment=augment, loss=loss, gp=gp, gp_weight=gp_weight, gp_power=gp_power,
                   spectral_norm=bool(gan.get("spectral_norm", False)),
                   projection=bool(gan.get("projection", False)),
                   g_betas=_betas(gan.get("g_betas") or betas, "gan.g_betas"),
                   d_betas=_betas(gan.get("d_betas") or betas, "gan.d_betas"),
                   mode_seeking=mode_seeking)

    # ------------------------------------------------------------------ what the step needs
    @property
    def uncapturable(self) -> list[str]:
        """The enabled options that the CUDA-graph step does not capture (it then runs eagerly)."""
        names = []
        if self.augment:
            names.append("gan.diffaugment")
        if self.gp != "none":
            names.append(f"gan.gp={self.gp}")
        if self.mode_seeking > 0:
            names.append("gan.mode_seeking")
        return names

    @property
    def needs_double_backward(self) -> bool:
        return self.gp != "none" and self.gp_weight > 0

    def apply_spectral_norm(self, netD: nn.Module) -> nn.Module:
        """Every Conv2d of ``netD`` (trunk and heads) spectrally normalised in place (when on)."""
        if self.spectral_norm:
            for module in list(netD.modules()):
                if isinstance(module, nn.Conv2d):
                    nn.utils.parametrizations.spectral_norm(module)
        return netD

    def augment_images(self, images: torch.Tensor) -> torch.Tensor:
        return da.diff_augment(images, self.augment) if self.augment else images

    def d_loss(self, real_cond, fake_cond, wrong_cond, real_uncond=None, fake_uncond=None, one_call: bool = False):
        """One D's loss from its logits; ``one_call`` (the batched D update's choice) computes the BCE
        loss as one weighted call (:func:`discriminator_loss_one_call`, equal up to summation order)."""
        if self.loss == "hinge":
            return reg.hinge_discriminator_loss(real_cond, fake_cond, wrong_cond, real_uncond, fake_uncond)
        loss = discriminator_loss_one_call if one_call else discriminator_loss_from_logits
        return loss(real_cond, fake_cond, wrong_cond, real_uncond, fake_uncond)

    def g_adv_loss(self, fake_cond, fake_uncond=None):
        if self.loss == "hinge":
            return reg.hinge_generator_loss(fake_cond, fake_uncond)
        return generator_adv_loss_from_logits(fake_cond, fake_uncond)

    def gradient_penalty(self, real_image, sentence, real_cond, real_uncond, scaler) -> torch.Tensor:
        """The penalty of one D at real images: ``real_image`` (B, 3, r, r) and ``sentence`` (B, E)
        are the leaves the logits ``real_cond`` / ``real_uncond`` (B,) were computed from (with
        requires_grad). Under an fp16 GradScaler the gradient is taken of the scaled logits and
        unscaled (the AMP recipe for penalties), so it neither underflows nor is off by the scale."""
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        if self.gp == "magp":
            out = real_cond.float().sum() * scale
            grad_image, grad_sentence = torch.autograd.grad(out, (real_image, sentence), create_graph=True)
            return reg.ma_gp(grad_image / scale, grad_sentence / scale, self.gp_weight, self.gp_power)
        logits = real_uncond if real_uncond is not None else real_cond
        (grad_image,) = torch.autograd.grad(logits.float().sum() * scale, (real_image,), create_graph=True)
        return reg.r1_penalty(grad_image / scale, self.gp_weight)
