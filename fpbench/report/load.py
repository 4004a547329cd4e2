"""asv results directory -> one tidy pandas DataFrame, plus provenance.

One row per benchmark × parameter combination × machine × commit. asv stores a result
as a number (ok), NaN (``NotImplementedError`` in ``setup``: n/a, the combination does not
exist here) or null (the benchmark raised, e.g. a failed correctness gate, or timed out:
failed); the ``status`` column keeps the three apart. asv does not store why; the reason
comes from the console log ``fpbench sweep`` keeps beside the results (:mod:`.sweep`).
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .sweep import SIDE_LOG, SIDE_SWEEPS

PARAM_COLUMNS = ("target", "cell", "solver", "seq_len", "hidden_size", "max_iters", "contraction")
"""asv parameter names of the benchmark contract, in contract order."""

BASELINES = ("sequential", "native")
"""Sequential solvers: the baselines a parallel solver's speedup is measured against."""

STATUSES = ("ok", "n/a", "failed")

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
    """

    frame: pd.DataFrame
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweeps: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    results_dir: Path | None = None


def _literal(text: str) -> Any:
    """asv stores parameter values as their ``repr``: ``"'torch:cpu'"``, ``"1024"``."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HEADER = re.compile(r"^\[\s*[\d.]+%\]\s+·+\s+(?P<name>[\w]+(?:\.[\w]+)+)\b")
_PARAMS = re.compile(r"^(?:\[\s*[\d.]+%\]\s+·+)?\s*For parameters: (?P<params>.*)$")


def parse_reasons(log_text: str) -> dict[tuple[str, str], str]:
    """Why asv skipped or failed each combination, from its console output.

    Returns:
        ``(benchmark name, "'torch:cuda', 'jacobi', 64")`` -> the last line asv printed for
        it (the exception, e.g. ``NotImplementedError('no CUDA device')``). Later sweeps in
        the log override earlier ones. Unparameterised benchmarks use ``""`` as params.
    """
    reasons: dict[tuple[str, str], str] = {}
    bench, params, last = None, "", ""

    def close() -> None:
        if bench is not None and last:
            reasons[(bench, params)] = last

    for raw in log_text.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        header = _HEADER.match(line)
        found = _PARAMS.match(line)
        if header or found or line.startswith("#### fpbench sweep"):
            close()
            last = ""
            if header:
                bench, params = header["name"], ""
            elif found:
                params = found["params"].strip()
            else:
                bench = None
        elif line.strip():
            last = line.strip()
    close()
    return {key: _tidy_reason(text) for key, text in reasons.items()}


def _tidy_reason(text: str) -> str:
    text = text.removeprefix("asv: skipped: ")
    return text if len(text) <= 240 else text[:237] + "..."


def _sidecars(machine_dir: Path, commit: str) -> tuple[dict[tuple[str, str], str], list[dict[str, Any]]]:
    log = machine_dir / SIDE_LOG.format(commit=commit[:8])
    sweeps = machine_dir / SIDE_SWEEPS.format(commit=commit[:8])
    reasons = parse_reasons(log.read_text(encoding="utf-8", errors="replace")) if log.is_file() else {}
    records = json.loads(sweeps.read_text()) if sweeps.is_file() else []
    return reasons, records


def _status(value: Any) -> str:
    if value is None:
        return "failed"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return "ok"


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


def _rows_of(result: Any, key: str, info: dict[str, Any], reasons: dict, settings: dict) -> list[dict]:
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
        status = _status(value)
        row: dict[str, Any] = dict.fromkeys(PARAM_COLUMNS)
        row.update({name: _literal(text) for name, text in zip(names, combo, strict=True)})
        params_text = ", ".join(combo)
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
            reason="" if status == "ok" else reasons.get((key, params_text), _DEFAULT_REASON[status]),
            **settings,
        )
        rows.append(row)
    return rows


def load_results(
    results_dir: Path | str, machines: list[str] | None = None, all_commits: bool = False
) -> ResultSet:
    """Read every asv result under ``results_dir`` into a :class:`ResultSet`.

    Args:
        results_dir: asv's results directory (``.asv/results``).
        machines: keep only these asv machine names (default: all).
        all_commits: keep every commit; by default only each machine's newest (by commit date,
            then by when it was benchmarked).

    Raises:
        FileNotFoundError: ``results_dir`` does not exist or holds no results for the selection.
    """
    from asv.results import iter_results
    from asv.util import load_json

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"no asv results directory at {results_dir}")
    bench_file = results_dir / "benchmarks.json"
    benchmarks = load_json(str(bench_file), api_version=2) if bench_file.is_file() else {}

    rows: list[dict] = []
    described: dict[str, dict[str, Any]] = {}
    sweeps: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in iter_results(str(results_dir)):
        machine = result.params.get("machine", "unknown")
        if machines and machine not in machines:
            continue
        commit = result.commit_hash
        described[machine] = {k: v for k, v in result.params.items() if k != "machine"}
        reasons, records = _sidecars(results_dir / machine, commit)
        sweeps[(machine, commit)] = records
        settings = _settings(result.env_vars, records)
        date = pd.to_datetime(result.date, unit="ms") if result.date else pd.NaT
        for key in result.get_all_result_keys():
            for row in _rows_of(result, key, benchmarks.get(key, {}), reasons, settings):
                row.update(machine=machine, commit=commit, date=date)
                row["_started"] = result.started_at.get(key) or 0
                rows.append(row)
    if not rows:
        wanted = f" for machines {machines}" if machines else ""
        raise FileNotFoundError(f"no asv results in {results_dir}{wanted}")

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
    frame = frame.drop(columns="_started").reindex(columns=list(COLUMNS))
    frame = frame.sort_values(["machine", "commit", "benchmark", "params"], kind="stable").reset_index(
        drop=True
    )
    kept = set(zip(frame["machine"], frame["commit"], strict=True))
    return ResultSet(
        frame=frame,
        machines={m: d for m, d in described.items() if m in frame["machine"].unique()},
        sweeps={k: v for k, v in sweeps.items() if k in kept},
        results_dir=results_dir,
    )
