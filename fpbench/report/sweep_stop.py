"""Stopping a sweep and keeping what it measured: SIGINT and SIGTERM (:class:`Stop`,
:class:`SweepInterrupted`), killing asv's process tree, and the results directory's lock,
so that one sweep at a time writes there and the next resumes from what it kept
(:func:`results_lock`)."""

from __future__ import annotations

import collections
import contextlib
import datetime
import fcntl
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sweep_plan import SweepError

LOCK_NAME = ".fpbench-sweep.lock"
"""The lock file in the results directory that one running sweep holds (:func:`results_lock`)."""


class SweepInterrupted(BaseException):
    """SIGINT or SIGTERM arrived while no asv run was in progress (:class:`Stop`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def signame(signum: int) -> str:
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


def kill_tree(pid: int) -> None:
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
        return signame(self.signum) if self.signum else ""

    def forward(self, kill: bool = False) -> None:
        """Pass the stop on to the running asv: SIGINT, or (a second signal, or ``kill``) SIGKILL."""
        pgid = self.pgid
        if pgid is None or not self.signum:
            return
        if kill or self.count > 1:
            if not self.killed:
                self.killed = True
                kill_tree(pgid)
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


__all__ = ["LOCK_NAME", "Stop", "SweepInterrupted", "kill_tree", "results_lock", "signame"]
