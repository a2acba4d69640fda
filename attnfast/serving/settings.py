"""The server's limits and batching knobs, one frozen record that every part reads."""
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """Args (each a command-line flag of ``python -m attnfast.serve``):
        max_batch: the most images one generator batch merges (also the graph buckets' top).
        max_wait_ms: how long the first queued image waits for batch-mates before its batch runs.
        max_queue: images that may wait in the queue; a request that does not fit gets 503.
        max_captions: captions per request. max_n: images per caption. max_caption_chars: characters
        of one caption. max_steps: images of one interpolation. max_body_bytes: request body size.
    """
    max_batch: int = 64
    max_wait_ms: float = 10.0
    max_queue: int = 512
    max_captions: int = 16
    max_n: int = 16
    max_caption_chars: int = 300
    max_steps: int = 16
    max_body_bytes: int = 64 * 1024

    def __post_init__(self):
        for name in ("max_batch", "max_queue", "max_captions", "max_n", "max_caption_chars", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_steps < 2:
            raise ValueError(f"--max-steps must be >= 2, got {self.max_steps}")
        if self.max_wait_ms < 0:
            raise ValueError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")
        if self.max_queue < self.max_batch:
            raise ValueError(f"--max-queue ({self.max_queue}) must be >= --max-batch ({self.max_batch})")
