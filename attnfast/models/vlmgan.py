"""VLMGAN's vision-language matching (Cheng et al. 2022, "Vision-Language Matching for Text-to-Image
Synthesis via Generative Adversarial Networks"), on top of the DAMSM encoders.

Three levels of matching between an image (regions phi (B, E, H, W), global code phi_bar (B, E))
and a caption (words varphi (B, E, T), sentence varphi_bar (B, E)):
- local:   S_local  = (1 / gamma2) * log sum_t exp(gamma2 * cos(c_t, varphi_t)), c_t the
           region context attended by word t (DAMSM's word score with the paper's 1/gamma2;
           computed by the fused op ``attnfast.ops.damsm_scores``);
- global:  S_global = cos(phi_bar, varphi_bar);
- general: S_general = sigmoid(F_MSB(phi, phi_bar, varphi, varphi_bar)), the matching-score block:
           the joint token sequence [sentence, image code, words, regions] through a small
           Transformer encoder, a linear layer per token (W0 psi + b0), mean pooling over the
           non-padded tokens and a sigmoid.
The encoders are the frozen DAMSM ones (the paper's VLM uses the same LSTM / Inception-v3 pair);
the block is pretrained on matched / mismatched real pairs (``--stage vlm``, trainer/vlm.py).
The losses for the generator (VLM: text-visual, VVM: visual-visual) are :func:`vlm_losses` and
:func:`vvm_losses`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attnfast import ops, reference
from . import _checks as check


def _sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) float positions -> (N, dim) sin/cos features (dim even)."""
    freqs = torch.exp(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
                      * (-math.log(10000.0) / dim))
    angles = positions.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class MatchingScoreBlock(nn.Module):
    """F_MSB: (regions (B, E, H, W), code (B, E), words (B, E, T), sentence (B, E), word mask (B, T)
    bool, True = padding) -> (B,) matching logits (``score`` gives the sigmoid).

    The joint sequence psi (all features L2-normalised first, as the cosines of the other levels):
    - one global token from [sentence, image code, sentence * image code] (3E -> dim);
    - T word tokens from [word_t, c_t, word_t * c_t], c_t the region context word t attends to
      (DAMSM's attention, gamma1, from the fused op) (3E -> dim), plus 1-D sinusoidal positions;
    - H*W region tokens (E -> dim) plus 2-D sinusoidal positions;
    each with a learned type embedding. Feeding the word-context and sentence-image products is
    this project's reading of F_cat(varphi, varphi_bar, phi, phi_bar): with them the block learns
    the matching in a few hundred steps instead of having to discover every cross-modal product
    through attention. Then ``layers`` Transformer encoder layers (``heads`` heads, FFN ``ffn``,
    pre-norm, no dropout), a final LayerNorm, Linear(dim, 1) per token (W0 psi + b0) and the mean
    over the non-padded tokens.
    """

    def __init__(self, nef: int = 256, dim: int = 128, heads: int = 4, layers: int = 2, ffn: int = 256,
                 gamma1: float = reference.GAMMA1):
        super().__init__()
        if dim % 4 or dim % heads:
            raise ValueError(f"dim must be divisible by 4 and by heads, got dim={dim}, heads={heads}")
        self.nef, self.dim, self.gamma1 = nef, dim, gamma1
        self.global_proj = nn.Linear(3 * nef, dim)
        self.word_proj = nn.Linear(3 * nef, dim)
        self.region_proj = nn.Linear(nef, dim)
        self.type_embedding = nn.Embedding(3, dim)        # global, word, region
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, 1)                      # W0 psi + b0

    def _validate(self, regions, code, words, sentence, mask):
        e = self.nef
        check.tensor("regions", regions, 4, f"(B, E={e}, H, W)", floating=True)
        batch = regions.shape[0]
        check.size("regions", regions, 1, e, f"(B, {e}, H, W)", "E")
        for name, value, shape in (("code", code, f"(B, {e})"), ("sentence", sentence, f"(B, {e})")):
            check.tensor(name, value, 2, shape, floating=True)
            check.size(name, value, 0, batch, shape, "B of regions")
            check.size(name, value, 1, e, shape, "E")
        check.tensor("words", words, 3, f"(B, {e}, T)", floating=True)
        check.size("words", words, 0, batch, f"(B, {e}, T)", "B of regions")
        check.size("words", words, 1, e, f"(B, {e}, T)", "E")
        if mask.shape != (batch, words.shape[2]) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a (B, T) = ({batch}, {words.shape[2]}) bool tensor, got "
                             f"{check.describe(mask)}")
        if bool(mask.all(dim=1).any()):
            raise ValueError("mask: every caption needs at least one word (a row is all padding)")

    def forward(self, regions, code, words, sentence, mask) -> torch.Tensor:
        self._validate(regions, code, words, sentence, mask)
        batch, _, h, w = regions.shape
        t = words.shape[2]
        dev = regions.device
        unit = lambda x, dim: F.normalize(x.float(), dim=dim, eps=reference.damsm.COSINE_EPS)
        flat = unit(regions.flatten(2), 1)                                                # (B, E, R)
        words_n, sent_n, code_n = unit(words, 1), unit(sentence, 1), unit(code, 1)
        lens = (~mask).sum(dim=1)
        _, attn = ops.damsm_scores(flat, words_n, lens, self.gamma1, reference.GAMMA2, return_attn=True)
        attn = attn[torch.arange(batch, device=dev), torch.arange(batch, device=dev)]      # (B, T, R)
        context = unit(torch.einsum("btr,ber->bet", attn, flat), 1)                        # (B, E, T)
        word_feats = torch.cat([words_n, context, words_n * context], dim=1).transpose(1, 2)
        global_feats = torch.cat([sent_n, code_n, sent_n * code_n], dim=1)
        rows, cols = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        region_pos = torch.cat([_sinusoid(rows.flatten(), self.dim // 2),
                                _sinusoid(cols.flatten(), self.dim // 2)], dim=1)        # (R, dim)
        types = self.type_embedding.weight
        tokens = torch.cat([
            self.global_proj(global_feats)[:, None] + types[0],
            self.word_proj(word_feats) + types[1] + _sinusoid(torch.arange(t, device=dev), self.dim),
            self.region_proj(flat.transpose(1, 2)) + types[2] + region_pos,
        ], dim=1)                                                                          # (B, 1+T+R, dim)
        pad = torch.zeros(batch, tokens.shape[1], dtype=torch.bool, device=dev)
        pad[:, 1:1 + t] = mask
        hidden = self.norm(self.encoder(tokens, src_key_padding_mask=pad))
        per_token = self.out(hidden).squeeze(-1)                                           # (B, N)
        keep = (~pad).to(per_token.dtype)
        return (per_token * keep).sum(dim=1) / keep.sum(dim=1)                             # (B,)

    def score(self, regions, code, words, sentence, mask) -> torch.Tensor:
        """(B,) S_general in (0, 1)."""
        return torch.sigmoid(self.forward(regions, code, words, sentence, mask))


# ------------------------------------------------------------------ scores of matched pairs
def local_scores(regions, words, cap_lens, gamma1: float, gamma2: float) -> torch.Tensor:
    """(B,) S_local of pairs (image b, caption b): regions (B, E, H, W), words (B, E, T).

    The fused op scores all B x B pairs (cheap at evaluation batch sizes); the diagonal is kept.
    """
    scores = ops.damsm_scores(regions, words, cap_lens, gamma1, gamma2)                # (B, B)
    return torch.diagonal(scores) / gamma2


def global_scores(code, sentence) -> torch.Tensor:
    """(B,) S_global = cos(image code b, sentence b); code, sentence (B, E)."""
    return F.cosine_similarity(code.float(), sentence.float(), dim=1, eps=reference.damsm.COSINE_EPS)


def matching_scores(msb: MatchingScoreBlock, regions, code, words, sentence, cap_lens, mask,
                    gamma1: float, gamma2: float) -> dict:
    """The three levels and VLMS = their mean for matched pairs: dict of (B,) float32 tensors
    "local", "global", "general", "vlms"."""
    regions, code, words, sentence = (t.float() for t in (regions, code, words, sentence))
    local = local_scores(regions, words, cap_lens, gamma1, gamma2)
    glob = global_scores(code, sentence)
    general = msb.score(regions, code, words, sentence, mask).float()
    return {"local": local, "global": glob, "general": general, "vlms": (local + glob + general) / 3.0}


# ------------------------------------------------------------------ generator losses
def vlm_losses(msb, fake_regions, fake_code, words, sentence, cap_lens, mask, class_ids,
               gamma1: float, gamma2: float, gamma3: float) -> dict:
    """Text-visual matching losses of generated images (all scalars):
    local / global: DAMSM's batch cross-entropies (both directions) on the word / sentence scores
    of the fakes; general: BCE(S_general(fake, caption), 1)."""
    size = fake_code.shape[0]
    labels = torch.arange(size, device=fake_code.device)
    w0, w1, _ = ops.words_loss(fake_regions, words, labels, cap_lens, class_ids, size, gamma1, gamma2, gamma3)
    s0, s1 = ops.sent_loss(fake_code, sentence, labels, class_ids, size, gamma3=gamma3)
    logits = msb(fake_regions, fake_code, words, sentence, mask).float()
    general = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    return {"local": w0 + w1, "global": s0 + s1, "general": general}


def vvm_losses(msb, fake_regions, fake_code, real_regions, real_code, words, sentence, mask,
               class_ids, gamma1: float, gamma2: float, gamma3: float) -> dict:
    """Visual-visual matching losses between generated image b and real image b (all scalars):
    global: the batch cross-entropies of gamma3 * cos(fake code, real code) (``ops.sent_loss``
    with the real codes in the sentence slot); local: DAMSM's word-level losses with the real
    image's regions in the words slot (each real region attends over the fake's regions, fused
    op); general: BCE between the fake's and the real's S_general for the same caption (target:
    the real's score, no gradient to it)."""
    size = fake_code.shape[0]
    labels = torch.arange(size, device=fake_code.device)
    real_tokens = real_regions.flatten(2)                                              # (B, E, R)
    lens = torch.full((size,), real_tokens.shape[2], dtype=torch.long, device=fake_code.device)
    l0, l1, _ = ops.words_loss(fake_regions, real_tokens, labels, lens, class_ids, size, gamma1, gamma2, gamma3)
    g0, g1 = ops.sent_loss(fake_code, real_code, labels, class_ids, size, gamma3=gamma3)
    with torch.no_grad():
        target = msb.score(real_regions, real_code, words, sentence, mask).float()
    logits = msb(fake_regions, fake_code, words, sentence, mask).float()
    general = F.binary_cross_entropy_with_logits(logits, target)
    return {"local": l0 + l1, "global": g0 + g1, "general": general}


def mismatched_order(class_ids: torch.Tensor, generator: torch.Generator | None = None):
    """A random permutation ``order`` (B,) of the batch without fixed points and the (B,) bool mask
    of the pairs (b, order[b]) whose classes differ (the usable negatives). Draws from
    ``generator`` (default: the global RNG)."""
    size = class_ids.shape[0]
    cycle = torch.randperm(size, generator=generator)
    order = torch.empty_like(cycle)
    order[cycle] = cycle.roll(-1)            # one random cycle through the batch: no fixed points
    return order, class_ids != class_ids[order]


def build_matching_block(config: dict) -> MatchingScoreBlock:
    vlm = config["vlm"]
    return MatchingScoreBlock(config["model"]["embedding_dim"], vlm["dim"], vlm["heads"], vlm["layers"],
                              vlm["ffn"], config["damsm"]["gamma1"])
