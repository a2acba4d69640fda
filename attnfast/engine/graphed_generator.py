"""Batched generation at one fixed batch size, captured as a CUDA graph on the GPU (issue 8).

:class:`GraphedGenerator` wraps a generation function ``fn(captions, cap_lens, noise) -> (fakes,
att_maps)`` (e.g. :func:`attnfast.generation.generate` with the text encoder run unpacked, so that no
caption length is read on the host). On CUDA with ``graphs=True`` the first full batch is run
twice on a side stream (warm-up), then captured; every later batch is copied into the static
inputs and the graph replayed. A smaller (last) batch is padded to the captured size with copies
of its first row, whose outputs are dropped. Without CUDA, with ``graphs=False`` or when the
capture fails (logged once), ``fn`` runs eagerly; results are the same up to float rounding.
"""
import logging
from collections.abc import Callable

import torch

LOG = logging.getLogger("attnfast")


class GraphedGenerator:
    """Args:
        fn: (captions (B, T) long, cap_lens (B,) long, noise (B, z)) on ``device`` -> (fakes: list of
            (B, 3, r, r), att_maps: list of (B, T, h, w)); must not read device values on the host.
        batch: the captured batch size B.
        device: where ``fn`` runs.
        graphs: capture on CUDA (ignored elsewhere).
        validate: optional host-side check ``validate(captions, cap_lens)`` on the CPU inputs (the
            captured ``fn`` cannot check values).
    Calling it returns the outputs of the n given rows (n <= B): with a graph they are views of
    static buffers, valid until the next call (copy or convert them before calling again).
    """

    def __init__(self, fn: Callable, batch: int, device: torch.device, graphs: bool = True,
                 validate: Callable | None = None, warmup: int = 2):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.fn, self.batch, self.device, self.validate, self.warmup = fn, int(batch), device, validate, warmup
        self.graphs = bool(graphs) and device.type == "cuda"
        self.graph = None
        self.static_in = self.static_out = None
        self.failed = None

    def __call__(self, captions: torch.Tensor, cap_lens: torch.Tensor, noise: torch.Tensor):
        n = captions.shape[0]
        if n > self.batch:
            raise ValueError(f"got {n} rows for a generator captured at batch {self.batch}")
        if not self.graphs or self.failed is not None:
            return self.fn(captions.to(self.device), cap_lens.to(self.device), noise.to(self.device))
        if self.validate is not None:
            self.validate(captions.cpu(), cap_lens.cpu())
        rows = torch.cat([torch.arange(n), torch.zeros(self.batch - n, dtype=torch.long)])
        inputs = (captions.cpu()[rows], cap_lens.cpu()[rows], noise.cpu()[rows])
        if self.static_in is None:
            self.static_in = tuple(x.to(self.device) for x in inputs)
        else:
            for static, value in zip(self.static_in, inputs, strict=True):
                static.copy_(value, non_blocking=True)
        if self.graph is None and not self._capture():
            return self.fn(*(x[:n] for x in self.static_in))
        self.graph.replay()
        fakes, att_maps = self.static_out
        return [f[:n] for f in fakes], [a[:n] for a in att_maps]

    def _capture(self) -> bool:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.fn(*self.static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.static_out = self.fn(*self.static_in)
        except Exception as exc:  # noqa: BLE001 - a non-capturable op: eager from now on
            self.failed = f"{type(exc).__name__}: {exc}"
            self.static_out = None
            torch.cuda.synchronize(self.device)
            LOG.warning("attnfast: generator graph capture failed, sampling eagerly: %s", self.failed)
            return False
        self.graph = graph
        LOG.info("attnfast: generator captured as a CUDA graph at batch %d", self.batch)
        return True
