"""What the terminal shows while the sweep's asv runs go: the count of combinations done
(:class:`Progress`), the failed ones as asv reports them (:class:`FailureWatch`), and the
live line or the plain lines that show both (:class:`Display`)."""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .store import (
    ANSI,
    HEADER,
    PARAMS,
)

POLL_SECONDS = 30.0
"""How often, at most, the sweep prints a plain progress line when its output is not a terminal."""


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class Progress:
    """A live count of the asv combinations done out of the total, with the time left.

    ``per_run`` holds, for each ``asv run`` of the sweep, how many combinations of each
    benchmark it runs (:func:`.sweep_plan.plan`). asv prints one header line per benchmark when it
    has run all of that benchmark's combinations; each such line advances the count
    exactly (:meth:`line`). In between, the suites' setups append a line per combination
    to ``tick_file`` (``benchmarks/sweep_state.py``: ``tick``), which :meth:`live` counts. The
    estimate is the mean time per combination so far times the combinations left.
    """

    per_run: list[dict[str, int]]
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    run: int = 0
    tick_file: Path | None = None
    _ticks_at_header: int = 0
    _shown: int = -1
    _most: int = 0
    """The most combinations any line has counted: what :meth:`extra` never goes below."""
    sizes: list[int] = field(init=False)
    """Combinations of each run, as planned."""
    run_started_done: int = 0
    """:attr:`done` when the current run started."""

    def __post_init__(self) -> None:
        self.sizes = [sum(r.values()) for r in self.per_run]

    def ticks(self) -> int:
        """Combinations whose setup has started (lines in :attr:`tick_file`)."""
        if self.tick_file is None:
            return 0
        try:
            return self.tick_file.read_bytes().count(b"\n")
        except OSError:
            return 0

    def extra(self) -> int:
        """Combinations of the running benchmark done (started, short of its last one)."""
        if self.run >= len(self.per_run) or not self.per_run[self.run]:
            return 0
        running = max(self.per_run[self.run].values())
        est = min(max(self.ticks() - self._ticks_at_header - 1, 0), running - 1)
        # Never fewer than once shown: a benchmark's setup can tick more than once per
        # combination, and the count read back from the ticks must not run backwards.
        est = max(est, min(self._most - self.done, self.total_left()))
        self._most = max(self._most, self.done + est)
        return est

    def live(self) -> str | None:
        """A status line when combinations started since the last line (between asv's
        per-benchmark lines): done = finished benchmarks + combinations started since,
        short of the running benchmark's last one."""
        if self.run >= len(self.per_run) or not self.per_run[self.run]:
            return None
        extra = self.extra()
        if self.done + extra == self._shown:
            return None
        return self.status(extra)

    @property
    def total(self) -> int:
        """Combinations of the whole sweep."""
        return self.done + sum(sum(r.values()) for r in self.per_run)

    def run_progress(self) -> tuple[int, int]:
        """``(done, total)`` combinations of the current run, the running benchmark's included."""
        if self.run >= len(self.sizes):
            return 0, 0
        return self.done - self.run_started_done + self.extra(), self.sizes[self.run]

    def next_run(self) -> None:
        self.run += 1
        self._ticks_at_header = self.ticks()
        self.run_started_done = self.done

    def line(self, text: str) -> str | None:
        """The progress line to print after asv's output line ``text``, if it finished a benchmark."""
        header = HEADER.match(ANSI.sub("", text))
        if header is None or not header["rest"].strip() or self.run >= len(self.per_run):
            return None
        counts = self.per_run[self.run]
        name = header["name"]
        if name not in counts:
            return None
        self.done += counts.pop(name)
        self._ticks_at_header = self.ticks()
        return self.status(self.extra())

    def status(self, extra: int = 0) -> str:
        """``done/total combinations (pct), elapsed, ~time left``; ``extra``: running ones done."""
        done = self.done + extra
        left = self.total_left() - extra
        self._shown = done
        pct = 100.0 * done / max(done + left, 1)
        return f"fpbench sweep: {done}/{done + left} combinations ({pct:.0f}%), {self.times(extra)}"

    def times(self, extra: int = 0) -> str:
        """``elapsed, ~time left`` of the whole sweep; ``extra``: running ones done."""
        elapsed = time.monotonic() - self.started
        done, left = self.done + extra, self.total_left() - extra
        eta = f", ~{fmt_duration(elapsed / done * left)} left" if done and left else ""
        return f"{fmt_duration(elapsed)} elapsed{eta}"

    def total_left(self) -> int:
        """Combinations not yet done in this asv run and the runs after it."""
        return sum(sum(r.values()) for r in self.per_run[self.run :])


_STEP = re.compile(r"^\[\s*[\d.]+%\]\s+·+\s*")


class FailureWatch:
    """Spots failed combinations in asv's output as it streams, each with the line that says why.

    asv prints a benchmark's output when all its combinations have run: a header line, then
    per combination ``For parameters: …`` and what the combination printed. A combination
    failed when that holds a traceback (its last line is the exception), or asv says it timed
    out; a benchmark that failed without either (killed by a signal) ends with asv's ``asv:
    benchmark failed (exit status N)``. A skipped (n/a) combination is no failure.
    """

    FAILED_MARKS = (
        "Traceback (most recent call last)",
        "asv: benchmark timed out",
        "asv: setup_cache failed",
    )

    def __init__(self) -> None:
        self.bench: str | None = None
        self.params = ""
        self.failed = False
        self.last = ""
        self.in_bench = 0  # failures reported for the current benchmark
        self.count = 0
        self.last_line_at = time.monotonic()

    def _message(self, reason: str) -> list[str]:
        self.count += 1
        self.in_bench += 1
        where = f"{self.bench}({self.params})" if self.params else str(self.bench)
        reason = reason if len(reason) <= 200 else reason[:197] + "..."
        return [f"fpbench sweep: FAILED {where}: {reason}"]

    def flush(self) -> list[str]:
        """The failure of the combination read so far, if it failed (once)."""
        out = self._message(self.last or "failed") if self.failed and self.bench else []
        self.failed = False
        return out

    def feed(self, raw: str) -> list[str]:
        """Read one line of asv's output; the failures it completes."""
        self.last_line_at = time.monotonic()
        line = ANSI.sub("", raw).rstrip()
        header, found = HEADER.match(line), PARAMS.match(line)
        if header or found or line.startswith("####"):
            out = self.flush()
            self.last = ""
            if header:
                if header["name"] != self.bench:
                    self.in_bench = 0
                self.bench, self.params = header["name"], ""
            elif found:
                self.params = found["params"].strip()
            else:
                self.bench = None
            return out
        text = _STEP.sub("", line).strip()  # the first line of a block carries asv's "[ 20.00%] ···"
        if not text:
            return []
        if text.startswith("asv: benchmark failed"):
            if self.failed:
                return self.flush()
            if self.bench and not self.in_bench:  # no traceback said why: asv's line does
                self.params = ""
                return self._message(f"{self.last}; {text}" if self.last else text)
            return []
        if any(mark in text for mark in self.FAILED_MARKS):
            self.failed = True
        self.last = text
        return []


class Display:
    """What the terminal shows while asv runs.

    On a terminal, one ``tqdm`` line per target (done/total of that target, its elapsed time
    and time left, and the whole sweep's count and time left), which stays when the target is
    done; other lines (failures, the stop message) print above it. Elsewhere (CI, a log file)
    plain lines: one when a target starts and ends, and the count every :data:`POLL_SECONDS`
    when it changed, so a log gets no control characters.
    """

    def __init__(self, progress: Progress, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.progress = progress
        self.stream = stream if stream is not None else sys.stdout
        if live is None:
            live = _isatty(self.stream) and os.environ.get("TERM") != "dumb"
        self.tqdm: Any = None
        if live:
            try:
                from tqdm import tqdm

                self.tqdm = tqdm
            except ImportError:  # the bench extra brings it; without it, plain lines
                pass
        self.live = self.tqdm is not None
        self.bar: Any = None
        self.label = ""
        self.started = time.monotonic()
        self.printed_at = 0.0
        self.printed: tuple[int, int] | None = None

    def note(self, text: str) -> None:
        """A line of its own (above the live line on a terminal)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, label: str, chunk: list[str]) -> None:
        """asv starts the run of target ``label`` (its ``--bench`` regexes ``chunk``)."""
        self.label, self.started = label, time.monotonic()
        done, total = self.progress.run_progress()
        if self.live:
            self.bar = self.tqdm(
                total=total,
                desc=label,
                unit="comb",
                file=self.stream,
                leave=True,
                dynamic_ncols=True,
                smoothing=0,
                mininterval=0,
                bar_format="{desc}: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"
                "{postfix}",
            )
            self.update()
        else:
            self.note(
                f"fpbench sweep: asv run --bench {' --bench '.join(chunk)} ({label}: {total} combinations)"
            )
            self.printed_at, self.printed = time.monotonic(), (done, total)

    def update(self, force: bool = False) -> None:
        """Show the current count: at once on a terminal, at most every :data:`POLL_SECONDS` elsewhere."""
        done, total = self.progress.run_progress()
        extra = self.progress.extra()
        if self.bar is not None:
            if done > self.bar.n:
                self.bar.update(done - self.bar.n)
            sweep_done = self.progress.done + extra
            self.bar.set_postfix_str(
                f"sweep {sweep_done}/{self.progress.total}, {self.progress.times(extra)}", refresh=False
            )
            self.bar.refresh()
        elif self.printed != (done, total) and (force or time.monotonic() - self.printed_at >= POLL_SECONDS):
            self.note(
                f"fpbench sweep: {self.label} {done}/{total}; sweep {self.progress.done + extra}/"
                f"{self.progress.total}, {self.progress.times(extra)}"
            )
            self.printed_at, self.printed = time.monotonic(), (done, total)

    def finish(self, status: int | None, stopped: bool = False, saved: int | None = None) -> None:
        """The run of the current target ended with asv's exit ``status``; ``stopped`` by a
        signal, after which asv ``saved`` that many of its combinations (None: none)."""
        done, total = self.progress.run_progress()
        if stopped:
            done = saved or 0
        took = fmt_duration(time.monotonic() - self.started)
        why = f"stopped: {done} kept" if stopped else (f"asv exited {status}" if status else "")
        if self.bar is not None:
            if stopped:
                self.bar.n = done
                self.bar.set_postfix_str(why, refresh=False)
            else:
                self.update()
                if why:
                    self.bar.set_postfix_str(f"{why}; {self.progress.times()}", refresh=False)
            self.bar.close()
            self.bar = None
        else:
            self.note(
                f"fpbench sweep: {self.label}: {done}/{total} combinations in {took}"
                + (f" ({why})" if why else "")
            )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


__all__ = ["POLL_SECONDS", "Display", "FailureWatch", "Progress", "fmt_duration"]
