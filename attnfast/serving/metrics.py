"""The server's Prometheus metrics (prometheus_client, one registry per app so that tests can build
several): requests by endpoint and status, queue depth, batch sizes, request latency, images/s."""
import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

RATE_WINDOW_S = 10.0


class ServeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch: int):
        self.registry = CollectorRegistry()
        self.requests = Counter("attnfast_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.queue_depth = Gauge("attnfast_queue_depth", "images waiting for a generator batch",
                                 registry=self.registry)
        buckets = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if b < max_batch] + [max_batch]
        self.batch_size = Histogram("attnfast_batch_size", "images per generator batch (before padding)",
                                    buckets=buckets, registry=self.registry)
        self.padded = Counter("attnfast_padded_images", "padding rows run to reach a captured batch size",
                              registry=self.registry)
        self.latency = Histogram("attnfast_request_latency_seconds", "time from request to response, "
                                 "by endpoint", ["endpoint"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.images = Counter("attnfast_images", "images generated", registry=self.registry)
        rate = Gauge("attnfast_images_per_second", f"images generated per second over the last "
                     f"{RATE_WINDOW_S:.0f} s", registry=self.registry)
        rate.set_function(self.images_per_second)
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self.total_images = 0

    def observe_batch(self, count: int, padded_to: int) -> None:
        """One generator batch of ``count`` real images run at ``padded_to`` rows (worker thread)."""
        self.batch_size.observe(count)
        self.padded.inc(padded_to - count)
        self.count_images(count)

    def count_images(self, count: int) -> None:
        self.images.inc(count)
        with self._lock:
            self._recent.append((time.monotonic(), count))
            self.total_images += count

    def images_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            return sum(count for _, count in self._recent) / RATE_WINDOW_S

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
