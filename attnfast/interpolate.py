"""GAN-INT (Reed et al. 2016, Sec. 4.3): text conditions interpolated between two captions, for
training (beta = 0.5, :func:`paired_with_next`) and for drawing a path between two captions with
fixed noise (attnfast.generation.interpolation: ``python -m attnfast.sample --interpolate A B``,
``POST /v1/interpolate``). Only the math lives here (torch alone), so the trainer and the
generation core both import it.

What the generator gets at mixing weight beta in [0, 1] (0 = caption a, 1 = caption b):
- sentence: (1 - beta) * s_a + beta * s_b, the paper's interpolated embedding (feeds CA and stage 1);
- words (for the attention stages): the word features mixed position by position,
  ((1 - beta) * w_a[t] * valid_a[t] + beta * w_b[t] * valid_b[t]) / ((1 - beta) * valid_a[t] + beta * valid_b[t]),
  over the positions where a caption with non-zero weight has a word (a position only one caption
  fills keeps that caption's word). Why this and not "the first caption's words": the attention
  stages would otherwise draw caption a's details over an interpolated layout, and an interpolation
  path would jump at its midpoint; mixing word features keeps the path continuous and gives exactly
  caption a's (b's) words and mask at beta = 0 (1), so the endpoints equal plain sampling. The
  features are LSTM states in DAMSM's joint space (contextual, not one-hot), and the attention is a
  content-based softmax over them, so mixing them is as meaningful as mixing the sentence codes;
  for captions of different structure the mixed words are an approximation, as the sentence is.
"""
from __future__ import annotations

import torch


def interpolate_text(sent_a, words_a, mask_a, sent_b, words_b, mask_b, beta):
    """Interpolated generator conditions between captions a and b.

    Args:
        sent_a, sent_b: (B, E) sentence codes. words_a, words_b: (B, E, T) word features.
        mask_a, mask_b: (B, T) bool, True = padding. beta: a float or a (B,) tensor in [0, 1]
        (weight of b).
    Returns:
        sentence (B, E), words (B, E, T), mask (B, T) bool (see the module docstring); at beta 0
        they equal (sent_a, words_a masked, mask_a), at beta 1 the same for b.
    """
    if sent_a.shape != sent_b.shape or words_a.shape != words_b.shape or mask_a.shape != mask_b.shape:
        raise ValueError(f"captions a and b must have the same shapes: sentence {tuple(sent_a.shape)} vs "
                         f"{tuple(sent_b.shape)}, words {tuple(words_a.shape)} vs {tuple(words_b.shape)}, "
                         f"mask {tuple(mask_a.shape)} vs {tuple(mask_b.shape)}")
    beta = torch.as_tensor(beta, dtype=sent_a.dtype, device=sent_a.device)
    if beta.dim() == 0:
        beta = beta.expand(sent_a.shape[0])
    if beta.shape != (sent_a.shape[0],) or bool(((beta < 0) | (beta > 1)).any()):
        raise ValueError(f"beta must be a number or a (B,) = ({sent_a.shape[0]},) tensor in [0, 1], got "
                         f"{beta.tolist()}")
    sentence = torch.lerp(sent_a, sent_b, beta[:, None])
    weight_a = (1 - beta)[:, None] * (~mask_a).to(words_a.dtype)         # (B, T)
    weight_b = beta[:, None] * (~mask_b).to(words_b.dtype)
    total = weight_a + weight_b
    mask = total <= 0
    words = (weight_a[:, None] * words_a + weight_b[:, None] * words_b) / total.clamp(min=1e-12)[:, None]
    return sentence, words, mask


def paired_with_next(sentence, words, mask, beta: float = 0.5):
    """GAN-INT's training conditions: caption i mixed with caption i+1 of the batch (cyclic),
    (B, E), (B, E, T), (B, T) -> the same shapes (see :func:`interpolate_text`)."""
    return interpolate_text(sentence, words, mask, sentence.roll(-1, 0), words.roll(-1, 0),
                            mask.roll(-1, 0), beta)
