"""Attention grounding (attnfast's option ``gan.attention_grounding``): a term that pulls the
generator's word attention towards the DAMSM's word->region attention on the image the generator
drew, so that each word is used where the matching model finds it.

The generator's attention of a stage (``GlobalAttentionGeneral``) is, per region, a softmax over the
words; read per word and normalised over the regions it is that word's spatial distribution g_t. The
teacher q_t is the DAMSM's region attention of word t on the generated image (detached), resized to
the stage's grid: Eq. 9's softmax over regions of gamma1 times the word-region similarity, *without*
Eq. 8's softmax over words (:func:`region_attention`). Eq. 8 makes the words compete for each region,
and on the shapes data the colour word takes ~100 % of every object region, so with it the shape,
size and position words are pushed off the object by construction (README, "Grounded attention");
the similarity itself points at the object. The term is the mean over the captions' real words of
KL(q_t || g_t): the attention-transfer idea of Zagoruyko & Komodakis (2017) applied across the two
attentions of AttnGAN.
"""
import torch
import torch.nn.functional as F

from ._common import acc_dtype
from .damsm import word_padding_mask

_EPS = 1e-8


def region_attention(regions: torch.Tensor, words: torch.Tensor, cap_lens: torch.Tensor,
                     gamma1: float) -> torch.Tensor:
    """Each word's attention over the regions of its own image, without Eq. 8.

    regions (B, D, R) image-encoder features, words (B, D, T) word features, cap_lens (B,) ints:
    softmax over R of gamma1 * (region . word) (Eq. 7 then Eq. 9). Returns (B, T, R) in the
    accumulation dtype, zero on padding words."""
    work = acc_dtype(regions.dtype)
    sim = torch.einsum("bdr,bdt->btr", regions.to(work), words.to(work))
    pad = word_padding_mask(cap_lens.to(regions.device), words.shape[2])
    return torch.softmax(gamma1 * sim, dim=-1).masked_fill(pad[:, :, None], 0.0)


def attention_grounding_loss(g_attn: torch.Tensor, teacher: torch.Tensor, cap_lens: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher_t || g_t) over the real words of every caption.

    g_attn (B, T, h, w): the generator's word attention of one stage (softmax over words per region;
    zero on padding words); teacher (B, T', h', w') with T' <= T: each real word's distribution over
    the DAMSM's regions (sums to 1 over (h', w'); rows at or past cap_len are ignored), bilinearly
    resized to (h, w) and renormalised; cap_lens (B,) ints in [1, T']. Returns a 0-d tensor in the
    accumulation dtype of ``g_attn`` (float32 for half inputs).
    """
    if g_attn.dim() != 4 or teacher.dim() != 4 or teacher.shape[0] != g_attn.shape[0]:
        raise ValueError(f"g_attn (B, T, h, w) and teacher (B, T', h', w') must share B, got "
                         f"{tuple(g_attn.shape)} and {tuple(teacher.shape)}")
    size, words = g_attn.shape[0], teacher.shape[1]
    if words > g_attn.shape[1]:
        raise ValueError(f"teacher has {words} words, g_attn only {g_attn.shape[1]}")
    lens = cap_lens.to(g_attn.device)
    if lens.shape != (size,) or int(lens.min()) < 1 or int(lens.max()) > words:
        raise ValueError(f"cap_lens must be (B,) = ({size},) ints in [1, {words}], got {cap_lens.tolist()}")
    work = acc_dtype(g_attn.dtype)
    height, width = g_attn.shape[-2:]
    q = teacher.detach().to(work)
    if q.shape[-2:] != (height, width):
        q = F.interpolate(q, size=(height, width), mode="bilinear", align_corners=False)
    kl = _word_kl(g_attn[:, :words].to(work), q)                                     # (B, T')
    return _masked_mean(kl, ~word_padding_mask(lens, words))


def layout_attention_loss(g_attn: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """Mean KL(p_t || g_t) over the words that name an object (attnfast's ``gan.attention_layout``).

    g_attn (B, T, h, w): the generator's word attention of one stage (softmax over words per region);
    layout (B, T', h, w), T' <= T, >= 0: row t the coverage of the object word t names
    (attnfast.data.shapes_layout.CaptionLayout), all zero for a word that names none (ignored). p_t is
    the row normalised over the regions, g_t the generator's map of word t normalised the same way
    (the map the pointing game reads). Returns a 0-d tensor in the accumulation dtype of ``g_attn``;
    0 (still connected to ``g_attn``) when no word names an object.
    """
    if g_attn.dim() != 4 or layout.shape[0] != g_attn.shape[0] or layout.shape[-2:] != g_attn.shape[-2:] \
            or layout.dim() != 4 or layout.shape[1] > g_attn.shape[1]:
        raise ValueError(f"g_attn (B, T, h, w) and layout (B, T' <= T, h, w) must match, got "
                         f"{tuple(g_attn.shape)} and {tuple(layout.shape)}")
    work = acc_dtype(g_attn.dtype)
    words = layout.shape[1]
    q = layout.detach().to(work)
    named = q.flatten(2).sum(-1) > 0                                                # (B, T')
    return _masked_mean(_word_kl(g_attn[:, :words].to(work), q), named)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` (bool, same shape) is True; 0 (still connected) where it is
    nowhere True. A masked sum, not values[mask]: no host sync (boolean indexing) in the training step."""
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def _word_kl(g_attn: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, T) KL(q_t || g_t): both (B, T, h, w), each word's row normalised over the regions."""
    g = g_attn.flatten(2)
    g = g / g.sum(-1, keepdim=True).clamp_min(_EPS)
    q = target.flatten(2).clamp_min(0.0)
    q = q / q.sum(-1, keepdim=True).clamp_min(_EPS)
    return (q * (torch.log(q.clamp_min(_EPS)) - torch.log(g.clamp_min(_EPS)))).sum(-1)
