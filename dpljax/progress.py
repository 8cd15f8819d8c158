"""Progress of long loops (training steps, calibration chunks), for a terminal or a log file.

On a terminal (the stream is a TTY) a tqdm bar redraws itself in place with carriage
returns. Anywhere else (output redirected to a file, a batch scheduler's log, a pipe) those
redraws would pile up as one endless line, so a plain line is logged instead, at most every
``interval`` seconds and once at the end::

    train: 1200/3000 steps (40.0%), 18.3 steps/s, 98 s left (loss=0.2145)
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

#: Seconds between two plain progress lines when the output is not a terminal.
LOG_INTERVAL_S = 30.0


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


def _duration(s: float) -> str:
    s = int(round(s))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class Progress:
    """Progress of ``total`` units of work (steps, or per-mille of a calibration).

    ``update(done, text)`` reports that ``done`` units are done (absolute, not an increment);
    ``text`` (a string, or a function returning one, called only when a line is written) is
    shown beside it. With ``enabled=False`` nothing is shown. ``stream``: where a
    bar would be drawn (default ``sys.stderr``); when it is not a TTY, lines go to ``log``
    (default ``print``) instead, at most every ``interval`` seconds, and a last one from
    :meth:`close` if anything was done since the last line.
    """

    def __init__(self, enabled: bool, total: int, *, desc: str, unit: str = "steps", start: int = 0,
                 log: Callable = print, stream: TextIO | None = None, interval: float = LOG_INTERVAL_S,
                 show_rate: bool = True):
        self.enabled, self.total, self.desc, self.unit = enabled, int(total), desc, unit
        self.log, self.interval, self.show_rate = log, float(interval), show_rate
        self.start = self.done = self.logged = int(start)
        self.text = ""
        self.bar = None
        self.t0 = self.last_line = time.monotonic()
        stream = sys.stderr if stream is None else stream
        if enabled and _is_tty(stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.start, desc=desc, unit=unit[:-1] if unit.endswith("s") else unit,
                            file=stream, mininterval=0.5, dynamic_ncols=True)

    def retotal(self, total: int) -> None:
        """The work is now ``total`` units (a run re-planned to fewer steps)."""
        self.total = int(total)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    @property
    def is_bar(self) -> bool:
        """True when a tqdm bar is drawn (the stream is a terminal)."""
        return self.bar is not None

    def update(self, done: int, text: str | Callable[[], str] = "") -> None:
        if not self.enabled:
            return
        if text:
            self.text = text
        if self.bar is not None:
            self.bar.update(int(done) - self.bar.n)
            if text:
                self.bar.set_postfix_str(text() if callable(text) else text, refresh=False)
            self.done = int(done)
            return
        self.done = int(done)
        if time.monotonic() - self.last_line >= self.interval:
            self._line()

    def _line(self) -> None:
        elapsed = time.monotonic() - self.t0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        parts = [f"{self.desc}: {self.done}/{self.total} {self.unit} ({pct:.1f}%)"]
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        if self.show_rate and rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
        if rate > 0 and self.done < self.total:
            parts.append(f"{_duration((self.total - self.done) / rate)} left")
        elif self.done >= self.total:
            parts.append(f"done in {_duration(elapsed)}")
        text = self.text() if callable(self.text) else self.text
        self.log(", ".join(parts) + (f" ({text})" if text else ""))
        self.last_line, self.logged = time.monotonic(), self.done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.done != self.logged:
            self._line()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
