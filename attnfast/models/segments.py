"""BatchNorm over consecutive batch segments: several batches through one network call (issue 27).

A discriminator step runs D's trunk on the real and on the fake images, and its conditional head on
the real, the fake and the mismatched pairs: five calls of small convolutions whose cost on a CPU is
mostly per call. Concatenated along the batch they are two calls, and every layer is per sample
except BatchNorm, whose training-mode statistics are the batch's. :class:`SegmentBatchNorm2d` keeps
them the batch's: inside :func:`batch_segments` it normalises each segment with its own statistics
(one ``nn.BatchNorm2d`` call per segment, in order), so the concatenated call computes what the
separate calls compute -- the same statistics, the same running-statistics updates in the same order,
``num_batches_tracked`` counted once per segment -- up to the rounding of the batched convolutions.
Outside the context it is ``nn.BatchNorm2d`` (same parameters, buffers and state_dict keys).
"""
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


class SegmentBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that, while ``segments`` is set (by :func:`batch_segments`), normalises
    each run of ``segments[k]`` consecutive samples of its (N, C, H, W) input on its own (N = the
    sum of the segments)."""

    segments: tuple[int, ...] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        segments = self.segments
        if segments is None or len(segments) == 1:
            return super().forward(x)
        if x.dim() != 4 or x.shape[0] != sum(segments):
            raise ValueError(f"{type(self).__name__}: input of shape {tuple(x.shape)} is not (N, C, H, W) "
                             f"with N = the sum of the batch segments {list(segments)}")
        return torch.cat([super(SegmentBatchNorm2d, self).forward(part)
                          for part in x.split(list(segments))])


@contextmanager
def batch_segments(module: nn.Module, segments: Sequence[int]) -> Iterator[None]:
    """Every :class:`SegmentBatchNorm2d` in ``module`` normalises per segment of ``segments`` (sizes
    of consecutive sub-batches, each >= 1) until the context ends."""
    sizes = tuple(int(n) for n in segments)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"batch segments must be positive sizes, got {list(segments)}")
    norms = [m for m in module.modules() if isinstance(m, SegmentBatchNorm2d)]
    for norm in norms:
        norm.segments = sizes
    try:
        yield
    finally:
        for norm in norms:
            norm.segments = None
