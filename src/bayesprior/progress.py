"""How long loops report their progress: the one place that decides between a bar, plain lines and silence.

- On a terminal (``sys.stderr.isatty()``): a tqdm bar.
- Anywhere else (a file, a pipe, CI, a cluster job's log): no bar, whose redraws would fill the log with
  carriage returns; a loop that reports values (the trainer's epochs) prints one plain line per step
  instead, and a loop over cases one line per case (naming the case, when the loop says how).
- A timed loop (``timed=True``: the trainer's epochs, `predict`'s cases) ends each line with the seconds per
  step so far and the time left at that pace (``3.3 s/epoch, ~27 min left``); a bar shows both by itself.
- ``enabled=False`` (a command's ``--quiet``): nothing.

``with plain_lines(): ...`` asks for lines even on a terminal (``train --no-progress``), and
``with labelled("seed 2"): ...`` starts every bar and line with a label (``train --seeds 0,1,2``, whose runs
would otherwise print the same lines). Everything goes to stderr, so a command's results on stdout stay clean.

    progress = Progress(range(epochs), "epochs", "epoch", enabled=not quiet)
    for epoch in progress:
        ...
        progress.report(loss=0.41, lr=1e-3)    # the bar's postfix, or one line "epoch 3/30: loss 0.41 lr 0.001"
    progress.close()
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sized
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Iterator

_PLAIN_LINES = ContextVar("bayesprior_plain_lines", default=False)
_LABEL = ContextVar("bayesprior_progress_label", default="")


@contextmanager
def plain_lines() -> Iterator[None]:
    """Within this block, progress is reported as plain lines even on a terminal."""
    token = _PLAIN_LINES.set(True)
    try:
        yield
    finally:
        _PLAIN_LINES.reset(token)


@contextmanager
def labelled(label: str) -> Iterator[None]:
    """Within this block, every bar and plain line starts with `label` (which run is talking)."""
    token = _LABEL.set(f"{label} ")
    try:
        yield
    finally:
        _LABEL.reset(token)


def bars_wanted() -> bool:
    """True where a progress bar belongs: stderr is a terminal and `plain_lines` is not in force."""
    isatty = getattr(sys.stderr, "isatty", None)
    return not _PLAIN_LINES.get() and bool(isatty and isatty())


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"27 min"`` or ``"2.3 h"``: a duration as a person reads it in a log."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Iterate `iterable`, reporting progress as the module docstring says.

    Args:
        iterable: what to loop over.
        desc, unit: the bar's label and unit (``"epochs"``, ``"epoch"``).
        enabled: False reports nothing.
        total, initial: the bar's length and start (a resumed run starts at its epoch); `total` defaults to
            ``len(iterable)`` where it has one.
        line_per_item: without a bar, print a line after each item (``"predicting 3/10 case"``); for a loop
            that calls `report` itself, leave it False.
        item_name: gives the name a per-item line ends with (``"predicting 3/10 case Brats18_2013_2_1"``).
        timed: lines end with the seconds per item of this session so far and the time left at that pace.
        lines: without a bar, `report` prints its line (False: a loop of many short steps, which says
            its result in one `progress_line` at the end instead).
        leave: keep the bar on screen when it closes.
    """

    def __init__(self, iterable: Iterable[Any], desc: str, unit: str, enabled: bool = True,
                 total: int | None = None, initial: int = 0, line_per_item: bool = False, lines: bool = True,
                 leave: bool = True, item_name: Callable[[Any], str] | None = None, timed: bool = False):
        self.desc, self.unit, self.enabled, self.lines = desc, unit, enabled, lines
        self.total = total if total is not None else (len(iterable) if isinstance(iterable, Sized) else None)
        self.position = self.initial = initial
        self.line_per_item = line_per_item
        self.item_name, self.timed = item_name, timed
        self._started: float | None = None
        self.label = _LABEL.get()
        self._bar = None
        if enabled and bars_wanted():
            from tqdm.auto import tqdm  # imported on first use: most commands draw no bar

            self._bar = tqdm(iterable, desc=self.label + desc, unit=unit, total=self.total, initial=initial, leave=leave)
            self._iterable: Iterable[Any] = self._bar
        else:
            self._iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        self._started = time.perf_counter()
        for item in self._iterable:
            self.position += 1
            yield item
            if self.line_per_item and self.enabled and self._bar is None:
                self._line("", "" if self.item_name is None else f" {self.item_name(item)}")

    def report(self, **values: Any) -> None:
        """The values of the step just done: the bar's postfix, or one plain line."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix({k: _number(v) for k, v in values.items()})
        elif self.lines:
            self._line(" ".join(f"{k} {_number(v)}" for k, v in values.items()))

    def _line(self, text: str, name: str = "") -> None:
        count = f"{self.position}/{self.total}" if self.total is not None else str(self.position)
        line = f"{self.unit} {count}: {text}" if text else f"{self.desc} {count} {self.unit}{name}"
        timing = self.pace() if self.timed else ""
        if timing:
            line += f"; {timing}" if text else f" ({timing})"
        print(self.label + line, file=sys.stderr, flush=True)

    def pace(self) -> str:
        """``"3.3 s/epoch, ~27 min left"``: seconds per item in this session, and the time the items left take at
        that pace ("" before the first item is done)."""
        done = self.position - self.initial
        if self._started is None or done < 1:
            return ""
        per_item = (time.perf_counter() - self._started) / done
        text = f"{per_item:.3g} s/{self.unit}"
        if self.total is not None and self.total > self.position:
            text += f", ~{format_duration(per_item * (self.total - self.position))} left"
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_line(text: str, enabled: bool = True) -> None:
    """One plain progress line on stderr (where no bar shows the same), unless disabled."""
    if enabled and not bars_wanted():
        print(text, file=sys.stderr, flush=True)
