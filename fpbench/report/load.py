"""asv results directory -> one tidy pandas DataFrame, plus provenance.

One row per benchmark × parameter combination × machine × commit. asv stores a result
as a number (ok), NaN (``NotImplementedError`` in ``setup``: n/a, the combination does not
exist here) or null (the benchmark raised, e.g. a failed correctness gate, or timed out:
failed); the ``status`` column keeps the three apart. asv does not store why; the reason
comes from the console log ``fpbench sweep`` keeps beside the results (:mod:`.store`).
"""

from __future__ import annotations

import ast
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import grids, suite_problems
from ..cells import CELLS
from ..solvers import SOLVERS
from .store import (
    BASELINES,
    SIDE_CURVES,
    SIDE_LOG,
    SIDE_SWEEPS,
    ReportError,
    ResultsNotFound,
    parse_log,
    parse_reasons,
    read_curves,
    read_sweeps,
)

PARAM_COLUMNS = (
    "target",
    "cell",
    "solver",
    "seq_len",
    "hidden_size",
    "max_iters",
    "contraction",
    "batch",
    "backward",  # the gradient suites
    "method",  # the training suites (with "budget")
    "budget",
    "overlap",  # ChunkedOverlap
    "shards",  # ShardStrong, ShardWeak
)
"""asv parameter names of the benchmark contract, in contract order (append-only)."""

PROBLEM_EXTRA_COLUMNS = ("input_size", "dtype")
"""The problem's settings no suite sweeps as an asv parameter: every row gets them, with the
rest of its whole problem, from :func:`fpbench.suite_problems.suite_problem` (:func:`fill_problem`)."""

COLUMNS = (
    "machine",
    "commit",
    "date",
    "benchmark",
    "suite",
    "group",
    "metric",
    "type",
    "unit",
    *PARAM_COLUMNS,
    *PROBLEM_EXTRA_COLUMNS,
    "backend",
    "device",
    "params",
    "value",
    "q25",
    "q75",
    "ci_low",
    "ci_high",
    "repeat",
    "status",
    "reason",
    "max_abs_error",
    "rel_error",
    "grid",
    "threads",
    "env",
)


@dataclass
class ResultSet:
    """What the report is built from.

    Attributes:
        frame: the tidy table, columns :data:`COLUMNS` (parameters a benchmark lacks are NaN).
        machines: asv machine name -> asv's machine description (cpu, arch, os, ram, num_cpu, python).
        sweeps: ``(machine, commit)`` -> the ``fpbench sweep`` records of that run (settings, versions).
        results_dir: the asv results directory read.
        curves: the ``TrainLoss`` training runs' curves (:func:`curve_frame`), of the same
            machines and commits as ``frame``.
        skipped: result files that were skipped, each as ``(path, why)``: not a regular
            file, a duplicate of another (same machine, commit and environment), or (only
            with ``skip_unreadable``) unreadable.
    """

    frame: pd.DataFrame
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweeps: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    results_dir: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    curves: pd.DataFrame = field(default_factory=lambda: curve_frame([]))


CURVE_COLUMNS = (
    "machine", "commit", "target", "backend", "device", "method", "budget", "contraction",
    "seq_len", "hidden_size", "step", "loss", "step_seconds", "seconds", "diverged",
)  # fmt: skip


def curve_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per training step of each curve (:func:`~.store.read_curves` records, with
    ``machine`` and ``commit`` added): ``step`` from 1, its ``loss``, its timed
    ``step_seconds`` and ``seconds``, the timed seconds of the steps so far. A later
    record of the same machine, commit and parameters (a later sweep) replaces an earlier one."""
    key = ("machine", "commit", "target", "method", "budget", "contraction")
    latest = {tuple(str(r.get(k)) for k in key): r for r in records}
    rows = []
    for r in latest.values():
        backend, _, device = str(r["target"]).partition(":")
        own = [float(v) for v in r["step_seconds"]]
        for step, (loss, took, elapsed) in enumerate(
            zip(r["losses"], own, itertools.accumulate(own), strict=False), 1
        ):
            rows.append(
                {**{k: r.get(k) for k in CURVE_COLUMNS}, "backend": backend, "device": device,
                 "budget": str(r["budget"]), "step": step, "loss": float(loss), "step_seconds": took,
                 "seconds": elapsed}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def _literal(text: str) -> Any:
    """asv stores parameter values as their ``repr``: ``"'torch:cpu'"``, ``"1024"``."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _sidecars(
    machine_dir: Path, commit: str
) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], dict[str, float]], list[dict[str, Any]]]:
    log = machine_dir / SIDE_LOG.format(commit=commit[:8])
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    reasons, gates = parse_log(text)
    return reasons, gates, read_sweeps(machine_dir / SIDE_SWEEPS.format(commit=commit[:8]))


def _status(value: Any) -> str:
    if value is None:
        return "failed"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return "ok"


KNOWN = {"cell": tuple(CELLS), "solver": (*SOLVERS, *grids.CHUNKED)}
"""The names this fpbench knows (solvers: the registered ones and the grids' named Chunked
configurations, :data:`fpbench.grids.CHUNKED`); results of a newer one may name others."""

POSITIVE_TYPES = ("time", "timeraw", "peakmem")
"""Benchmark types whose number must be positive."""


def _checked_status(params: dict[str, Any], value: Any, btype: str) -> tuple[str, str]:
    """``(status, reason)`` of one stored result; the reason is ``""`` unless the report makes
    it a gap itself: it names a cell or solver this fpbench does not know (n/a), or its number
    is not a finite number, or is a time or memory that is not positive (failed)."""
    for column, known in KNOWN.items():
        if params[column] is not None and params[column] not in known:
            return "n/a", f"unknown {column} {params[column]!r} (results of a newer fpbench?): not reported"
    status = _status(value)
    if status != "ok":
        return status, ""
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or (btype in POSITIVE_TYPES and number <= 0):
        return "failed", f"invalid result {value!r}: a {btype} result must be a finite (positive) number"
    return status, ""


_DEFAULT_REASON = {
    "ok": "",
    "n/a": "not available here (NotImplementedError in setup)",
    "failed": "benchmark raised or timed out (e.g. failed correctness gate); see asv's output",
}


def _settings(env_vars: dict[str, str], records: list[dict[str, Any]]) -> dict[str, str]:
    """Grid and thread settings of a run: asv's recorded env vars, else the latest sweep record."""
    env = {**(records[-1].get("env", {}) if records else {}), **(env_vars or {})}
    threads = env.get("FPBENCH_THREADS") or env.get("OMP_NUM_THREADS") or "default"
    return {
        "grid": env.get("FPBENCH_GRID", "unknown"),
        "threads": threads,
        "env": "; ".join(f"{k}={v}" for k, v in sorted(env.items())),
    }


def _rows_of(
    result: Any, key: str, info: dict[str, Any], reasons: dict, gates: dict, settings: dict
) -> list[dict]:
    params = result.get_result_params(key) or []
    values = result.get_result_value(key, params)
    stats = result.get_result_stats(key, params)
    combos = list(itertools.product(*params)) if params else [()]
    names = list(info.get("param_names", []))
    if len(names) != len(params):  # benchmarks.json describes another version of this benchmark
        names = [f"param{i}" for i in range(len(params))]
    suite, _, rest = key.partition(".")
    group, _, metric = rest.rpartition(".")
    btype = info.get("type") or metric.split("_", 1)[0]
    rows = []
    for i, combo in enumerate(combos):
        value = values[i] if isinstance(values, list) else values
        stat = (stats[i] if isinstance(stats, list) else stats) or {}
        row: dict[str, Any] = dict.fromkeys(PARAM_COLUMNS)
        row.update({name: _literal(text) for name, text in zip(names, combo, strict=True)})
        status, reason = _checked_status(row, value, btype)
        params_text = ", ".join(combo)
        if status != "ok" and not reason:
            reason = reasons.get((key, params_text), _DEFAULT_REASON[status])
        gate = gates.get((key, params_text), {}) if status == "ok" else {}
        row.update(
            benchmark=key,
            suite=suite,
            group=group,
            metric=metric,
            type=btype,
            unit=info.get("unit", ""),
            params=params_text,
            value=float(value) if status == "ok" else math.nan,
            q25=stat.get("q_25", math.nan),
            q75=stat.get("q_75", math.nan),
            ci_low=stat.get("ci_99_a", math.nan),
            ci_high=stat.get("ci_99_b", math.nan),
            repeat=stat.get("repeat", math.nan),
            status=status,
            reason=reason,
            max_abs_error=gate.get("max_abs", math.nan),
            rel_error=gate.get("rel_rms", math.nan),
            **settings,
        )
        rows.append(row)
    return rows


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fill_problem(frame: pd.DataFrame) -> pd.DataFrame:
    """Every row with its whole problem (cell, T, H, B, I, dtype, rho), its solver and budget:
    what its asv parameters leave out, the suite held fixed, and
    :func:`fpbench.suite_problems.suite_problem` gives it from the run's named grid (``grid``) and the
    suite (``group``). A value the row has is kept; a row of an unknown grid or suite, or of
    a suite that solves nothing (``Settings``), keeps its gaps."""
    frame = frame.copy()
    for column in (*suite_problems.PROBLEM_COLUMNS, "grid", "group"):
        if column not in frame:
            frame[column] = None
    params = [c for c in suite_problems.PROBLEM_COLUMNS if c in PARAM_COLUMNS] + ["method", "shards"]
    found: dict[tuple, dict[str, Any]] = {}
    filled: dict[str, list[Any]] = {c: frame[c].tolist() for c in suite_problems.PROBLEM_COLUMNS}
    for i, row in enumerate(frame[["grid", "group", *params]].itertuples(index=False, name=None)):
        grid, group, values = row[0], row[1], row[2:]
        if not isinstance(grid, str) or not isinstance(group, str):
            continue
        key = (grid, group, *values)
        if key not in found:
            given = {c: v for c, v in zip(params, values, strict=True) if not _missing(v)}
            found[key] = suite_problems.suite_problem(grid, group, given)
        for column, value in found[key].items():
            if _missing(filled[column][i]):
                filled[column][i] = value
    for column, values in filled.items():
        frame[column] = pd.Series(values, index=frame.index, dtype=object).infer_objects()
    return frame


def _result_files(results_dir: Path) -> list[Path]:
    """Every asv result file under ``results_dir`` (``<machine>/<commit>-<env>.json``)."""
    skip = {"machine.json", "benchmarks.json"}
    return sorted(p for p in results_dir.rglob("*.json") if p.name not in skip and p.parent != results_dir)


def _load_result(path: Path) -> Any:
    """asv's ``Results.load`` of one file.

    Raises:
        ReportError: the file cannot be read as asv results (names the file).
    """
    from asv.results import Results

    try:
        result = Results.load(str(path))
        result.get_all_result_keys()
    except Exception as e:  # asv raises UserError, KeyError, TypeError... for a damaged file
        why = str(e) or type(e).__name__
        raise ReportError(f"cannot read the asv result file {path}: {why}") from e
    return result


def load_results(
    results_dir: Path | str,
    machines: list[str] | None = None,
    all_commits: bool = False,
    skip_unreadable: bool = False,
) -> ResultSet:
    """Read every asv result under ``results_dir`` into a :class:`ResultSet`.

    Args:
        results_dir: asv's results directory (``.asv/results``).
        machines: keep only these asv machine names (default: all).
        all_commits: keep every commit; by default only each machine's newest (by commit date,
            then by when it was benchmarked).
        skip_unreadable: skip a result file that cannot be read (listed in
            :attr:`ResultSet.skipped`, which the report shows) instead of failing. A file
            that is not a regular file (a FIFO, a device) is always skipped, never opened,
            and so is a duplicate of another file (same machine, commit and environment).

    Raises:
        ResultsNotFound: ``results_dir`` does not exist or holds no results, or one of
            ``machines`` has none (the message names the machines that do).
        ReportError: a result file, or ``benchmarks.json``, cannot be read (names the file),
            or a sweep record beside the results cannot be read.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsNotFound(f"no asv results directory at {results_dir}")
    found = _Found(machines, skip_unreadable, _benchmarks_json(results_dir))
    files = _result_files(results_dir)
    if not files:
        raise ResultsNotFound(f"no asv results in {results_dir} (run `fpbench sweep` first)")
    for path in files:
        found.add(path)
    unknown = sorted(set(machines or ()) - found.seen_machines)
    if unknown:
        raise ResultsNotFound(
            f"no asv results in {results_dir} for machine(s) {', '.join(unknown)}; "
            f"machines with results there: {', '.join(sorted(found.seen_machines)) or 'none'}"
        )
    if not found.rows:
        raise ResultsNotFound(f"no readable asv results in {results_dir}")

    frame = _frame(found.rows, all_commits)
    kept = set(zip(frame["machine"], frame["commit"], strict=True))
    return ResultSet(
        frame=frame,
        machines={m: d for m, d in found.described.items() if m in frame["machine"].unique()},
        sweeps={k: v for k, v in found.sweeps.items() if k in kept},
        results_dir=results_dir,
        skipped=found.skipped,
        curves=curve_frame([c for c in found.curves if (c["machine"], c["commit"]) in kept]),
    )


def _benchmarks_json(results_dir: Path) -> dict[str, Any]:
    """asv's ``benchmarks.json`` of ``results_dir`` (what each benchmark's parameters are), or
    ``{}`` where there is none.

    Raises:
        ReportError: it cannot be read (names the file).
    """
    from asv.util import load_json

    bench_file = results_dir / "benchmarks.json"
    try:
        return load_json(str(bench_file), api_version=2) if bench_file.is_file() else {}
    except Exception as e:
        raise ReportError(f"cannot read {bench_file}: {e}") from e


@dataclass
class _Found:
    """What :func:`load_results` has read so far, file by file (:meth:`add`): the rows, and per
    machine and run what the report shows beside them."""

    machines: list[str] | None
    skip_unreadable: bool
    benchmarks: dict[str, Any]
    rows: list[dict] = field(default_factory=list)
    described: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweeps: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    curves: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seen_machines: set[str] = field(default_factory=set)
    runs: dict[tuple[str, str, str], Path] = field(default_factory=dict)

    def add(self, path: Path) -> None:
        """Read the result file ``path``, with the sweep's files beside it; skip it (and say
        why in :attr:`skipped`) when it is not a regular file, a duplicate of a run already
        read, or (with :attr:`skip_unreadable`) cannot be read; leave out another machine's.

        Raises:
            ReportError: the file cannot be read and :attr:`skip_unreadable` is off.
        """
        if not path.is_file():
            self.skipped.append((str(path), "not a regular file: skipped, never opened"))
            return
        try:
            result = _load_result(path)
        except ReportError as e:
            if not self.skip_unreadable:
                raise
            self.skipped.append((str(path), str(e).split(": ", 1)[-1]))
            return
        machine = str(result.params.get("machine", "unknown"))
        self.seen_machines.add(machine)
        if self.machines and machine not in self.machines:
            return
        commit = str(result.commit_hash)
        run = (machine, commit, str(result.env_name))
        if run in self.runs:
            self.skipped.append(
                (str(path), f"a duplicate of {self.runs[run]} (same machine, commit and environment)")
            )
            return
        self.runs[run] = path
        self.described[machine] = {k: v for k, v in result.params.items() if k != "machine"}
        reasons, gates, records = _sidecars(path.parent, commit)
        self.sweeps[(machine, commit)] = records
        self.curves += [
            {**c, "machine": machine, "commit": commit}
            for c in read_curves(path.parent / SIDE_CURVES.format(commit=commit[:8]))
        ]
        settings = _settings(result.env_vars, records)
        date = pd.to_datetime(result.date, unit="ms") if result.date else pd.NaT
        for key in result.get_all_result_keys():
            for row in _rows_of(result, key, self.benchmarks.get(key, {}), reasons, gates, settings):
                row.update(machine=machine, commit=commit, date=date)
                row["_started"] = result.started_at.get(key) or 0
                self.rows.append(row)


def _frame(rows: list[dict], all_commits: bool) -> pd.DataFrame:
    """The tidy frame of ``rows`` (:data:`COLUMNS`): each machine's newest commit only (by
    commit date, then by when it was benchmarked) unless ``all_commits``, the target split
    into backend and device, the whole problem filled in (:func:`fill_problem`), sorted."""
    frame = pd.DataFrame(rows)
    if not all_commits:
        newest = (
            frame.groupby(["machine", "commit"], as_index=False)
            .agg(date=("date", "max"), started=("_started", "max"))
            .sort_values(["date", "started"])
            .groupby("machine")
            .tail(1)
        )
        frame = frame.merge(newest[["machine", "commit"]], on=["machine", "commit"])
    split = frame["target"].where(frame["target"].notna(), "").astype(str).str.partition(":")
    frame["backend"] = split[0].where(split[0] != "", None)
    frame["device"] = split[2].where(split[2] != "", None)
    frame = fill_problem(frame).drop(columns="_started").reindex(columns=list(COLUMNS))
    return frame.sort_values(["machine", "commit", "benchmark", "params"], kind="stable").reset_index(
        drop=True
    )


__all__ = [
    "BASELINES",
    "COLUMNS",
    "PARAM_COLUMNS",
    "ReportError",
    "ResultSet",
    "curve_frame",
    "fill_problem",
    "load_results",
    "parse_reasons",
]
