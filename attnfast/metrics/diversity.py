"""Diversity of a generator on the shapes dataset (issue 20): how varied its samples of one caption are,
relative to how varied the real images of that caption are.

For each of K captions, n generated samples (image j = k * n + i of caption k drawn with seed
``seed + j``, as ``python -m attnfast.sample --n`` draws them) and n real renderings of the scene the
caption describes (:func:`attnfast.data.shapes.scene_for_caption`, rng ``default_rng([seed, k])``):

- features: the fixed attribute classifier's (:mod:`attnfast.metrics.shapes_accuracy`) convolutional
  features of every cell crop, ``features(crops).flatten(1)``, concatenated over the grid's cells in
  row-major order: (grid² * 4w * 6 * 6,) per image. Concatenated, not averaged, so that the vector
  keeps where things are (an average over cells would let a shape moving between cells cancel out).
- distance: Euclidean (L2) between feature vectors, averaged over the n(n-1)/2 pairs of a caption's
  samples, then over captions. L2 rather than cosine: it is a metric, zero only for identical
  features, and it keeps the features' magnitude, which carries contrast and brightness (cosine
  would call a dim and a bright copy of one image the same); the feature scale cancels in the ratio.
- ``ratio`` = mean generated distance / mean real distance: 1.0 as varied as the data, 0 one
  image per caption; above 1, samples vary more than the data does (e.g. noise or wrong content).

What varies among real renderings: the renderer has no jitter (a caption fixes every object's shape,
colour, size and cell, drawn at exact positions and shades), so only the background varies, and only
for captions that name none: it is drawn from the data's own distribution given the objects' colours
(:func:`attnfast.data.shapes.background_weights`). A caption naming its background has identical
real renderings (distance 0); it still counts in both means. ``ratio`` is None when every caption's
real renderings are identical (real mean 0).
"""
from __future__ import annotations

import numpy as np
import torch

from attnfast.data import ShapesDataset
from attnfast.data.shapes import render_scene, scene_for_caption, to_tensor
from attnfast.generation import encode_captions, generate, seeded_noise
from .shapes_accuracy import CellClassifier, cell_crops

DEFAULT_CAPTIONS = 50
DEFAULT_N = 8


def check_sets(captions: int, n: int) -> None:
    """ValueError unless there is at least one caption and n >= 2 samples of each."""
    if captions < 1:
        raise ValueError("diversity needs at least one caption")
    if n < 2:
        raise ValueError(f"diversity needs n >= 2 samples per caption (pairs to compare), got n={n}")


@torch.no_grad()
def image_features(classifier: CellClassifier, images: torch.Tensor, grid: int,
                   batch_size: int = 256) -> torch.Tensor:
    """images (N, 3, H, W) in [-1, 1] -> float32 (N, grid² * F): the classifier's features of each cell
    crop (F = 4w * 6 * 6), concatenated over the cells in row-major order."""
    parts = [classifier.features(cell_crops(images[k:k + batch_size].float(), grid)).flatten(1)
             for k in range(0, images.shape[0], batch_size)]                 # (B * grid², F) each
    return torch.cat(parts).reshape(images.shape[0], -1).float()


def mean_pairwise_distance(features: torch.Tensor) -> torch.Tensor:
    """features (K, n, F) -> (K,) float64: per caption, the mean L2 distance over its n(n-1)/2 pairs."""
    if features.dim() != 3:
        raise ValueError(f"features must be (captions, n, F), got shape {tuple(features.shape)}")
    check_sets(features.shape[0], features.shape[1])
    x = features.double()
    # (K, n, n); not the matmul form, whose rounding leaves equal rows a small non-zero distance
    distances = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    rows, cols = torch.triu_indices(x.shape[1], x.shape[1], offset=1)
    return distances[:, rows, cols].mean(1)


def diversity_from_features(generated: torch.Tensor, real: torch.Tensor) -> dict:
    """generated, real (K, n, F) features -> ``ratio`` (generated / real mean distance; None when the
    real mean is 0), the raw means ``generated`` and ``real``, ``captions`` K and ``n``."""
    if generated.shape != real.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and real {tuple(real.shape)} features "
                         "must have one shape (captions, n, F)")
    fake_mean = mean_pairwise_distance(generated).mean().item()
    real_mean = mean_pairwise_distance(real).mean().item()
    return {"ratio": fake_mean / real_mean if real_mean > 0 else None, "generated": fake_mean,
            "real": real_mean, "captions": int(generated.shape[0]), "n": int(generated.shape[1])}


def diversity(classifier: CellClassifier, generated: torch.Tensor, real: torch.Tensor, grid: int) -> dict:
    """generated (K, n, 3, H, W) and real (K, n, 3, H', W') image sets in [-1, 1] -> the dict of
    :func:`diversity_from_features` (distance "l2", features "classifier cells")."""
    for name, images in (("generated", generated), ("real", real)):
        if images.dim() != 5:
            raise ValueError(f"{name} images must be (captions, n, 3, H, W), got shape {tuple(images.shape)}")
    check_sets(generated.shape[0], generated.shape[1])
    features = [image_features(classifier, images.flatten(0, 1), grid).view(*images.shape[:2], -1)
                for images in (generated, real)]
    return {**diversity_from_features(*features), "distance": "l2", "features": "classifier cells"}


def real_image_sets(captions: list[str], n: int, grid: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """float32 (K, n, 3, R, R) in [-1, 1]: n real renderings of each caption's scene, caption k's drawn
    with ``np.random.default_rng([seed, k])`` (so deterministic, and the same for any K)."""
    check_sets(len(captions), n)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    sets = []
    for k, text in enumerate(captions):
        rng = np.random.default_rng([seed, k])
        sets.append(torch.stack([to_tensor(render_scene(scene_for_caption(text, rng, resolution, grid)))
                                 for _ in range(n)]))
    return torch.stack(sets)


@torch.no_grad()
def generated_image_sets(netG, text_encoder, ids: torch.Tensor, lens: torch.Tensor, n: int, words_num: int,
                         z_dim: int, seed: int = 0, batch: int = 50,
                         device: torch.device | None = None) -> torch.Tensor:
    """float32 (K, n, 3, S, S) in [-1, 1] on the CPU: n samples of each of the K encoded captions (ids
    (K, words_num) long, lens (K,) long); sample i of caption k is image j = k * n + i, drawn with seed
    ``seed + j`` (attnfast.generation.seeded_noise: z and the CA noise)."""
    check_sets(ids.shape[0], n)
    device = device or torch.device("cpu")
    count = ids.shape[0] * n
    images = []
    for start in range(0, count, batch):
        rows = torch.arange(start, min(start + batch, count)) // n
        noise, eps = seeded_noise(range(seed + start, seed + start + rows.numel()), z_dim, netG.ncf)
        fakes, _ = generate(netG, text_encoder, ids[rows], lens[rows], noise.to(device), words_num,
                            eps=eps.to(device))
        images.append(fakes[-1].float().cpu())
    images = torch.cat(images)
    return images.view(ids.shape[0], n, *images.shape[1:])


def shapes_test_captions(config: dict, count: int) -> list[str]:
    """Caption 0 of the first ``count`` scenes of the shapes test split of ``config`` (the captions
    the shapes evaluation generates from)."""
    data = config["dataset"]
    dataset = ShapesDataset(count, seed=data["seed"], split="test",
                            captions_per_image=data["captions_per_image"], words_num=data["words_num"],
                            max_objects=data["max_objects"], grid=data["grid"])
    return [dataset.get_scene(i).captions[0] for i in range(count)]


def evaluate_diversity(models, classifier: CellClassifier, captions: list[str], n: int = DEFAULT_N,
                       seed: int = 0, batch: int = 50, device: torch.device | None = None) -> dict:
    """The diversity of a generator on ``captions`` (see the module docstring).

    models: (netG, text_encoder, vocab, config) as attnfast.generation.load_generator returns them
    (config: ``dataset.{words_num, grid}``, ``model.z_dim``). Returns :func:`diversity`'s dict plus
    ``seed`` and ``resolution``.
    """
    netG, text_encoder, vocab, config = models
    check_sets(len(captions), n)
    words_num, grid = config["dataset"]["words_num"], config["dataset"]["grid"]
    ids, lens, _, _ = encode_captions(captions, vocab, words_num, warn=False)
    fakes = generated_image_sets(netG, text_encoder, ids, lens, n, words_num, config["model"]["z_dim"],
                                 seed, batch, device)
    real = real_image_sets(captions, n, grid, fakes.shape[-1], seed)
    return {**diversity(classifier, fakes, real, grid), "seed": seed, "resolution": int(fakes.shape[-1])}
