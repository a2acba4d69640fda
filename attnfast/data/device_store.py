"""The training images resident on the device (issue 8, item 4: "the dataset on the GPU when it fits").

:meth:`DeviceImageStore.build` renders every training image once (in batches, with a progress bar) and
keeps it on the device when the store fits ``budget_mb`` and, on CUDA, half of the free device
memory (``torch.cuda.mem_get_info``); otherwise it logs one message and returns None (the normal
path). Batches then take their images by index from the store: no rendering and no host->device
image copies. Captions, cap_lens, class_ids, keys, ... still come from the dataset's render-free
``text_item(i)``, so a batch is identical to the normal path's (same captions per epoch, same order,
exact resume): :func:`attnfast.trainer.batches.step_batches` does this when given a store.

Two layouts (``dtype``), both bit-exact with the dataset's float32 images in [-1, 1]:

* ``"float32"``: every stage resolution stored as the dataset returns it, 4 bytes per value, no
  work per batch.
* ``"uint8"`` (default, 1/4 of the memory or less): the largest side and any side that does not
  divide it (rendered natively) stored as uint8 pixels; a side ``r`` dividing the largest side
  ``R`` is not stored: each batch area-averages the uint8 pixels by integer sums over the
  ``(R/r)^2`` blocks (exact in float32) and normalises ``x * (2/255) - 1`` in float32, the
  dataset's own arithmetic (:func:`attnfast.data.shapes.to_tensor`). The build checks every
  rendered batch against the dataset's floats and raises if a value differs.

Only data sets whose images are a fixed function of the index can be stored: the AttnGAN-layout
and caption-folder data sets draw a random crop and flip per item (per draw), so they are refused
with a clear error.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from attnfast.engine.progress import progress_bar

LOG = logging.getLogger("attnfast")

DTYPES = ("uint8", "float32")
FREE_MEMORY_FRACTION = 0.5   # the store may take at most this part of the free CUDA memory
RENDER_BATCH = 256


class TextItems(Dataset):
    """``dataset`` without images: item ``i`` is ``dataset.text_item(i)`` (``images`` is an empty
    list). ``set_epoch`` is forwarded, so the per-epoch caption choice is the dataset's."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict:
        return self.dataset.text_item(i)


def _stack_images(items: list[dict]) -> list[torch.Tensor]:
    """The images of a list of items: one float32 (B, 3, r, r) per stage resolution."""
    return [torch.stack([item["images"][k] for item in items]) for k in range(len(items[0]["images"]))]


def _scale(device: torch.device) -> torch.Tensor:
    """float32(2 / 255), the factor :func:`attnfast.data.shapes.to_tensor` multiplies by."""
    return torch.tensor(2.0 / 255.0, dtype=torch.float32, device=device)


def encode_uint8(images: torch.Tensor) -> torch.Tensor:
    """float32 (B, 3, r, r) in [-1, 1] (normalised uint8 pixels) -> uint8 (B, 3, r, r)."""
    return torch.round((images.float() + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)


def decode_uint8(pixels: torch.Tensor, factor: int = 1) -> torch.Tensor:
    """uint8 (B, 3, R, R) -> float32 (B, 3, R/factor, R/factor) in [-1, 1]: the area average over
    ``factor`` x ``factor`` blocks (integer block sums, one float32 division) then ``x * (2/255) - 1``,
    bit for bit the dataset's float32 arithmetic."""
    x = pixels.to(torch.float32)
    if factor != 1:
        # block sums by sum pooling: integers below 2**24, exact in float32 in any order (2.4x faster
        # than a uint8 -> int32 sum over the strided block axes)
        sums = F.avg_pool2d(x, factor, divisor_override=1)
        count = torch.tensor(float(factor * factor), dtype=torch.float32, device=pixels.device)
        x = sums.div_(count)                       # a tensor divisor: true division, not a reciprocal
    return x.mul_(_scale(pixels.device)).sub_(1.0)


class DeviceImageStore:
    """Every training image of a data set, on one device.

    ``layout`` has one entry per stage resolution (ascending, as the items' ``images``):
    ``("float32", k)`` / ``("uint8", k)`` = ``tensors[k]`` holds that side, ``("pooled", f)`` = the
    area average of the largest side's uint8 pixels over f x f blocks. ``tensors``: (N, 3, r, r)
    float32 or uint8 on ``device``.
    """

    def __init__(self, tensors: list[torch.Tensor], layout: list[tuple[str, int]], device: torch.device):
        self.tensors, self.layout, self.device = tensors, layout, torch.device(device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def images(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """float32 (B, 3, r, r) per stage resolution for the dataset items ``indices`` (long (B,))."""
        idx = torch.as_tensor(indices, dtype=torch.long).to(self.device, non_blocking=True)
        picked = [t.index_select(0, idx) for t in self.tensors]
        out = []
        for kind, arg in self.layout:
            if kind == "float32":
                out.append(picked[arg])
            elif kind == "uint8":
                out.append(decode_uint8(picked[arg]))
            else:   # pooled from the largest side, the last stored tensor
                out.append(decode_uint8(picked[-1], arg))
        return out

    def attach(self, batch: dict) -> dict:
        """A batch collated from :class:`TextItems` with its ``images`` filled from the store
        (by ``batch["indices"]``)."""
        batch["images"] = self.images(batch["indices"])
        return batch

    # ------------------------------------------------------------------ building
    @staticmethod
    def plan(multi_res, dtype: str) -> tuple[list[tuple[str, int]], list[int]]:
        """(layout, stored sides) for the ascending sides ``multi_res`` (see the class docstring)."""
        if dtype not in DTYPES:
            raise ValueError(f"dataset-on-device dtype must be one of {DTYPES}, got {dtype!r}")
        multi_res = [int(r) for r in multi_res]
        if dtype == "float32":
            return [("float32", k) for k in range(len(multi_res))], multi_res
        top = multi_res[-1]
        native = [r for r in multi_res[:-1] if top % r != 0]
        stored = native + [top]      # the largest side last
        layout = [("uint8", stored.index(r)) if r in stored else ("pooled", top // r) for r in multi_res]
        return layout, stored

    @staticmethod
    def can_store(dataset) -> bool:
        """Whether ``dataset``'s images are a fixed function of the index (a render-free ``text_item``
        and ``multi_res``: the shapes data), so that a store gives the same batches."""
        return hasattr(dataset, "text_item") and hasattr(dataset, "multi_res")

    @classmethod
    def build(cls, dataset, device, budget_mb: float, dtype: str = "uint8", num_workers: int = 0,
              progress: bool = True) -> DeviceImageStore | None:
        """The store of ``dataset`` (a data set with ``multi_res`` and a render-free ``text_item``)
        on ``device``, or None (one logged message) when it needs more than ``budget_mb`` MB or,
        on CUDA, more than half of the free device memory. Raises ValueError for a data set that
        augments per draw, RuntimeError if a stored value would differ from the dataset's."""
        device = torch.device(device)
        if budget_mb <= 0:
            raise ValueError(f"--dataset-on-device must be > 0 MB, got {budget_mb}")
        if not cls.can_store(dataset):
            raise ValueError(f"--dataset-on-device: {type(dataset).__name__} cannot be stored on the device: "
                             "its images are drawn per item (random crop and flip), not a fixed function of "
                             "the index; only the shapes dataset is supported (drop the flag)")
        layout, stored = cls.plan(dataset.multi_res, dtype)
        count = len(dataset)
        itemsize = 1 if dtype == "uint8" else 4
        need = count * 3 * itemsize * sum(r * r for r in stored)
        reason = None
        if need > budget_mb * (1 << 20):
            reason = f"more than the budget of {budget_mb:g} MB"
        elif device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if need > FREE_MEMORY_FRACTION * free:
                reason = f"more than half of the {free / (1 << 20):.0f} MB free on {device}"
        if reason is not None:
            LOG.warning("attnfast: --dataset-on-device: the %d training images need %.1f MB (%s), %s; "
                        "batches are rendered by the data loader as usual", count, need / (1 << 20), dtype,
                        reason)
            return None
        tensors = [torch.empty(count, 3, r, r, dtype=getattr(torch, dtype), device=device) for r in stored]
        store = cls(tensors, layout, device)
        # Its own generator: iterating must not draw from the global RNG (the training noise).
        loader = DataLoader(dataset, batch_size=RENDER_BATCH, shuffle=False, num_workers=num_workers,
                            collate_fn=_stack_images, generator=torch.Generator().manual_seed(0))
        start = 0
        # off a terminal (a log file) the bar prints a plain line every few seconds
        with progress_bar(total=count, desc="dataset on device", unit="img", disable=not progress) as bar:
            for images in loader:
                size = images[0].shape[0]
                store._fill(start, images)
                start += size
                bar.update(size)
        LOG.info("attnfast: --dataset-on-device: %d training images on %s, %.1f MB (%s)", count, device,
                 store.nbytes / (1 << 20), dtype)
        return store

    def _fill(self, start: int, images: list[torch.Tensor]) -> None:
        """Write the rendered batch ``images`` (the items start, start + 1, ...) and check that the
        store gives back exactly these values."""
        rows = slice(start, start + images[0].shape[0])
        for (kind, arg), image in zip(self.layout, images, strict=True):
            if kind == "float32":
                self.tensors[arg][rows] = image.to(self.device)
            elif kind == "uint8":
                self.tensors[arg][rows] = encode_uint8(image).to(self.device)
        indices = torch.arange(rows.start, rows.stop)
        for (kind, _), got, want in zip(self.layout, self.images(indices), images, strict=True):
            if not torch.equal(got.cpu(), want):
                raise RuntimeError(f"--dataset-on-device: the {kind} store does not reproduce the dataset's "
                                   f"{want.shape[-1]}px images exactly (items {rows.start}-{rows.stop - 1}); "
                                   "use the float32 store")

