"""The report's sections on the forward solve's time: against T and H, the speedups over
the best sequential baseline (T and H sweeps, the T × H product, the batch sweep), the
iteration budget, backend against backend, peak memory and the cold-start costs."""

from __future__ import annotations

import pandas as pd

from . import analysis, figures, fmt
from .figure_files import FigureFiles
from .fmt import number as fmt_num
from .fmt import seconds as fmt_seconds
from .page import Details, Section, Table, Text


def time_sections(frame: pd.DataFrame, figs: FigureFiles) -> list[Section]:
    out = []
    for title, x, other in (
        ("Time vs sequence length", "seq_len", "hidden_size"),
        ("Time vs hidden size", "hidden_size", "seq_len"),
    ):
        # The suite that sweeps x alone, and the T x H product's slices (each value of the
        # other axis is one such sweep): one line per backend and value of the other axis.
        rows = analysis.axis_sweep(frame, x)
        caption = (
            f"{title}: median forward-solve time (log-log), band = interquartile range, one panel per "
            "solver and cell, one line per backend and value of the other axis (from the suite that "
            "sweeps it alone, or a slice of the T × H product); red crosses on the axis: failed (no "
            "number shown)."
        )
        blocks = figs.per_machine(
            f"time-{x}",
            rows,
            lambda g, t, x=x: figures.lines(g, x, "time (ms)", t, scale=1e3, row="cell", col="solver"),
            caption,
        )
        fixed = [fmt_num(v) for v in sorted(rows[other].dropna().unique())]
        if len(fixed) == 1 and blocks:
            blocks.insert(0, Text(f"{figures.AXIS_LABEL[other].capitalize()} held at {', '.join(fixed)}."))
        out.append(Section(title, blocks))  # no data: no blocks, and the report leaves it out
    return out


def product_section(frame: pd.DataFrame, figs: FigureFiles) -> Section:
    section = Section("Speedup over the T × H product (heatmap)")
    times = analysis.solve_rows(frame, groups=(analysis.PRODUCT_GROUP,))
    sp = analysis.speedups(times) if not times.empty else times
    if sp.empty or sp["speedup"].notna().sum() == 0:
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


def batch_section(frame: pd.DataFrame, figs: FigureFiles) -> Section:
    section = Section("Speedup vs batch size")
    times = analysis.solve_rows(frame, groups=(analysis.BATCH_GROUP,))
    sp = analysis.speedups(times) if not times.empty else times
    if sp.empty or sp["speedup"].notna().sum() == 0:
        return section
    fixed = fmt.fixed(sp, {"seq_len": "T", "hidden_size": "H"})
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
            lambda r: "failed" if r["status"] == "failed" else fmt.speedup(r["speedup"]), axis=1
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


def speedup_section(frame: pd.DataFrame, figs: FigureFiles) -> Section:
    section = Section("Speedup over the best sequential baseline (T and H sweeps)")
    times = analysis.solve_rows(frame)
    sp = analysis.speedups(times)
    if sp.empty or sp["speedup"].notna().sum() == 0:
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
        max_speedup=cross["max_speedup"].map(fmt.speedup),
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


def budget_section(frame: pd.DataFrame, figs: FigureFiles) -> Section:
    """Time against the iteration budget k (``Budget``)."""
    budget = analysis.suite_rows(frame, "Budget", "time_solve", ())
    budget = budget[pd.to_numeric(budget["max_iters"], errors="coerce").notna()].assign(
        max_iters=lambda d: d["max_iters"].astype(float)
    )
    budget_blocks = figs.per_machine(
        "time-budget",
        budget,
        lambda g, t: figures.lines(g, "max_iters", "time (ms)", t, scale=1e3, row="cell", col="solver"),
        "Time vs iteration budget k (runs to tolerance are in the T and H sweeps). Log-log.",
    )
    budget_blocks += figs.per_machine(
        "error-budget-timed",
        analysis.budget_errors(frame),
        lambda g, t: figures.accuracy(g, t),
        "Error vs iteration budget k of the same timed solves: max |error| against the exact float64 "
        "states, as each solve's correctness gate measured it (log y), one panel per contraction ρ and "
        "solver, one line per backend; dashed black: ρᵏ, the Jacobi bound for elman up to the "
        "state-norm factor max‖h‖.",
        by=("machine", "device", "cell"),
    )
    return Section("Time and error vs iteration budget", budget_blocks)


def memory_section(frame: pd.DataFrame, figs: FigureFiles) -> Section:
    """Peak memory of the forward solve against T (``SeqLen.peakmem_solve``)."""
    mem = analysis.suite_rows(frame, "SeqLen", "peakmem_solve", ("max_iters", "hidden_size"))
    mem_blocks = figs.per_machine(
        "memory-seq_len",
        mem,
        lambda g, t: figures.lines(
            g, "seq_len", "peak memory (MiB)", t, scale=1 / 2**20, row="cell", col="solver"
        ),
        "Peak memory vs T: asv's peakmem (maximum resident set size of the process, so it includes the "
        "framework's own footprint; device memory on GPU is not in it).",
    )
    return Section("Peak memory vs sequence length", mem_blocks)


def _backend_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`.analysis.backend_table` of every family of suites that times the forward solve
    (the T and H sweeps, the T × H product, the batch sweep), each batch size on its own,
    with ``batch``: two backends are compared only at the very same problem."""
    parts = []
    for groups in analysis.SPEEDUP_FAMILIES.values():
        times = analysis.solve_rows(frame, groups=groups)
        for batch, g in times.groupby("batch", dropna=False, sort=True):
            table = analysis.backend_table(g)
            if not table.empty:
                parts.append(table.assign(batch=batch))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def backend_section(frame: pd.DataFrame) -> Section:
    """The same solver on every backend at the same problem: who is fastest, and by how much."""
    section = Section("Backend vs backend (same solver)")
    table = _backend_rows(frame)
    if table.empty:
        return section
    backends = sorted(
        table.columns.difference(
            [*analysis.POINT, "solver", "max_iters", "fastest", "runner-up", "ratio", "target"]
        )
    )
    wins = table.pivot_table(
        index=["machine", "device", "solver"], columns="fastest", values="ratio", aggfunc="size"
    )
    wins = wins.reindex(columns=backends).fillna(0).astype(int).reset_index()
    wins.columns.name = None
    median = table.groupby(["machine", "device", "solver"])["ratio"].median().map(fmt.ratio)
    wins = wins.merge(median.rename("median lead").reset_index(), on=["machine", "device", "solver"])
    section.blocks.append(
        Table(
            wins,
            "Points at which each backend is the fastest for the solver (median forward-solve time); "
            "median lead = runner-up time / fastest time",
        )
    )
    shown = table.assign(
        seq_len=table["seq_len"].map(fmt.integer),
        hidden_size=table["hidden_size"].map(fmt.integer),
        batch=table["batch"].map(fmt.integer),
        ratio=table["ratio"].map(fmt.ratio),
        **{b: table[b].map(fmt_seconds) for b in backends},
    ).rename(columns={"seq_len": "T", "hidden_size": "H", "batch": "B", "max_iters": "k", "ratio": "lead"})
    order = [
        "machine",
        "device",
        "cell",
        "solver",
        *(["k"] if table["max_iters"].notna().any() else []),  # Product and Batch run to tolerance
        "T",
        "H",
        "B",
        *backends,
        "fastest",
        "runner-up",
        "lead",
    ]
    section.blocks.append(
        Details(
            f"Every point measured by two or more backends ({len(shown)} rows)",
            [Table(shown[[c for c in order if c in shown]], "")],
        )
    )
    return section


def cold_section(frame: pd.DataFrame, figs: FigureFiles) -> Section:
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
        floor = (
            floor[cols]
            .assign(
                value=floor["value"].map(fmt_seconds),
                seq_len=floor["seq_len"].map(fmt.integer),
                hidden_size=floor["hidden_size"].map(fmt.integer),
            )
            .rename(columns={"seq_len": "T", "hidden_size": "H", "value": "time"})
        )
        section.blocks.append(
            Table(floor, "Per-iteration floor (one batched cell evaluation in the framework)")
        )
    return section


__all__ = [
    "backend_section",
    "batch_section",
    "budget_section",
    "cold_section",
    "memory_section",
    "product_section",
    "speedup_section",
    "time_sections",
]
