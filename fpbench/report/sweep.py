"""``fpbench sweep``: run the asv suites in this Python, publish, and build the report.

Beside asv's own results the sweep leaves a log and a record of every sweep in
``<results>/<machine>/`` (:mod:`.store` describes both; the report reads them back).

asv writes a commit's results file only when its ``asv run`` ends, so the sweep runs asv
once per target (and once for the settings suite), each through :mod:`.asv_child`, which
saves what an interrupted run had measured: a sweep stopped part-way keeps every target it
finished and every benchmark of the one it was in, and the next ``asv run`` of the same
commit adds to that file. Before the first run it discovers the suites (as asv does) to
count the combinations it will run.

What the terminal shows (:class:`Display`): one live line per target (``tqdm``: done/total,
elapsed time and time left) on a terminal, plain periodic lines elsewhere; a failed
combination's name and reason as soon as asv reports it; and at the end the headline
verdict and the report's path. asv's own output goes to the log only.

One sweep at a time writes to a results directory (:func:`results_lock`): a second one is
refused, naming the first. SIGINT and SIGTERM stop a sweep cleanly (:class:`Stop`).
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import fcntl
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from fpbench.backend import THREAD_VARS
from fpbench.grids import GRIDS

from .asv_child import SAVED
from .output import safe_name
from .store import (
    ANSI,
    CURVES_ENV,
    HEADER,
    PARAMS,
    SIDE_CURVES,
    SIDE_LOG,
    SIDE_SWEEPS,
    ReportError,
    read_sweeps,
)

RECORDED_VARS = ("FPBENCH_GRID", "FPBENCH_BACKENDS", *THREAD_VARS, "CUDA_VISIBLE_DEVICES")
"""Environment variables that change what or how the suites measure."""

POLL_SECONDS = 30.0
"""How often, at most, the sweep prints a plain progress line when its output is not a terminal."""

TICK_SECONDS = 0.5
"""How often the sweep refreshes its live line and checks for a stop while asv runs."""

GRACE_SECONDS = 30.0
"""How long a stopped sweep waits for asv to save what it measured before killing it."""

LOCK_NAME = ".fpbench-sweep.lock"
"""The lock file in the results directory that one running sweep holds (:func:`results_lock`)."""

MAX_FAILURES_SHOWN = 20
"""Failed combinations printed one by one; past that, the log has the rest."""

PROGRESS_ENV = "FPBENCH_PROGRESS_FILE"
"""The file every suite's setup appends a line to per combination (``benchmarks/common.py``)."""

MEMO_ENV = "FPBENCH_MEMO_DIR"
"""A folder, fresh for every sweep, where a suite with several ``track_`` methods keeps what
it measured of a combination, so the other methods' processes read it instead of measuring
again (``benchmarks/common.py``: ``memo``)."""

VERSIONED = ("fpbench", "numpy", "torch", "jax", "jaxlib", "numba", "asv", "asv_runner")


class SweepError(ReportError):
    """The sweep cannot start (not a git checkout, no asv.conf.json, no asv, bad arguments)."""


def _git_head(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        raise SweepError(
            f"{repo.resolve()} is not a git checkout with a commit: run the sweep from one"
        ) from e
    return out.stdout.strip()


def _asv(args: list[str]) -> list[str]:
    # the asv of this Python, whatever `asv` on PATH is
    return [sys.executable, "-m", "asv", *args]


def ensure_machine(machine: str | None) -> str:
    """Make sure asv's machine file (``~/.asv-machine.json``) describes the machine; return its name.

    This is what ``asv machine --yes`` does, done through asv's API because asv's command
    line drops some fields (cpu, arch) when ``--machine`` names the machine: the report's
    provenance section needs them.
    """
    from asv.machine import Machine, MachineCollection
    from asv.util import UserError

    lookup = machine or Machine.get_unique_machine_name()
    try:
        return MachineCollection.load(lookup)["machine"]
    except UserError:  # not described yet
        MachineCollection.save(lookup, {**Machine.get_defaults(), "machine": lookup})
        return lookup


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _fmt_duration(seconds: float) -> str:
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
    benchmark it runs (:func:`plan`). asv prints one header line per benchmark when it
    has run all of that benchmark's combinations; each such line advances the count
    exactly (:meth:`line`). In between, the suites' setups append a line per combination
    to ``tick_file`` (``benchmarks/common.py``: ``tick``), which :meth:`live` counts. The
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
        eta = f", ~{_fmt_duration(elapsed / done * left)} left" if done and left else ""
        return f"{_fmt_duration(elapsed)} elapsed{eta}"

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
        took = _fmt_duration(time.monotonic() - self.started)
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


def plan(conf_path: Path, commit: str, chunks: list[list[str]], env: dict[str, str]) -> list[dict[str, int]]:
    """Discover the suites (as ``asv run`` does) and count each run's combinations.

    Returns:
        For each chunk of ``--bench`` regular expressions: benchmark name -> how many of its
        parameter combinations the chunk selects (asv's own selection rule).

    Raises:
        SweepError: the suites cannot be imported.
    """
    from asv import environment
    from asv.benchmarks import Benchmarks
    from asv.config import Config
    from asv.repo import get_repo
    from asv.util import UserError

    saved, cwd = dict(os.environ), os.getcwd()
    try:
        os.chdir(conf_path.parent)  # asv resolves the configuration's paths from here, as `asv run` does
        conf = Config.load(str(conf_path))
        os.environ.clear()
        os.environ.update(env)  # the discovery process sees the sweep's FPBENCH_GRID
        envs = list(environment.get_environments(conf, [":same"]))
        found = Benchmarks._disc_benchmarks(conf, get_repo(conf), envs, [commit], False)
    except UserError as e:
        raise SweepError(f"asv could not import the benchmark suites of {conf_path}: {e}") from e
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
    found = list(found)
    plans = []
    for chunk in chunks:
        counts: dict[str, int] = {}
        for bench in found:
            name = bench["name"]
            if bench["params"]:
                combos = (f"{name}({', '.join(p)})" for p in itertools.product(*bench["params"]))
                n = sum(1 for c in combos if any(re.search(r, c) for r in chunk))
            else:
                n = int(any(re.search(r, name) for r in chunk))
            if n:
                counts[name] = n
        plans.append(counts)
    return plans


class SweepInterrupted(BaseException):
    """SIGINT or SIGTERM arrived while no asv run was in progress (:class:`Stop`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (from ``/proc``; none where there is no ``/proc``)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children[int(fields[1])].append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid``'s process group and every process below it (asv starts its benchmark
    processes in process groups of their own, which a kill of asv's group does not reach)."""
    for child in _descendants(pid):
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


@dataclass
class Stop:
    """SIGINT and SIGTERM during a sweep (:meth:`install`).

    The handler only notes the signal and forwards it: while asv runs (:attr:`pgid`, asv's
    process group, which the terminal's Ctrl-C does not reach) it sends asv SIGINT, and asv
    (:mod:`.asv_child`) saves what it measured and exits; the sweep then stops before the
    next target. A second signal kills asv at once (the running target's results are lost).
    With no asv running and :attr:`raising` set (before the first run, while publishing and
    building the report) it raises :class:`SweepInterrupted`.
    """

    signum: int = 0
    count: int = 0
    at: float = 0.0
    pgid: int | None = None
    raising: bool = True
    sent: int = 0
    announced: bool = False
    killed: bool = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        if not self.signum:
            self.signum, self.at = signum, time.monotonic()
        if self.pgid is not None:
            self.forward()
        elif self.raising and self.count == 1:
            raise SweepInterrupted(signum)

    @property
    def name(self) -> str:
        """The signal's name (``SIGINT``), or ``""`` when none came."""
        return _signame(self.signum) if self.signum else ""

    def forward(self, kill: bool = False) -> None:
        """Pass the stop on to the running asv: SIGINT, or (a second signal, or ``kill``) SIGKILL."""
        pgid = self.pgid
        if pgid is None or not self.signum:
            return
        if kill or self.count > 1:
            if not self.killed:
                self.killed = True
                _kill_tree(pgid)
        elif not self.sent:
            self.sent = signal.SIGINT
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGINT)

    def message(self) -> str | None:
        """The one line to print about the stop, once (None when there is nothing new to say)."""
        if not self.signum or self.announced:
            return None
        self.announced = True
        return (
            f"fpbench sweep: {self.name}: stopping; asv saves what it has measured "
            f"({'Ctrl-C' if self.signum == signal.SIGINT else 'the signal'} again to stop at once)"
        )

    @contextlib.contextmanager
    def install(self) -> Iterator[Stop]:
        """Handle SIGINT and SIGTERM with this object while the block runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        saved = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)


@contextlib.contextmanager
def results_lock(results_dir: Path, what: str = "") -> Iterator[Path]:
    """Hold the sweep lock of ``results_dir`` (an ``fcntl`` lock on :data:`LOCK_NAME` in it) while
    the block runs, so that two sweeps never write one results directory at once (each would
    overwrite the other's results file and sweep record). The lock file names the holder; the
    lock ends with the holder's process, however it ends.

    Raises:
        SweepError: another process holds it (names its pid, start time and ``what``).
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 400).decode("utf-8", "replace").strip() or "pid unknown"
            raise SweepError(
                f"another fpbench sweep ({holder}) is writing to {results_dir}: wait for it to end or "
                f"stop it; two sweeps on one results directory would overwrite each other's results "
                f"(lock: {path})"
            ) from None
        os.ftruncate(fd, 0)
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()}, started {started}{', ' + what if what else ''}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in its folder and ``os.replace``:
    a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def _stream(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    progress: Progress,
    display: Display,
    stop: Stop,
    watch: FailureWatch,
    outcome: RunOutcome,
) -> int:
    """Run ``cmd`` (asv) in a process group of its own, appending its output to ``log_path``;
    show the sweep's progress, failures as they come, and the stop."""
    lock = threading.Lock()
    finished = threading.Event()
    tail: collections.deque[str] = collections.deque(maxlen=8)

    def notes(lines: list[str]) -> None:
        for text in lines:
            if watch.count <= MAX_FAILURES_SHOWN:
                display.note(text)
            elif watch.count == MAX_FAILURES_SHOWN + 1:
                display.note(f"fpbench sweep: more combinations failed; their reasons are in {log_path}")

    def stopping() -> None:
        text = stop.message()
        if text:
            display.note(text)
        if stop.signum and not stop.killed and time.monotonic() - stop.at > GRACE_SECONDS:
            display.note(f"fpbench sweep: asv did not stop within {GRACE_SECONDS:.0f} s: killing it")
            stop.forward(kill=True)

    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n#### fpbench sweep {datetime.datetime.now().isoformat(timespec='seconds')}: {cmd}\n")
        log.flush()
        proc = subprocess.Popen(
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
            process_group=0,  # the terminal's Ctrl-C reaches the sweep only; it tells asv (Stop)
        )
        stop.pgid = proc.pid
        stop.forward()  # a signal that came while asv was starting
        assert proc.stdout is not None

        def poll() -> None:  # the live line, failures at the end of a burst, the stop
            while not finished.wait(TICK_SECONDS):
                with lock:
                    if time.monotonic() - watch.last_line_at > TICK_SECONDS:
                        notes(watch.flush())
                    stopping()
                    if not stop.signum:
                        display.update()

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            for line in proc.stdout:
                with lock:
                    log.write(line)
                    text = line.rstrip()
                    if text.startswith(SAVED):
                        with contextlib.suppress(ValueError, IndexError):
                            outcome.saved = int(text[len(SAVED) :].split()[0])
                        continue
                    if text.strip():
                        tail.append(text)
                    notes(watch.feed(text))
                    if not stop.signum and progress.line(text):
                        display.update()
        except BaseException:
            _kill_tree(proc.pid)  # the sweep itself failed: asv must not go on alone
            raise
        finally:
            finished.set()
            poller.join()
            status = proc.wait()
            stop.pgid = None
            log.flush()
        with lock:
            notes(watch.flush())
            stopping()
    if status not in (0, 2) and not stop.signum and tail:
        display.note(f"fpbench sweep: asv exited {status}; its last lines (all in {log_path}):")
        for text in tail:
            display.note(f"    {ANSI.sub('', text).strip()}")
    return status


def gpu_driver_present() -> bool:
    """Whether this machine has a GPU driver (NVIDIA or ROCm): without one no framework has a
    GPU device (the check ``benchmarks/common.py`` makes before importing a framework)."""
    return (
        os.path.exists("/proc/driver/nvidia/version")
        or shutil.which("nvidia-smi") is not None
        or os.path.exists("/dev/kfd")
    )


def _suite_prefix(grid: str) -> str:
    """Regex prefix selecting the grid's suites (``Grid.suites``), or any benchmark."""
    suites = GRIDS[grid].suites
    return rf"^\w+\.(?:{'|'.join(map(re.escape, suites))})\.\w+" if suites else ""


def sweep_chunks(env: dict[str, str], grid: str = "default") -> list[list[str]]:
    """The ``--bench`` regular expressions of each ``asv run`` of a full sweep: one per
    ``backend:device`` target (every suite but the settings has the target as its first
    parameter, and asv matches ``--bench`` against ``name(param, ...)``) but the grid's
    ``sweep_skips`` and, on a machine without a GPU driver, the GPU targets; restricted to
    the grid's ``suites``; then the settings suite. Combinations of a target not run are
    missing from the results (the report lists them as n/a)."""
    from fpbench.registry import selected_targets

    skips = set(GRIDS[grid].sweep_skips)
    targets = [t for t in selected_targets(env.get("FPBENCH_BACKENDS", "")) if t not in skips]
    if not gpu_driver_present():  # their every combination would be n/a: not worth an asv run
        targets = [t for t in targets if t.partition(":")[2] == "cpu"]
    prefix = _suite_prefix(grid)
    return [[rf"{prefix}\('{re.escape(t)}'"] for t in targets] + [[r"^bench_settings\."]]


def chunk_label(chunk: list[str]) -> str:
    """A short name for one ``asv run`` of the sweep: its target, ``settings``, or its regexes."""
    if len(chunk) == 1:
        target = re.search(r"\\\('(.+?)'", chunk[0])
        if target:
            return target[1].replace("\\", "")
        if chunk[0] == r"^bench_settings\.":
            return "settings"
    text = " ".join(chunk)
    return text if len(text) <= 24 else text[:21] + "..."


PRELOAD_ENV = "FPBENCH_PRELOAD"
"""What asv's fork server imports before forking (``benchmarks/common.py``, which spells it
out too: the suites may come from another checkout than this package)."""


def preload(label: str) -> str:
    """The backends the fork server of the ``asv run`` called ``label`` (:func:`chunk_label`)
    imports: the one its target runs on (``"torch:cpu"`` -> ``"torch"``); none for another run.
    So no process measures with another framework imported (a peak memory holds the
    frameworks imported), and only the Numba run warms Numba's kernels."""
    backend, sep, _ = label.partition(":")
    return backend if sep and backend.isidentifier() else ""


def _asv_run(args: list[str]) -> list[str]:
    # asv run through the launcher that saves a stopped run's results (by path: a fresh
    # process that imports asv only, so it handles a signal as early as possible)
    return [sys.executable, str(Path(__file__).with_name("asv_child.py")), *args]


def _run_chunks(
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
    watch = FailureWatch()
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
        status = _stream(_asv_run(args), cwd, run_env, log, progress, display, stop, watch, outcome)
        outcome.status, outcome.stopped = status, bool(stop.signum)
        display.finish(status, outcome.stopped, outcome.saved)
        progress.next_run()
        rc = rc or status
        if status < 0 or status in (130, 137, 143):  # asv was interrupted or killed: stop here
            break
    return rc, outcomes, watch


def headline_lines(head: Any) -> list[str]:
    """The headline verdict as terminal lines: for each (device, cell, parallel solver) of
    :func:`.analysis.headline`'s table (a DataFrame; None when nothing was compared), where
    it beats the best sequential baseline, its best speedup and that solve's error."""
    if head is None or head.empty:
        return ["  no parallel solve and sequential baseline were both measured: no verdict"]
    lines = []
    for _, r in head.sort_values(["machine", "device", "cell", "solver"]).iterrows():
        err = r["max |error| vs exact"]
        error = "error not recorded" if err != err else f"max |error| {err:.1e} vs exact"  # NaN
        lines.append(
            f"  {r['device']} {r['cell']} {r['solver']}: wins {r['wins']} ({r['points won']} points); "
            f"best {r['best speedup']:.3g}x with {r['backend']} at (T, H, B) = {r['at (T, H, B)']} "
            f"vs {r['baseline']}, {error}"
        )
    return lines


def print_headline(results_dir: Path, machine: str, stream: TextIO | None = None) -> None:
    """Print the report's headline (:func:`.analysis.headline`) for ``machine``'s newest results."""
    stream = stream if stream is not None else sys.stdout
    try:
        from . import analysis
        from .build import fill_fixed_shapes
        from .load import load_results
    except ImportError as e:  # the report extra is missing
        stream.write(f"fpbench sweep: no headline without the report extra ({e})\n")
        return
    try:
        frame = fill_fixed_shapes(load_results(results_dir, machines=[machine]).frame)
        sp = analysis.family_speedups(frame)
        head = None if sp.empty else analysis.headline(sp)
    except Exception as e:  # the results are saved and the report written: say why, do not fail
        stream.write(f"fpbench sweep: no headline ({type(e).__name__}: {e})\n")
        return
    stream.write(f"Headline ({machine}): where each parallel solver beats the best sequential baseline\n")
    stream.write("".join(line + "\n" for line in headline_lines(head)))
    stream.flush()


def run_sweep(
    grid: str = "main",
    bench: list[str] | None = None,
    out: Path | str | None = None,
    machine: str | None = None,
    config: Path | str = "asv.conf.json",
    report: bool = True,
) -> int:
    """Run the asv suites on the checked-out commit, publish asv's HTML, build the report.

    The suites import the checkout's ``fpbench`` (``ASV_PYTHONPATH``), the code of the commit
    the results are recorded under. The sweep holds the results directory's lock
    (:func:`results_lock`) from start to end. SIGINT or SIGTERM stops it cleanly (:class:`Stop`):
    asv saves what it measured, the sweep record says the sweep was interrupted and what it
    kept, its temporary folder is removed, and it returns without publishing or building the
    report (``fpbench report`` builds it from what was kept, and says the run was interrupted).

    Args:
        grid: ``FPBENCH_GRID`` for the suites (a name of :data:`fpbench.grids.GRIDS`).
        bench: asv ``--bench`` regular expressions (the grid's suites when None).
        out: report folder; default ``<repo>/reports/<machine>``.
        machine: asv machine name; default this host's entry in ``~/.asv-machine.json``.
        config: the asv configuration file; its folder is the repository root.
        report: build the fpbench report after publishing.

    Returns:
        0 when asv ran every benchmark without a failure, else asv's exit status; the
        report is built from whatever asv saved either way. After a stop, 128 + the signal
        (130 for SIGINT, 143 for SIGTERM).

    Raises:
        SweepError: not a git checkout, no asv configuration, asv missing, an unknown grid,
            ``out`` is a file, ``bench`` matches nothing, the suites cannot be imported, or
            another sweep is writing to the same results directory (names its pid).
        ReportError: the sweep record beside earlier results cannot be read (names the file).
    """
    if grid not in GRIDS:
        raise SweepError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise SweepError(f"--out {out} is a file, not a folder")
    config = Path(config).resolve()
    if not config.is_file():
        raise SweepError(f"no asv configuration at {config}: run from the fpbench checkout root")
    conf_dir = config.parent
    try:
        from asv.config import Config
    except ImportError as e:
        raise SweepError("asv is not installed: pip install 'fpbench[bench]'") from e
    conf = Config.load(str(config))
    repo = (conf_dir / conf.repo).resolve()
    commit = _git_head(repo)
    results_dir = conf_dir / conf.results_dir

    stop = Stop()
    with results_lock(results_dir, f"grid {grid}"), stop.install():
        try:
            return _sweep(grid, bench, out, machine, config, report, conf, commit, results_dir, stop)
        except SweepInterrupted as e:
            print(f"fpbench sweep: {_signame(e.signum)}: stopped before any benchmark ran", flush=True)
            return 128 + e.signum


def _sweep(
    grid: str,
    bench: list[str] | None,
    out: Path | str | None,
    machine: str | None,
    config: Path,
    report: bool,
    conf: Any,
    commit: str,
    results_dir: Path,
    stop: Stop,
) -> int:
    """:func:`run_sweep` once it holds the lock and handles the signals."""
    conf_dir = config.parent
    repo = (conf_dir / conf.repo).resolve()
    html_dir = conf_dir / conf.html_dir
    name = ensure_machine(machine)
    side_dir = results_dir / name
    sweeps_path = side_dir / SIDE_SWEEPS.format(commit=commit[:8])
    read_sweeps(sweeps_path)  # a damaged record fails now, not after the sweep

    env = {**os.environ, "FPBENCH_GRID": grid, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    # The suites import this checkout's fpbench: the code the results are recorded under.
    env["ASV_PYTHONPATH"] = os.pathsep.join(
        p for p in (str(repo), env.get("ASV_PYTHONPATH") or env.get("PYTHONPATH", "")) if p
    )
    chunks = [bench] if bench else sweep_chunks(env, grid)
    per_run = plan(config, commit, chunks, env)
    progress = Progress(per_run)
    if progress.total == 0:
        what = " --bench ".join(bench) if bench else f"the {grid} grid's suites"
        raise SweepError(f"--bench {what} matches no benchmark combination (grid {grid})")
    side_dir.mkdir(parents=True, exist_ok=True)
    log_path = side_dir / SIDE_LOG.format(commit=commit[:8])

    run_args = ["run", "--config", str(config), "--python=same", "--set-commit-hash", commit]
    # --show-stderr: asv prints why a combination was skipped, and what the gate measured, only with it
    run_args += ["--machine", name, "--show-stderr"]
    started = datetime.datetime.now().isoformat(timespec="seconds")
    print(
        f"fpbench sweep: grid={grid} machine={name} commit={commit[:8]}: {progress.total} combinations "
        f"in {len(chunks)} asv run(s); asv's output: {log_path}",
        flush=True,
    )
    # One folder for the sweep's temporary files: the progress ticks, the memo, and asv's and
    # the benchmarks' own (TMPDIR), removed whole however the sweep ends.
    work = Path(tempfile.mkdtemp(prefix="fpbench-sweep-"))
    tick_file, memo_dir, tmp_dir = work / "progress", work / "memo", work / "tmp"
    tick_file.touch()
    memo_dir.mkdir()
    env[PROGRESS_ENV], env[MEMO_ENV] = str(tick_file), str(memo_dir)
    # asv's fork server puts a socket in it, whose path must stay short (Linux: 107 bytes)
    if len(os.fsencode(tmp_dir)) + len("/asv-forkserver-xxxxxxxx/socket") < 100:
        tmp_dir.mkdir()
        env["TMPDIR"] = str(tmp_dir)
    env[CURVES_ENV] = str(side_dir / SIDE_CURVES.format(commit=commit[:8]))
    progress.tick_file = tick_file
    display = Display(progress)
    stop.raising = False  # from here a signal stops the sweep after asv saved, not at once
    try:
        rc, outcomes, watch = _run_chunks(chunks, run_args, conf_dir, env, log_path, progress, display, stop)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    measured = sum(o.measured for o in outcomes)
    record = {
        "started": started,
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "grid": grid,
        "bench": bench or [],
        "asv_exit_status": rc,
        "interrupted": bool(stop.signum),
        "signal": stop.name or None,
        "planned": sum(progress.sizes),
        "measured": measured,
        "runs": [o.record() for o in outcomes],
        "env": {var: env[var] for var in RECORDED_VARS if var in env},
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
    }
    # read again under the lock: the record holds every sweep, this one appended
    _write_atomic(sweeps_path, json.dumps([*read_sweeps(sweeps_path), record], indent=1) + "\n")
    failures = f"; {watch.count} failed (reasons above)" if watch.count else ""
    if stop.signum:
        kept = f"{measured} of {sum(progress.sizes)} combinations kept"
        print(
            f"fpbench sweep: interrupted by {stop.name}: {kept}{failures}; recorded in {sweeps_path.name}. "
            f"The report from what was kept: fpbench report --results {results_dir} --machine {name}",
            flush=True,
        )
        return 128 + stop.signum
    stop.raising = True
    try:
        print(
            f"fpbench sweep: {measured} combinations in {_fmt_duration(time.monotonic() - progress.started)}"
            f"{failures}; asv's output: {log_path}",
            flush=True,
        )
        if rc not in (0, 2):
            print(
                f"fpbench sweep: asv run exited with status {rc} (the run stopped); "
                "building the report from the results asv saved",
                flush=True,
            )
        pub = subprocess.run(
            _asv(["publish", "--config", str(config)]),
            cwd=conf_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
        )
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\n#### fpbench sweep: asv publish\n{pub.stdout}")
        if pub.returncode != 0:
            print(f"fpbench sweep: asv publish exited with status {pub.returncode}:", flush=True)
            print(pub.stdout[-2000:], flush=True)

        out_dir = None
        if report:
            from .build import build_report

            out_dir = build_report(
                results_dir, Path(out) if out else conf_dir / "reports" / safe_name(name), machines=[name]
            )
        print_headline(results_dir, name)
        if out_dir is not None:
            print(f"report:   {out_dir / 'index.html'}")
            print(f"summary:  {out_dir / 'summary.md'}")
        print(f"asv html: {html_dir / 'index.html'}", flush=True)
    except SweepInterrupted as e:
        print(
            f"fpbench sweep: {_signame(e.signum)}: stopped after the benchmarks, before the report; "
            f"the results and sweep record are kept. The report: fpbench report --results {results_dir} "
            f"--machine {name}",
            flush=True,
        )
        return 128 + e.signum
    return rc or pub.returncode


__all__ = [
    "LOCK_NAME",
    "SIDE_LOG",
    "SIDE_SWEEPS",
    "Display",
    "FailureWatch",
    "Progress",
    "Stop",
    "SweepError",
    "SweepInterrupted",
    "headline_lines",
    "plan",
    "print_headline",
    "results_lock",
    "run_sweep",
    "sweep_chunks",
]
