"""Bad data (a missing or corrupt image or caption file): reported by file name, then skipped with
a count logged once, or fatal in strict mode."""
from __future__ import annotations

import logging

__all__ = ["BadDataError", "SkipLog"]

log = logging.getLogger("attnfast.data")


class BadDataError(ValueError):
    """A data file is missing or unreadable; the message names it."""


class SkipLog:
    """Collects skipped files of one dataset; ``strict=True`` raises on the first instead.

    ``skip(error)`` records it (raising in strict mode); ``report(what)`` logs the count and the
    first few names once (later calls log only new skips, e.g. a JPEG found truncated while
    training).
    """

    def __init__(self, strict: bool, source: str):
        self.strict = bool(strict)
        self.source = source
        self.errors: list[str] = []
        self._reported = 0

    def skip(self, error: BadDataError | str) -> None:
        if self.strict:
            raise error if isinstance(error, BadDataError) else BadDataError(str(error))
        self.errors.append(str(error))

    def __len__(self) -> int:
        return len(self.errors)

    def report(self, what: str = "items") -> None:
        new = self.errors[self._reported:]
        if not new:
            return
        shown = "; ".join(new[:3]) + (f"; ... ({len(new) - 3} more)" if len(new) > 3 else "")
        log.warning("%s: skipped %d %s with missing or corrupt files (strict mode makes this an "
                    "error): %s", self.source, len(new), what, shown)
        self._reported = len(self.errors)
