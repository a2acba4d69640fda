"""GAN-INT (Reed et al. 2016, Sec. 4.3): text conditions interpolated between two captions, for
training (beta = 0.5, :func:`interpolate_text`) and for drawing a path between two captions with
fixed noise (:func:`interpolation_strip`, ``python -m attnfast.sample --interpolate A B``).

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


@torch.no_grad()
def interpolation_images(netG, text_encoder, captions, cap_lens, words_num: int, steps: int,
                         noise: torch.Tensor, eps: torch.Tensor, amp: str = "off") -> torch.Tensor:
    """Images along the path from caption 0 to caption 1 with one fixed noise.

    captions (2, words_num) ids, cap_lens (2,), noise (1, z_dim), eps (1, ncf) (the CA noise).
    Returns (steps, 3, S, S) float images of the last stage, beta = linspace(0, 1, steps).
    """
    from attnfast.engine.amp import autocast
    from attnfast.trainer.common import encode_text
    if steps < 2:
        raise ValueError(f"--steps must be >= 2, got {steps}")
    device = noise.device
    captions = captions.to(device)
    words, sentence = encode_text(text_encoder, captions, cap_lens, words_num)
    words, sentence, mask = words.float(), sentence.float(), captions == 0
    beta = torch.linspace(0, 1, steps, device=device)
    pick = lambda t, i: t[i:i + 1].expand(steps, *t.shape[1:])
    sent, wrd, msk = interpolate_text(pick(sentence, 0), pick(words, 0), pick(mask, 0),
                                      pick(sentence, 1), pick(words, 1), pick(mask, 1), beta)
    with autocast(amp, device):
        fakes, _, _, _ = netG(noise.expand(steps, -1), sent, wrd, msk, eps=eps.expand(steps, -1))
    return fakes[-1].float()


def interpolation_strip(checkpoint, caption_a: str, caption_b: str, out_path, steps: int = 8,
                        seed: int = 0, device: torch.device | None = None, amp: str = "off") -> dict:
    """Write the strip PNG (one row of ``steps`` images, beta under each) to ``out_path``."""
    from attnfast.data.grid import save_image_grid
    from attnfast.sample import encode_captions, fixed_noise, load_generator
    device = device or torch.device("cpu")
    netG, text_encoder, vocab, config = load_generator(checkpoint, device)
    words_num = config["dataset"]["words_num"]
    ids, lens, _ = encode_captions([caption_a, caption_b], vocab, words_num)
    noise, eps = fixed_noise(config, 1, seed)
    images = interpolation_images(netG, text_encoder, ids, lens, words_num, steps, noise.to(device),
                                  eps.to(device), amp)
    labels = [f"beta={b:.2f}" for b in torch.linspace(0, 1, steps).tolist()]
    labels[0], labels[-1] = f"{caption_a} (beta=0)", f"{caption_b} (beta=1)"
    save_image_grid(images.cpu(), out_path, ncol=steps, captions=labels)
    return {"images": steps, "out": str(out_path), "caption_a": caption_a, "caption_b": caption_b}
