"""The report's section on the sharded solve's scaling (``benchmarks/bench_shard.py``).

``ShardStrong`` (T fixed) and ``ShardWeak`` (T / N fixed) record ``track_solve_seconds``
against the number of shards N, per target and solver. The section draws time against N with
the ideal line (strong: ``t(1) / N``; weak: ``t(1)``) and the efficiency
(strong: ``t(1) / (N t(N))``; weak: ``t(1) / t(N)``), and a table of both. Only gated
numbers reach it: a combination whose correctness gate failed has no value (``failed``).
"""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
import pandas as pd

from . import figures
from .page import Section, Table, Text

SUITES = {"ShardStrong": "strong scaling (T fixed)", "ShardWeak": "weak scaling (T / N fixed)"}
METRIC = "track_solve_seconds"
TITLE = "Sharded solve: scaling over devices and processes"


def scaling_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (suite, machine, target, solver, N) that was measured: ``seconds``, the
    ``ideal`` seconds from N = 1, ``speedup = t(1) / t(N)`` and ``efficiency`` (strong:
    ``t(1) / (N t(N))``; weak: ``t(1) / t(N)``). Empty without shard results."""
    if "shards" not in frame:
        return pd.DataFrame()
    rows = frame[frame["group"].isin(list(SUITES)) & frame["metric"].eq(METRIC) & frame["status"].eq("ok")]
    if rows.empty:
        return pd.DataFrame()
    keys = ["group", "machine", "target", "solver"]
    rows = rows.assign(shards=rows["shards"].astype(int))[[*keys, "shards", "seq_len", "value"]]
    one = rows[rows["shards"].eq(1)].set_index(keys)["value"].rename("t1")
    out = rows.join(one, on=keys).rename(columns={"value": "seconds"})
    strong = out["group"].eq("ShardStrong")
    out["ideal"] = np.where(strong, out["t1"] / out["shards"], out["t1"])
    out["speedup"] = out["t1"] / out["seconds"]
    out["efficiency"] = np.where(strong, out["speedup"] / out["shards"], out["speedup"])
    return out.drop(columns="t1").sort_values([*keys, "shards"]).reset_index(drop=True)


def scaling_figure(table: pd.DataFrame, title: str) -> Any:
    """Time against N (log-log, the ideal dashed) over efficiency against N, one column per
    target, one colour per solver."""
    if table.empty:
        return None
    targets = sorted(table["target"].unique())
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {s: cycle[i % len(cycle)] for i, s in enumerate(sorted(table["solver"].unique()))}
    fig, axes = figures._grid(2, len(targets))
    handles: dict = {}
    for j, target in enumerate(targets):
        top, bottom = axes[0, j], axes[1, j]
        for solver, g in table[table["target"].eq(target)].groupby("solver", sort=True):
            g = g.sort_values("shards")
            colour = colours[solver]
            (h,) = top.plot(g["shards"], g["seconds"], "o-", color=colour, label=solver)
            handles.setdefault(solver, h)
            if g["ideal"].notna().any():
                (i,) = top.plot(g["shards"], g["ideal"], "--", color=colour, alpha=0.6, lw=1)
                handles.setdefault("ideal (from N = 1)", i)
            bottom.plot(g["shards"], g["efficiency"], "o-", color=colour)
        bottom.axhline(1.0, color="grey", lw=0.8, ls=":")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(table["shards"].unique()))
            ax.get_xaxis().set_major_formatter("{x:g}")
            ax.set_xlabel("shards N")
        top.set_yscale("log")
        figures.plain_log_labels(top)
        top.set_title(target)
        top.set_ylabel("time a solve (s)" if j == 0 else "")
        bottom.set_ylabel("efficiency" if j == 0 else "")
        bottom.set_ylim(0, max(1.2, float(table["efficiency"].max()) * 1.1))
    return figures._finish(fig, axes, handles, title)


def shard_sections(frame: pd.DataFrame, figs: Any) -> list[Section]:
    """The scaling section (no blocks, so not drawn, without shard results)."""
    table = scaling_table(frame)
    section = Section(TITLE)
    if table.empty:
        return [section]
    machines = getattr(getattr(figs, "result", None), "machines", {}) or {}
    for machine in sorted(table["machine"].unique()):
        cores = machines.get(machine, {}).get("num_cpu")
        section.blocks.append(
            Text(
                f"Machine `{machine}` ({cores or 'unknown'} cores). Each shard is an XLA host device "
                "(jax) or a `gloo` process (torch) on the same host, so the shards share its cores: "
                f"past N = {cores or 'the number of cores'} the measurements show only the overhead "
                "of sharding (the exchanges and the scan over shards), not a speedup. Every number "
                "passed the correctness gate against the exact states."
            )
        )
    for group, what in SUITES.items():
        part = table[table["group"].eq(group)]
        if part.empty:
            continue
        caption = (
            f"Sharded solve, {what}: time a solve against the number of shards N (dashed: ideal "
            "from N = 1) and efficiency (1 = ideal)."
        )
        more = part[part["shards"].gt(1)]
        if not more.empty:
            best = more.loc[more["efficiency"].idxmax()]
            faster = f"{int(more['speedup'].gt(1).sum())} of {len(more)} sharded configurations"
            section.blocks.append(
                Text(
                    f"**{what[0].upper() + what[1:]}**: the best efficiency is {best['efficiency']:.2f} "
                    f"(`{best['target']}` {best['solver']}, N = {best['shards']}); "
                    + (
                        f"{faster} ran faster than at N = 1."
                        if group == "ShardStrong"
                        else f"{int(more['efficiency'].ge(0.9).sum())} of {len(more)} sharded "
                        "configurations kept within 10% of their N = 1 time."
                    )
                )
            )
        fig = scaling_figure(part, caption.split(":")[0])
        section.blocks += figs.add(f"shard-{group}", fig, caption, frame[frame["group"].eq(group)])
        shown = part.assign(seconds=part["seconds"].map("{:.4g}".format))
        shown = shown.assign(speedup=part["speedup"].round(2), efficiency=part["efficiency"].round(2))
        columns = ["machine", "target", "solver", "shards", "seq_len", "seconds", "speedup", "efficiency"]
        section.blocks.append(Table(shown[columns], f"Sharded solve, {what}"))
    return [section]
