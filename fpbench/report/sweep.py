"""``fpbench sweep``: run the asv suites in this Python, publish, and build the report.

Beside asv's own results the sweep leaves a log and a record of every sweep in
``<results>/<machine>/`` (:mod:`.store` describes both; the report reads them back).

asv writes a commit's results file only when its ``asv run`` ends, so the sweep runs asv
once per target (and once for the settings suite), each through :mod:`.asv_child`, which
saves what an interrupted run had measured: a sweep stopped part-way keeps every target it
finished and every benchmark of the one it was in, and the next ``asv run`` of the same
commit adds to that file. Before the first run it discovers the suites (as asv does) to
count the combinations it will run.

What the terminal shows (:class:`.sweep_display.Display`): one live line per target
(``tqdm``: done/total,
elapsed time and time left) on a terminal, plain periodic lines elsewhere; a failed
combination's name and reason as soon as asv reports it; and at the end the headline
verdict and the report's path. asv's own output goes to the log only.

One sweep at a time writes to a results directory (:func:`.sweep_stop.results_lock`): a
second one is refused, naming the first. SIGINT and SIGTERM stop a sweep cleanly
(:class:`.sweep_stop.Stop`).

The sweep's modules: :mod:`.sweep_plan` (what it runs), :mod:`.sweep_run` (the asv runs,
streamed), :mod:`.sweep_display` (the terminal), :mod:`.sweep_stop` (signals and the lock),
and this one (the whole sweep, its record, publishing and the report).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from fpbench.backend import THREAD_VARS
from fpbench.grids import GRIDS

from .output import safe_name
from .store import (
    CURVES_ENV,
    SIDE_CURVES,
    SIDE_LOG,
    SIDE_SWEEPS,
    read_sweeps,
)
from .sweep_display import Display, Progress, fmt_duration
from .sweep_plan import SweepError, ensure_machine, git_head, plan, sweep_chunks
from .sweep_run import RunOutcome, run_chunks
from .sweep_stop import Stop, SweepInterrupted, results_lock, signame

RECORDED_VARS = ("FPBENCH_GRID", "FPBENCH_BACKENDS", *THREAD_VARS, "CUDA_VISIBLE_DEVICES")

PROGRESS_ENV = "FPBENCH_PROGRESS_FILE"
"""The file every suite's setup appends a line to per combination (``benchmarks/sweep_state.py``)."""

MEMO_ENV = "FPBENCH_MEMO_DIR"
"""A folder, fresh for every sweep, where a suite with several ``track_`` methods keeps what
it measured of a combination, so the other methods' processes read it instead of measuring
again (``benchmarks/sweep_state.py``: ``memo``)."""

VERSIONED = ("fpbench", "numpy", "torch", "jax", "jaxlib", "numba", "asv", "asv_runner")


def _asv(args: list[str]) -> list[str]:
    # the asv of this Python, whatever `asv` on PATH is
    return [sys.executable, "-m", "asv", *args]


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in its folder and ``os.replace``:
    a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    (:func:`.sweep_stop.results_lock`) from start to end. SIGINT or SIGTERM stops it
    cleanly (:class:`.sweep_stop.Stop`):
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
    commit = git_head(repo)
    results_dir = conf_dir / conf.results_dir

    stop = Stop()
    with results_lock(results_dir, f"grid {grid}"), stop.install():
        try:
            return _sweep(grid, bench, out, machine, config, report, conf, commit, results_dir, stop)
        except SweepInterrupted as e:
            print(f"fpbench sweep: {signame(e.signum)}: stopped before any benchmark ran", flush=True)
            return 128 + e.signum


def _suite_env(grid: str, repo: Path) -> dict[str, str]:
    """The environment of the sweep's asv runs: this one, the grid, unbuffered UTF-8 output,
    and ``repo`` first on the suites' path, so they import this checkout's fpbench: the code
    the results are recorded under."""
    env = {**os.environ, "FPBENCH_GRID": grid, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    env["ASV_PYTHONPATH"] = os.pathsep.join(
        p for p in (str(repo), env.get("ASV_PYTHONPATH") or env.get("PYTHONPATH", "")) if p
    )
    return env


def _run_args(config: Path, commit: str, machine: str) -> list[str]:
    """The arguments of every ``asv run`` of the sweep, before its ``--bench`` regexes:
    ``--show-stderr``, since only with it asv prints why a combination was skipped and what
    the gate measured."""
    return [
        *("run", "--config", str(config), "--python=same", "--set-commit-hash", commit),
        *("--machine", machine, "--show-stderr"),
    ]


def _work_folder(env: dict[str, str], side_dir: Path, commit: str) -> tuple[Path, Path]:
    """Make the sweep's one folder of temporary files (the progress ticks, the memo, and asv's
    and the benchmarks' own as ``TMPDIR``) and point ``env`` at them and at the curves file.

    Returns:
        The folder (the caller removes it whole however the sweep ends) and the tick file.
    """
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
    return work, tick_file


def _record(
    started: str,
    grid: str,
    bench: list[str] | None,
    rc: int,
    stop: Stop,
    progress: Progress,
    outcomes: list[RunOutcome],
    env: dict[str, str],
) -> dict[str, Any]:
    """This sweep's entry of the sweep record (:func:`.store.read_sweeps` reads it back)."""
    return {
        "started": started,
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "grid": grid,
        "bench": bench or [],
        "asv_exit_status": rc,
        "interrupted": bool(stop.signum),
        "signal": stop.name or None,
        "planned": sum(progress.sizes),
        "measured": sum(o.measured for o in outcomes),
        "runs": [o.record() for o in outcomes],
        "env": {var: env[var] for var in RECORDED_VARS if var in env},
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
    }


def _publish(config: Path, env: dict[str, str], log_path: Path) -> int:
    """``asv publish`` (asv's HTML), its output appended to the log; returns its exit status."""
    pub = subprocess.run(
        _asv(["publish", "--config", str(config)]),
        cwd=config.parent,
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
    return pub.returncode


def _finish(
    config: Path,
    conf: Any,
    env: dict[str, str],
    log_path: Path,
    results_dir: Path,
    name: str,
    out: Path | str | None,
    report: bool,
) -> int:
    """After the runs: publish asv's HTML, build the report (when ``report``), print the
    headline and where everything is. Returns ``asv publish``'s exit status."""
    conf_dir = config.parent
    status = _publish(config, env, log_path)
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
    print(f"asv html: {conf_dir / conf.html_dir / 'index.html'}", flush=True)
    return status


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
    name = ensure_machine(machine)
    side_dir = results_dir / name
    sweeps_path = side_dir / SIDE_SWEEPS.format(commit=commit[:8])
    read_sweeps(sweeps_path)  # a damaged record fails now, not after the sweep

    env = _suite_env(grid, (conf_dir / conf.repo).resolve())
    chunks = [bench] if bench else sweep_chunks(env, grid)
    progress = Progress(plan(config, commit, chunks, env))
    if progress.total == 0:
        what = " --bench ".join(bench) if bench else f"the {grid} grid's suites"
        raise SweepError(f"--bench {what} matches no benchmark combination (grid {grid})")
    side_dir.mkdir(parents=True, exist_ok=True)
    log_path = side_dir / SIDE_LOG.format(commit=commit[:8])

    run_args = _run_args(config, commit, name)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    print(
        f"fpbench sweep: grid={grid} machine={name} commit={commit[:8]}: {progress.total} combinations "
        f"in {len(chunks)} asv run(s); asv's output: {log_path}",
        flush=True,
    )
    work, progress.tick_file = _work_folder(env, side_dir, commit)
    display = Display(progress)
    stop.raising = False  # from here a signal stops the sweep after asv saved, not at once
    try:
        rc, outcomes, watch = run_chunks(chunks, run_args, conf_dir, env, log_path, progress, display, stop)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    record = _record(started, grid, bench, rc, stop, progress, outcomes, env)
    # read again under the lock: the record holds every sweep, this one appended
    _write_atomic(sweeps_path, json.dumps([*read_sweeps(sweeps_path), record], indent=1) + "\n")
    measured = record["measured"]
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
            f"fpbench sweep: {measured} combinations in {fmt_duration(time.monotonic() - progress.started)}"
            f"{failures}; asv's output: {log_path}",
            flush=True,
        )
        if rc not in (0, 2):
            print(
                f"fpbench sweep: asv run exited with status {rc} (the run stopped); "
                "building the report from the results asv saved",
                flush=True,
            )
        published = _finish(config, conf, env, log_path, results_dir, name, out, report)
    except SweepInterrupted as e:
        print(
            f"fpbench sweep: {signame(e.signum)}: stopped after the benchmarks, before the report; "
            f"the results and sweep record are kept. The report: fpbench report --results {results_dir} "
            f"--machine {name}",
            flush=True,
        )
        return 128 + e.signum
    return rc or published


__all__ = ["headline_lines", "print_headline", "run_sweep"]
