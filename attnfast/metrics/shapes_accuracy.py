"""Attribute accuracy on the shapes dataset: a small fixed classifier, trained on the dataset's
ground truth in seconds and cached, reads every cell of the 3x3 grid of an image (empty, or which
shape, colour and size); generated images are scored against the scene their caption describes.
"""
import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from attnfast.data import COLOURS, SHAPES, SIZES, ShapesDataset

EMPTY = len(SHAPES)             # shape class of an empty cell
CELL = 24                       # each grid cell is read as a CELL x CELL crop
INPUT_SIZE = 3 * CELL
CLASSIFIER_VERSION = 2
_IGNORE = -100


class CellClassifier(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> per cell of the 3x3 grid (row-major) logits: shape (B, 9, 7:
    6 shapes + empty), colour (B, 9, len(COLOURS)), size (B, 9, 2). Each cell is classified from
    its own crop, keeping the spatial detail that tells shapes apart."""

    def __init__(self, width: int = 16):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(3, width, 2), block(width, 2 * width, 2),
                                      block(2 * width, 4 * width, 1))     # (9B, 4w, 6, 6)
        hidden = 4 * width * (CELL // 4) ** 2
        self.shape_head = nn.Linear(hidden, EMPTY + 1)
        self.colour_head = nn.Linear(hidden, len(COLOURS))
        self.size_head = nn.Linear(hidden, len(SIZES))

    def forward(self, images: torch.Tensor):
        batch = images.shape[0]
        crops = (resize_for_classifier(images)                             # (B, 3, 72, 72)
                 .unfold(2, CELL, CELL).unfold(3, CELL, CELL)              # (B, 3, 3, 3, 24, 24)
                 .permute(0, 2, 3, 1, 4, 5).reshape(batch * 9, 3, CELL, CELL))
        hidden = self.features(crops).flatten(1)                          # (9B, hidden)
        split = lambda t: t.view(batch, 9, -1)
        return split(self.shape_head(hidden)), split(self.colour_head(hidden)), split(self.size_head(hidden))


def resize_for_classifier(images: torch.Tensor) -> torch.Tensor:
    if images.shape[-1] == INPUT_SIZE:
        return images
    mode = "area" if images.shape[-1] > INPUT_SIZE else "bilinear"
    return F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode=mode)


def scene_labels(scene) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per cell targets (9,) each: shape (EMPTY where no object), colour and size (-100 there)."""
    shape = torch.full((9,), EMPTY, dtype=torch.long)
    colour = torch.full((9,), _IGNORE, dtype=torch.long)
    size = torch.full((9,), _IGNORE, dtype=torch.long)
    colours = list(COLOURS)
    for obj in scene.objects:
        cell = obj.cell[0] * 3 + obj.cell[1]
        shape[cell] = SHAPES.index(obj.shape)
        colour[cell] = colours.index(obj.colour)
        size[cell] = SIZES.index(obj.size)
    return shape, colour, size


def _real_batch(dataset: ShapesDataset, indices) -> tuple[torch.Tensor, tuple]:
    images, labels = [], []
    for i in indices:
        images.append(resize_for_classifier(dataset[i]["images"][0][None])[0])
        labels.append(scene_labels(dataset.get_scene(i)))
    return torch.stack(images), tuple(torch.stack(parts) for parts in zip(*labels))


def _loss(outputs, targets):
    return sum(F.cross_entropy(o.reshape(-1, o.shape[-1]), t.reshape(-1), ignore_index=_IGNORE)
               for o, t in zip(outputs, targets))


def train_classifier(num_images: int = 4000, epochs: int = 3, batch_size: int = 64, seed: int = 1234,
                     progress: bool = False) -> CellClassifier:
    """Train on freshly generated real shapes images (deterministic by ``seed``; tens of seconds on 2 cores)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dataset = ShapesDataset(num_images, resolution=128, seed=seed + 7, split="train")
    images, targets = _real_batch(dataset, range(num_images))
    model = CellClassifier()
    steps = epochs * (num_images // batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(num_images, generator=generator)
        for k in range(num_images // batch_size):
            rows = order[k * batch_size:(k + 1) * batch_size]
            loss = _loss(model(images[rows]), tuple(t[rows] for t in targets))
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
        except Exception:
            path.unlink()  # a corrupt cache is rebuilt
    model = train_classifier()
    from attnfast.engine.checkpoint import save_atomic
    save_atomic(model.state_dict(), path)
    return model


@torch.no_grad()
def predict_cells(model: CellClassifier, images: torch.Tensor, batch_size: int = 256):
    """Predicted (shape, colour, size) per cell, each (N, 9) long."""
    outs = [model(images[k:k + batch_size].float()) for k in range(0, images.shape[0], batch_size)]
    return tuple(torch.cat([o[j] for o in outs]).argmax(-1) for j in range(3))


def attribute_accuracy(model: CellClassifier, images: torch.Tensor, scenes: list) -> dict:
    """Accuracy of ``images`` (N, 3, H, W) in [-1, 1] against their scenes' ground truth.

    Returns object-level shape/colour/size accuracy, ``object`` (all three right), ``empty``
    (empty cells predicted empty: nothing hallucinated) and ``scene`` (all nine cells right).
    """
    shape, colour, size = predict_cells(model, images)
    truth = [scene_labels(s) for s in scenes]
    t_shape, t_colour, t_size = (torch.stack(parts) for parts in zip(*truth))
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
        "empty": (shape == EMPTY)[~occupied].float().mean().item(),
        "scene": cell_ok.all(1).float().mean().item(),
        "images": int(images.shape[0]),
    }
