"""Where each word of a shapes caption belongs, on a grid of regions: the ground truth of the pointing
game (attnfast.metrics.grounding) and the target of the ``gan.attention_layout`` term.

The renderer has no jitter, so a caption fixes every object's shape, size and cell: the regions of a
word's object follow from the scene alone.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .shapes import Scene, caption_word_objects


def region_coverage(scene: Scene, objects: tuple[int, ...], height: int, width: int) -> np.ndarray:
    """float32 (height, width): the fraction of each region of a height x width grid over the image
    that the union of ``scene.objects[k]`` for k in ``objects`` covers (masks at the scene's resolution)."""
    union = np.zeros((scene.resolution, scene.resolution), dtype=np.float32)
    for k in objects:
        union = np.maximum(union, scene.objects[k].mask.astype(np.float32))
    return F.adaptive_avg_pool2d(torch.from_numpy(union)[None, None], (height, width))[0, 0].numpy()


def _object_key(scene: Scene, objects: tuple[int, ...]) -> tuple:
    """What an object set's coverage depends on (colours aside): hashable."""
    return scene.resolution, tuple((o.shape, o.size, o.cell, o.grid) for o in (scene.objects[k] for k in objects))


_COVERAGE: dict = {}       # (object key, height, width) -> read-only coverage; a few hundred entries per grid
_COVERAGE_LIMIT = 1 << 16


def _coverage(scene: Scene, objects: tuple[int, ...], height: int, width: int) -> np.ndarray:
    key = (_object_key(scene, objects), height, width)
    found = _COVERAGE.get(key)
    if found is None:
        found = region_coverage(scene, objects, height, width)
        found.setflags(write=False)
        if len(_COVERAGE) < _COVERAGE_LIMIT:
            _COVERAGE[key] = found
    return found


def word_layout(tokens: list[str], scene: Scene, height: int, width: int) -> np.ndarray:
    """float32 (len(tokens), height, width): row t the coverage of the object(s) token t names
    (:func:`caption_word_objects`: a colour, shape, size or position word of an object), all zero for
    a token that names none (function words, the background's colour)."""
    out = np.zeros((len(tokens), height, width), dtype=np.float32)
    for t, _word_class, objects in caption_word_objects(tokens, scene):
        out[t] = _coverage(scene, objects, height, width)
    return out


class CaptionLayout:
    """The word layouts of one batch: ``tokens[i]`` the words of caption i as the text encoder saw them,
    ``scenes[i]`` its ground truth. :meth:`targets` gives them on any grid, computed once per grid."""

    def __init__(self, tokens: list[list[str]], scenes: list[Scene]):
        if len(tokens) != len(scenes):
            raise ValueError(f"{len(tokens)} captions but {len(scenes)} scenes")
        self.tokens, self.scenes = tokens, scenes
        self._grids: dict = {}

    def targets(self, words: int, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """float32 (B, words, height, width): :func:`word_layout` of each caption, zero past its words."""
        key = (words, height, width, str(device))
        if key not in self._grids:
            out = np.zeros((len(self.tokens), words, height, width), dtype=np.float32)
            for i, (tokens, scene) in enumerate(zip(self.tokens, self.scenes, strict=True)):
                layout = word_layout(tokens[:words], scene, height, width)
                out[i, :layout.shape[0]] = layout
            self._grids[key] = torch.from_numpy(out).to(device)
        return self._grids[key]
