"""Optional generator terms from the seed papers, added to AttnGAN's G loss when their weight is > 0
(all off by default; when off nothing is computed and no random number is drawn, so training is
bit-identical to plain AttnGAN):

- ``gan.int_weight`` (GAN-INT, Reed et al. 2016): G's adversarial loss on images drawn from
  interpolated captions (caption b mixed with caption b+1 of the batch at ``gan.int_beta``, see
  attnfast/interpolate.py). D is not trained on them (there is no real image of an interpolated
  caption); for G, D's unconditional (realism) and conditional score on the interpolated sentence
  count as real, as the paper's L_G term E[log D(G(z, beta t1 + (1 - beta) t2))].
- ``gan.colour_consistency`` (StackGAN++): alpha * the colour-consistency loss between consecutive
  stages' outputs (attnfast/reference/colour_consistency.py), lambdas ``gan.colour_lambdas``.
- ``gan.attention_grounding`` (attnfast, issue 29): the weight of KL(q_t || g_t) between the DAMSM's
  region attention of each word on the generated image (detached; Eq. 9 without Eq. 8) and the
  generator's word attention, at every attentional stage (attnfast/reference/attention_grounding.py).
- ``gan.attention_layout`` (attnfast, issue 29): the weight of KL(p_t || g_t) between the ground-truth
  layout of the object each word names (shapes data: the caption fixes every object's cells) and the
  generator's word attention, at every attentional stage: supervised grounding
  (attnfast/reference/attention_grounding.py, attnfast/data/shapes_layout.py).
- ``vlm.lambda_vlm`` / ``vlm.lambda_vvm`` (VLMGAN): lambda2 * L_VLM (text-visual) and lambda1 * L_VVM
  (visual-visual) with the pretrained matching block of ``vlm.checkpoint`` (attnfast/models/vlmgan.py).
"""
import torch

from attnfast.interpolate import paired_with_next
from attnfast.models.build import load_matching_block
from attnfast.models.vlmgan import vlm_losses, vvm_losses
from attnfast.reference import (
    attention_grounding_loss,
    generator_adv_loss_from_logits,
    layout_attention_loss,
    region_attention,
)
from attnfast.reference.colour_consistency import colour_consistency_loss


class GeneratorExtras:
    """The enabled extra terms of one GAN run (built once by the trainer)."""

    def __init__(self, config: dict, device: torch.device, text_encoder):
        gan, vlm = config["gan"], config["vlm"]
        self.damsm = config["damsm"]
        self.int_weight, self.int_beta = float(gan["int_weight"]), float(gan["int_beta"])
        self.colour = float(gan["colour_consistency"])
        self.grounding = float(gan["attention_grounding"])
        self.layout = float(gan["attention_layout"])
        self.colour_lambdas = tuple(float(v) for v in gan["colour_lambdas"])
        self.lambda_vlm, self.lambda_vvm = float(vlm["lambda_vlm"]), float(vlm["lambda_vvm"])
        for name, value in (("gan.int_weight", self.int_weight), ("gan.colour_consistency", self.colour),
                            ("gan.attention_grounding", self.grounding), ("gan.attention_layout", self.layout),
                            ("vlm.lambda_vlm", self.lambda_vlm), ("vlm.lambda_vvm", self.lambda_vvm)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0.0 <= self.int_beta <= 1.0:
            raise ValueError(f"gan.int_beta must lie in [0, 1], got {self.int_beta}")
        if self.colour > 0 and config["model"]["branch_num"] < 2:
            raise ValueError("gan.colour_consistency > 0 needs model.branch_num >= 2 (it compares stages)")
        if self.grounding > 0 and config["model"]["branch_num"] < 2:
            raise ValueError("gan.attention_grounding > 0 needs model.branch_num >= 2 (a stage with word attention)")
        if self.layout > 0 and config["model"]["branch_num"] < 2:
            raise ValueError("gan.attention_layout > 0 needs model.branch_num >= 2 (a stage with word attention)")
        if self.layout > 0 and config["dataset"]["name"] != "shapes":
            raise ValueError("gan.attention_layout > 0 needs the ground-truth layout of the built-in shapes "
                             f"data (dataset.name: shapes), got dataset.name {config['dataset']['name']!r}")
        self.msb = None
        if self.lambda_vlm > 0 or self.lambda_vvm > 0:
            if not vlm["checkpoint"]:
                raise ValueError("vlm.lambda_vlm / vlm.lambda_vvm > 0 need vlm.checkpoint "
                                 "(vlm.pt from --stage vlm)")
            self.msb, _ = load_matching_block(vlm["checkpoint"], device, text_encoder)

    def terms(self, trainer, noise, fakes, reals, words, sentence, mask, cap_lens, class_ids,
              fake_regions, fake_code, att_maps=None, layout=None) -> dict:
        """The weighted extra G terms (scalars) to add to errG; {} when all are off.

        noise (B, z_dim); fakes / reals: per-stage image lists; words (B, E, T), sentence (B, E),
        mask (B, T); fake_regions (B, E, h, w), fake_code (B, E): the image encoder on fakes[-1];
        att_maps: G's word attention of each attentional stage (B, T, h, w) (for attention_grounding and
        attention_layout); layout: the batch's attnfast.data.shapes_layout.CaptionLayout (attention_layout).
        """
        out = {}
        if self.layout > 0:
            if not att_maps or layout is None:
                raise ValueError("gan.attention_layout > 0 needs the generator's attention maps and the batch's layout")
            losses = [layout_attention_loss(att, layout.targets(att.shape[1], *att.shape[-2:], att.device))
                      for att in att_maps]
            out["layout"] = self.layout * (sum(losses) / len(losses))
        if self.grounding > 0:
            if not att_maps:
                raise ValueError("gan.attention_grounding > 0 needs the generator's attention maps")
            out["grounding"] = self.grounding * self._grounding(fake_regions, words, cap_lens, att_maps)
        if self.int_weight > 0:
            out["g_int"] = self.int_weight * self._gan_int(trainer, noise, words, sentence, mask)
        if self.colour > 0:
            out["colour"] = self.colour * colour_consistency_loss([f.float() for f in fakes], *self.colour_lambdas)
        gammas = (self.damsm["gamma1"], self.damsm["gamma2"], self.damsm["gamma3"])
        if self.lambda_vlm > 0:
            parts = vlm_losses(self.msb, fake_regions, fake_code, words, sentence, cap_lens, mask,
                               class_ids, *gammas)
            out["vlm"] = self.lambda_vlm * sum(parts.values())
        if self.lambda_vvm > 0:
            with torch.no_grad():
                real_regions, real_code = trainer.image_encoder(reals[-1])
            parts = vvm_losses(self.msb, fake_regions, fake_code, real_regions.float(), real_code.float(),
                               words, sentence, mask, class_ids, *gammas)
            out["vvm"] = self.lambda_vvm * sum(parts.values())
        return out

    def _grounding(self, fake_regions, words, cap_lens, att_maps):
        size, _, height, width = fake_regions.shape
        lens = torch.as_tensor(cap_lens, device=fake_regions.device)
        teacher = region_attention(fake_regions.detach().flatten(2), words.detach(), lens,
                                   self.damsm["gamma1"]).view(size, -1, height, width)
        losses = [attention_grounding_loss(att, teacher, lens) for att in att_maps]
        return sum(losses) / len(losses)

    def _gan_int(self, trainer, noise, words, sentence, mask):
        sent_i, words_i, mask_i = paired_with_next(sentence, words, mask, self.int_beta)
        size = noise.shape[0]
        # fresh z (and CA noise with several ranks) drawn as the trainer draws the step's own
        fresh = trainer.draw_noise(size)
        width = trainer.config["model"]["condition_dim"]
        eps = trainer.draw_noise(size, width=width) if trainer.dist.enabled else None
        loss = 0.0
        with trainer.autocast():
            fakes_i, _, _, _ = trainer.netG(fresh, sent_i, words_i, mask_i, eps=eps)
            for i, netD in enumerate(trainer.netsD):
                cond, uncond = trainer._d_logits(netD, netD(fakes_i[i]), sent_i)
                loss = loss + generator_adv_loss_from_logits(cond, uncond)
        return loss
