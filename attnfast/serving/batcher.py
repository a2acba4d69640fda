"""Dynamic batching: one worker thread owns the model; requests from the event loop are queued and
merged into generator batches of up to ``max_batch`` images, or whatever has arrived ``max_wait``
after the oldest queued image, then split back to their requests.

A request's images are items (caption ids, length, seed). A request larger than a batch is split
over several batches; a batch may hold parts of several requests. Each item's noise comes from its
own seed (attnfast.generation.SeededGenerator), so what a request gets does not depend on the
requests it was batched with. Other work on the model (an interpolation) is queued as a call that
the worker runs alone, in arrival order.
"""
import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

LOG = logging.getLogger("attnfast")


class QueueFull(Exception):
    """The queue cannot take the request now; ``retry_after``: seconds a client should wait."""

    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The batcher was stopped: no new work is taken."""


@dataclass
class _Job:
    """Queued work of one request: ``count`` image items, or one call (count = its cost)."""
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    count: int
    enqueued: float
    ids: torch.Tensor | None = None          # (count, words_num) long
    lens: torch.Tensor | None = None         # (count,) long
    seeds: list[int] | None = None
    call: Callable | None = None             # call(core) -> result, for non-image work
    taken: int = 0                           # items handed to a batch so far
    images: list = field(default_factory=list)      # per finished slice: (start, images, attention)

    def resolve(self, result=None, error: BaseException | None = None) -> None:
        def finish():
            if self.future.done():           # the client went away
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
        self.loop.call_soon_threadsafe(finish)


class DynamicBatcher:
    """Args:
        core: an :class:`attnfast.generation.SeededGenerator` (used only by the worker thread).
        max_batch: most images per batch (<= core.max_batch). max_wait_s: see the module docstring.
        max_queue: most images waiting (not yet in a batch); beyond it :meth:`draw` raises QueueFull.
        metrics: an :class:`attnfast.serving.metrics.ServeMetrics` or None.
    """

    def __init__(self, core, max_batch: int, max_wait_s: float, max_queue: int, metrics=None):
        if max_batch > core.max_batch:
            raise ValueError(f"max_batch {max_batch} exceeds the generator's {core.max_batch}")
        self.core, self.max_batch, self.max_wait_s, self.max_queue = core, max_batch, max_wait_s, max_queue
        self.metrics = metrics
        self._pending: deque[_Job] = deque()
        self._queued = 0                     # items waiting, not yet in a batch
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._recent_rate = 0.0              # images/s of the last batch, for Retry-After

    # ------------------------------------------------------------------ event-loop side
    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="attnfast-generator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the worker (the server's shutdown, after its drain)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    async def draw(self, ids: torch.Tensor, lens: torch.Tensor, seeds: list[int]):
        """Images of ``len(seeds)`` items: (images (N, 3, S, S), attention (N, T, h, w) or None)."""
        job = self._job(len(seeds), ids=ids, lens=lens, seeds=list(seeds))
        return await job.future

    async def call(self, fn: Callable, cost: int):
        """``fn(core)`` on the worker thread, alone, after the work queued before it. ``cost``:
        images it draws (counted against the queue)."""
        job = self._job(cost, call=fn)
        return await job.future

    def _job(self, count: int, **work) -> _Job:
        loop = asyncio.get_running_loop()
        job = _Job(loop, loop.create_future(), count, time.monotonic(), **work)
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if self._queued + count > self.max_queue:
                raise QueueFull(self._retry_after())
            self._pending.append(job)
            self._queued += count
            self._observe_queue()
            self._cond.notify_all()
        return job

    def _retry_after(self) -> int:
        """Seconds until the queue has drained at the last measured rate (at least 1)."""
        rate = self._recent_rate
        return max(1, math.ceil(self._queued / rate)) if rate > 0 else 1

    def _observe_queue(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._queued)

    # ------------------------------------------------------------------ worker side
    def _run(self) -> None:
        while True:
            with self._cond:
                work = self._next_work()
            if work is None:
                return
            if isinstance(work, _Job):
                self._run_call(work)
            else:
                self._run_batch(work)

    def _next_work(self):
        """Under the lock: a call job, a batch [(job, start, stop)], or None when stopped and empty."""
        while not self._pending and not self._stopping:
            self._cond.wait()
        if not self._pending:
            return None
        first = self._pending[0]
        if first.call is not None:
            self._pending.popleft()
            self._queued -= first.count
            self._observe_queue()
            return first
        deadline = first.enqueued + self.max_wait_s
        while not self._stopping and self._images_ready() < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        batch, room = [], self.max_batch
        while room and self._pending and self._pending[0].call is None:
            job = self._pending[0]
            take = min(room, job.count - job.taken)
            batch.append((job, job.taken, job.taken + take))
            job.taken += take
            room -= take
            if job.taken == job.count:
                self._pending.popleft()
        self._queued -= self.max_batch - room
        self._observe_queue()
        return batch

    def _images_ready(self) -> int:
        """Items of the image jobs at the head of the queue (up to the first call)."""
        total = 0
        for job in self._pending:
            if job.call is not None:
                break
            total += job.count - job.taken
            if total >= self.max_batch:
                break
        return total

    def _run_batch(self, batch: list) -> None:
        ids = torch.cat([job.ids[start:stop] for job, start, stop in batch])
        lens = torch.cat([job.lens[start:stop] for job, start, stop in batch])
        seeds = [seed for job, start, stop in batch for seed in job.seeds[start:stop]]
        started = time.perf_counter()
        try:
            drawn = self.core.draw(ids, lens, seeds)
        except Exception as exc:  # a failed batch fails its requests, not the server
            LOG.exception("attnfast.serve: a batch of %d images failed", len(seeds))
            for job in {id(job): job for job, _, _ in batch}.values():
                job.resolve(error=exc)
            return
        seconds = time.perf_counter() - started
        self._recent_rate = len(seeds) / max(seconds, 1e-9)
        if self.metrics is not None:
            self.metrics.observe_batch(len(seeds), self.core.bucket(len(seeds)))
        images, attention = drawn.images, drawn.last_attention
        offset = 0
        for job, start, stop in batch:
            size = stop - start
            maps = attention[offset:offset + size] if attention is not None else None
            job.images.append((start, images[offset:offset + size], maps))
            offset += size
            if stop == job.count:
                job.resolve(self._assemble(job))

    @staticmethod
    def _assemble(job: _Job):
        parts = sorted(job.images, key=lambda part: part[0])
        images = torch.cat([p[1] for p in parts])
        attention = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
        return images, attention

    def _run_call(self, job: _Job) -> None:
        try:
            result = job.call(self.core)
        except Exception as exc:  # noqa: BLE001 - the error goes back to every request of the batch
            job.resolve(error=exc)
            return
        if self.metrics is not None:
            self.metrics.count_images(job.count)
        job.resolve(result)
