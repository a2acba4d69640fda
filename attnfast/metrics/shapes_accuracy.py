"""Attribute accuracy on the shapes dataset: a small fixed classifier, trained on the dataset's
ground truth in seconds and cached, reads every cell of an image's grid (3x3, or the 2x2 / 1x1 of
the easier ``dataset.grid`` variants: empty, or which shape, colour and size); generated images are
scored against the scene their caption describes.
"""
import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from attnfast.data import COLOURS, GRIDS, SHAPES, SIZES, ShapesDataset
from attnfast.data.shapes import max_objects_for_grid
from attnfast.engine.checkpoint import save_atomic

EMPTY = len(SHAPES)             # shape class of an empty cell
CELL = 24                       # each grid cell is read as a CELL x CELL crop
CLASSIFIER_VERSION = 3
_IGNORE = -100
# Training images per grid: every grid-3 image gives 9 cell crops, grid 2 four, grid 1 one.
_TRAIN_IMAGES = {3: 4000, 2: 1500, 1: 3000}


class CellClassifier(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> per cell of the grid x grid layout (row-major) logits: shape
    (B, grid², 7: 6 shapes + empty), colour (B, grid², len(COLOURS)), size (B, grid², 2). Each cell
    is classified from its own CELL x CELL crop, keeping the spatial detail that tells shapes apart;
    object sizes are fractions of the cell side, so one model reads every grid."""

    def __init__(self, width: int = 16):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(3, width, 2), block(width, 2 * width, 2),
                                      block(2 * width, 4 * width, 1))     # (N, 4w, 6, 6)
        hidden = 4 * width * (CELL // 4) ** 2
        self.shape_head = nn.Linear(hidden, EMPTY + 1)
        self.colour_head = nn.Linear(hidden, len(COLOURS))
        self.size_head = nn.Linear(hidden, len(SIZES))

    def classify_crops(self, crops: torch.Tensor):
        """crops (N, 3, CELL, CELL) -> logits (N, 7), (N, len(COLOURS)), (N, 2)."""
        hidden = self.features(crops).flatten(1)
        return self.shape_head(hidden), self.colour_head(hidden), self.size_head(hidden)

    def forward(self, images: torch.Tensor, grid: int = 3):
        batch = images.shape[0]
        outputs = self.classify_crops(cell_crops(images, grid))
        return tuple(o.view(batch, grid * grid, -1) for o in outputs)


def resize_for_classifier(images: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, grid*CELL, grid*CELL): area-averaged down, bilinear up."""
    side = grid * CELL
    if images.shape[-1] == side:
        return images
    mode = "area" if images.shape[-1] > side else "bilinear"
    return F.interpolate(images, size=(side, side), mode=mode)


def cell_crops(images: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """(B, 3, H, W) -> (B * grid², 3, CELL, CELL): the cells of each image, row-major."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    batch = images.shape[0]
    return (resize_for_classifier(images, grid)                          # (B, 3, g*C, g*C)
            .unfold(2, CELL, CELL).unfold(3, CELL, CELL)                  # (B, 3, g, g, C, C)
            .permute(0, 2, 3, 1, 4, 5).reshape(batch * grid * grid, 3, CELL, CELL))


def scene_labels(scene) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per cell targets (grid²,) each: shape (EMPTY where no object), colour and size (-100 there)."""
    cells = scene.grid * scene.grid
    shape = torch.full((cells,), EMPTY, dtype=torch.long)
    colour = torch.full((cells,), _IGNORE, dtype=torch.long)
    size = torch.full((cells,), _IGNORE, dtype=torch.long)
    colours = list(COLOURS)
    for obj in scene.objects:
        shape[obj.cell_index] = SHAPES.index(obj.shape)
        colour[obj.cell_index] = colours.index(obj.colour)
        size[obj.cell_index] = SIZES.index(obj.size)
    return shape, colour, size


def _real_crops(dataset: ShapesDataset) -> tuple[torch.Tensor, tuple]:
    """Every cell crop of the dataset's images and its (shape, colour, size) targets, flattened."""
    chunk = 256  # images are cropped (and so shrunk) chunk by chunk to bound memory
    crops = [cell_crops(torch.stack([dataset[i]["images"][0]
                                     for i in range(start, min(start + chunk, len(dataset)))]), dataset.grid)
             for start in range(0, len(dataset), chunk)]
    labels = [scene_labels(dataset.get_scene(i)) for i in range(len(dataset))]
    return torch.cat(crops), tuple(torch.cat(parts) for parts in zip(*labels, strict=True))


def _loss(outputs, targets):
    return sum(F.cross_entropy(o.reshape(-1, o.shape[-1]), t.reshape(-1), ignore_index=_IGNORE)
               for o, t in zip(outputs, targets, strict=True))


def train_classifier(images_per_grid: dict | None = None, epochs: int = 3, batch_size: int = 576,
                     seed: int = 1234) -> CellClassifier:
    """Train on freshly generated real shapes images of every grid (deterministic by ``seed``;
    tens of seconds on 2 cores). ``batch_size`` counts cell crops."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    parts = [_real_crops(ShapesDataset(n, resolution=128, seed=seed + 7 + grid, split="train",
                                       max_objects=max_objects_for_grid(grid), grid=grid))
             for grid, n in (images_per_grid or _TRAIN_IMAGES).items()]
    crops = torch.cat([c for c, _ in parts])
    targets = tuple(torch.cat(t) for t in zip(*(t for _, t in parts), strict=True))
    model = CellClassifier()
    per_epoch = crops.shape[0] // batch_size
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * per_epoch)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(crops.shape[0], generator=generator)
        for k in range(per_epoch):
            rows = order[k * batch_size:(k + 1) * batch_size]
            loss = _loss(model.classify_crops(crops[rows]), tuple(t[rows] for t in targets))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "attnfast"


def cached_classifier(cache_dir: str | Path | None = None) -> CellClassifier:
    """The classifier, trained once and cached (keyed by version and the dataset's word lists)."""
    key = hashlib.sha1(json.dumps([CLASSIFIER_VERSION, SHAPES, list(COLOURS), SIZES]).encode()).hexdigest()[:12]
    path = Path(cache_dir or default_cache_dir()) / f"shapes_classifier_{key}.pt"
    model = CellClassifier()
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception:  # noqa: BLE001 - any unreadable cache is rebuilt
            path.unlink()  # a corrupt cache is rebuilt
    model = train_classifier()
    save_atomic(model.state_dict(), path)
    return model


@torch.no_grad()
def predict_cells(model: CellClassifier, images: torch.Tensor, grid: int = 3, batch_size: int = 256):
    """Predicted (shape, colour, size) per cell, each (N, grid²) long."""
    outs = [model(images[k:k + batch_size].float(), grid) for k in range(0, images.shape[0], batch_size)]
    return tuple(torch.cat([o[j] for o in outs]).argmax(-1) for j in range(3))


def attribute_accuracy(model: CellClassifier, images: torch.Tensor, scenes: list) -> dict:
    """Accuracy of ``images`` (N, 3, H, W) in [-1, 1] against their scenes' ground truth.

    Returns object-level shape/colour/size accuracy, ``object`` (all three right), ``empty``
    (empty cells predicted empty: nothing hallucinated; None when no cell is empty) and ``scene``
    (every cell right). All scenes must share one grid.
    """
    grids = {s.grid for s in scenes}
    if len(grids) != 1:
        raise ValueError(f"scenes of one call must share a grid, got grids {sorted(grids)}")
    shape, colour, size = predict_cells(model, images, grids.pop())
    truth = [scene_labels(s) for s in scenes]
    t_shape, t_colour, t_size = (torch.stack(parts) for parts in zip(*truth, strict=True))
    occupied = t_shape != EMPTY
    shape_ok = shape == t_shape
    colour_ok = colour == t_colour
    size_ok = size == t_size
    all_ok = shape_ok & colour_ok & size_ok
    cell_ok = torch.where(occupied, all_ok, shape == EMPTY)
    return {
        "shape": shape_ok[occupied].float().mean().item(),
        "colour": colour_ok[occupied].float().mean().item(),
        "size": size_ok[occupied].float().mean().item(),
        "object": all_ok[occupied].float().mean().item(),
        "empty": (shape == EMPTY)[~occupied].float().mean().item() if (~occupied).any() else None,
        "scene": cell_ok.all(1).float().mean().item(),
        "images": int(images.shape[0]),
    }
