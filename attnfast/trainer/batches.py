"""Deterministic step-indexed batches: the batch of global step s depends only on (seed, s), so a
resumed run reads exactly the batches the uninterrupted run would have read."""
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from attnfast.data.device_store import TextItems
from .distributed import shard


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled, full batches of one epoch (drop_last, as the original's loaders)."""
    generator = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(num_items, generator=generator).tolist()
    return [order[k:k + batch_size] for k in range(0, num_items - batch_size + 1, batch_size)]


def steps_per_epoch(num_items: int, batch_size: int) -> int:
    if num_items < batch_size:
        raise ValueError(f"the dataset has {num_items} items, fewer than one batch of {batch_size}")
    return num_items // batch_size


def step_batches(dataset: Dataset, batch_size: int, seed: int, start_step: int, collate,
                 num_workers: int = 0, dist=None, pin_memory: bool = False, store=None) -> Iterator[dict]:
    """Yield collated batches for steps start_step, start_step + 1, ... forever.

    ``dist`` (a :class:`attnfast.trainer.distributed.DistContext`, None = one process): each rank
    loads only its contiguous slice of every global batch of ``batch_size`` items.
    ``pin_memory``: page-locked batches, so that ``.to(cuda, non_blocking=True)`` does not wait
    for the GPU (the CUDA-graph step relies on it).
    ``store``: a :class:`attnfast.data.device_store.DeviceImageStore` of ``dataset`` (None = off):
    the loader reads the render-free ``dataset.text_item`` and each batch takes its images from
    the store by index, so the batches equal the storeless ones.
    """
    if store is not None:
        dataset = TextItems(dataset)
    per_epoch = steps_per_epoch(len(dataset), batch_size)
    epoch, offset = divmod(start_step, per_epoch)
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        batches = epoch_batches(len(dataset), batch_size, seed, epoch)[offset:]
        if dist is not None and dist.enabled:
            batches = [shard(b, dist) for b in batches]
        # The loader's own generator: creating an iterator must not draw from the global RNG,
        # or a resumed run (which creates one mid-epoch) would shift the training noise.
        own_rng = torch.Generator().manual_seed(seed * 100003 + epoch + 1)
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                            num_workers=num_workers, generator=own_rng, pin_memory=pin_memory)
        if store is None:
            yield from loader
        else:
            yield from map(store.attach, loader)
        epoch, offset = epoch + 1, 0
