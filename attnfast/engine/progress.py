"""Progress bars that suit both a terminal and a log file.

:func:`progress_bar` takes tqdm's arguments and returns a plain ``tqdm`` when the stream it writes to
(``file``, default ``sys.stderr`` as for tqdm) is a terminal. Otherwise (CI, a log file, nohup) it
returns a :class:`PlainProgress`: the same tqdm object (update, set_postfix, close, iteration, context
manager) whose display is tqdm's stats-only line (``ncols=0``: "desc: 42% 84/200 [00:21<00:29,
4.00it/s, loss=0.3]") written as one whole line, ending in a newline, at most once per ``interval``
seconds, and a last line (overall rate) on close: no carriage-return redraws in the log.

``interval``: the argument, else ``$ATTNFAST_PROGRESS_INTERVAL``, else 5 seconds.
"""
import os
import sys

from tqdm import tqdm

DEFAULT_INTERVAL = 5.0
INTERVAL_ENV = "ATTNFAST_PROGRESS_INTERVAL"


def progress_interval(interval: float | None = None) -> float:
    """Seconds between two plain lines: ``interval``, else $ATTNFAST_PROGRESS_INTERVAL, else 5."""
    if interval is None:
        text = os.environ.get(INTERVAL_ENV, "").strip()
        if not text:
            return DEFAULT_INTERVAL
        try:
            interval = float(text)
        except ValueError:
            raise ValueError(f"{INTERVAL_ENV} must be a number of seconds, got {text!r}") from None
    if not interval >= 0:
        raise ValueError(f"progress interval must be >= 0 seconds, got {interval!r}")
    return float(interval)


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (False when it cannot tell)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class PlainProgress(tqdm):
    """tqdm for streams that are not terminals: one plain line per ``interval`` seconds.

    Every tqdm refresh (an update after ``mininterval`` = ``interval``, ``set_postfix``, the first
    display) goes through :meth:`display`, which writes the stats line plus ``"\\n"`` only when
    ``interval`` seconds have passed since the last line; :meth:`close` writes the last line.
    ``clock`` replaces tqdm's ``time.time`` (tests).
    """

    def __init__(self, *args, interval: float = DEFAULT_INTERVAL, clock=None, **kwargs):
        self._interval = float(interval)
        self._last_line_t = None
        self._final = False
        kwargs.update(mininterval=self._interval, ncols=0, dynamic_ncols=False, ascii=True)
        kwargs.pop("bar_format", None)  # the stats-only line has no bar to format
        super().__init__(*args, **kwargs)
        if clock is not None and not self.disable:
            self._time = clock
            self.last_print_t = self.start_t = self._last_line_t = clock()

    def display(self, msg=None, pos=None):
        if msg == "":  # tqdm clearing its line (close with leave=False): nothing to clear in a log
            return False
        now = self._time()
        if not self._final and self._last_line_t is not None and now - self._last_line_t < self._interval:
            return False
        self._last_line_t = now
        self.fp.write((str(self) if msg is None else msg) + "\n")
        getattr(self.fp, "flush", lambda: None)()
        return True

    def close(self):
        if self.disable:
            return
        if self.leave or self.leave is None and abs(self.pos) == 0:
            self._ema_dt = lambda: None  # the last line gives the overall rate, as tqdm's close does
            self._final = True
            with self._lock:
                self.display()
        self.leave = False  # tqdm's close then only "clears" the line, which display ignores
        super().close()


def progress_bar(iterable=None, *, total=None, desc=None, initial=0, disable=False, unit="it",
                 file=None, interval: float | None = None, **kwargs) -> tqdm:
    """A progress bar: ``tqdm(...)`` on a terminal, :class:`PlainProgress` elsewhere.

    Takes tqdm's arguments (``iterable``, ``total``, ``desc``, ``initial``, ``disable``, ``unit``,
    ``file``, ``leave``, ``dynamic_ncols``, ...). ``file`` defaults to ``sys.stderr`` (tqdm's stream);
    whether it is a terminal decides the kind. ``disable=None`` keeps tqdm's meaning (no bar off a
    terminal). ``interval``: seconds between plain lines (see :func:`progress_interval`); ignored
    on a terminal.
    """
    stream = sys.stderr if file is None else file
    arguments = dict(total=total, desc=desc, initial=initial, disable=disable, unit=unit, file=stream,
                     **kwargs)
    if is_terminal(stream):
        return tqdm(iterable, **arguments)
    return PlainProgress(iterable, interval=progress_interval(interval), **arguments)
