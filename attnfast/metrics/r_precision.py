"""R-precision (AttnGAN paper §5.1, as the AttnGAN/DM-GAN evaluation code computes it).

For every image (generated from its caption, or real), its true caption is ranked among
``candidates`` = 100 captions: the true one and 99 mismatching captions drawn at random (without
replacement). A hit is the true caption ranked in the top ``top_r`` = 1; R-precision is the
fraction of hits. This is repeated for ``runs`` = 10 independent draws and reported as mean and
standard deviation (population std, numpy's default, as the DM-GAN code).

Ranking score (``score=``):
- ``"word"`` (default, as issue 6 asks: "using the fused scores"): the DAMSM word-level score
  log sum_t exp(gamma2 * cos(c_t, e_t)) of :func:`attnfast.ops.damsm_scores` (the fused op).
- ``"sentence"``: cosine of the global image code and the sentence code, which is what the
  released AttnGAN/DM-GAN R-precision code ranks by (and what the paper describes).
- ``"both"``: the sum of the two DAMSM logits, gamma3 * (word + sentence); gamma3 does not change
  the ranking, so it is word + sentence.

Two protocols: by default each of the ``runs`` draws its own candidates for every image. With
``folds`` (the DM-GAN protocol: ``folds=10`` over 30,000 generated images) the candidates are drawn
once per image and the per-image hits are split into ``folds`` consecutive folds of N / folds
images; mean and std are over the folds. (The DM-GAN script averages
``R_count[i*3000:(i+1)*3000-1]``, dropping the last image of each fold; here every image counts.)
Mismatching captions are any caption other than the true one, or, given ``caption_classes``,
captions of another class (the DM-GAN script draws from other classes; pass class ids to reproduce
that). Ties between the true caption and a mismatch count for the true caption, as the script's
``argmax == 0`` does.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from attnfast.ops import damsm_scores
from attnfast.reference.damsm import COSINE_EPS, GAMMA1, GAMMA2

SCORES = ("word", "sentence", "both")
STRATEGIES = ("auto", "matrix", "per_image")


def _flat_regions(regions: torch.Tensor) -> torch.Tensor:
    if regions.dim() == 4:
        return regions.flatten(2)                                         # (N, D, H*W)
    if regions.dim() != 3:
        raise ValueError(f"regions must be (N, D, R) or (N, D, H, W), got shape {tuple(regions.shape)}")
    return regions


def _classes(name: str, value, size: int) -> torch.Tensor | None:
    if value is None:
        return None
    value = torch.as_tensor(value).reshape(-1).cpu()
    if value.shape[0] != size:
        raise ValueError(f"{name} must have {size} entries, got {value.shape[0]}")
    return value


def _check_inputs(regions, codes, words, sentences, cap_lens, score):
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    uses_word, uses_sentence = score in ("word", "both"), score in ("sentence", "both")
    if uses_word and (regions is None or words is None or cap_lens is None):
        raise ValueError(f"score={score!r} needs regions, words and cap_lens")
    if uses_sentence and (codes is None or sentences is None):
        raise ValueError(f"score={score!r} needs codes and sentences")
    n_img = (regions if regions is not None else codes).shape[0]
    n_cap = (words if words is not None else sentences).shape[0]
    return n_img, n_cap, uses_word, uses_sentence


def draw_candidates(true_caption: torch.Tensor, n_captions: int, candidates: int,
                    generator: torch.Generator, caption_classes: torch.Tensor | None = None,
                    image_classes: torch.Tensor | None = None, chunk: int = 256) -> torch.Tensor:
    """(N, candidates) caption indices per image: column 0 the true caption, then mismatches drawn
    uniformly without replacement (a different caption; of a different class when classes are
    given). Raises ValueError when an image has fewer than candidates - 1 mismatches."""
    rows = []
    for start in range(0, true_caption.shape[0], chunk):
        true = true_caption[start:start + chunk]
        eligible = torch.ones(true.shape[0], n_captions, dtype=torch.bool)
        eligible[torch.arange(true.shape[0]), true] = False
        if caption_classes is not None:
            eligible &= caption_classes[None, :] != image_classes[start:start + chunk, None]
        available = eligible.sum(1)
        if int(available.min()) < candidates - 1:
            raise ValueError(f"R-precision with {candidates} candidates needs {candidates - 1} "
                             f"mismatching captions per image; image {start + int(available.argmin())} "
                             f"has {int(available.min())} (captions: {n_captions})")
        drawn = torch.multinomial(eligible.float(), candidates - 1, replacement=False,
                                  generator=generator)
        rows.append(torch.cat([true[:, None], drawn], 1))
    return torch.cat(rows)


def _sentence_scores(codes, sentences, cand):
    """Cosine of codes[n] and sentences[cand[n, c]] with the original's eps clamp: (G, C)."""
    img = codes.float()
    sent = sentences.float()[cand]                                        # (G, C, D)
    dots = torch.einsum("gd,gcd->gc", img, sent)
    norms = img.norm(dim=1)[:, None] * sent.norm(dim=2)
    return dots / norms.clamp(min=COSINE_EPS)


class _WordScores:
    """Word-level DAMSM scores of (image, caption) pairs through the fused op, either from the full
    (N, M) matrix computed once (``matrix``) or per image against its candidates (``per_image``)."""

    def __init__(self, regions, words, cap_lens, gamma1, gamma2, backend, strategy, batch_size,
                 runs, candidates):
        self.regions, self.words = regions, words
        self.lens = torch.as_tensor(cap_lens, device=words.device).long()
        self.kwargs = {"gamma1": gamma1, "gamma2": gamma2, "backend": backend}
        if strategy == "auto":
            # The matrix scores N*M pairs once; the per-image path N*runs*candidates pairs in
            # N*runs calls. On a GPU those calls cost more in launches and syncs than the pairs.
            factor = 8 if words.is_cuda else 1
            strategy = "matrix" if words.shape[0] <= factor * runs * candidates else "per_image"
        self.matrix = self._matrix(batch_size) if strategy == "matrix" else None

    @torch.no_grad()
    def _matrix(self, batch_size):
        return torch.cat([damsm_scores(self.regions[s:s + batch_size], self.words, self.lens,
                                       **self.kwargs).float()
                          for s in range(0, self.regions.shape[0], batch_size)])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        if self.matrix is not None:
            device = self.matrix.device
            return self.matrix[images.to(device)[:, None], cand.to(device)]
        cand = cand.to(self.words.device)
        return torch.cat([damsm_scores(self.regions[n:n + 1], self.words[c], self.lens[c],
                                       **self.kwargs).float()
                          for n, c in zip(images.tolist(), cand, strict=True)])


@torch.no_grad()
def r_precision_from_features(regions, codes, words, sentences, cap_lens, *, true_caption=None,
                              caption_classes=None, image_classes=None, score: str = "word",
                              candidates: int = 100, runs: int = 10, top_r: int = 1, seed: int = 0,
                              gamma1: float = GAMMA1, gamma2: float = GAMMA2, backend=None,
                              strategy: str = "auto", batch_size: int = 64,
                              folds: int | None = None) -> dict:
    """R-precision from DAMSM features.

    Args:
        regions: (N, D, R) or (N, D, H, W) image region features (for ``score`` word/both).
        codes: (N, D) global image codes (for sentence/both); either may be None when unused.
        words: (M, D, T) word features of the captions, zero past cap_lens (word/both).
        sentences: (M, D) sentence codes (sentence/both).
        cap_lens: (M,) caption lengths in [1, T].
        true_caption: (N,) index of each image's caption in [0, M); default arange(N).
        caption_classes / image_classes: (M,) / (N,) class ids; mismatching captions are then drawn
            from other classes only. image_classes defaults to caption_classes[true_caption].
        score: "word" | "sentence" | "both" (see the module docstring).
        candidates, runs, top_r, seed: the protocol (100, 10, 1); run k draws with seed + k.
        gamma1, gamma2: DAMSM's attention and LogSumExp factors; backend: of the fused op.
        strategy: "matrix" (all N x M word scores once), "per_image" (one fused call per image and
            run), "auto" (matrix while M <= runs * candidates, 8x that on CUDA).
        folds: the DM-GAN protocol (see the module docstring): one draw (``runs`` must be 1),
            mean and std over ``folds`` folds of the images. None: ``runs`` independent draws.
    Returns:
        a JSON-serialisable dict: mean, std, runs (the per-run values, or per-fold with
        ``folds``), protocol ("runs" or "folds"), score, candidates, top_r, images.
    """
    n_img, n_cap, uses_word, uses_sentence = _check_inputs(regions, codes, words, sentences,
                                                           cap_lens, score)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not 1 <= top_r <= candidates or candidates < 2 or runs < 1:
        raise ValueError(f"need candidates >= 2, 1 <= top_r <= candidates, runs >= 1; got "
                         f"candidates={candidates}, top_r={top_r}, runs={runs}")
    if folds is not None and (runs != 1 or not 1 <= folds <= n_img):
        raise ValueError(f"folds (the DM-GAN protocol) draws once: needs runs=1 and 1 <= folds <= "
                         f"images ({n_img}); got runs={runs}, folds={folds}")
    true_caption = (torch.arange(n_img) if true_caption is None
                    else torch.as_tensor(true_caption).reshape(-1).long().cpu())
    if true_caption.shape[0] != n_img or int(true_caption.min()) < 0 or int(true_caption.max()) >= n_cap:
        raise ValueError(f"true_caption must hold {n_img} indices in [0, {n_cap}); pass it when "
                         f"images and captions are not paired one to one")
    caption_classes = _classes("caption_classes", caption_classes, n_cap)
    image_classes = _classes("image_classes", image_classes, n_img)
    if caption_classes is not None and image_classes is None:
        image_classes = caption_classes[true_caption]
    word_scores = (_WordScores(_flat_regions(regions), words, cap_lens, gamma1, gamma2, backend,
                               strategy, batch_size, runs, candidates) if uses_word else None)
    images = torch.arange(n_img)
    results = []
    for run in range(runs):
        generator = torch.Generator().manual_seed(int(seed) + run)
        cand = draw_candidates(true_caption, n_cap, candidates, generator, caption_classes,
                               image_classes)
        hits = []                                                         # (N,) per image
        for s in range(0, n_img, batch_size):
            img, c = images[s:s + batch_size], cand[s:s + batch_size]
            total = torch.zeros(c.shape, dtype=torch.float32)
            if uses_word:
                total += word_scores(img, c).cpu()
            if uses_sentence:
                total += _sentence_scores(codes[img.to(codes.device)],
                                          sentences, c.to(sentences.device)).cpu()
            rank = (total[:, 1:] > total[:, :1]).sum(1)                   # ties go to the truth
            hits.append((rank < top_r).double())
        hits = torch.cat(hits)
        results += ([float(f.mean()) for f in hits.tensor_split(folds)] if folds
                    else [float(hits.mean())])
    return {"mean": float(np.mean(results)), "std": float(np.std(results)), "runs": results,
            "protocol": "folds" if folds else "runs", "score": score, "candidates": candidates,
            "top_r": top_r, "images": n_img}


@contextlib.contextmanager
def _eval_mode(*modules):
    states = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, state in zip(modules, states, strict=True):
            m.train(state)


@torch.no_grad()
def encode(image_encoder, text_encoder, images, captions, cap_lens, *, batch_size: int = 50,
           device=None):
    """DAMSM features of images (N, 3, H, W) and captions (M, T) token ids with lengths (M,):
    regions (N, D, R), codes (N, D), words (M, D, T) (zero-padded to T), sentences (M, D), on
    ``device`` (default: the image encoder's). Encoders run in eval mode, restored afterwards."""
    device = torch.device(device) if device is not None else next(image_encoder.parameters()).device
    cap_lens = torch.as_tensor(cap_lens).long()
    num_words = captions.shape[1]
    regions, codes, words, sentences = [], [], [], []
    with _eval_mode(image_encoder, text_encoder):
        for s in range(0, images.shape[0], batch_size):
            r, c = image_encoder(images[s:s + batch_size].to(device))
            regions.append(r.flatten(2).float())
            codes.append(c.float())
        for s in range(0, captions.shape[0], batch_size):
            caps, lens = captions[s:s + batch_size].to(device), cap_lens[s:s + batch_size]
            hidden = text_encoder.init_hidden(caps.shape[0]) if hasattr(text_encoder, "init_hidden") else None
            w, sent = text_encoder(caps, lens, hidden)
            w = torch.nn.functional.pad(w.float(), (0, num_words - w.shape[2]))  # (B, D, T)
            words.append(w)
            sentences.append(sent.float())
    return torch.cat(regions), torch.cat(codes), torch.cat(words), torch.cat(sentences)


def r_precision(image_encoder, text_encoder, images, captions, cap_lens, *, batch_size: int = 50,
                device=None, candidates: int = 100, runs: int = 10, seed: int = 0, **kwargs) -> dict:
    """R-precision of images (N, 3, H, W) (generated from, or paired with, captions (M, T) token ids,
    cap_lens (M,)) with DAMSM encoders (``image_encoder(x) -> (regions, code)``,
    ``text_encoder(captions, cap_lens, hidden) -> (words, sentence)``, as AttnGAN's). Further
    keyword arguments go to :func:`r_precision_from_features` (score, true_caption, classes,
    gammas, top_r, backend, strategy)."""
    regions, codes, words, sentences = encode(image_encoder, text_encoder, images, captions,
                                              cap_lens, batch_size=batch_size, device=device)
    lens = torch.as_tensor(cap_lens).long().to(words.device)
    return r_precision_from_features(regions, codes, words, sentences, lens, candidates=candidates,
                                     runs=runs, seed=seed, **kwargs)
