"""The built-in "shapes" dataset: procedurally generated captioned scenes.

A scene is 1-3 objects on a plain background; each object has a shape, a colour, a size and a
cell of a 3x3 grid (distinct cells, so objects never overlap). ``grid=2`` (four corner cells, objects
1.5x larger) and ``grid=1`` (one centred object, 3x larger) are easier variants for short runs;
they use the same words, so the vocabulary does not change. Every caption states each object's
size, colour, shape and position, so captions agree with the ground truth and
:func:`parse_caption` can read them back. The grammar is closed: :func:`shapes_vocabulary` lists
every word any template can produce.

Rendering is vectorised numpy: per resolution, the anti-aliased coverage of every
(shape, size, cell) is computed once (4x4 supersampling) and cached; drawing a scene is one blend
per object into its cell.

Item ``i`` of a split is generated from ``np.random.default_rng([seed, i, split_id])``, so it is the
same in any order and in any worker. Images are never flipped (captions name left and right).
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from math import comb

import numpy as np
import torch
from torch.utils.data import Dataset

from .vocab import Vocabulary, tokenize

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "GRIDS",
    "MAX_CAPTION_WORDS",
    "NUM_CLASSES",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "WORD_CLASSES",
    "Scene",
    "ShapeObject",
    "ShapesDataset",
    "background_weights",
    "caption_word_objects",
    "class_id_of",
    "collate_shapes",
    "grid_positions",
    "make_captions",
    "max_objects_for_grid",
    "object_mask_for_word",
    "parse_background",
    "parse_caption",
    "render_scene",
    "sample_scene",
    "scene_for_caption",
    "shapes_vocabulary",
    "to_tensor",
]

# --------------------------------------------------------------------------------------------
# Word lists and palettes

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 40),
    "purple": (130, 50, 170),
    "orange": (245, 130, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
# Background names share no word with object colours, so captions and masks stay unambiguous.
BACKGROUNDS = {
    "gray": (128, 128, 128),
    "navy": (25, 35, 90),
    "beige": (225, 210, 170),
    "teal": (0, 105, 105),
    "lavender": (200, 190, 230),
}
SIZES = ("small", "large")
# Cell index = row * 3 + col, row 0 at the top.
POSITIONS = ("top left", "top", "top right", "left", "center", "right",
             "bottom left", "bottom", "bottom right")
# Positions of the cells of a grid x grid layout, row-major (grid 3 = POSITIONS).
_GRID_POSITIONS = {1: ("center",), 2: ("top left", "top right", "bottom left", "bottom right"),
                   3: POSITIONS}
GRIDS = tuple(_GRID_POSITIONS)
MAX_CAPTION_WORDS = 18
# An object colour must differ from the background by at least this RGB distance.
MIN_CONTRAST = 80.0
# Half-extent of a shape as a fraction of the cell side.
_SIZE_FACTORS = (0.24, 0.42)
_SUPERSAMPLE = 4

_COLOUR_NAMES = tuple(COLOURS)
_BG_NAMES = tuple(BACKGROUNDS)
_COLOUR_RGB = np.array([COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float32)
_BG_RGB = np.array([BACKGROUNDS[b] for b in _BG_NAMES], dtype=np.float32)
_SHAPE_IX = {s: i for i, s in enumerate(SHAPES)}
_COLOUR_IX = {c: i for i, c in enumerate(_COLOUR_NAMES)}
_SIZE_IX = {s: i for i, s in enumerate(SIZES)}
_BG_IX = {b: i for i, b in enumerate(_BG_NAMES)}
_POS_IX = {p: i for i, p in enumerate(POSITIONS)}
_ALLOWED_COLOURS = tuple(
    np.flatnonzero(np.linalg.norm(_COLOUR_RGB - bg, axis=1) >= MIN_CONTRAST) for bg in _BG_RGB
)
assert all(len(a) > 0 for a in _ALLOWED_COLOURS)

# Caption templates (every literal word here is in the vocabulary).
# Prepositions that read naturally before each position ("at the top", "on the left").
_PREPS = {"top": ("at",), "bottom": ("at",), "left": ("on", "at"), "right": ("on", "at")}
_CORNER_PREPS = ("in", "at")
_COUNT_PREFIXES = ("one shape:", "two shapes:", "three shapes:")
_FULL_PREFIXES = ("", "there {be}", "{count}", "an image of", "a picture of")
_SHORT_PREFIXES = ("", "{count}")
_BG_SUFFIXES = ("on a {bg} background", "with a {bg} background")
_STYLES = ("full", "front", "compact")
_TEMPLATE_TEXT = ("a an the and , there is are background",) + _CORNER_PREPS \
    + tuple(p for ps in _PREPS.values() for p in ps) + _COUNT_PREFIXES \
    + _FULL_PREFIXES + _BG_SUFFIXES

MAX_OBJECTS = 3


def grid_positions(grid: int) -> tuple[str, ...]:
    """Position names of the cells of a ``grid`` x ``grid`` layout, row-major."""
    if grid not in _GRID_POSITIONS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    return _GRID_POSITIONS[grid]


def max_objects_for_grid(grid: int) -> int:
    """Most objects a scene of this grid holds (one per cell, at most MAX_OBJECTS)."""
    return min(MAX_OBJECTS, len(grid_positions(grid)))
_NUM_COMBOS = len(SHAPES) * len(COLOURS)
NUM_CLASSES = sum(comb(_NUM_COMBOS, k) for k in range(1, MAX_OBJECTS + 1))


# --------------------------------------------------------------------------------------------
# Ground truth

@dataclass
class ShapeObject:
    """One object of a scene; ``mask`` and ``bbox`` are at ``resolution`` (computed lazily);
    ``cell`` is (row, col) of a ``grid`` x ``grid`` layout.

    mask: bool ndarray (resolution, resolution); bbox: (x0, y0, x1, y1) tight around the mask,
    pixel coordinates, x1/y1 exclusive.
    """
    shape: str
    colour: str
    size: str
    cell: tuple[int, int]  # (row, col), row 0 at the top
    resolution: int = 64
    grid: int = 3

    @property
    def cell_index(self) -> int:
        """Row-major index of the cell in its grid."""
        return self.cell[0] * self.grid + self.cell[1]

    @property
    def position(self) -> str:
        return grid_positions(self.grid)[self.cell_index]

    @functools.cached_property
    def mask(self) -> np.ndarray:
        y0, y1, x0, x1, _, patch = _patch(self.resolution, _SHAPE_IX[self.shape],
                                          _SIZE_IX[self.size], self.cell_index, self.grid)
        m = np.zeros((self.resolution, self.resolution), dtype=bool)
        m[y0:y1, x0:x1] = patch
        return m

    @functools.cached_property
    def bbox(self) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(self.mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    def as_dict(self) -> dict:
        """``dict(shape, colour, size, position)``: the form :func:`parse_caption` returns."""
        return {"shape": self.shape, "colour": self.colour, "size": self.size,
                "position": self.position}


@dataclass
class Scene:
    """A scene's ground truth: background colour name, objects, its captions, and the side of its
    cell grid."""
    background: str
    objects: list[ShapeObject]
    resolution: int = 64
    captions: list[str] = field(default_factory=list)
    grid: int = 3

    @property
    def class_id(self) -> int:
        return class_id_of(self)


def class_id_of(scene: Scene) -> int:
    """The scene's class for DAMSM same-class masking, in ``[0, NUM_CLASSES)``.

    It is the rank of the *set* of distinct (shape, colour) combos of the scene (combo id =
    shape_index * len(COLOURS) + colour_index) in the combinatorial number system, offset so that
    sets of size 1, 2, 3 occupy consecutive ranges: two scenes share a class iff they show the same
    coloured shapes (sizes and positions aside).
    """
    combos = sorted({_SHAPE_IX[o.shape] * len(COLOURS) + _COLOUR_IX[o.colour]
                     for o in scene.objects})
    k = len(combos)
    offset = sum(comb(_NUM_COMBOS, m) for m in range(1, k))
    return offset + sum(comb(c, j + 1) for j, c in enumerate(combos))


def sample_scene(rng: np.random.Generator, resolution: int = 64, max_objects: int = MAX_OBJECTS,
                 grid: int = 3) -> Scene:
    """Draw a scene (no captions): 1 to ``max_objects`` objects in distinct cells of a ``grid`` x
    ``grid`` layout, colours contrasting the background. Grid 3 draws the same scenes for any
    version of this module that had no grid option."""
    _check_max_objects(max_objects, grid)
    n = int(rng.integers(1, max_objects + 1))
    bg = int(rng.integers(len(_BG_NAMES)))
    cells = rng.permutation(grid * grid)[:n]
    shapes = rng.integers(len(SHAPES), size=n)
    sizes = rng.integers(len(SIZES), size=n)
    allowed = _ALLOWED_COLOURS[bg]
    colours = allowed[rng.integers(len(allowed), size=n)]
    objects = [ShapeObject(SHAPES[shapes[k]], _COLOUR_NAMES[colours[k]], SIZES[sizes[k]],
                           (int(cells[k]) // grid, int(cells[k]) % grid), resolution, grid)
               for k in range(n)]
    return Scene(_BG_NAMES[bg], objects, resolution, grid=grid)


def _check_max_objects(max_objects: int, grid: int) -> None:
    most = max_objects_for_grid(grid)
    if not 1 <= max_objects <= most:
        raise ValueError(f"max_objects must be in [1, {most}] for grid {grid}, got {max_objects}")


# --------------------------------------------------------------------------------------------
# Captions

def _one_caption(scene: Scene, rng: np.random.Generator) -> str:
    objs = scene.objects
    n = len(objs)
    order = rng.permutation(n)
    # Three objects only fit 18 words in the compact style.
    style = "compact" if n == 3 else _STYLES[int(rng.integers(len(_STYLES)))]
    size_first = bool(rng.integers(2))
    parts = []
    for k in order:
        o = objs[int(k)]
        noun = f"{o.size} {o.colour} {o.shape}" if size_first else f"{o.colour} {o.size} {o.shape}"
        if style == "compact":
            parts.append(f"{noun} {o.position}")
            continue
        preps = _PREPS.get(o.position, _CORNER_PREPS)
        where = f"{preps[int(rng.integers(len(preps)))]} the {o.position}"
        article = "an" if noun[0] in "aeiou" else "a"
        parts.append(f"{article} {noun} {where}" if style == "full" else f"{where} {article} {noun}")
    if n == 1:
        body = parts[0]
    elif style == "compact" and rng.integers(2):
        body = ", ".join(parts)
    else:
        body = ", ".join(parts[:-1]) + " and " + parts[-1]
    prefixes = _FULL_PREFIXES if style == "full" else _SHORT_PREFIXES
    prefix = prefixes[int(rng.integers(len(prefixes)))].format(
        be="is" if n == 1 else "are", count=_COUNT_PREFIXES[n - 1])
    suffix = ""
    if rng.integers(2):
        suffix = _BG_SUFFIXES[int(rng.integers(len(_BG_SUFFIXES)))].format(bg=scene.background)
    return " ".join(p for p in (prefix, body, suffix) if p)


def _compact_caption(scene: Scene) -> str:
    return ", ".join(f"{o.size} {o.colour} {o.shape} {o.position}" for o in scene.objects)


def make_captions(scene: Scene, rng: np.random.Generator, n: int = 5,
                  max_words: int = MAX_CAPTION_WORDS) -> list[str]:
    """``n`` captions of ``scene`` in varied wording, each at most ``max_words`` tokens.

    Draws are rejected when too long; distinct captions are preferred. Deterministic given ``rng``.
    """
    caps: list[str] = []
    for _ in range(n):
        fallback = None
        for _attempt in range(12):
            cap = _one_caption(scene, rng)
            if len(tokenize(cap)) > max_words:
                continue
            if cap not in caps:
                fallback = cap
                break
            fallback = fallback or cap
        if fallback is None:
            fallback = _compact_caption(scene)
            if len(tokenize(fallback)) > max_words:
                raise ValueError(f"max_words={max_words} is too small for {fallback!r}")
        caps.append(fallback)
    return caps


@functools.lru_cache(maxsize=1)
def shapes_vocabulary() -> Vocabulary:
    """The closed vocabulary of the shapes grammar (built from the word lists, not by sampling)."""
    texts = (SHAPES + tuple(COLOURS) + SIZES + POSITIONS + tuple(BACKGROUNDS) + _TEMPLATE_TEXT)
    words: dict[str, None] = {}
    for t in texts:
        for w in tokenize(t.replace("{", " ").replace("}", " ")):
            if w not in ("be", "count", "bg"):  # template placeholders
                words.setdefault(w, None)
    return Vocabulary(words)


# --------------------------------------------------------------------------------------------
# Rendering

def _inside_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, broadcasting ``u`` (x) against ``v`` (y)."""
    inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        if y1 == y2:
            continue
        crosses = (y1 > v) != (y2 > v)
        x_at = (x2 - x1) * (v - y1) / (y2 - y1) + x1
        inside ^= crosses & (u < x_at)
    return inside


def _star_polygon(points: int = 5, inner: float = 0.42) -> np.ndarray:
    ang = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    rad = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)


_ARM = 0.32
_POLYGONS = {
    "square": np.array([[-0.82, -0.82], [0.82, -0.82], [0.82, 0.82], [-0.82, 0.82]]),
    "triangle": np.array([[0.0, -0.95], [1.0, 0.8], [-1.0, 0.8]]),
    "diamond": np.array([[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]),
    "star": _star_polygon(),
    "cross": np.array([[-_ARM, -1], [_ARM, -1], [_ARM, -_ARM], [1, -_ARM], [1, _ARM], [_ARM, _ARM],
                       [_ARM, 1], [-_ARM, 1], [-_ARM, _ARM], [-1, _ARM], [-1, -_ARM],
                       [-_ARM, -_ARM]]),
}


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether (u, v) (units of the half-extent, y down) lies inside the unit ``shape``."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    return _inside_polygon(u, v, _POLYGONS[shape])


def _cell_edges(resolution: int, grid: int = 3) -> np.ndarray:
    return np.rint(np.arange(grid + 1) * resolution / grid).astype(int)


@functools.cache
def _patch(resolution: int, shape_i: int, size_i: int, cell: int, grid: int = 3):
    """Coverage of one (shape, size, cell of a ``grid`` x ``grid`` layout) at ``resolution``, cached.

    Returns ``(y0, y1, x0, x1, cov, mask)``: the cell's pixel box, ``cov`` float32 (h, w) in
    [0, 1] (4x4 supersampled), ``mask`` bool (h, w) = ``cov >= 0.5``.
    """
    if resolution < 16:
        raise ValueError(f"resolution must be >= 16, got {resolution}")
    edges = _cell_edges(resolution, grid)
    row, col = divmod(cell, grid)
    y0, y1, x0, x1 = edges[row], edges[row + 1], edges[col], edges[col + 1]
    side = resolution / grid
    half = _SIZE_FACTORS[size_i] * side
    off = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    ys = ((np.arange(y0, y1)[:, None] + off).ravel() - (row + 0.5) * side) / half
    xs = ((np.arange(x0, x1)[:, None] + off).ravel() - (col + 0.5) * side) / half
    inside = _inside(SHAPES[shape_i], xs[None, :], ys[:, None])
    h, w = y1 - y0, x1 - x0
    cov = inside.reshape(h, _SUPERSAMPLE, w, _SUPERSAMPLE).mean(axis=(1, 3), dtype=np.float32)
    mask = cov >= 0.5
    for a in (cov, mask):
        a.setflags(write=False)
    return int(y0), int(y1), int(x0), int(x1), cov, mask


def render_scene(scene: Scene, resolution: int | None = None, antialias: bool = True) -> np.ndarray:
    """Draw ``scene``: uint8 ndarray (R, R, 3), R = ``resolution`` or ``scene.resolution``.

    Without anti-aliasing, pixels are exactly the object colour on each object's ``mask`` and
    exactly the background elsewhere; with it, edge pixels blend by coverage.
    """
    r = scene.resolution if resolution is None else resolution
    bg = _BG_RGB[_BG_IX[scene.background]]
    img = np.empty((r, r, 3), dtype=np.uint8)
    img[:] = bg.astype(np.uint8)
    for o in scene.objects:
        y0, y1, x0, x1, cov, mask = _patch(r, _SHAPE_IX[o.shape], _SIZE_IX[o.size], o.cell_index,
                                           o.grid)
        alpha = cov if antialias else mask.astype(np.float32)
        delta = _COLOUR_RGB[_COLOUR_IX[o.colour]] - bg
        # The cell holds only background before this, and values stay in [0, 255]: +0.5 rounds.
        img[y0:y1, x0:x1] = (alpha[:, :, None] * delta + (bg + 0.5)).astype(np.uint8)
    return img


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) (or float (H, W, 3) in [0, 255]) -> float32 tensor (3, H, W) in [-1, 1]."""
    x = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    x *= 2.0 / 255.0
    x -= 1.0
    return torch.from_numpy(x)


def _downsample(img: np.ndarray, factor: int) -> np.ndarray:
    """Area average: (R, R, 3) -> float32 (R/f, R/f, 3)."""
    r = img.shape[0] // factor
    return img.reshape(r, factor, r, factor, 3).mean(axis=(1, 3), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Dataset

_SPLIT_IDS = {"train": 0, "test": 1}
_CAPTION_STREAM = 1  # keeps the caption-choice seed apart from the scene seed


class ShapesDataset(Dataset):
    """On-the-fly shapes dataset (``torch.utils.data.Dataset``).

    Args:
        num_images: number of items.
        resolution: largest image side (default: ``max(multi_res)``, or 64).
        seed: non-negative int; item ``i`` comes from ``default_rng([seed, i, split_id])``.
        captions_per_image: captions generated per scene.
        words_num: caption tensor length (AttnGAN's TEXT.WORDS_NUM); longer captions keep their
            first ``words_num`` words.
        split: "train" (a random caption per item and epoch, see :meth:`set_epoch`) or "test"
            (caption 0).
        multi_res: image sides returned, ascending (e.g. (64, 128, 256) for a 3-stage generator).
            Smaller sides that divide the largest are area-averaged from it; others are rendered.
        caption_index: if set, always use this caption (both splits).
        antialias: anti-aliased edges.
        max_objects: objects per scene are drawn uniformly from 1..max_objects (default 3; 1 gives
            the easiest scenes, used by the CPU demo).

    ``dataset[i]`` is a dict: ``images`` list of float32 (3, r, r) in [-1, 1], one per
    ``multi_res``; ``caption`` long (words_num,) padded with 0; ``cap_len`` int; ``caption_text``
    str; ``caption_index`` int; ``class_id`` int (see :func:`class_id_of`); ``index`` int;
    ``key`` str.
    """

    def __init__(self, num_images: int, resolution: int | None = None, seed: int = 0,
                 captions_per_image: int = 5, words_num: int = MAX_CAPTION_WORDS,
                 split: str = "train", multi_res: tuple[int, ...] | None = None,
                 caption_index: int | None = None, antialias: bool = True,
                 max_objects: int = MAX_OBJECTS, grid: int = 3):
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be one of {tuple(_SPLIT_IDS)}, got {split!r}")
        if num_images < 0 or seed < 0:
            raise ValueError("num_images and seed must be non-negative")
        if captions_per_image < 1 or words_num < 1:
            raise ValueError("captions_per_image and words_num must be >= 1")
        if caption_index is not None and not 0 <= caption_index < captions_per_image:
            raise ValueError(f"caption_index {caption_index} not in [0, {captions_per_image})")
        _check_max_objects(max_objects, grid)
        if multi_res is None:
            multi_res = (64 if resolution is None else resolution,)
        multi_res = tuple(int(r) for r in multi_res)
        if list(multi_res) != sorted(set(multi_res)) or multi_res[0] < 16:
            raise ValueError(f"multi_res must be distinct ascending sides >= 16, got {multi_res}")
        if resolution is not None and resolution != multi_res[-1]:
            raise ValueError(f"resolution {resolution} must equal max(multi_res) = {multi_res[-1]}")
        self.num_images = num_images
        self.resolution = multi_res[-1]
        self.multi_res = multi_res
        self.seed = seed
        self.captions_per_image = captions_per_image
        self.words_num = words_num
        self.split = split
        self.split_id = _SPLIT_IDS[split]
        self.caption_index = caption_index
        self.antialias = antialias
        self.max_objects = int(max_objects)
        self.grid = int(grid)
        self.epoch = 0
        self.vocab = shapes_vocabulary()
        self._texts: dict = {}   # index -> (captions, their ids, class id, scene): see _text_of

    def __len__(self) -> int:
        return self.num_images

    def set_epoch(self, epoch: int) -> None:
        """Choose the train split's captions for ``epoch`` (call before making a DataLoader iterator)."""
        self.epoch = int(epoch)

    def _check_index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.num_images
        if not 0 <= i < self.num_images:
            raise IndexError(f"index {i} out of range for {self.num_images} images")
        return i

    def get_scene(self, i: int, resolution: int | None = None, captions: bool = True) -> Scene:
        """Ground truth of item ``i`` (objects with masks at ``resolution``, and all captions; with
        ``captions`` False the same objects without drawing the captions, which are drawn after them:
        the layout of a caption the caller already has costs a third)."""
        i = self._check_index(i)
        rng = np.random.default_rng([self.seed, i, self.split_id])
        scene = sample_scene(rng, self.resolution if resolution is None else resolution, self.max_objects,
                             self.grid)
        if captions:
            scene.captions = make_captions(scene, rng, self.captions_per_image)
        return scene

    def all_captions(self, i: int) -> list[str]:
        return self.get_scene(i).captions

    def get_image(self, i: int, resolution: int | None = None) -> np.ndarray:
        """Item ``i`` rendered natively: uint8 (R, R, 3)."""
        return render_scene(self.get_scene(i, resolution), antialias=self.antialias)

    def _choose_caption(self, i: int) -> int:
        if self.caption_index is not None:
            return self.caption_index
        if self.split != "train":
            return 0
        rng = np.random.default_rng([self.seed, i, self.split_id, _CAPTION_STREAM, self.epoch])
        return int(rng.integers(self.captions_per_image))

    def _images(self, scene: Scene) -> list[torch.Tensor]:
        """The item's float32 (3, r, r) images in [-1, 1], one per ``multi_res``."""
        big = render_scene(scene, antialias=self.antialias)
        images = []
        for r in self.multi_res:
            if r == self.resolution:
                images.append(to_tensor(big))
            elif self.resolution % r == 0:
                images.append(to_tensor(_downsample(big, self.resolution // r)))
            else:
                images.append(to_tensor(render_scene(scene, r, antialias=self.antialias)))
        return images

    def __getitem__(self, i: int) -> dict:
        return self._item(i, with_images=True)

    def text_item(self, i: int) -> dict:
        """``dataset[i]`` without rendering: the same caption (for the current epoch), class id,
        index and key, and ``images`` an empty list (the device-resident store of
        :mod:`attnfast.data.device_store` supplies the images)."""
        return self._item(i, with_images=False)

    def _text_of(self, i: int, scene: Scene | None = None) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...], int, Scene]:
        """Item ``i``'s captions, their token ids (first ``words_num``), class id and scene, drawn once
        per index (a fixed function of it; ``scene``: item i's, when the caller has drawn it): a
        render-free :meth:`text_item` then costs a lookup, not a scene draw. Rendering an item fills
        it, so the device store's build (which renders every item) leaves every text drawn. The scene
        is kept without its masks (computed lazily, on first use): ~1 KB per item."""
        found = self._texts.get(i)
        if found is None:
            scene = scene or self.get_scene(i)
            found = (tuple(scene.captions), tuple(tuple(self.vocab.encode(c, max_len=self.words_num))
                                                  for c in scene.captions), class_id_of(scene), scene)
            self._texts[i] = found
        return found

    def scene_of(self, i: int) -> Scene:
        """Item ``i``'s ground truth (objects and captions), drawn once per index and kept: the same
        as :meth:`get_scene` at the dataset's resolution, without a draw after the first (the device
        store's build draws every item's). The returned scene is shared: do not modify it."""
        return self._text_of(self._check_index(i))[3]

    def _item(self, i: int, with_images: bool) -> dict:
        i = self._check_index(i)
        ci = self._choose_caption(i)
        scene = self.get_scene(i) if with_images else None
        captions, encoded, class_id, _ = self._text_of(i, scene)
        images = self._images(scene) if with_images else []
        text, ids = captions[ci], encoded[ci]
        caption = torch.zeros(self.words_num, dtype=torch.long)
        caption[: len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        return {
            "images": images,
            "caption": caption,
            "cap_len": len(ids),
            "caption_text": text,
            "caption_index": ci,
            "class_id": class_id,
            "index": i,
            "key": f"shapes_{self.split}_{i:07d}",
        }


def collate_shapes(batch: list[dict]) -> dict:
    """Stack items of :class:`ShapesDataset` (kept in input order, not sorted by length).

    Returns ``images`` list of float32 (B, 3, r, r); ``captions`` long (B, words_num);
    ``cap_lens``, ``class_ids``, ``indices``, ``caption_indices`` long (B,); ``keys`` and
    ``caption_texts`` lists of str.
    """
    n_res = len(batch[0]["images"])
    return {
        "images": [torch.stack([b["images"][k] for b in batch]) for k in range(n_res)],
        "captions": torch.stack([b["caption"] for b in batch]),
        "cap_lens": torch.tensor([b["cap_len"] for b in batch], dtype=torch.long),
        "class_ids": torch.tensor([b["class_id"] for b in batch], dtype=torch.long),
        "indices": torch.tensor([b["index"] for b in batch], dtype=torch.long),
        "caption_indices": torch.tensor([b["caption_index"] for b in batch], dtype=torch.long),
        "keys": [b["key"] for b in batch],
        "caption_texts": [b["caption_text"] for b in batch],
    }


# --------------------------------------------------------------------------------------------
# Ground-truth helpers for metrics

_VERTICAL = ("top", "bottom")
_HORIZONTAL = ("left", "right")
_POSITION_WORDS = frozenset(_VERTICAL + _HORIZONTAL + ("center",))
_NOUN_WORDS = frozenset(SHAPES) | frozenset(COLOURS) | frozenset(SIZES)


def parse_caption(text: str) -> list[dict]:
    """Objects a shapes caption describes, in caption order.

    Returns a list of ``dict(shape, colour, size, position)``. Raises ``ValueError`` when the
    text is not a caption of the shapes grammar (an object lacking an attribute or a position).
    """
    toks = tokenize(text)
    items: list[tuple[str, object]] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t in _POSITION_WORDS:
            if t in _VERTICAL and i + 1 < len(toks) and toks[i + 1] in _HORIZONTAL:
                items.append(("pos", f"{t} {toks[i + 1]}"))
                i += 2
            else:
                items.append(("pos", t))
                i += 1
        elif t in _NOUN_WORDS:
            noun = {}
            while i < len(toks) and toks[i] in _NOUN_WORDS:
                w = toks[i]
                kind = "shape" if w in _SHAPE_IX else "colour" if w in _COLOUR_IX else "size"
                if kind in noun:
                    raise ValueError(f"two {kind} words in one object of caption {text!r}")
                noun[kind] = w
                i += 1
                if kind == "shape":
                    break
            if len(noun) != 3:
                raise ValueError(f"object without shape, colour and size in caption {text!r}")
            items.append(("noun", noun))
        else:
            i += 1
    # Positions follow their noun, except in the "in the top left a small red circle" style.
    first, second = ("pos", "noun") if items and items[0][0] == "pos" else ("noun", "pos")
    kinds = [k for k, _ in items]
    if not items or len(items) % 2 or kinds != [first, second] * (len(items) // 2):
        raise ValueError(f"cannot pair objects with positions in caption {text!r}")
    out = []
    for k in range(0, len(items), 2):
        noun = items[k][1] if first == "noun" else items[k + 1][1]
        pos = items[k + 1][1] if first == "noun" else items[k][1]
        out.append({"shape": noun["shape"], "colour": noun["colour"], "size": noun["size"],
                    "position": pos})
    return out


def parse_background(text: str) -> str | None:
    """The background colour a caption names ("on a gray background"), or None."""
    toks = tokenize(text)
    for a, b in itertools.pairwise(toks):
        if b == "background" and a in _BG_IX:
            return a
    return None


def background_weights(colours) -> np.ndarray:
    """P(background | the objects' colours) of :func:`sample_scene`: float64 (len(BACKGROUNDS),), sums
    to 1, in BACKGROUNDS order. sample_scene draws the background uniformly, then each object's
    colour uniformly among the colours contrasting it, so background b weighs
    prod over objects of 1 / (colours contrasting b) where it contrasts every colour, else 0.
    Raises ``ValueError`` when no background contrasts them all."""
    wanted = [_COLOUR_IX[c] for c in colours]
    weights = np.array([float(np.prod([1.0 / len(allowed) if c in allowed else 0.0 for c in wanted]))
                        for allowed in _ALLOWED_COLOURS])
    if weights.sum() == 0:
        raise ValueError(f"no background contrasts every colour of {list(colours)}")
    return weights / weights.sum()


def scene_for_caption(text: str, rng: np.random.Generator, resolution: int = 64, grid: int = 3) -> Scene:
    """A scene ``text`` describes, drawn as the data draws it (``captions`` = [text]).

    The caption fixes each object's shape, colour, size and cell (:func:`parse_caption`), and the
    renderer has no jitter (exact positions, sizes and shades), so the one thing left to draw is the
    background when the caption names none: from :func:`background_weights` with ``rng``. Raises
    ``ValueError`` for text outside the grammar, a position not on the ``grid``, two objects in
    one cell, or more objects than the grid holds.
    """
    positions = grid_positions(grid)
    objects, cells = [], set()
    for obj in parse_caption(text):
        if obj["position"] not in positions:
            raise ValueError(f"position {obj['position']!r} of caption {text!r} is not on the "
                             f"{grid}x{grid} grid (its positions: {', '.join(positions)})")
        cell = positions.index(obj["position"])
        if cell in cells:
            raise ValueError(f"two objects at the {obj['position']} in caption {text!r}")
        cells.add(cell)
        objects.append(ShapeObject(obj["shape"], obj["colour"], obj["size"], divmod(cell, grid),
                                   resolution, grid))
    _check_max_objects(len(objects), grid)
    background = parse_background(text)
    if background is None:
        weights = background_weights([o.colour for o in objects])
        background = _BG_NAMES[int(rng.choice(len(_BG_NAMES), p=weights))]
    return Scene(background, objects, resolution, [text], grid)


def object_mask_for_word(scene: Scene, word: str, resolution: int | None = None) -> np.ndarray:
    """bool (R, R): union of the masks of objects whose shape or colour is ``word``.

    Other words (sizes, positions, function words) give an all-False mask.
    """
    r = scene.resolution if resolution is None else resolution
    out = np.zeros((r, r), dtype=bool)
    word = word.lower()
    for o in scene.objects:
        if word in (o.shape, o.colour):
            out |= o.mask if o.resolution == r else ShapeObject(
                o.shape, o.colour, o.size, o.cell, r, o.grid).mask
    return out


WORD_CLASSES = ("colour", "shape", "size", "position")


def caption_word_objects(tokens: list[str], scene: Scene) -> list[tuple[int, str, tuple[int, ...]]]:
    """Which object of ``scene`` each grounded word of a caption names.

    tokens: the caption's words in order (as the text encoder saw them, possibly truncated).
    Returns ``(t, word_class, objects)`` for every token t that is a colour, shape or size word of
    an object or a position word, ``word_class`` one of :data:`WORD_CLASSES` and ``objects`` the
    indices into ``scene.objects`` it names (more than one only for identical objects). A run of
    consecutive colour/size/shape words names the objects that have all of them; a position
    ("top left", "center") names the object in that cell. Words that name no object of the scene
    (the background's colour, function words, a truncated run that matches nothing) are left out.
    """
    out: list[tuple[int, str, tuple[int, ...]]] = []
    words = [t.lower() for t in tokens]
    i = 0
    while i < len(words):
        w = words[i]
        if w in _POSITION_WORDS:
            span = 1
            if w in _VERTICAL and i + 1 < len(words) and words[i + 1] in _HORIZONTAL:
                span = 2
            position = " ".join(words[i:i + span])
            hits = tuple(k for k, o in enumerate(scene.objects) if o.position == position)
            if hits:
                out.extend((i + s, "position", hits) for s in range(span))
            i += span
        elif w in _NOUN_WORDS:
            start = i
            while i < len(words) and words[i] in _NOUN_WORDS:
                i += 1
                if words[i - 1] in _SHAPE_IX:
                    break
            run = words[start:i]
            hits = tuple(k for k, o in enumerate(scene.objects)
                         if all(x in (o.shape, o.colour, o.size) for x in run))
            if hits:
                out.extend((start + s, "shape" if x in _SHAPE_IX else "size" if x in _SIZE_IX
                            else "colour", hits) for s, x in enumerate(run))
        else:
            i += 1
    return out
