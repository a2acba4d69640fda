"""VLMS, VLMGAN's vision-language matching score, as an evaluation metric.

For an (image, caption) pair, with the DAMSM encoders and the pretrained matching-score block
(attnfast/models/vlmgan.py):
    VLMS(I, T) = (S_local(I, T) + S_global(I, T) + S_general(I, T)) / 3
S_local = (1/gamma2) log sum_t exp(gamma2 cos(c_t, e_t)) (word-region, fused DAMSM op), S_global =
cos(image code, sentence code), S_general = sigmoid(F_MSB(...)) in (0, 1). Reported: the mean over
the evaluated pairs of VLMS and of each level, for the true pairs and, as the chance reference, for
shuffled pairs (each image with the caption of another image of another class, fixed seed).
Higher is better; the gap true - shuffled says how much of the score the text explains. The seed
notes give the three levels but not how VLMS combines them: the plain mean is this project's choice.
"""
from __future__ import annotations

import torch

from attnfast.models.text_encoding import encode_text
from attnfast.models.vlmgan import matching_scores, mismatched_order

LEVELS = ("vlms", "local", "global", "general")


@torch.no_grad()
def vlms_scores(msb, image_encoder, text_encoder, images, captions, cap_lens, words_num: int,
                batch_size: int = 50, device: torch.device | None = None, gamma1: float = 4.0,
                gamma2: float = 5.0, order: torch.Tensor | None = None) -> dict:
    """Per-pair scores: images (N, 3, S, S) in [-1, 1], captions (N, words_num) ids, cap_lens (N,);
    image n is paired with caption ``order[n]`` (default n). Returns a dict of (N,) float32 CPU
    tensors for each of :data:`LEVELS`."""
    device = device or torch.device("cpu")
    count = images.shape[0]
    if captions.shape[0] != count or cap_lens.shape[0] != count:
        raise ValueError(f"images, captions and cap_lens must hold the same N, got {count}, "
                         f"{captions.shape[0]}, {cap_lens.shape[0]}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.arange(count) if order is None else order
    parts = {level: [] for level in LEVELS}
    for start in range(0, count, batch_size):
        rows = order[start:start + batch_size]
        caps = captions[rows].to(device)
        regions, code = image_encoder(images[start:start + batch_size].to(device))
        words, sentence = encode_text(text_encoder, caps, cap_lens[rows], words_num)
        scores = matching_scores(msb, regions, code, words, sentence, cap_lens[rows].to(device), caps == 0,
                                 gamma1, gamma2)
        for level in LEVELS:
            parts[level].append(scores[level].cpu())
    return {level: torch.cat(values) for level, values in parts.items()}


def vlms(msb, image_encoder, text_encoder, images, captions, cap_lens, class_ids, words_num: int,
         batch_size: int = 50, device: torch.device | None = None, gamma1: float = 4.0,
         gamma2: float = 5.0, seed: int = 0) -> dict:
    """The metric: {"true": {level: mean}, "shuffled": {level: mean}, "gap": VLMS true - shuffled,
    "pairs": N, "shuffled_pairs": the usable mismatched pairs (different classes)}."""
    class_ids = torch.as_tensor(class_ids)
    args = (msb, image_encoder, text_encoder, images, captions, cap_lens, words_num, batch_size, device,
            gamma1, gamma2)
    true = vlms_scores(*args)
    order, usable = mismatched_order(class_ids, torch.Generator().manual_seed(seed))
    if not bool(usable.any()):
        raise ValueError("VLMS needs images of at least two classes for the shuffled reference")
    shuffled = vlms_scores(*args, order=order)
    result = {"true": {k: float(v.mean()) for k, v in true.items()},
              "shuffled": {k: float(v[usable].mean()) for k, v in shuffled.items()},
              "pairs": int(images.shape[0]), "shuffled_pairs": int(usable.sum())}
    result["gap"] = result["true"]["vlms"] - result["shuffled"]["vlms"]
    return result
