"""Attention grounding on the shapes dataset: the pointing game.

Two forms:

* :func:`pointing_game` (the original metric of ``eval.json``'s ``pointing_game``): for each word of
  a caption that names an object's shape or colour, the peak of that word's attention map must fall
  inside the ground-truth mask of the object(s) it names, the mask re-rendered at the map's side.
* :func:`pointing_by_class`: the same game per word class (colour, shape, size, position), each
  word scored on the object the caption's grammar gives it
  (:func:`attnfast.data.shapes.caption_word_objects`), and a region of the map counting as the
  object's when the object covers at least ``coverage`` of it. Chance is the mean fraction of such
  regions over the same trials (a uniformly random peak).

:func:`damsm_word_attention` gives the DAMSM's own word->region attention (the softmax over regions
that ``words_loss`` computes, with gamma1), so that the encoder the generator is trained against
can be measured by the same game.
"""
import numpy as np
import torch

from attnfast.data import WORD_CLASSES, caption_word_objects, object_mask_for_word
from attnfast.data.shapes_layout import region_coverage
from attnfast.reference.attention_grounding import region_attention
from attnfast.reference.damsm import matched_attention

DEFAULT_COVERAGE = 0.5


def pointing_game(attn: torch.Tensor, words: list[list[str]], scenes: list) -> dict:
    """attn (N, T, h, w) word attention of one stage; words[i] the caption's T_i tokens (in order,
    aligned with attn[i, :T_i]); scenes[i] its ground truth. Returns hits / trials and the chance
    rate (mean mask area) for the same trials."""
    hits, trials, chance = 0, 0, 0.0
    side = attn.shape[-1]
    for i, (tokens, scene) in enumerate(zip(words, scenes, strict=True)):
        for t, word in enumerate(tokens[:attn.shape[1]]):
            mask = object_mask_for_word(scene, word, resolution=side)
            if not mask.any():
                continue
            peak = int(attn[i, t].reshape(-1).float().argmax())
            hits += bool(mask.reshape(-1)[peak])
            trials += 1
            chance += float(mask.mean())
    return {"pointing_accuracy": hits / trials if trials else float("nan"),
            "chance": chance / trials if trials else float("nan"), "trials": trials}


def region_mask(scene, objects: tuple[int, ...], height: int, width: int,
                coverage: float = DEFAULT_COVERAGE) -> np.ndarray:
    """bool (height, width): the regions of a height x width grid over the image that the union of
    ``scene.objects[k]`` for k in ``objects`` covers by at least ``coverage`` (a fraction in (0, 1])."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    return region_coverage(scene, objects, height, width) >= coverage - 1e-6


def pointing_by_class(maps, words: list[list[str]], scenes: list,
                      coverage: float = DEFAULT_COVERAGE) -> dict:
    """The pointing game per word class.

    maps: per caption i, its attention (T_i', h, w) (a tensor (N, T, h, w) works too), row t the map
    of token t; words[i] the caption's tokens, aligned with maps[i]; scenes[i] its ground truth.
    Returns ``{class: {pointing_accuracy, chance, trials, peak_on_edge, peak_off_object}}`` for each
    of colour, shape, size, position and ``all`` (every grounded word): the hit rate, the chance rate,
    and where the misses went: the fraction of trials whose peak is on a region the object touches
    but covers less than ``coverage`` of (its silhouette's edge), and on a region it does not touch.
    A class without trials has NaN rates. A word whose object covers no region fully enough (a small
    object on a coarse map) is skipped, and counted in ``skipped``.
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    keys = ("hits", "trials", "chance", "edge", "off")
    tally = {c: dict.fromkeys(keys, 0.0) for c in WORD_CLASSES + ("all",)}
    skipped = 0
    for attn, tokens, scene in zip(maps, words, scenes, strict=True):
        height, width = attn.shape[-2:]
        covers = {}
        for t, word_class, objects in caption_word_objects(tokens[:attn.shape[0]], scene):
            if objects not in covers:
                covers[objects] = region_coverage(scene, objects, height, width).reshape(-1)
            cover = covers[objects]
            mask = cover >= coverage - 1e-6
            if not mask.any():
                skipped += 1
                continue
            peak = float(cover[int(attn[t].reshape(-1).float().argmax())])
            for key in (word_class, "all"):
                tally[key]["hits"] += peak >= coverage - 1e-6
                tally[key]["trials"] += 1
                tally[key]["chance"] += float(mask.mean())
                tally[key]["edge"] += 0.0 < peak < coverage - 1e-6
                tally[key]["off"] += peak == 0.0
    nan = float("nan")
    out = {c: {"pointing_accuracy": v["hits"] / v["trials"] if v["trials"] else nan,
               "chance": v["chance"] / v["trials"] if v["trials"] else nan, "trials": int(v["trials"]),
               "peak_on_edge": v["edge"] / v["trials"] if v["trials"] else nan,
               "peak_off_object": v["off"] / v["trials"] if v["trials"] else nan}
           for c, v in tally.items()}
    out["skipped"] = skipped
    return out


@torch.no_grad()
def damsm_word_attention(regions: torch.Tensor, words: torch.Tensor, cap_lens, gamma1: float,
                         word_softmax: bool = True) -> list:
    """The DAMSM's word->region attention of each image with its own caption.

    regions (N, D, h, w) from the image encoder, words (N, D, T) from the text encoder, cap_lens (N,)
    ints; as ``words_loss`` computes it for the matching pair: Eq. 8's softmax over the caption's
    cap_len words for each region, then gamma1 times that, softmaxed over the regions (Eq. 9).
    ``word_softmax=False`` leaves Eq. 8 out (the region attention the attention-grounding term
    teaches, :func:`attnfast.reference.attention_grounding.region_attention`).
    Returns a list of N float32 tensors (cap_len_i, h, w)."""
    lens = torch.as_tensor(cap_lens).reshape(-1).to(torch.long)
    if regions.shape[0] != words.shape[0] or lens.shape[0] != regions.shape[0]:
        raise ValueError(f"regions {tuple(regions.shape)}, words {tuple(words.shape)} and "
                         f"{lens.shape[0]} cap_lens must have the same batch size")
    flat, words = regions.float().flatten(2), words.float()
    attend = matched_attention if word_softmax else region_attention
    attn = attend(flat, words, lens.to(regions.device), gamma1).view(*words.shape[::2], *regions.shape[-2:])
    return [attn[i, :n].cpu() for i, n in enumerate(lens.tolist())]


def format_table(report: dict) -> str:
    """A :func:`attnfast.metrics.shapes_eval.grounding_report` as a text table: one row per attention
    (the DAMSM on real images, on generated images, the generator's stages), one column per word class,
    each cell "accuracy (chance)" in percent."""
    rows = [("DAMSM, real images", report["damsm_real"]),
            ("DAMSM without Eq. 8, real", report["damsm_real_without_eq8"]),
            ("DAMSM, generated", report["damsm_generated"])]
    rows += [(f"G attention {name.split('_')[-1]}px", part) for name, part in report["generator"].items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'pointing game % (chance)':<{width}}" + "".join(f"{c:>14}" for c in WORD_CLASSES)]
    for name, part in rows:
        cells = []
        for word_class in WORD_CLASSES:
            score = part[word_class]
            cells.append(f"{'-':>14}" if not score["trials"] else
                         f"{100 * score['pointing_accuracy']:>7.1f} ({100 * score['chance']:>4.1f})")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)
