"""The report's provenance: where every number comes from, once per machine and commit
(commit, grid, threads, what the benchmark processes saw, the machine, the versions)."""

from __future__ import annotations

import pandas as pd

from fpbench import grids as fpbench_grids

from . import fmt
from .gaps_section import measurement_rows
from .load import ResultSet
from .page import Section, Table, Text

MACHINE_FIELDS = ("cpu", "arch", "num_cpu", "ram", "os", "python")
"""The fields of asv's machine description the provenance shows, in this order."""


def _run_fields(result: ResultSet, machine: str, commit: str, g: pd.DataFrame) -> dict[str, str]:
    """Everything known about one run (one machine, one commit), as ``field -> text``: the
    commit, the grid and threads, what the benchmark processes saw, the machine and the
    package versions."""
    records = result.sweeps.get((machine, commit), [])
    last = records[-1] if records else {}
    date = g["date"].iloc[0]
    env = str(g["env"].iloc[0] or "")
    grid = str(g["grid"].iloc[0])
    fields = {
        "commit": f"`{commit[:8]}`",
        "commit date": f"{date:%Y-%m-%d %H:%M}" if pd.notna(date) else fmt.MISSING,
        "grid": f"`{grid}`",
        "threads": str(g["threads"].iloc[0]),
    }
    if env and env != f"FPBENCH_GRID={grid}":
        fields["environment"] = env
    fields["swept"] = str(last.get("finished", fmt.MISSING))
    fields["results"] = fmt.integer(len(measurement_rows(g)))
    settings = g[g["group"].eq("Settings")]
    for _, r in settings.sort_values("params").iterrows():  # what the processes saw (bench_settings.py)
        name = str(r["params"]).strip("'\"")
        value = fmt.number(r["value"]) if r["status"] == "ok" else "unset"
        if name == "FPBENCH_GRID" and r["status"] == "ok":
            index = int(r["value"])
            names = fpbench_grids.GRID_NAMES
            value = f"`{names[index]}`" if 0 <= index < len(names) else value
        fields[f"seen: {name}"] = value
    described = result.machines.get(machine, {})
    for key in MACHINE_FIELDS:
        if key in described:
            value = described[key]
            fields[key] = fmt.mebibytes(value) if key == "ram" else str(value)
    for package, version in last.get("versions", {}).items():
        if version != "not installed":
            fields[package] = str(version)
    return fields


def provenance_section(result: ResultSet, frame: pd.DataFrame) -> Section:
    """Where every number comes from, once per machine (and commit): one column per run."""
    runs = {}
    several = frame.groupby("machine")["commit"].nunique().gt(1)
    for (machine, commit), g in frame.groupby(["machine", "commit"], sort=True):
        name = f"{machine} @ {commit[:8]}" if several.get(machine, False) else str(machine)
        runs[name] = _run_fields(result, machine, commit, g)
    order: list[str] = []  # every run's fields, each after the field it follows in its run
    for fields in runs.values():
        for i, key in enumerate(fields):
            if key not in order:
                before = list(fields)[:i]
                at = max((order.index(k) + 1 for k in before if k in order), default=0)
                order.insert(at, key)
    table = pd.DataFrame(runs).reindex(order).fillna(fmt.MISSING).rename_axis("run").reset_index()
    return Section(
        "Provenance",
        [
            Table(table, "Runs: commit, grid, threads, machine and versions"),
            Text(
                "Thread settings and versions are recorded by `fpbench sweep` beside asv's results "
                "(`fpbench-<commit>.sweeps`); `default` threads means no thread variable was set; the "
                "`seen:` rows are what the benchmark processes saw (`bench_settings.Settings`)."
            ),
        ],
    )


__all__ = ["MACHINE_FIELDS", "provenance_section"]
