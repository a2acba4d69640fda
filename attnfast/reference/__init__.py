"""The pure-PyTorch math of every attnfast op: the single source of truth for tests, benches and
the CPU fallback. Nothing here knows about kernels or backends."""
from .attention import MASK_MODES, expand_word_mask, global_attention_general_original, word_region_attention
from .attention_grounding import attention_grounding_loss, layout_attention_loss, region_attention
from .blocks import BatchNormParams, batch_norm, bn_glu, glu, res_block, subpixel_weight, up_block, up_conv_subpixel
from .colour_consistency import colour_consistency_loss, colour_statistics
from .conditioning import ca_encode, kl_loss, reparametrize
from .damsm import (
    GAMMA1,
    GAMMA2,
    GAMMA3,
    class_mask,
    cosine_similarity,
    damsm_scores,
    func_attention,
    matched_attention,
    matching_losses,
    sent_loss,
    sentence_scores,
    word_padding_mask,
    words_loss,
    words_loss_original,
)
from .gan_losses import discriminator_loss_from_logits, generator_adv_loss_from_logits

__all__ = [
    "GAMMA1",
    "GAMMA2",
    "GAMMA3",
    "MASK_MODES",
    "BatchNormParams",
    "attention_grounding_loss",
    "batch_norm",
    "bn_glu",
    "ca_encode",
    "class_mask",
    "colour_consistency_loss",
    "colour_statistics",
    "cosine_similarity",
    "damsm_scores",
    "discriminator_loss_from_logits",
    "expand_word_mask",
    "func_attention",
    "generator_adv_loss_from_logits",
    "global_attention_general_original",
    "glu",
    "kl_loss",
    "layout_attention_loss",
    "matched_attention",
    "matching_losses",
    "region_attention",
    "reparametrize",
    "res_block",
    "sent_loss",
    "sentence_scores",
    "subpixel_weight",
    "up_block",
    "up_conv_subpixel",
    "word_padding_mask",
    "word_region_attention",
    "words_loss",
    "words_loss_original",
]
