"""``fpbench sweep``: run the asv suites in this Python, publish, and build the report.

Beside asv's own results the sweep leaves a log and a record of every sweep in
``<results>/<machine>/`` (:mod:`.store` describes both; the report reads them back).

asv writes a commit's results file only when its ``asv run`` ends, so the sweep runs asv
once per target (and once for the settings suite): a sweep stopped part-way keeps every
target it finished, and the next ``asv run`` of the same commit adds to that file. Before
the first run it discovers the suites (as asv does) to count the combinations it will run,
and prints a live count of those done, with an estimate of the time left.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from fpbench.backend import THREAD_VARS
from fpbench.grids import GRIDS

from .output import safe_name
from .store import ANSI, CURVES_ENV, HEADER, SIDE_CURVES, SIDE_LOG, SIDE_SWEEPS, ReportError, read_sweeps

RECORDED_VARS = ("FPBENCH_GRID", "FPBENCH_BACKENDS", *THREAD_VARS, "CUDA_VISIBLE_DEVICES")
"""Environment variables that change what or how the suites measure."""

POLL_SECONDS = 10.0
"""How often the sweep prints the live count while asv runs a benchmark's combinations."""

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

    def ticks(self) -> int:
        """Combinations whose setup has started (lines in :attr:`tick_file`)."""
        if self.tick_file is None:
            return 0
        try:
            return self.tick_file.read_bytes().count(b"\n")
        except OSError:
            return 0

    def live(self) -> str | None:
        """A status line when combinations started since the last line (between asv's
        per-benchmark lines): done = finished benchmarks + combinations started since,
        short of the running benchmark's last one."""
        if self.run >= len(self.per_run) or not self.per_run[self.run]:
            return None
        running = max(self.per_run[self.run].values())
        extra = min(max(self.ticks() - self._ticks_at_header - 1, 0), running - 1)
        if self.done + extra == self._shown:
            return None
        return self.status(extra)

    @property
    def total(self) -> int:
        """Combinations of the whole sweep."""
        return self.done + sum(sum(r.values()) for r in self.per_run)

    def next_run(self) -> None:
        self.run += 1
        self._ticks_at_header = self.ticks()

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
        return self.status()

    def status(self, extra: int = 0) -> str:
        """``done/total combinations (pct), elapsed, ~time left``; ``extra``: running ones done."""
        elapsed = time.monotonic() - self.started
        done = self.done + extra
        left = self.total_left() - extra
        self._shown = done
        pct = 100.0 * done / max(done + left, 1)
        eta = f", ~{_fmt_duration(elapsed / done * left)} left" if done and left else ""
        return (
            f"fpbench sweep: {done}/{done + left} combinations ({pct:.0f}%), "
            f"{_fmt_duration(elapsed)} elapsed{eta}"
        )

    def total_left(self) -> int:
        """Combinations not yet done in this asv run and the runs after it."""
        return sum(sum(r.values()) for r in self.per_run[self.run :])


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


def _stream(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path, progress: Progress) -> int:
    """Run ``cmd``, echoing its output to the terminal line by line (with the sweep's
    progress after each finished benchmark) and appending it to ``log_path``."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n#### fpbench sweep {datetime.datetime.now().isoformat(timespec='seconds')}: {cmd}\n")
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        lock = threading.Lock()
        finished = threading.Event()

        def poll() -> None:  # the live count between asv's per-benchmark lines
            while not finished.wait(POLL_SECONDS):
                with lock:
                    status = progress.live()
                    if status:
                        sys.stdout.write(status + "\n")
                        sys.stdout.flush()

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            for line in proc.stdout:
                with lock:
                    sys.stdout.write(line)
                    log.write(line)
                    status = progress.line(line.rstrip())
                    if status:
                        sys.stdout.write(status + "\n")
                    sys.stdout.flush()
        finally:
            finished.set()
            poller.join()
        return proc.wait()


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


def _run_chunks(
    chunks: list[list[str]],
    run_args: list[str],
    cwd: Path,
    env: dict[str, str],
    log: Path,
    progress: Progress,
) -> int:
    """One ``asv run`` per chunk of ``--bench`` regexes; asv's first bad exit status."""
    rc = 0
    for chunk in chunks:
        if not progress.per_run[progress.run]:
            print(f"fpbench sweep: --bench {' --bench '.join(chunk)} selects nothing: no asv run", flush=True)
            progress.next_run()
            continue
        print(f"fpbench sweep: asv run --bench {' --bench '.join(chunk)}", flush=True)
        args = run_args + [arg for regex in chunk for arg in ("--bench", regex)]
        t0 = time.monotonic()
        status = _stream(_asv(args), cwd, env, log, progress)
        progress.next_run()
        print(f"fpbench sweep: asv run exited {status} after {time.monotonic() - t0:.0f} s", flush=True)
        print(progress.status(), flush=True)
        rc = rc or status
        if status < 0 or status in (130, 137, 143):  # asv was interrupted or killed: stop here
            break
    return rc


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
    the results are recorded under.

    Args:
        grid: ``FPBENCH_GRID`` for the suites (a name of :data:`fpbench.grids.GRIDS`).
        bench: asv ``--bench`` regular expressions (the grid's suites when None).
        out: report folder; default ``<repo>/reports/<machine>``.
        machine: asv machine name; default this host's entry in ``~/.asv-machine.json``.
        config: the asv configuration file; its folder is the repository root.
        report: build the fpbench report after publishing.

    Returns:
        0 when asv ran every benchmark without a failure, else asv's exit status; the
        report is built from whatever asv saved either way.

    Raises:
        SweepError: not a git checkout, no asv configuration, asv missing, an unknown grid,
            ``out`` is a file, ``bench`` matches nothing, or the suites cannot be imported.
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
    html_dir = conf_dir / conf.html_dir

    name = ensure_machine(machine)
    side_dir = results_dir / name
    sweeps_path = side_dir / SIDE_SWEEPS.format(commit=commit[:8])
    earlier = read_sweeps(sweeps_path)  # a damaged record fails now, not after the sweep

    env = {**os.environ, "FPBENCH_GRID": grid, "PYTHONUNBUFFERED": "1"}
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

    run_args = ["run", "--config", str(config), "--python=same", "--set-commit-hash", commit]
    # --show-stderr: asv prints why a combination was skipped, and what the gate measured, only with it
    run_args += ["--machine", name, "--show-stderr"]
    started = datetime.datetime.now().isoformat(timespec="seconds")
    print(
        f"fpbench sweep: grid={grid} machine={name} commit={commit[:8]}: {progress.total} combinations "
        f"in {len(chunks)} asv run(s)",
        flush=True,
    )
    tick_file = Path(tempfile.mkstemp(prefix="fpbench-progress-")[1])
    memo_dir = Path(tempfile.mkdtemp(prefix="fpbench-memo-"))
    env[PROGRESS_ENV], env[MEMO_ENV] = str(tick_file), str(memo_dir)
    env[CURVES_ENV] = str(side_dir / SIDE_CURVES.format(commit=commit[:8]))
    progress.tick_file = tick_file
    try:
        rc = _run_chunks(
            chunks, run_args, conf_dir, env, side_dir / SIDE_LOG.format(commit=commit[:8]), progress
        )
    finally:
        tick_file.unlink(missing_ok=True)
        shutil.rmtree(memo_dir, ignore_errors=True)

    record = {
        "started": started,
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "grid": grid,
        "bench": bench or [],
        "asv_exit_status": rc,
        "env": {var: env[var] for var in RECORDED_VARS if var in env},
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
    }
    sweeps_path.write_text(json.dumps([*earlier, record], indent=1) + "\n")

    if rc != 0:
        print(
            f"fpbench sweep: asv run exited with status {rc} (a benchmark failed or the run stopped); "
            "building the report from the results asv saved",
            flush=True,
        )
    pub = subprocess.run(_asv(["publish", "--config", str(config)]), cwd=conf_dir, env=env)
    if pub.returncode != 0:
        print(f"fpbench sweep: asv publish exited with status {pub.returncode}", flush=True)

    if report:
        from .build import build_report

        out_dir = build_report(
            results_dir, Path(out) if out else conf_dir / "reports" / safe_name(name), machines=[name]
        )
        print(f"report:   {out_dir / 'index.html'}")
        print(f"summary:  {out_dir / 'summary.md'}")
    print(f"asv html: {html_dir / 'index.html'}")
    return rc or pub.returncode


__all__ = ["SIDE_LOG", "SIDE_SWEEPS", "Progress", "SweepError", "plan", "run_sweep", "sweep_chunks"]
