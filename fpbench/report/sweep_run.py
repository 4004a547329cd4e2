"""Running the sweep's asv runs: one ``asv run`` per chunk of ``--bench`` regexes
(:func:`run_chunks`), each streamed as it goes: its output to the log, the
progress and the failures to the terminal, a stop passed on to asv.

asv runs through :mod:`.asv_child`, which saves what a stopped run had measured and says how
many combinations it kept (a line starting with :data:`.asv_child.SAVED`): :class:`RunOutcome`
holds what each run did, as the sweep record stores it.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .asv_child import SAVED
from .store import ANSI
from .sweep_display import Display, FailureWatch, Progress
from .sweep_plan import PRELOAD_ENV, chunk_label, preload
from .sweep_stop import Stop, kill_tree

TICK_SECONDS = 0.5
"""How often the sweep refreshes its live line and checks for a stop while asv runs."""

GRACE_SECONDS = 30.0
"""How long a stopped sweep waits for asv to save what it measured before killing it."""

MAX_FAILURES_SHOWN = 20
"""Failed combinations printed one by one; past that, the log has the rest."""


@dataclass
class RunOutcome:
    """What one ``asv run`` of the sweep did."""

    label: str
    bench: list[str]
    planned: int
    status: int | None = None
    """asv's exit status; None when it did not run."""
    saved: int | None = None
    """Combinations asv saved after a stop (:data:`.asv_child.SAVED`); None when it was not stopped."""
    stopped: bool = False

    @property
    def measured(self) -> int:
        """Combinations of this run whose results asv saved (run, failed or n/a)."""
        if self.stopped:
            return self.saved or 0
        return self.planned if self.status in (0, 2) else 0  # asv: 2 = ran, some failed

    def record(self) -> dict[str, Any]:
        """This run as the sweep record stores it."""
        return {
            "target": self.label,
            "bench": self.bench,
            "planned": self.planned,
            "measured": self.measured,
            "asv_exit_status": self.status,
            "complete": self.status is not None and not self.stopped and self.measured == self.planned,
        }


@dataclass
class _Watchers:
    """What one streamed ``asv run`` reports to: the terminal, the stop, the failure watch,
    and the log the failures past :data:`MAX_FAILURES_SHOWN` are left in."""

    display: Display
    stop: Stop
    watch: FailureWatch
    log_path: Path
    lock: threading.Lock

    def notes(self, lines: list[str]) -> None:
        """Show failure lines, up to :data:`MAX_FAILURES_SHOWN`, then one line saying where the rest are."""
        for text in lines:
            if self.watch.count <= MAX_FAILURES_SHOWN:
                self.display.note(text)
            elif self.watch.count == MAX_FAILURES_SHOWN + 1:
                self.display.note(
                    f"fpbench sweep: more combinations failed; their reasons are in {self.log_path}"
                )

    def stopping(self) -> None:
        """Say a stop came (once), and kill asv when it has not stopped within :data:`GRACE_SECONDS`."""
        stop = self.stop
        text = stop.message()
        if text:
            self.display.note(text)
        if stop.signum and not stop.killed and time.monotonic() - stop.at > GRACE_SECONDS:
            self.display.note(f"fpbench sweep: asv did not stop within {GRACE_SECONDS:.0f} s: killing it")
            stop.forward(kill=True)

    def poll(self, finished: threading.Event) -> None:
        """Until ``finished``, every :data:`TICK_SECONDS`: the live line, the failures at the end
        of a burst of output, the stop."""
        while not finished.wait(TICK_SECONDS):
            with self.lock:
                if time.monotonic() - self.watch.last_line_at > TICK_SECONDS:
                    self.notes(self.watch.flush())
                self.stopping()
                if not self.stop.signum:
                    self.display.update()


def _start_asv(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``cmd`` (asv) in a process group of its own, its output (stdout and stderr) piped
    line by line: the terminal's Ctrl-C reaches the sweep only, which tells asv
    (:class:`.sweep_stop.Stop`)."""
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        process_group=0,
    )


def _read_output(
    out: TextIO,
    log: TextIO,
    watchers: _Watchers,
    progress: Progress,
    outcome: RunOutcome,
    tail: collections.deque[str],
) -> None:
    """Read asv's output to its end: every line to ``log``, the last ones to ``tail``, the
    failures and progress to the terminal, the count asv saved after a stop to ``outcome``."""
    for line in out:
        with watchers.lock:
            log.write(line)
            text = line.rstrip()
            if text.startswith(SAVED):
                with contextlib.suppress(ValueError, IndexError):
                    outcome.saved = int(text[len(SAVED) :].split()[0])
                continue
            if text.strip():
                tail.append(text)
            watchers.notes(watchers.watch.feed(text))
            if not watchers.stop.signum and progress.line(text):
                watchers.display.update()


def _stream(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    progress: Progress,
    watchers: _Watchers,
    outcome: RunOutcome,
) -> int:
    """Run ``cmd`` (asv) in a process group of its own, appending its output to ``log_path``;
    show the sweep's progress, failures as they come, and the stop. Returns asv's exit status."""
    stop, display = watchers.stop, watchers.display
    finished = threading.Event()
    tail: collections.deque[str] = collections.deque(maxlen=8)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n#### fpbench sweep {datetime.datetime.now().isoformat(timespec='seconds')}: {cmd}\n")
        log.flush()
        proc = _start_asv(cmd, cwd, env)
        stop.pgid = proc.pid
        stop.forward()  # a signal that came while asv was starting
        assert proc.stdout is not None
        poller = threading.Thread(target=watchers.poll, args=(finished,), daemon=True)
        poller.start()
        try:
            _read_output(proc.stdout, log, watchers, progress, outcome, tail)
        except BaseException:
            kill_tree(proc.pid)  # the sweep itself failed: asv must not go on alone
            raise
        finally:
            finished.set()
            poller.join()
            status = proc.wait()
            stop.pgid = None
            log.flush()
        with watchers.lock:
            watchers.notes(watchers.watch.flush())
            watchers.stopping()
    if status not in (0, 2) and not stop.signum and tail:
        display.note(f"fpbench sweep: asv exited {status}; its last lines (all in {log_path}):")
        for text in tail:
            display.note(f"    {ANSI.sub('', text).strip()}")
    return status


def _asv_run(args: list[str]) -> list[str]:
    """``asv run args`` through the launcher that saves a stopped run's results (by path: a
    fresh process that imports asv only, so it handles a signal as early as possible)."""
    return [sys.executable, str(Path(__file__).with_name("asv_child.py")), *args]


def run_chunks(
    chunks: list[list[str]],
    run_args: list[str],
    cwd: Path,
    env: dict[str, str],
    log: Path,
    progress: Progress,
    display: Display,
    stop: Stop,
) -> tuple[int, list[RunOutcome], FailureWatch]:
    """One ``asv run`` per chunk of ``--bench`` regexes, until the last or a stop.

    Returns:
        asv's first bad exit status, what each run did, and the failures seen.
    """
    rc = 0
    watchers = _Watchers(display, stop, FailureWatch(), log, threading.Lock())
    outcomes = [RunOutcome(chunk_label(c), c, n) for c, n in zip(chunks, progress.sizes, strict=True)]
    for chunk, outcome in zip(chunks, outcomes, strict=True):
        if stop.signum:
            break
        if not progress.per_run[progress.run]:
            display.note(f"fpbench sweep: --bench {' --bench '.join(chunk)} selects nothing: no asv run")
            outcome.status = 0
            progress.next_run()
            continue
        args = run_args + [arg for regex in chunk for arg in ("--bench", regex)]
        display.start(outcome.label, chunk)
        run_env = {**env, PRELOAD_ENV: preload(outcome.label)}
        status = _stream(_asv_run(args), cwd, run_env, log, progress, watchers, outcome)
        outcome.status, outcome.stopped = status, bool(stop.signum)
        display.finish(status, outcome.stopped, outcome.saved)
        progress.next_run()
        rc = rc or status
        if status < 0 or status in (130, 137, 143):  # asv was interrupted or killed: stop here
            break
    return rc, outcomes, watchers.watch


__all__ = ["GRACE_SECONDS", "MAX_FAILURES_SHOWN", "TICK_SECONDS", "RunOutcome", "run_chunks"]
