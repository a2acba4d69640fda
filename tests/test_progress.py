"""Issue 20, progress in logs: off a terminal the bars print one plain line per interval (no carriage
returns), on a terminal they are tqdm's own."""
import io
import re
from pathlib import Path

import pytest
from tqdm import tqdm

from attnfast.engine import progress
from attnfast.engine.progress import PlainProgress, progress_bar

PACKAGE = Path(__file__).resolve().parent.parent / "attnfast"


class Clock:
    """A fake time.time that moves only when told."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_plain_lines_at_most_one_per_interval():
    stream, clock = io.StringIO(), Clock()
    with progress_bar(total=200, desc="gan", file=stream, interval=1.0, clock=clock) as bar:
        assert isinstance(bar, PlainProgress)
        for step in range(200):
            clock.now += 0.0625                              # 16 steps a second: 12.5 s in all
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix({"errD0": f"{step / 7:.3g}"})  # tqdm refreshes on every set_postfix
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert 11 <= len(lines) <= 14, lines                     # start, at most 1 per second, the last line
    assert lines[0].startswith("gan:") and "0/200" in lines[0]
    assert re.fullmatch(r"gan: 100% 200/200 \[00:12<00:00, 16\.00it/s, errD0=27\.1\]", lines[-1]), lines[-1]
    assert all(line.startswith("gan: ") for line in lines)


def test_a_log_line_waits_for_the_interval_even_when_postfix_changes():
    stream, clock = io.StringIO(), Clock()
    bar = progress_bar(total=10, desc="x", file=stream, interval=5.0, clock=clock)
    for step in range(10):
        clock.now += 0.1
        bar.update(1)
        bar.set_postfix(loss=step)
    assert len(stream.getvalue().splitlines()) == 1          # only the first line so far
    bar.close()
    bar.close()                                              # a second close writes nothing
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "10/10" in lines[-1] and "loss=9" in lines[-1]


def test_iterating_a_log_bar_yields_everything_and_closes():
    stream = io.StringIO()
    items = list(progress_bar(range(7), desc="generate", unit="batch", file=stream, interval=0.0))
    assert items == list(range(7))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and "7/7" in lines[-1] and "batch/s" in lines[-1]


def test_unknown_total_and_leave_false():
    stream = io.StringIO()
    bar = progress_bar(desc="u", file=stream, interval=100.0, leave=False)
    bar.update(3)
    bar.close()
    assert stream.getvalue() == "u: 0it [00:00, ?it/s]\n"     # no closing line asked, nothing cleared


def test_disabled_bars_write_nothing():
    for disable in (True, None):                             # None: tqdm's "only on a terminal"
        stream = io.StringIO()
        with progress_bar(total=3, file=stream, disable=disable) as bar:
            bar.update(3)
            bar.set_postfix(a=1)
        assert stream.getvalue() == ""


def test_a_terminal_gets_tqdm():
    stream = Terminal()
    with progress_bar(total=3, desc="t", file=stream) as bar:
        assert type(bar) is tqdm
        bar.update(3)
    assert "\r" in stream.getvalue()


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.25")
    assert progress.progress_interval() == 0.25
    assert progress.progress_interval(2) == 2.0               # an explicit interval wins
    with progress_bar(total=1, file=io.StringIO()) as bar:
        assert bar.mininterval == 0.25
    monkeypatch.setenv(progress.INTERVAL_ENV, "soon")
    with pytest.raises(ValueError, match=progress.INTERVAL_ENV):
        progress.progress_interval()
    monkeypatch.delenv(progress.INTERVAL_ENV)
    assert progress.progress_interval() == progress.DEFAULT_INTERVAL == 5.0
    with pytest.raises(ValueError, match=">= 0"):
        progress.progress_interval(-1)


def test_is_terminal_of_odd_streams():
    closed = io.StringIO()
    closed.close()
    assert not progress.is_terminal(closed) and not progress.is_terminal(object())
    assert progress.is_terminal(Terminal())


def test_the_package_makes_bars_only_through_progress_bar():
    users = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
             if re.search(r"^\s*(from tqdm|import tqdm)", path.read_text(), re.MULTILINE)]
    assert users == ["engine/progress.py"]
