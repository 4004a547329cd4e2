"""``python fpbench/report/asv_child.py run ...``: ``asv run`` that keeps what it measured
when it is stopped.

asv 0.6.6 writes a commit's results file once, when ``asv run`` has run every selected
benchmark; stopped part-way (SIGINT, SIGTERM) it raises, and everything that run measured
is lost. ``fpbench sweep`` runs asv through this module instead, which runs asv's own
command line with four changes:

- SIGINT and SIGTERM stop the run at the combination it is in (asv's own clean-up runs:
  its benchmark processes are ended and their temporary folders removed), and asv then saves
  every benchmark it finished, plus the parameter combinations the interrupted benchmark
  had finished (the others keep their earlier result, or none). Their output is printed as
  asv prints a finished benchmark's, so the sweep's log holds their gate lines, and a
  combination not run is given the reason :data:`NOT_RUN`.
- A second signal while it saves is ignored, so the save completes (the sweep kills asv
  outright when it must: :class:`.sweep_stop.Stop`).
- asv's JSON files (results, ``benchmarks.json``, ``machine.json``) are written to a
  temporary file in the same folder and moved over the old one (``os.replace``), so no
  reader ever sees half a file and a stop while writing leaves the old file whole.
- The last line it prints is :data:`SAVED` with the number of combinations it saved, when
  it was interrupted; its exit status is then ``128 + signal``.

Everything else is asv's: the arguments, the output, the exit status of a run that was not
stopped. It changes private functions of asv (``asv.runner``), which is why ``pyproject.toml``
pins asv; with another version it runs asv unchanged and says so.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

SAVED = "#### fpbench sweep: asv was interrupted; it saved"
"""The start of the last line printed after a stop, ``… saved N combinations`` (a ``####
fpbench sweep`` line, which :func:`.store.parse_log` reads as the end of a benchmark's output)."""

NOT_RUN = "asv: skipped: not run: the sweep was interrupted"
"""The output of a combination the interrupted benchmark did not reach (the report shows the
text after ``asv: skipped:``)."""

PATCHED = ("run_benchmark", "_run_benchmark_single_param", "run_benchmarks", "BenchmarkResult")


@dataclass
class _State:
    signum: int = 0
    # raise KeyboardInterrupt at the signal: before the benchmarks (nothing to save yet) and
    # while a combination runs (asv then ends its process and cleans up); anywhere else the
    # signal is noted and acted on at the next combination
    raising: bool = True
    saved: set[tuple[str, int]] = field(default_factory=set)  # (benchmark, param index) measured
    current: tuple[dict, Any, Any] | None = None  # (benchmark, selected_idx, started_at)
    done: dict[int, Any] = field(default_factory=dict)  # its param index -> BenchmarkResult


STATE = _State()


def _on_signal(signum: int, frame: Any) -> None:
    if STATE.signum:
        return  # already stopping: let asv save
    STATE.signum = signum
    if STATE.raising:
        raise KeyboardInterrupt


def atomic_write_json(original: Any) -> Any:
    """``asv.util.write_json`` through a temporary file in the target's folder and ``os.replace``."""

    def write_json(path: str, data: Any, api_version: int | None = None, compact: bool = False) -> None:
        path = os.path.abspath(path)
        tmp = f"{path}.{os.getpid()}.tmp"  # not *.json: asv and the report never read it
        try:
            original(tmp, data, api_version=api_version, compact=compact)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    return write_json


def _indices(benchmark: dict, selected_idx: Any) -> set[int]:
    if selected_idx is not None:
        return set(selected_idx)
    return set(range(math.prod(len(p) for p in benchmark["params"]) if benchmark["params"] else 1))


def _partial(runner: Any, benchmark: dict) -> tuple[Any, set[int]]:
    """The interrupted benchmark's finished combinations as one BenchmarkResult (NaN, which asv
    stores as skipped, for the others) and their indices."""
    import itertools

    params = list(itertools.product(*benchmark["params"])) if benchmark["params"] else [()]
    result, samples, number, stderr = [], [], [], ""
    errcode = 0
    for idx, combo in enumerate(params):
        res = STATE.done.get(idx)
        if res is None:
            result.append(math.nan)
            samples.append(None)
            number.append(None)
            if benchmark["params"]:
                stderr += f"\n\nFor parameters: {', '.join(combo)}\n{NOT_RUN}"
            continue
        result += res.result
        samples += res.samples
        number += res.number
        if res.stderr:
            stderr += "\n\n" + res.stderr
        errcode = res.errcode or errcode
    merged = runner.BenchmarkResult(
        result=result, samples=samples, number=number, errcode=errcode, stderr=stderr.strip(), profile=None
    )
    return merged, set(STATE.done)


def install() -> bool:
    """Patch asv for a clean stop (see the module docstring); False when this asv lacks what
    the patch needs (asv then runs unchanged)."""
    from asv import runner, util
    from asv.commands import run as run_cmd

    needed = [hasattr(runner, name) for name in PATCHED] + [
        hasattr(util, "write_json"),
        hasattr(run_cmd, "run_benchmarks"),
    ]
    if not all(needed):
        return False
    util.write_json = atomic_write_json(util.write_json)
    single, one, many = runner._run_benchmark_single_param, runner.run_benchmark, runner.run_benchmarks

    def run_single(benchmark: dict, spawner: Any, param_idx: Any, **kw: Any) -> Any:
        if STATE.signum:
            raise KeyboardInterrupt
        STATE.raising = True
        try:
            if STATE.signum:
                raise KeyboardInterrupt
            res = single(benchmark, spawner, param_idx, **kw)
        finally:
            STATE.raising = False
        STATE.done[param_idx] = res
        return res

    def run_one(benchmark: dict, spawner: Any, profile: Any, selected_idx: Any = None, **kw: Any) -> Any:
        import datetime

        STATE.current = (benchmark, selected_idx, datetime.datetime.now(datetime.UTC))
        STATE.done = {}
        res = one(benchmark, spawner, profile, selected_idx=selected_idx, **kw)
        STATE.current = None
        STATE.saved |= {(benchmark["name"], i) for i in _indices(benchmark, selected_idx)}
        return res

    def run_many(benchmarks: Any, env: Any, results: Any = None, **kw: Any) -> Any:
        STATE.raising = False
        if STATE.signum and results is not None:
            return results  # stopped before the benchmarks: asv saves what the file held
        try:
            return many(benchmarks, env, results=results, **kw)
        except (KeyboardInterrupt, util.UserError):
            if not STATE.signum or results is None:
                raise
            if STATE.current is not None and STATE.done:
                benchmark, selected, started = STATE.current
                merged, finished = _partial(runner, benchmark)
                keep = finished & _indices(benchmark, selected)
                results.add_result(benchmark, merged, selected_idx=keep, started_at=started)
                STATE.saved |= {(benchmark["name"], i) for i in keep}
                runner.log_benchmark_result(results, benchmark, show_stderr=True)
            return results

    runner._run_benchmark_single_param = run_single
    runner.run_benchmark = run_one
    run_cmd.run_benchmarks = run_many
    return True


def main(argv: list[str] | None = None) -> int:
    """Run asv's command line (``argv``, default ``sys.argv[1:]``) with the patches; its exit status."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    sys.argv = ["asv", *(sys.argv[1:] if argv is None else argv)]
    try:
        if not install():
            print("fpbench-asv: this asv cannot keep a stopped run's results; it runs unchanged", flush=True)
        from asv.main import main as asv_main

        asv_main()
        status = 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:  # stopped before or after the benchmarks: nothing of this run to save
        status = 1
    if STATE.signum:
        print(f"{SAVED} {len(STATE.saved)} combinations", flush=True)
        return 128 + STATE.signum
    return status


if __name__ == "__main__":
    # Run by path, Python put this folder first on sys.path: its modules (build.py, cli.py, …)
    # must not shadow what asv and its plugins import.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main())
