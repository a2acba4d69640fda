"""DAMSM matching (DESIGN.md §3.2), pure PyTorch: the original per-sentence loop and a vectorised
all-pairs formulation that must agree with it.

Conventions (as the original ``words_loss``): scores are (B_img, B_sent), entry [j, i] compares
image j with sentence i. The score is ``log sum_t exp(gamma2 * cos_t)`` exactly as the original
code computes it; the paper's Eq. 10 has an extra 1/gamma2 factor that the code (and the released
weights) do not use.
"""
import numpy as np
import torch
import torch.nn.functional as F

from ._common import acc_dtype, masked_softmax

# The original config values (cfg.TRAIN.SMOOTH.GAMMA1/2/3).
GAMMA1, GAMMA2, GAMMA3 = 4.0, 5.0, 10.0
COSINE_EPS = 1e-8
# Bound on the (images x sentences x R x T) block the vectorised reference holds at once.
_PAIR_BLOCK_ELEMENTS = 1 << 25


# --------------------------------------------------------------------------------------------
# The original formulation, line for line (faithfulness oracle for tests and benches).
# --------------------------------------------------------------------------------------------
def func_attention(query: torch.Tensor, context: torch.Tensor, gamma1: float):
    """Original ``func_attention``.

    Args:
        query: (B, D, T) word features; context: (B, D, H, W) region features.
    Returns:
        weighted context (B, D, T) and attention (B, T, H, W) (softmax over regions, Eq. 9).
    """
    batch, query_len = query.size(0), query.size(2)
    ih, iw = context.size(2), context.size(3)
    source_len = ih * iw
    context = context.view(batch, -1, source_len)
    context_t = torch.transpose(context, 1, 2).contiguous()
    attn = torch.bmm(context_t, query)                                    # Eq. 7: (B, R, T)
    attn = attn.view(batch * source_len, query_len)
    attn = torch.softmax(attn, dim=1)                                     # Eq. 8: over words
    attn = attn.view(batch, source_len, query_len)
    attn = torch.transpose(attn, 1, 2).contiguous()                       # (B, T, R)
    attn = attn.view(batch * query_len, source_len)
    attn = attn * gamma1
    attn = torch.softmax(attn, dim=1)                                     # Eq. 9: over regions
    attn = attn.view(batch, query_len, source_len)
    attn_t = torch.transpose(attn, 1, 2).contiguous()                     # (B, R, T)
    weighted = torch.bmm(context, attn_t)                                 # (B, D, T)
    return weighted, attn.view(batch, -1, ih, iw)


def cosine_similarity(x1: torch.Tensor, x2: torch.Tensor, dim: int = 1, eps: float = COSINE_EPS):
    """Original ``cosine_similarity``: w12 / max(|x1| |x2|, eps)."""
    w12 = torch.sum(x1 * x2, dim)
    w1 = torch.norm(x1, 2, dim)
    w2 = torch.norm(x2, 2, dim)
    return (w12 / (w1 * w2).clamp(min=eps)).squeeze()


def class_mask(class_ids, batch_size: int, device=None) -> torch.Tensor | None:
    """(B, B) bool, True where j != i and class_ids[j] == class_ids[i] (the original's masks)."""
    if class_ids is None:
        return None
    ids = torch.as_tensor(np.asarray(class_ids) if not torch.is_tensor(class_ids) else class_ids)
    ids = ids.reshape(-1)[:batch_size].to(device)
    same = ids[:, None] == ids[None, :]
    return same & ~torch.eye(batch_size, dtype=torch.bool, device=device)


def words_loss_original(img_features, words_emb, labels, cap_lens, class_ids, batch_size,
                        gamma1=GAMMA1, gamma2=GAMMA2, gamma3=GAMMA3):
    """The original ``words_loss``: a Python loop over sentences (B launches of many kernels each).

    img_features (B, D, H, W), words_emb (B, D, T), cap_lens (B,) ints. Returns loss0, loss1 (None
    when ``labels`` is None) and a list of B attention maps (1, cap_len_i, H, W).
    """
    att_maps, similarities = [], []
    lens = [int(n) for n in (cap_lens.tolist() if torch.is_tensor(cap_lens) else cap_lens)]
    for i in range(batch_size):
        words_num = lens[i]
        word = words_emb[i, :, :words_num].unsqueeze(0).contiguous()
        word = word.repeat(batch_size, 1, 1)                               # (B, D, T_i)
        weighted, attn = func_attention(word, img_features, gamma1)
        att_maps.append(attn[i].unsqueeze(0).contiguous())
        word = word.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        weighted = weighted.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        row_sim = cosine_similarity(word, weighted).view(batch_size, words_num)
        row_sim = torch.log(torch.exp(row_sim * gamma2).sum(dim=1, keepdim=True))
        similarities.append(row_sim)                                      # (B_img, 1)
    similarities = torch.cat(similarities, 1) * gamma3                    # (B_img, B_sent)
    masks = class_mask(class_ids, batch_size, similarities.device)
    if masks is not None:
        similarities = similarities.masked_fill(masks, -float("inf"))
    if labels is None:
        return None, None, att_maps
    loss0 = F.cross_entropy(similarities, labels)
    loss1 = F.cross_entropy(similarities.transpose(0, 1), labels)
    return loss0, loss1, att_maps


# --------------------------------------------------------------------------------------------
# Vectorised all-pairs formulation (what the fused kernels implement).
# --------------------------------------------------------------------------------------------
def word_padding_mask(cap_lens: torch.Tensor, num_words: int) -> torch.Tensor:
    """(B, T) bool, True at padded word positions t >= cap_lens[b]."""
    return torch.arange(num_words, device=cap_lens.device)[None, :] >= cap_lens[:, None]


def _pair_block(regions, words, pad, gamma1, gamma2, return_attn):
    """Scores (Bi, Bs) for all pairs of one block of images; optionally attention (Bi, Bs, T, R)."""
    sim = torch.einsum("jdr,idt->jirt", regions, words)                   # Eq. 7: (Bi, Bs, R, T)
    over_words = masked_softmax(sim, pad[None, :, None, :], dim=-1)       # Eq. 8
    over_regions = torch.softmax(gamma1 * over_words.transpose(-1, -2), dim=-1)  # Eq. 9: (Bi,Bs,T,R)
    context = torch.einsum("jitr,jdr->jidt", over_regions, regions)       # (Bi, Bs, D, T)
    dots = (context * words[None]).sum(dim=2)                             # (Bi, Bs, T)
    norms = context.norm(dim=2) * words.norm(dim=1)[None]
    cosine = dots / norms.clamp(min=COSINE_EPS)
    scores = torch.logsumexp((gamma2 * cosine).masked_fill(pad[None], float("-inf")), dim=-1)
    if not return_attn:
        return scores, None
    return scores, over_regions.masked_fill(pad[None, :, :, None], 0.0)


def damsm_scores(img_regions: torch.Tensor, words: torch.Tensor, cap_lens: torch.Tensor,
                 gamma1: float = GAMMA1, gamma2: float = GAMMA2, *, return_attn: bool = False):
    """All image–sentence DAMSM scores, vectorised.

    Args:
        img_regions: (B_img, D, R) region features (R = H*W; 17*17 = 289 in AttnGAN).
        words: (B_sent, D, T) word features, positions t >= cap_lens[i] are padding and ignored.
        cap_lens: (B_sent,) integer lengths, 1 <= cap_lens[i] <= T.
    Returns:
        scores (B_img, B_sent) in the input dtype (computed in float32, float64 for float64):
        scores[j, i] = log sum_{t < cap_lens[i]} exp(gamma2 * cos(c_t, e_t)); and if
        ``return_attn`` the region attention (B_img, B_sent, T, R), zero on padded words.
    """
    work = acc_dtype(img_regions.dtype)
    regions, source = img_regions.to(work), words.to(work)
    n_img, n_sent = regions.shape[0], source.shape[0]
    pad = word_padding_mask(cap_lens.to(regions.device), source.shape[2])
    per_image = max(1, n_sent * regions.shape[2] * source.shape[2])
    step = max(1, _PAIR_BLOCK_ELEMENTS // per_image)
    parts = [_pair_block(regions[s:s + step], source, pad, gamma1, gamma2, return_attn)
             for s in range(0, n_img, step)]
    scores = torch.cat([p[0] for p in parts]).to(img_regions.dtype)
    if not return_attn:
        return scores
    return scores, torch.cat([p[1] for p in parts]).to(img_regions.dtype)


def matched_attention(img_regions: torch.Tensor, words: torch.Tensor, cap_lens: torch.Tensor,
                      gamma1: float = GAMMA1) -> torch.Tensor:
    """Region attention of each matched pair (image b, sentence b): (B, T, R), zero on padding."""
    work = acc_dtype(img_regions.dtype)
    regions, source = img_regions.to(work), words.to(work)
    pad = word_padding_mask(cap_lens.to(regions.device), source.shape[2])
    sim = torch.einsum("bdr,bdt->brt", regions, source)
    over_words = masked_softmax(sim, pad[:, None, :], dim=-1)
    attn = torch.softmax(gamma1 * over_words.transpose(1, 2), dim=-1)
    return attn.masked_fill(pad[:, :, None], 0.0).to(img_regions.dtype)


def matching_losses(scores: torch.Tensor, labels, class_ids):
    """The two batch cross-entropies of DAMSM over a (B_img, B_sent) score matrix already scaled by
    gamma3; same-class off-diagonal pairs are excluded (-inf). Returns (loss0, loss1) or Nones."""
    masks = class_mask(class_ids, scores.shape[0], scores.device)
    if masks is not None:
        scores = scores.masked_fill(masks, -float("inf"))
    if labels is None:
        return None, None
    scores = scores.to(acc_dtype(scores.dtype))
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.transpose(0, 1), labels)


def words_loss(img_features, words_emb, labels, cap_lens, class_ids, batch_size,
               gamma1=GAMMA1, gamma2=GAMMA2, gamma3=GAMMA3):
    """Vectorised ``words_loss`` with the original's signature and return values."""
    regions = img_features[:batch_size].flatten(2)                        # (B, D, R)
    lens = torch.as_tensor(cap_lens, device=words_emb.device)[:batch_size]
    scores = damsm_scores(regions, words_emb[:batch_size], lens, gamma1, gamma2) * gamma3
    loss0, loss1 = matching_losses(scores, labels, class_ids)
    attn = matched_attention(regions, words_emb[:batch_size], lens, gamma1)
    ih, iw = img_features.shape[2], img_features.shape[3]
    att_maps = [attn[i:i + 1, :int(n)].reshape(1, int(n), ih, iw) for i, n in enumerate(lens.tolist())]
    return loss0, loss1, att_maps


def sentence_scores(cnn_code: torch.Tensor, rnn_code: torch.Tensor, eps: float = COSINE_EPS):
    """(B_img, B_sent) cosine similarity of global image codes and sentence codes, as the original
    ``sent_loss`` computes it (norm product clamped at eps)."""
    work = acc_dtype(cnn_code.dtype)
    img, sent = cnn_code.to(work), rnn_code.to(work)
    dots = img @ sent.t()
    norms = img.norm(dim=1, keepdim=True) * sent.norm(dim=1)[None, :]
    return dots / norms.clamp(min=eps)


def sent_loss(cnn_code, rnn_code, labels, class_ids, batch_size, eps=COSINE_EPS, gamma3=GAMMA3):
    """Original ``sent_loss`` (signature and return values): CE over gamma3 * cosine both ways."""
    scores = sentence_scores(cnn_code[:batch_size], rnn_code[:batch_size], eps) * gamma3
    return matching_losses(scores, labels, class_ids)
