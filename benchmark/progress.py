"""The progress of the long commands: their bars, redrawn on a terminal and plain lines in a log, and the
time left of a run, each unit of work weighted by its estimated cost."""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm
from tqdm.auto import tqdm as shown_tqdm

from benchmark.checks import check_choice

# The bars of run, search and prior: tqdm's own rate and ETA left out, as each long command gives its
# own ETA, from the cost of the work left, in the postfix.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

# What tqdm writes before a bar's postfix
POSTFIX = ", "
# A terminal's cursor moves, which tqdm writes to stack several bars
_CURSOR = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class LogLines:
    """The stream of a tqdm bar where nothing is redrawn in place (a log file, a pipe): the bar's state as a
    plain line when it starts, at its first redraw (which has a resumed run's count, set once the bar
    exists) and at the first with a postfix (what a run trains: configuration, fold, epoch, ETA), then at
    most every ``interval`` seconds, and when it closes; without the carriage returns, padding and cursor
    moves of each redraw, which a file would keep as they are."""

    def __init__(self, stream: TextIO, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.interval, self.clock = stream, interval, clock
        self.state, self.shown, self.shown_at, self.redraws = "", "", -math.inf, 0
        self.postfix_shown = False

    @property
    def encoding(self) -> str | None:  # tqdm asks, to choose its bar's characters
        return getattr(self.stream, "encoding", None)

    def write(self, text: str) -> int:
        cleaned = _CURSOR.sub("", text)
        if "\r" in cleaned:  # a redraw: the bar's new state, or blanks where tqdm clears it
            self.state = cleaned.rsplit("\r", 1)[1].strip() or self.state
            self.redraws += 1
            first_postfix = not self.postfix_shown and POSTFIX in self.state
            if self.redraws <= 2 or first_postfix or self.clock() - self.shown_at >= self.interval:
                self._show()
        elif "\n" in cleaned:  # the bar closing: its last state
            self._show()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def _show(self) -> None:
        if self.state and self.state != self.shown:
            self.stream.write(self.state + "\n")
            self.stream.flush()
            self.shown, self.shown_at = self.state, self.clock()
            self.postfix_shown = self.postfix_shown or POSTFIX in self.state


# How bars are drawn, where the guess from the stream is wrong: "bar" under `| tee` on a terminal, or in a
# notebook cell that runs the command; "lines" for a terminal's output kept as a log (`script`, say)
PROGRESS_VARIABLE = "MTVAE_BENCH_PROGRESS"


def chosen_progress() -> str:
    """How ``PROGRESS_VARIABLE`` asks bars to be drawn ("bar", "lines"), or "" where it is not set;
    a ``ValueError`` for another value (the commands check it before they start)."""
    chosen = os.environ.get(PROGRESS_VARIABLE, "")
    if chosen:
        check_choice(f"{PROGRESS_VARIABLE} value", chosen, ("bar", "lines"))
    return chosen


def redrawn(stream: TextIO) -> bool:
    """Whether a bar on ``stream`` is redrawn in place: as ``PROGRESS_VARIABLE`` says, else on a terminal
    or in a notebook."""
    chosen = chosen_progress()
    return chosen == "bar" if chosen else stream.isatty() or "ipykernel" in sys.modules


UNSIZED_TERMINAL = os.terminal_size((80, 24))  # the size bars take on a terminal that reports none


def unsized(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that reports no width or no height (0)."""
    try:  # a notebook's stream is no terminal, whatever the file behind it
        return stream.isatty() and 0 in os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no terminal, or a stream without a file
        return False


def progress_bar(total: int, desc: str, unit: str, show: bool = True, position: int = 0) -> tqdm:
    """The bar of a long command on stderr, in ``BAR_FORMAT``: redrawn in place (``redrawn``), the bars
    of several workers each at its ``position``; else written through ``LogLines``, each bar on lines
    of its own (at position 0: a bar below another is written after a newline, which would end it)."""
    options: dict[str, Any] = dict(total=total, desc=desc, unit=unit, bar_format=BAR_FORMAT, disable=not show)
    if redrawn(sys.stderr):
        # tqdm takes a terminal's reported size less one (a full line would wrap): 0 × 0 (``docker exec -t``,
        # some CI terminals) hid every bar
        shape = dict(ncols=UNSIZED_TERMINAL.columns - 1, nrows=UNSIZED_TERMINAL.lines - 1) \
            if unsized(sys.stderr) else dict(dynamic_ncols=True)
        return shown_tqdm(**options, position=position, **shape)
    return tqdm(**options, position=0, leave=True, ascii=True, file=LogLines(sys.stderr))


def duration(seconds: float) -> str:
    """An estimated time, to the unit that reads best."""
    minutes = seconds / 60
    return (f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s" if minutes < 2 else
            f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.0f} h")


class CostEta:
    """Estimates the time left from the work done since it was made.

    tqdm's own ETA assumes units of equal cost (a VQ-VAE 3 fold costs about twenty Gaussian VAE folds)
    and counts units finished in an earlier session as done in no time. Here each unit weighs
    its estimated cost, only this session's work sets the rate, and units in training count
    in proportion to their finished epochs (all of them when folds train stacked). Time spent
    ``waiting`` (for a dead worker's unit to be handed out again) does not set the rate.
    """

    def __init__(self, unit_cost: dict[str, float], clock: Callable[[], float] = time.monotonic) -> None:
        self.unit_cost, self.clock = unit_cost, clock
        self.started = clock()
        self.settled = 0.0
        self.settled_at_start: float | None = None
        self.in_training: dict[str, float] = {}
        self.idle = 0.0

    def settle(self, keys: Iterable[str]) -> None:
        """The units that are done (or failed for good) now, wherever they were trained."""
        keys = set(keys)
        self.settled = sum(self.unit_cost[k] for k in keys)
        if self.settled_at_start is None:
            self.settled_at_start = self.settled
        for key in keys & set(self.in_training):
            del self.in_training[key]

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """A stretch of time in which this worker trains nothing."""
        start = self.clock()
        try:
            yield
        finally:
            self.idle += self.clock() - start

    def progress(self, key: str, fraction: float) -> None:
        """A unit in training here is ``fraction`` done."""
        self.in_training[key] = self.unit_cost[key] * fraction

    def __str__(self) -> str:
        partial = sum(self.in_training.values())
        done = self.settled - (self.settled_at_start or 0.0) + partial
        if done <= 0:
            return "?"
        remaining = max(sum(self.unit_cost.values()) - self.settled - partial, 0.0)
        return tqdm.format_interval((self.clock() - self.started - self.idle) / done * remaining)
