"""Word–region attention of the AttnGAN generator (DESIGN.md §3.1), pure PyTorch.

s[b,n,t] = sum_c h[b,c,n] * words[b,c,t]; p = softmax_t(s) over unmasked words;
out[b,c,n] = sum_t p[b,n,t] * words[b,c,t].
"""
import torch

from ._common import acc_dtype, masked_softmax

MASK_MODES = ("correct", "attngan")


def expand_word_mask(mask: torch.Tensor, num_regions: int, mask_mode: str = "correct") -> torch.Tensor:
    """Per-region word mask (B, N, T) from a per-caption mask (B, T) (True = padding).

    ``mask_mode="correct"`` pairs every region of caption b with mask[b]. ``"attngan"`` reproduces
    the original code's ``mask.repeat(queryL, 1)`` on the (B*N, T) score matrix, which pairs row
    b*N+n with mask[(b*N+n) mod B]: the wrong captions' padding whenever B > 1 and lengths differ.
    """
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
    batch = mask.shape[0]
    if mask_mode == "correct":
        return mask[:, None, :].expand(batch, num_regions, mask.shape[1])
    rows = torch.arange(batch * num_regions, device=mask.device) % batch
    return mask[rows].view(batch, num_regions, mask.shape[1])


def word_region_attention(h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None = None,
                          *, mask_mode: str = "correct", return_attn: bool = False):
    """Reference word–region attention.

    Args:
        h: (B, C, H, W) image features, float.
        words: (B, C, T) word features already projected to C channels, same dtype as ``h``.
        mask: optional (B, T) bool, True = padding word (excluded from the softmax).
        mask_mode: "correct" (default) or "attngan" (the original's misaligned mask, see
            :func:`expand_word_mask`).
        return_attn: also return the attention map.
    Returns:
        out (B, C, H, W) in the input dtype, and if ``return_attn`` attn (B, T, H, W). Regions whose
        words are all masked get out = 0 and attn = 0. Scores and softmax run in float32 (float64
        for float64 inputs).
    """
    batch, channels, height, width = h.shape
    num_regions = height * width
    work = acc_dtype(h.dtype)
    query = h.reshape(batch, channels, num_regions).to(work)
    source = words.to(work)
    scores = torch.einsum("bcn,bct->bnt", query, source)                 # (B, N, T)
    region_mask = None if mask is None else expand_word_mask(mask, num_regions, mask_mode)
    probs = masked_softmax(scores, region_mask, dim=-1)                  # (B, N, T)
    out = torch.einsum("bnt,bct->bcn", probs, source)                     # (B, C, N)
    out = out.reshape(batch, channels, height, width).to(h.dtype)
    if not return_attn:
        return out
    attn = probs.transpose(1, 2).reshape(batch, words.shape[2], height, width).to(h.dtype)
    return out, attn


def global_attention_general_original(h: torch.Tensor, source_t: torch.Tensor,
                                      mask: torch.Tensor | None):
    """The original AttnGAN ``GlobalAttentionGeneral.forward`` after ``conv_context``, line for line.

    ``source_t`` (B, C, T) are the projected words. Kept only as the faithfulness oracle for tests
    and benches ("the original formulation"): a fully masked row gives NaN here, as in the original.
    """
    batch, _, ih, iw = h.shape
    query_len = ih * iw
    source_len = source_t.size(2)
    target = h.view(batch, -1, query_len)
    target_t = torch.transpose(target, 1, 2).contiguous()
    attn = torch.bmm(target_t, source_t)                                  # (B, N, T)
    attn = attn.view(batch * query_len, source_len)
    if mask is not None:
        attn = attn.masked_fill(mask.repeat(query_len, 1), -float("inf"))
    attn = torch.softmax(attn, dim=1)
    attn = attn.view(batch, query_len, source_len)
    attn = torch.transpose(attn, 1, 2).contiguous()                       # (B, T, N)
    weighted = torch.bmm(source_t, attn)                                  # (B, C, N)
    return weighted.view(batch, -1, ih, iw), attn.view(batch, -1, ih, iw)
