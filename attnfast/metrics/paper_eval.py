"""The AttnGAN paper's table for a generator over a test set's captions: Inception Score and
R-precision (the DM-GAN protocol), and FID when real images are given, in one streaming pass.

N images (30,000 in DM-GAN) are generated from the test captions; every batch goes through the
DAMSM image encoder (global codes kept for R-precision; region features only for the word score)
and the Inception network (IS / FID statistics), and is optionally written as PNGs; the images
themselves are never all held (30,000 at 256x256 in float32 would be 23 GB).

Captions: generated image k uses test item k mod R (R items) and that item's caption
(k // R) mod (its caption count), so every test caption is used once before any is used twice
(DM-GAN draws a random caption per item on each pass over the test set until it has 30,000).
R-precision ranks each image's own caption among 99 mismatching captions of other classes drawn
from the captions of the generated set (DM-GAN draws them from the test captions: with 30,000
images over CUB's 29,330 test captions these are the same pool).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from attnfast.data.attngan_text import caption_tensor
from attnfast.data.grid import to_uint8_images
from attnfast.engine.progress import progress_bar
from attnfast.generation import generate
from attnfast.models.text_encoding import encode_text
from attnfast.reference.damsm import GAMMA1, GAMMA2
from attnfast.viz import save_png
from .r_precision import r_precision_from_features

__all__ = ["caption_schedule", "evaluate_generator"]


def caption_schedule(caption_counts, n_images: int) -> list[tuple[int, int]]:
    """(item, caption index) of generated image k for k < n_images (see the module docstring)."""
    counts = list(caption_counts)
    if not counts or min(counts) < 1:
        raise ValueError("every test item needs at least one caption")
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    items = len(counts)
    return [(k % items, (k // items) % counts[k % items]) for k in range(n_images)]


@torch.no_grad()
def evaluate_generator(netG, text_encoder, image_encoder, captions, class_ids, *, n_images: int = 30000,
                       words_num: int = 18, batch_size: int = 50, device=None, seed: int = 0,
                       inception=None, score: str = "sentence", candidates: int = 100,
                       folds: int = 10, gamma1: float = GAMMA1, gamma2: float = GAMMA2,
                       backend=None, save_dir=None, progress: bool = True) -> dict:
    """IS, FID and R-precision of ``netG`` on a test set's captions.

    Args:
        netG: a ``G_NET`` (eval mode); text_encoder: ``RNN_ENCODER``; image_encoder: the DAMSM
            ``CNN_ENCODER`` (images in [-1, 1] -> (regions, code)).
        captions: per test item, its captions as lists of word ids (the text encoder's vocabulary).
        class_ids: per test item, its class id (mismatching captions come from other classes).
        n_images: images to generate; words_num: WORDS_NUM (longer captions keep a random subset
            of their words in order, as the original).
        inception: an :class:`~attnfast.metrics.inception_metrics.InceptionMetrics` (None: no
            IS / FID); its real images, if any, must already be added for FID.
        score, candidates, folds, gamma1, gamma2, backend: R-precision (see r_precision.py);
            "sentence" is the paper's ranking (cosine of the global codes).
        save_dir: also write every generated image there as ``{k:05d}.png``.
    Returns:
        {"r_precision": {...}, "inception_score": {...}, "fid": {...}, "images": n_images,
        "captions_used": distinct captions} (IS / FID only with ``inception``).
    """
    device = torch.device(device) if device is not None else next(netG.parameters()).device
    if len(captions) != len(class_ids):
        raise ValueError(f"captions ({len(captions)} items) and class_ids ({len(class_ids)}) differ")
    schedule = caption_schedule([len(c) for c in captions], n_images)
    keep_words = score in ("word", "both")
    noise_rng = torch.Generator().manual_seed(seed)                     # drawn up front: the images
    noise = torch.randn(n_images, netG.z_dim, generator=noise_rng)      # do not depend on batch_size
    ca_noise = torch.randn(n_images, netG.ncf, generator=noise_rng)
    drop_rng = np.random.default_rng(seed)
    codes, regions, words, sentences, lens, classes = [], [], [], [], [], []
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    batches = progress_bar(range(0, n_images, batch_size), desc="generate", unit="batch", disable=not progress)
    for start in batches:
        chunk = schedule[start:start + batch_size]
        pairs = [caption_tensor(captions[i][c], words_num, drop_rng) for i, c in chunk]
        caps = torch.stack([p[0] for p in pairs]).to(device)             # (B, words_num)
        cap_lens = torch.tensor([p[1] for p in pairs])
        z, eps = (n[start:start + len(chunk)].to(device) for n in (noise, ca_noise))
        fake = generate(netG, text_encoder, caps, cap_lens, z, words_num, eps=eps)[0][-1]  # (B, 3, S, S)
        word_feats, sent = encode_text(text_encoder, caps, cap_lens, words_num)
        region_feats, code = image_encoder(fake)
        codes.append(code.float())
        sentences.append(sent.float())
        if keep_words:
            regions.append(region_feats.flatten(2).float())               # (B, D, R)
            words.append(word_feats.float())                              # (B, D, words_num)
        lens.append(cap_lens)
        classes += [int(class_ids[i]) for i, _ in chunk]
        if inception is not None:
            inception.update(fake, value_range=(-1.0, 1.0))
        if save_dir is not None:
            for k, image in enumerate(to_uint8_images(fake.cpu()), start=start):
                save_png(image, Path(save_dir) / f"{k:05d}.png")
    cap_lens = torch.cat(lens).to(device)
    result = {"r_precision": r_precision_from_features(
        torch.cat(regions) if keep_words else None, torch.cat(codes),
        torch.cat(words) if keep_words else None, torch.cat(sentences), cap_lens,
        caption_classes=torch.tensor(classes), score=score, candidates=candidates, runs=1,
        folds=folds, seed=seed, gamma1=gamma1, gamma2=gamma2, backend=backend,
        batch_size=batch_size)}
    if inception is not None:
        result.update(inception.compute(seed))
    result["images"] = n_images
    result["captions_used"] = len(set(schedule))
    return result
