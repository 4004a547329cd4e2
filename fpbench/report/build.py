"""``build_report``: asv results -> ``index.html``, ``summary.md``, ``results.csv``, ``figures/``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from fpbench import grids as fpbench_grids

from ..cells import CELLS
from ..lyapunov import lyapunov
from ..spec import RNNSpec, make_problem
from . import analysis, figures
from .analysis import fmt_num, fmt_seconds
from .grad_sections import grad_sections
from .load import BASELINES, ResultSet, load_results
from .output import OutputFolder, safe_name
from .page import Image, Section, Table, Text, write_csv, write_html, write_markdown

FIXED_BY_GROUP = {
    "SeqLen": {"hidden_size": "seq_lens_hidden"},
    "Hidden": {"seq_len": "hidden_seq_len"},
    "Budget": {"seq_len": "budget_seq_len", "hidden_size": "budget_hidden"},
    "Accuracy": {"seq_len": "accuracy_seq_len", "hidden_size": "accuracy_hidden"},
    "ChunkedOverlap": {"seq_len": "accuracy_seq_len", "hidden_size": "accuracy_hidden"},
    "ColdStart": {"seq_len": "cold_seq_len", "hidden_size": "cold_hidden"},
    "Product": {"batch": "product_batch"},
    "Batch": {"seq_len": "batch_seq_len", "hidden_size": "batch_hidden"},
}
"""Shape parameters a suite holds fixed, and the :class:`fpbench.grids.Grid` field giving them."""


def fill_fixed_shapes(frame: pd.DataFrame, grids: Any | None = None) -> pd.DataFrame:
    """Fill T, H and B that a suite held fixed (not an asv parameter) from the run's named
    grid in :mod:`fpbench.grids` (append-only, so a grid name keeps its values); every suite
    but ``Product`` and ``Batch`` holds B at :data:`fpbench.grids.BATCH`."""
    grids = grids if grids is not None else fpbench_grids
    frame = frame.copy()
    known = getattr(grids, "GRIDS", {})
    for group, fields in FIXED_BY_GROUP.items():
        for column, attr in fields.items():
            for grid_name, grid in known.items():
                rows = frame["group"].eq(group) & frame["grid"].eq(grid_name) & frame[column].isna()
                if rows.any() and hasattr(grid, attr):
                    frame.loc[rows, column] = float(getattr(grid, attr))
    rows = frame["group"].isin(set(FIXED_BY_GROUP) - {"Product", "Batch"}) & frame["batch"].isna()
    rows &= frame["grid"].isin(list(known))
    frame.loc[rows, "batch"] = float(getattr(grids, "BATCH", 8))
    return frame


class _Figures:
    """Saves figures as ``figures/<name>.png`` into the output folder and hands back
    :class:`Image` blocks."""

    def __init__(self, out: OutputFolder, result: ResultSet) -> None:
        self.out = out
        self.result = result

    def provenance(self, rows: pd.DataFrame) -> str:
        runs = rows[["machine", "commit", "date"]].drop_duplicates()
        return "; ".join(
            f"machine `{m}`, commit `{c[:8]}` ({d:%Y-%m-%d})"
            if pd.notna(d)
            else f"machine `{m}`, commit `{c[:8]}`"
            for m, c, d in runs.itertuples(index=False)
        )

    def add(self, name: str, fig: Figure | None, caption: str, rows: pd.DataFrame) -> list[Image]:
        if fig is None:
            return []
        path = f"figures/{safe_name(name)}.png"
        fig.savefig(self.out.path(path), dpi=110, bbox_inches="tight")
        plt.close(fig)
        return [Image(path, f"{caption} Data: {self.provenance(rows)}.")]

    def per_machine(
        self,
        name: str,
        rows: pd.DataFrame,
        make: Callable[[pd.DataFrame, str], Figure | None],
        caption: str,
        by: tuple[str, ...] = ("machine", "device"),
    ) -> list[Image]:
        """One figure per machine and device (and any other ``by`` column); its title is the
        caption's head (before the first colon)."""
        blocks: list[Image] = []
        by = tuple(c for c in by if c in rows and rows[c].notna().any())
        if rows.empty or not by:
            return blocks
        for key, g in rows.groupby(list(by), sort=True):
            key = key if isinstance(key, tuple) else (key,)
            title = f"{caption.split(':')[0]} — {', '.join(map(str, key))}"
            blocks += self.add("-".join([name, *map(str, key)]), make(g, title), caption, g)
        return blocks


def _rows(frame: pd.DataFrame, group: str, metric: str, extra: tuple[str, ...]) -> pd.DataFrame:
    return analysis.with_labels(frame[frame["group"].eq(group) & frame["metric"].eq(metric)], extra)


def _none_text(what: str) -> list[Text]:
    return [Text(f"No {what} in these results (the suite did not run, or every combination is a gap).")]


def _time_sections(frame: pd.DataFrame, figs: _Figures) -> list[Section]:
    out = []
    for title, group, x, other in (
        ("Time vs sequence length", "SeqLen", "seq_len", "hidden_size"),
        ("Time vs hidden size", "Hidden", "hidden_size", "seq_len"),
    ):
        rows = _rows(frame, group, "time_solve", ("max_iters", other))
        caption = (
            f"{title}: median forward-solve time (log-log), band = interquartile range, one panel per "
            "solver and cell, one line per backend (colour: backend, the same in every figure); red "
            "crosses on the axis: failed (no number shown)."
        )
        blocks = figs.per_machine(
            f"time-{x}",
            rows,
            lambda g, t, x=x: figures.lines(g, x, "time (ms)", t, scale=1e3, row="cell", col="solver"),
            caption,
        )
        fixed = sorted({fmt_num(v) for v in rows[other].dropna().unique()})
        if fixed and blocks:
            blocks.insert(0, Text(f"{figures.AXIS_LABEL[other].capitalize()} held at {', '.join(fixed)}."))
        out.append(Section(title, blocks or _none_text(f"`{group}.time_solve` results")))
    return out


def _fmt_speedup(v: float) -> str:
    return "—" if pd.isna(v) else f"{v:.3g}×"


def _fmt_error(v: float) -> str:
    return "gate passed (error not recorded)" if pd.isna(v) else f"{v:.1e} (gate passed)"


def _run_provenance(frame: pd.DataFrame, result: ResultSet) -> dict[str, str]:
    """machine -> ``commit, grid, threads, versions`` of the run its numbers come from."""
    out = {}
    for (machine, commit), g in frame.groupby(["machine", "commit"], sort=True):
        records = result.sweeps.get((machine, commit), [])
        versions = records[-1].get("versions", {}) if records else {}
        shown = ", ".join(
            f"{k} {versions[k]}"
            for k in ("torch", "jax", "numba")
            if versions.get(k, "not installed") != "not installed"
        )
        out[machine] = (
            f"commit `{commit[:8]}`, grid `{g['grid'].iloc[0]}`, threads {g['threads'].iloc[0]}"
            + (f", {shown}" if shown else "")
        )
    return out


def _headline_section(frame: pd.DataFrame, result: ResultSet) -> Section:
    """The answer first: for each machine, device and cell, where each parallel solver beats the
    best sequential baseline, its best speedup with that solve's error, and a verdict."""
    section = Section("Headline: where does a parallel solver beat the best sequential baseline?")
    sp = analysis.family_speedups(frame)
    ok = sp[sp["status"].eq("ok") & sp["speedup"].notna()] if not sp.empty else sp
    if ok.empty:
        section.blocks.append(
            Text(
                "**No answer in these results**: no parallel solve and sequential baseline were both "
                "measured on the same machine and device (run `fpbench sweep`, whose default grid "
                "`main` measures both over T, H and B)."
            )
        )
        return section
    head = analysis.headline(sp)
    prov = _run_provenance(frame, result)
    section.blocks.append(
        Text(
            "Speedup = time of the fastest sequential baseline (`sequential` or `native`, any backend) on "
            "the same machine, device and problem (T, H, B), divided by the parallel solver's time (its "
            "fastest backend at that point); above 1× the parallel solve wins. Every timed solve passed its "
            "correctness gate against the exact float64 states first: the error shown is the one the gate "
            "measured for that very solve. A failed gate has no number."
        )
    )
    for (machine, device, cell), _ in head.groupby(["machine", "device", "cell"], sort=True):
        section.blocks.append(Text(analysis.verdict(head, sp, machine, device, cell)))
    shown = head.assign(
        **{
            "best speedup": head["best speedup"].map(_fmt_speedup),
            "max |error| vs exact": head["max |error| vs exact"].map(_fmt_error),
            "wins where (crossover T per H, B)": head["wins"],
            "run": head["machine"].map(prov),
        }
    ).drop(columns=["wins"])
    order = [
        "machine",
        "device",
        "cell",
        "solver",
        "wins where (crossover T per H, B)",
        "points won",
        "best speedup",
        "backend",
        "at (T, H, B)",
        "max |error| vs exact",
        "baseline",
        "measured",
        "run",
    ]
    section.blocks.append(
        Table(shown[order], "Where each parallel solver wins, and its best measured speedup")
    )
    machines = sorted(head["machine"].unique())
    if len(machines) > 1:
        side = head.assign(
            value=head.apply(
                lambda r: f"{_fmt_speedup(r['best speedup'])} ({r['backend']}, {r['at (T, H, B)']})", axis=1
            ),
            where=head["device"] + ", " + head["cell"] + ", " + head["solver"],
        ).pivot_table(index="where", columns="machine", values="value", aggfunc="first")
        section.blocks.append(
            Table(
                side.reset_index().rename(columns={"where": "device, cell, solver"}),
                "Machines side by side: best speedup (backend, (T, H, B))",
            )
        )
    return section


def _product_section(frame: pd.DataFrame, figs: _Figures) -> Section:
    section = Section("Speedup over the T × H product (heatmap)")
    times = analysis.solve_rows(frame, groups=(analysis.PRODUCT_GROUP,))
    sp = analysis.speedups(times) if not times.empty else times
    if sp.empty or sp["speedup"].notna().sum() == 0:
        section.blocks += _none_text("`Product` speedups (parallel solve and baseline on one device)")
        return section
    section.blocks.append(
        Text(
            "DEER's protocol: GRU, input size I = H, fixed batch B (see the title), every point of the "
            "product T × H, iterative solvers to tolerance. Each cell is the speedup of that backend's "
            "parallel solve over the fastest sequential baseline of any backend at that point."
        )
    )
    cross = analysis.crossovers(sp)
    for (machine, device, cell, batch), g in sp.groupby(["machine", "device", "cell", "batch"], sort=True):
        if g["speedup"].notna().sum() == 0:
            continue
        c = cross[(cross["machine"] == machine) & (cross["device"] == device) & (cross["cell"] == cell)]
        title = f"Speedup over best sequential, T × H — {machine}, {device}, {cell}, B = {fmt_num(batch)}"
        section.blocks += figs.add(
            f"speedup-product-{machine}-{device}-{cell}-B{fmt_num(batch)}",
            figures.speedup_heatmaps(g, c, title),
            "Speedup heatmap over (T, H), one panel per parallel solver (rows) and backend (columns); red: "
            "the parallel solve wins; black line: break-even contour (speedup = 1); black box: the "
            "crossover, the smallest T that wins in that H row.",
            g,
        )
    return section


def _batch_section(frame: pd.DataFrame, figs: _Figures) -> Section:
    section = Section("Speedup vs batch size")
    times = analysis.solve_rows(frame, groups=(analysis.BATCH_GROUP,))
    sp = analysis.speedups(times) if not times.empty else times
    if sp.empty or sp["speedup"].notna().sum() == 0:
        section.blocks += _none_text("`Batch` speedups (parallel solve and baseline on one device)")
        return section
    fixed = ", ".join(
        f"T = {fmt_num(t)}, H = {fmt_num(h)}"
        for t, h in sp[["seq_len", "hidden_size"]].drop_duplicates().itertuples(index=False)
    )
    section.blocks.append(
        Text(
            f"Speedup over the fastest sequential baseline against the batch size B ({fixed}; iterative "
            "solvers to tolerance). At B = 1 the sequential loop is latency-bound: that is where a "
            "parallel-in-time solve has the most idle hardware to use."
        )
    )
    section.blocks += figs.per_machine(
        "speedup-batch",
        sp,
        lambda g, t: figures.speedup_batch(g, t),
        "Speedup vs batch size: one panel per cell and parallel solver, one line per backend; dashed: "
        "break-even; red crosses: failed correctness gate (no number).",
    )
    measured = sp[sp["status"].isin(["ok", "failed"])]
    table = measured.assign(
        speedup=measured.apply(
            lambda r: "failed" if r["status"] == "failed" else _fmt_speedup(r["speedup"]), axis=1
        )
    ).pivot_table(
        index=["machine", "device", "cell", "solver", "backend"],
        columns="batch",
        values="speedup",
        aggfunc="first",
    )
    table = table.reindex(columns=sorted(table.columns)).rename(columns=lambda b: f"B = {fmt_num(b)}")
    section.blocks.append(Table(table.reset_index(), "Speedup by batch size B"))
    return section


def _speedup_section(frame: pd.DataFrame, figs: _Figures) -> Section:
    section = Section("Speedup over the best sequential baseline (T and H sweeps)")
    times = analysis.solve_rows(frame)
    sp = analysis.speedups(times)
    if sp.empty or sp["speedup"].notna().sum() == 0:
        section.blocks += _none_text("parallel solve timed on a device that also has a sequential baseline")
        return section
    cross = analysis.crossovers(sp)
    section.blocks.append(
        Text(
            "Speedup = time of the fastest sequential baseline (`sequential` or `native`, any backend) "
            "on the same machine and device at the same (T, H), divided by the parallel solver's time: "
            "above 1× the parallel solve wins. Timings from the T sweep and the H sweep are pooled. "
            "A combination whose correctness gate failed has no speedup and is marked failed."
        )
    )
    for (machine, device, cell), g in sp.groupby(["machine", "device", "cell"], sort=True):
        if g["speedup"].notna().sum() == 0:
            continue
        name = f"speedup-{machine}-{device}-{cell}"
        title = f"Speedup over best sequential — {machine}, {device}, {cell}"
        c = cross[(cross["machine"] == machine) & (cross["device"] == device) & (cross["cell"] == cell)]
        if analysis.is_grid(g):
            fig = figures.speedup_heatmaps(g, c, title)
            caption = "Speedup heatmap over (T, H); black outline: crossover T per H."
        else:
            fig = figures.speedup_lines(g, title)
            caption = (
                "The measured (T, H) points do not form a grid (T and H are swept one at a time), so the "
                "speedup is drawn against T, one panel per H, instead of a heatmap; dashed: break-even."
            )
        section.blocks += figs.add(name, fig, caption, g)
    table = cross.assign(
        hidden_size=cross["hidden_size"].map(fmt_num),
        crossover_T=cross["crossover_T"].map(lambda v: "never (in range)" if pd.isna(v) else fmt_num(v)),
        wins_beyond=cross["wins_beyond"].map({True: "yes", False: "no"}),
        max_speedup=cross["max_speedup"].map(lambda v: f"{v:.3g}×"),
        at_T=cross["at_T"].map(fmt_num),
    ).rename(
        columns={
            "label": "backend:solver",
            "hidden_size": "H",
            "crossover_T": "crossover T",
            "wins_beyond": "wins at all larger T",
            "max_speedup": "best speedup",
            "at_T": "at T",
        }
    )
    section.blocks.append(
        Table(table, "Crossover: smallest measured T where the parallel solver beats the baseline")
    )
    return section


def _accuracy_section(frame: pd.DataFrame, figs: _Figures) -> Section:
    section = Section("Accuracy: error vs iteration budget, iterations to tolerance")
    err = _rows(frame, "Accuracy", "track_max_abs_error", ())
    section.blocks += figs.per_machine(
        "error-budget",
        err,
        lambda g, t: figures.accuracy(g, t),
        "Error vs iteration budget: max |error| against the exact float64 states (log y), one panel "
        "per contraction ρ and solver, one line per backend; "
        "dashed black: ρᵏ, the Jacobi bound for elman up to the state-norm factor max‖h‖ "
        "(the full bound is ρᵏ·max‖h_{t−k}‖; meaningful only for ρ < 1).",
        by=("machine", "device", "cell"),
    )
    it = _rows(frame, "Accuracy", "track_iterations", ())
    it = it[it["max_iters"].astype(str).eq("tol")]
    section.blocks += figs.per_machine(
        "iterations-tol",
        it,
        lambda g, t: figures.iterations(g, t),
        'Iterations to tolerance vs contraction ρ (runs with max_iters = "tol", budget T): '
        "1e-4 in float32, 1e-7 in float64. A run hitting the budget did not converge.",
    )
    lyap = lyapunov_table(err)
    if not lyap.empty:
        section.blocks.append(
            Table(
                lyap,
                "Largest Lyapunov exponent λ of each accuracy problem (float64, along the exact "
                "trajectory, first ≤ 256 steps): λ < 0 is predictable (errors shrink like e^(λt), the "
                "fixed-point solvers converge fast); λ > 0 is chaotic (float32 cannot track the float64 "
                "states, Newton needs up to T iterations, and no solver's result is accurate).",
            )
        )
    if not section.blocks:
        section.blocks += _none_text("`Accuracy` results")
    return section


def _overlap_section(frame: pd.DataFrame, figs: _Figures) -> Section:
    section = Section("Accuracy: Chunked's error vs overlap")
    err = _rows(
        frame.assign(solver=frame["solver"].fillna("chunked")), "ChunkedOverlap", "track_max_abs_error", ()
    )
    section.blocks += figs.per_machine(
        "error-overlap",
        err,
        lambda g, t: figures.overlap_accuracy(g, t),
        "Error of one Chunked iteration vs its overlap: max |error| against the exact float64 states "
        "(log y), one panel per contraction ρ, one line per backend; dashed black: ρ^(overlap+1), the "
        "bound for elman up to the state-norm factor max‖h‖ (every state ran at least overlap + 1 steps "
        "from a zero state). Where the error meets the dtype's rounding, more overlap buys nothing.",
        by=("machine", "device", "cell"),
    )
    return section


LYAPUNOV_STEPS = 256
"""The report estimates each accuracy problem's Lyapunov exponent over this many steps."""


def lyapunov_table(rows: pd.DataFrame) -> pd.DataFrame:
    """``grid, cell, T, H, ρ, λ`` for every distinct accuracy problem of ``rows`` (the spec
    is the grid's: its fixed B, I, seed and the accuracy T and H), computed with
    :func:`fpbench.lyapunov`."""
    cols = ["grid", "cell", "contraction"]
    if rows.empty or not set(cols) <= set(rows.columns):
        return pd.DataFrame()
    out = []
    for grid, cell, rho in rows[cols].dropna().drop_duplicates().itertuples(index=False):
        g = fpbench_grids.GRIDS.get(str(grid))
        if g is None or cell not in CELLS:
            continue
        spec = RNNSpec(
            cell=str(cell),
            input_size=fpbench_grids.INPUT_SIZE,
            hidden_size=g.accuracy_hidden,
            seq_len=g.accuracy_seq_len,
            batch=fpbench_grids.BATCH,
            dtype="float64",
            contraction=float(rho),
            seed=fpbench_grids.SEED,
        )
        lam = lyapunov(make_problem(spec), steps=min(spec.seq_len, LYAPUNOV_STEPS))
        out.append((grid, cell, spec.seq_len, spec.hidden_size, float(rho), f"{lam:+.3f}"))
    return pd.DataFrame(out, columns=["grid", "cell", "T", "H", "ρ", "λ per step"])


def _budget_memory_sections(frame: pd.DataFrame, figs: _Figures) -> list[Section]:
    budget = _rows(frame, "Budget", "time_solve", ())
    budget = budget[pd.to_numeric(budget["max_iters"], errors="coerce").notna()].assign(
        max_iters=lambda d: d["max_iters"].astype(float)
    )
    budget_blocks = figs.per_machine(
        "time-budget",
        budget,
        lambda g, t: figures.lines(g, "max_iters", "time (ms)", t, scale=1e3, row="cell", col="solver"),
        "Time vs iteration budget k (runs to tolerance are in the T and H sweeps). Log-log.",
    )
    mem = _rows(frame, "SeqLen", "peakmem_solve", ("max_iters", "hidden_size"))
    mem_blocks = figs.per_machine(
        "memory-seq_len",
        mem,
        lambda g, t: figures.lines(
            g, "seq_len", "peak memory (MiB)", t, scale=1 / 2**20, row="cell", col="solver"
        ),
        "Peak memory vs T: asv's peakmem (maximum resident set size of the process, so it includes the "
        "framework's own footprint; device memory on GPU is not in it).",
    )
    return [
        Section("Time vs iteration budget", budget_blocks or _none_text("`Budget.time_solve` results")),
        Section("Peak memory vs sequence length", mem_blocks or _none_text("`SeqLen.peakmem_solve` results")),
    ]


def _backend_section(frame: pd.DataFrame) -> Section:
    section = Section("Backend vs backend (same solver)")
    table = analysis.backend_table(analysis.solve_rows(frame))
    if table.empty:
        section.blocks += _none_text("point measured by two or more backends")
        return section
    section.blocks.append(
        Text(
            "Median forward-solve time per backend for the same solver, cell, device and shape; "
            "`fastest` wins by `ratio` = runner-up time / fastest time."
        )
    )
    backends = [
        c
        for c in table.columns
        if c not in analysis.POINT
        and c not in ("solver", "max_iters", "fastest", "runner-up", "ratio", "target")
    ]
    shown = table.assign(
        seq_len=table["seq_len"].map(fmt_num),
        hidden_size=table["hidden_size"].map(fmt_num),
        ratio=table["ratio"].map(lambda v: f"{v:.2f}×"),
        **{b: table[b].map(fmt_seconds) for b in backends},
    ).rename(columns={"seq_len": "T", "hidden_size": "H", "max_iters": "k"})
    shown = shown.drop(columns=[c for c in ("commit",) if c in shown])
    section.blocks.append(Table(shown, "Who is fastest where"))
    wins = table.groupby(["machine", "device", "solver", "fastest"]).size().rename("points won").reset_index()
    section.blocks.append(Table(wins, "Points won per backend"))
    return section


def _cold_section(frame: pd.DataFrame, figs: _Figures) -> Section:
    section = Section("Compile and cold-start costs")
    cold = analysis.with_labels(frame[frame["group"].eq("ColdStart")], ())
    if cold["status"].eq("ok").any():
        section.blocks += figs.per_machine(
            "cold-start",
            cold,
            lambda g, t: figures.bars(g, "solver", "seconds (log)", t),
            "Cold start: prepare (transfer + compile/trace + first call) per backend and solver, log scale.",
        )
        table = cold[cold["status"].eq("ok")][["machine", "target", "cell", "solver", "metric", "value"]]
        section.blocks.append(
            Table(table.assign(value=table["value"].map(fmt_seconds)).rename(columns={"value": "cost"}), "")
        )
    floor = frame[frame["group"].eq("IterationFloor") & frame["status"].eq("ok")]
    if not floor.empty:
        cols = ["machine", "target", "cell", "seq_len", "hidden_size", "metric", "value"]
        floor = floor[cols].assign(
            value=floor["value"].map(fmt_seconds),
            seq_len=floor["seq_len"].map(fmt_num),
            hidden_size=floor["hidden_size"].map(fmt_num),
        )
        section.blocks.append(
            Table(floor, "Per-iteration floor (one batched cell evaluation in the framework)")
        )
    if not section.blocks:
        section.blocks += _none_text("`ColdStart` or `IterationFloor` results")
    return section


def _gaps_section(frame: pd.DataFrame, skipped: list[tuple[str, str]] = ()) -> Section:
    gaps = analysis.gaps(frame)
    counts = frame["status"].value_counts()
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "n/a", "failed"))
    blocks: list[Text | Image | Table] = [
        Text(
            f"{summary}. **n/a**: the combination does not exist here (framework or device missing, "
            "solver not implemented, too large): `NotImplementedError` in setup. **failed**: the benchmark "
            "raised, e.g. its correctness gate (no speed number is reported on a failed gate), or it timed "
            "out. Both are gaps in the figures above."
        )
    ]
    if skipped:
        blocks.append(
            Text(
                f"**{len(skipped)} asv result file(s) could not be read or were skipped** (damaged, with "
                "`--skip-unreadable`; not a regular file; a duplicate of another): every result only in "
                "them is missing from this report."
            )
        )
        blocks.append(Table(pd.DataFrame(skipped, columns=["file", "why"]), "Skipped result files"))
    if not gaps.empty:
        blocks.append(Table(gaps, "Gaps and their reasons"))
    return Section("Missing, n/a and failed combinations", blocks)


def _provenance_section(result: ResultSet, frame: pd.DataFrame) -> Section:
    machines = pd.DataFrame(
        [{"machine": m, **{k: v for k, v in d.items()}} for m, d in sorted(result.machines.items())]
    )
    runs = []
    for (machine, commit), g in frame.groupby(["machine", "commit"], sort=True):
        records = result.sweeps.get((machine, commit), [])
        last = records[-1] if records else {}
        versions = last.get("versions", {})
        runs.append(
            {
                "machine": machine,
                "commit": commit[:8],
                "commit date": f"{g['date'].iloc[0]:%Y-%m-%d %H:%M}" if pd.notna(g["date"].iloc[0]) else "—",
                "grid": g["grid"].iloc[0],
                "threads": g["threads"].iloc[0],
                "env": g["env"].iloc[0] or "—",
                "swept": last.get("finished", "—"),
                "versions": ", ".join(f"{k} {v}" for k, v in versions.items() if v != "not installed") or "—",
                "results": len(g),
            }
        )
    settings = frame[frame["group"].eq("Settings")]
    grid_ids = ", ".join(f"{i} {n}" for i, n in enumerate(fpbench_grids.GRID_NAMES))
    extra: list[Text | Image | Table] = []
    if not settings.empty:  # what the benchmark processes saw (benchmarks/bench_settings.py)
        seen = settings.assign(
            setting=settings["params"].str.strip("'\""),
            value=settings.apply(lambda r: fmt_num(r["value"]) if r["status"] == "ok" else "unset", axis=1),
        )
        extra.append(
            Table(
                seen.pivot_table(
                    index="setting", columns="machine", values="value", aggfunc="first"
                ).reset_index(),
                "Settings seen by the benchmark processes (FPBENCH_GRID as its index in "
                f"fpbench.grids.GRID_NAMES: {grid_ids})",
            )
        )
    return Section(
        "Provenance",
        [
            *extra,
            Text(
                "Every figure caption names the machine and commit its data came from. Thread settings and "
                "versions are recorded by `fpbench sweep` beside asv's results (`fpbench-<commit>.sweeps`); "
                "`default` threads means no thread variable was set."
            ),
            Table(machines, "Machines (asv machine description)"),
            Table(pd.DataFrame(runs), "Runs"),
        ],
    )


def build_report(
    results_dir: Path | str,
    out: Path | str | None = None,
    machines: list[str] | None = None,
    all_commits: bool = False,
    title: str = "fpbench: fixed-point RNN evaluation benchmarks",
    skip_unreadable: bool = False,
) -> Path:
    """Read asv results and write the comparative report.

    Every field of the results is data, never markup: it is escaped for each format, figure
    texts are plain (no mathtext), and a machine name only ever names a folder inside ``reports/``.

    Args:
        results_dir: asv results directory (``.asv/results``).
        out: output folder (created); default ``reports/<machine>`` for one machine (the name
            made a plain file name by :func:`~.output.safe_name`), else ``reports/all``. It
            must be empty, new, or hold an earlier report (:class:`~.output.OutputFolder`).
        machines: only these asv machines (default: all).
        all_commits: every commit in the tables and CSV (figures always use each machine's newest).
        skip_unreadable: skip asv result files that cannot be read, and list them in the
            report's missing section, instead of failing.

    Raises:
        ReportError: no results (:class:`~.store.ResultsNotFound`), an unknown machine, a file
            that cannot be read (named), or ``out`` is a file, cannot be created, holds files
            that are not an earlier report's, or holds a symbolic link the report would write.

    Returns:
        The output folder, holding ``index.html``, ``summary.md``, ``results.csv`` and ``figures/``.
    """
    result = load_results(
        Path(results_dir), machines=machines, all_commits=all_commits, skip_unreadable=skip_unreadable
    )
    result.frame = fill_fixed_shapes(result.frame)
    names = sorted(result.frame["machine"].unique())
    default = Path("reports") / safe_name(names[0] if len(names) == 1 else "all")
    out = Path(out) if out is not None else default
    folder = OutputFolder(out)
    write_csv(result.frame, folder.path("results.csv"))

    frame = result.frame
    if all_commits:  # figures and comparisons: each machine's newest commit only
        newest = frame.sort_values("date").groupby("machine")["commit"].transform("last")
        frame = frame[frame["commit"].eq(newest)]
    figs = _Figures(folder, result)
    with mpl.rc_context({"text.parse_math": False}):  # a `$` in a machine name is text, not math
        sections = [
            _headline_section(frame, result),
            _product_section(frame, figs),
            _batch_section(frame, figs),
            *_time_sections(frame, figs),
            _speedup_section(frame, figs),
            _accuracy_section(frame, figs),
            _overlap_section(frame, figs),
            *_budget_memory_sections(frame, figs),
            _backend_section(frame),
            _cold_section(frame, figs),
            *grad_sections(frame, figs, result.curves),
            _gaps_section(result.frame, result.skipped),
            _provenance_section(result, result.frame),
        ]
    counts = result.frame["status"].value_counts()
    subtitle = (
        f"{len(names)} machine(s): {', '.join(f'`{n}`' for n in names)}; "
        f"{counts.get('ok', 0)} measurements, {counts.get('n/a', 0)} n/a, {counts.get('failed', 0)} failed. "
        f"Parallel solvers: {', '.join(sorted(set(frame['solver'].dropna()) - set(BASELINES)))}; "
        f"baselines: {', '.join(sorted(set(frame['solver'].dropna()) & set(BASELINES)))}. "
        "Medians of asv's samples; shaded bands are interquartile ranges."
    )
    write_html(sections, out, title, subtitle, folder.path("index.html"))
    write_markdown(sections, title, subtitle, folder.path("summary.md"))
    folder.finish()
    return out


__all__ = ["build_report", "fill_fixed_shapes"]
