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
from . import analysis, figures, fmt
from .fmt import number as fmt_num
from .fmt import seconds as fmt_seconds
from .grad_sections import grad_sections
from .load import BASELINES, ResultSet, load_results
from .output import OutputFolder, safe_name
from .page import Details, Image, Section, Table, Text, write_csv, write_html, write_markdown
from .shard_section import shard_sections

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
    :class:`Image` blocks; with ``name_runs`` (a report of several machines or commits)
    each caption ends naming the machine and commit of its data."""

    def __init__(self, out: OutputFolder, result: ResultSet | None, name_runs: bool = True) -> None:
        self.out = out
        self.result = result
        self.name_runs = name_runs

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
        return [Image(path, f"{caption} Data: {self.provenance(rows)}." if self.name_runs else caption)]

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


def _time_sections(frame: pd.DataFrame, figs: _Figures) -> list[Section]:
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


def _fmt_error(v: float) -> str:
    return "not recorded" if pd.isna(v) else fmt.error(v)


HEADLINE_FAMILIES = ("T x H product", "T and H sweeps", "batch")
"""Which family of suites (:data:`.analysis.SPEEDUP_FAMILIES`) draws the headline figure:
the first one measured."""


def _headline_figures(sp: pd.DataFrame, figs: _Figures) -> list[Image]:
    """The one figure that shows the answer, per machine, device and cell: the best backend's
    speedup of each parallel solver over (T, H) (:func:`.figures.headline_heatmap`), from
    the first family of :data:`HEADLINE_FAMILIES` measured there."""
    blocks: list[Image] = []
    measured = sp[sp["status"].isin(["ok", "failed"])]
    for (machine, device, cell), g in measured.groupby(["machine", "device", "cell"], sort=True):
        family = next((f for f in HEADLINE_FAMILIES if g["family"].eq(f).any()), None)
        if family is None:
            continue
        g = g[g["family"].eq(family)]
        batch = analysis.value_range(g["batch"])
        title = f"Best speedup over the best sequential baseline — {machine}, {device}, {cell}, B = {batch}"
        blocks += figs.add(
            f"headline-{machine}-{device}-{cell}",
            figures.headline_heatmap(g, title),
            f"Where each parallel solver wins ({family}): at each (T, H), the speedup of its fastest "
            "backend (named under the number) over the fastest sequential baseline of any backend; red: "
            "the parallel solve wins, blue: it loses; black line: break-even (speedup = 1); hatched: a "
            "failed correctness gate.",
            g,
        )
    return blocks


NO_VERDICT = (
    "**No verdict**: no parallel solve and sequential baseline were both measured on the same "
    "machine and device (run `fpbench sweep`, whose default grid `main` measures both over T, H and B)."
)
"""The page of results that compare nothing (and hold nothing else)."""


def _solvers_line(frame: pd.DataFrame) -> str:
    """``Parallel solvers: ...; baselines: ... .`` naming only the kinds the results hold."""
    solvers = set(frame["solver"].dropna())
    parts = [
        f"{label}: {', '.join(sorted(names))}"
        for label, names in (
            ("Parallel solvers", solvers - set(BASELINES)),
            ("baselines", solvers & set(BASELINES)),
        )
        if names
    ]
    return "; ".join(parts) + ". " if parts else ""


def _headline_section(frame: pd.DataFrame, figs: _Figures) -> Section:
    """The answer first, on the page's first screen: for each machine, device and cell, a
    verdict; per parallel solver where it beats the best sequential baseline, its best
    speedup and the error of that solve; and the one figure that shows it."""
    section = Section("Headline: where does a parallel solver beat the best sequential baseline?")
    sp = analysis.family_speedups(frame)
    ok = sp[sp["status"].eq("ok") & sp["speedup"].notna()] if not sp.empty else sp
    if ok.empty:  # not drawn, unless the page would have nothing else (build_report)
        return section
    head = analysis.headline(sp)
    for (machine, device, cell), _ in head.groupby(["machine", "device", "cell"], sort=True):
        section.blocks.append(Text(analysis.verdict(head, sp, machine, device, cell)))
    shown = head.assign(
        **{
            "best speedup": head["best speedup"].map(fmt.speedup),
            "max |error| vs exact (gate passed)": head["max |error| vs exact"].map(_fmt_error),
            "wins where (crossover T per H, B)": head["wins"],
            "on": head["backend"],
            "against": head["baseline"],
        }
    )
    order = [
        *(c for c in ("machine", "device", "cell") if head[c].nunique() > 1),  # else the verdict names it
        "solver",
        "wins where (crossover T per H, B)",
        "points won",
        "best speedup",
        "on",
        "at (T, H, B)",
        "max |error| vs exact (gate passed)",
        "against",
    ]
    section.blocks.append(Table(shown[order], "Where each parallel solver wins, and its best speedup"))
    section.blocks += _headline_figures(sp, figs)
    section.blocks.append(
        Text(
            "Speedup = time of the fastest sequential baseline (`sequential` or `native`, any backend) at "
            "the same machine, device and (T, H, B), divided by the parallel solver's time on its fastest "
            "backend; above 1× the parallel solve wins. Every timed solve first passed its correctness "
            "gate against the exact float64 states, and its error is the one that gate measured; a "
            "failed gate has no number."
        )
    )
    machines = sorted(head["machine"].unique())
    if len(machines) > 1:
        side = head.assign(
            value=head.apply(
                lambda r: f"{fmt.speedup(r['best speedup'])} ({r['backend']}, {r['at (T, H, B)']})", axis=1
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


def _speedup_section(frame: pd.DataFrame, figs: _Figures) -> Section:
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
        out.append((grid, cell, spec.seq_len, spec.hidden_size, float(rho), fmt.signed(lam)))
    return pd.DataFrame(out, columns=["grid", "cell", "T", "H", "ρ", "λ per step"])


def _budget_section(frame: pd.DataFrame, figs: _Figures) -> Section:
    """Time against the iteration budget k (``Budget``)."""
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


def _memory_section(frame: pd.DataFrame, figs: _Figures) -> Section:
    """Peak memory of the forward solve against T (``SeqLen.peakmem_solve``)."""
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


def _backend_section(frame: pd.DataFrame) -> Section:
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


DEFAULT_NA = "not available here (NotImplementedError in setup)"
"""The reason of an n/a combination whose setup said nothing more (:mod:`.load`)."""


def measurement_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that are measurements: all but the ``Settings`` suite's (what the benchmark
    processes saw, shown in the provenance)."""
    return frame[~frame["group"].eq("Settings")]


def absent_targets(frame: pd.DataFrame) -> pd.DataFrame:
    """Per machine, the targets (``backend:device``) with no result at all there: every
    combination n/a for want of the framework or the device (a GPU target on a machine
    without one), or because the sweep skipped the target. Columns ``machine, target,
    count``."""
    rows = frame[frame["target"].notna()]
    if rows.empty:
        return pd.DataFrame(columns=["machine", "target", "count"])
    plain = rows["status"].eq("n/a") & rows["reason"].fillna(DEFAULT_NA).isin([DEFAULT_NA, ""])
    per = rows.assign(_plain=plain).groupby(["machine", "target"], sort=True)
    out = per.agg(all_plain=("_plain", "all"), count=("_plain", "size")).reset_index()
    return out[out["all_plain"]][["machine", "target", "count"]]


def _short_benchmark(name: str) -> str:
    """``bench_grad.GradSeqLen.time_grad`` -> ``GradSeqLen.time_grad``."""
    return name.split(".", 1)[-1]


def gap_reasons(frame: pd.DataFrame) -> pd.DataFrame:
    """Every combination without a number, grouped by (machine, status, reason): how many,
    on which targets and solvers, in which benchmarks; failures first, then the largest
    groups. The targets of :func:`absent_targets` are left out (the report names them in
    one line)."""
    bad = measurement_rows(frame)
    bad = bad[~bad["status"].eq("ok")]
    absent = absent_targets(frame)
    if not absent.empty:
        gone = bad.set_index(["machine", "target"]).index.isin(absent.set_index(["machine", "target"]).index)
        bad = bad[~gone]
    if "method" in bad:  # the training suites name a method, not a solver
        bad = bad.assign(solver=bad["solver"].fillna(bad["method"]))
    cols = ["machine", "status", "reason"]
    if bad.empty:
        return pd.DataFrame(columns=[*cols, "count", "targets", "solvers", "benchmarks"])

    def names(s: pd.Series) -> str:
        return ", ".join(sorted({str(v) for v in s.dropna()})) or fmt.MISSING

    out = (
        bad.fillna({"reason": ""})
        .groupby(cols, dropna=False, sort=False)
        .agg(
            count=("params", "size"),
            targets=("target", names),
            solvers=("solver", names),
            benchmarks=("benchmark", lambda s: ", ".join(sorted({_short_benchmark(b) for b in s}))),
        )
        .reset_index()
    )
    out["_order"] = out["status"].ne("failed")
    out = out.sort_values(["_order", "machine", "count", "reason"], ascending=[True, True, False, True])
    return out.drop(columns="_order").reset_index(drop=True)


def _gaps_section(frame: pd.DataFrame, skipped: list[tuple[str, str]] = ()) -> Section:
    """The combinations without a number, grouped by reason with a count: the failed ones
    shown, the n/a ones collapsed; a target with no result at all is one line per machine."""
    counts = measurement_rows(frame)["status"].value_counts()
    summary = f"{counts.get('ok', 0)} measured, {counts.get('n/a', 0)} n/a, {counts.get('failed', 0)} failed"
    blocks: list[Text | Image | Table | Details] = [
        Text(
            f"{summary}. **n/a**: the combination does not exist here (framework or device missing, "
            "solver not implemented, too large): `NotImplementedError` in setup. **failed**: the benchmark "
            "raised, e.g. its correctness gate (no speed number is reported on a failed gate), or it timed "
            "out. Both are gaps in the figures above."
        )
    ]
    for machine, g in absent_targets(frame).groupby("machine", sort=True):
        targets = ", ".join(f"`{t}`" for t in g["target"])
        blocks.append(
            Text(
                f"**No result at all on `{machine}`** for {targets}: the device or framework is not there, "
                f"or the sweep skips the target ({int(g['count'].sum())} combinations, all n/a)."
            )
        )
    if skipped:
        blocks.append(
            Text(
                f"**{len(skipped)} asv result file(s) could not be read or were skipped** (damaged, with "
                "`--skip-unreadable`; not a regular file; a duplicate of another): every result only in "
                "them is missing from this report."
            )
        )
        blocks.append(Table(pd.DataFrame(skipped, columns=["file", "why"]), "Skipped result files"))
    reasons = gap_reasons(frame)
    failed = reasons[reasons["status"].eq("failed")].drop(columns="status")
    if not failed.empty:
        blocks.append(
            Table(failed, f"Failed: {int(failed['count'].sum())} combinations, {len(failed)} reason(s)")
        )
    na = reasons[reasons["status"].eq("n/a")].drop(columns="status")
    if not na.empty:
        blocks.append(
            Details(
                f"n/a: {int(na['count'].sum())} combinations, {len(na)} reason(s)",
                [Table(na, "")],
            )
        )
    return Section("Missing, n/a and failed combinations", blocks)


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


def _provenance_section(result: ResultSet, frame: pd.DataFrame) -> Section:
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


REPORT_SUITES = (
    "Product",
    "SeqLen",
    "Hidden",
    "Budget",
    "Batch",
    "Accuracy",
    "ChunkedOverlap",
    "GradSeqLen",
    "GradHidden",
    "GradAccuracy",
    "GradBudget",
    "TrainSeqLen",
    "TrainHidden",
    "TrainLoss",
    "ColdStart",
    "IterationFloor",
)
"""The asv suites the report draws, in the report's order."""


def not_run_text(frame: pd.DataFrame) -> Text | None:
    """One line naming the suites of :data:`REPORT_SUITES` these results hold nothing of,
    and how to run them; None when every suite ran."""
    missing = [s for s in REPORT_SUITES if not frame["group"].eq(s).any()]
    if frame["group"].eq(analysis.PRODUCT_GROUP).any():  # its slices are the time-vs-H sweep
        missing = [s for s in missing if s != "Hidden"]
    if not missing:
        return None
    grids = sorted(set(frame["grid"].dropna().astype(str)) - {"unknown"})
    grid = f"grid `{grids[0]}`" if len(grids) == 1 else "these results"
    option = f" --grid {grids[0]}" if len(grids) == 1 and grids[0] in fpbench_grids.GRIDS else ""
    return Text(
        f"**Suites {grid} did not run**: {', '.join(f'`{s}`' for s in missing)} (their sections are left "
        "out). "
        f"Add one to these results with `fpbench sweep{option} --bench '\\.{missing[0]}\\.'` (repeat "
        "`--bench` for more), or run every suite with `fpbench sweep --grid default`."
    )


IDENTITY_COLUMNS = ("machine", "device")
"""Table columns left out when the whole report has one value of them (the subtitle names it)."""


def _compact(sections: list[Section], frame: pd.DataFrame) -> list[Section]:
    """``sections`` with the columns of :data:`IDENTITY_COLUMNS` dropped from every table
    where the report measured on one machine (one device): they would repeat it in every row."""
    measured = frame[frame["status"].eq("ok")]
    drop = [c for c in IDENTITY_COLUMNS if measured[c].dropna().nunique() <= 1]

    def compact(block: Any) -> Any:
        if isinstance(block, Table):
            return Table(block.frame.drop(columns=[c for c in drop if c in block.frame]), block.caption)
        if isinstance(block, Details):
            return Details(block.summary, [compact(b) for b in block.blocks])
        return block

    return [Section(s.title, [compact(b) for b in s.blocks]) for s in sections]


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
    several_runs = len(frame[["machine", "commit"]].drop_duplicates()) > 1
    figs = _Figures(folder, result, name_runs=several_runs)
    with mpl.rc_context({"text.parse_math": False}):  # a `$` in a machine name is text, not math
        sections = [  # the answer, then the order a reader asks in (README, "Reading the report")
            _headline_section(frame, figs),
            _product_section(frame, figs),  # the T and H sweeps
            *_time_sections(frame, figs),
            _speedup_section(frame, figs),
            _budget_section(frame, figs),  # the budget sweep
            _batch_section(frame, figs),
            _backend_section(frame),
            _accuracy_section(frame, figs),
            _overlap_section(frame, figs),
            *grad_sections(frame, figs, result.curves),  # backward, then training
            *shard_sections(frame, figs),  # the sharded solve's scaling
            _memory_section(frame, figs),  # costs
            _cold_section(frame, figs),
            _gaps_section(result.frame, result.skipped),
            _provenance_section(result, result.frame),
        ]
    headline = sections[0]
    sections = [s for s in sections if s.blocks]  # a section without data is not drawn
    if not sections:
        headline.blocks.append(Text(NO_VERDICT))
        sections = [headline]
    not_run = not_run_text(result.frame)
    if not_run is not None:  # the page's last line
        sections[-1].blocks.append(not_run)
    sections = _compact(sections, result.frame)
    counts = measurement_rows(result.frame)["status"].value_counts()
    devices = sorted(set(frame.loc[frame["status"].eq("ok"), "device"].dropna().astype(str)))
    subtitle = (
        f"{'Machine' if len(names) == 1 else 'Machines'} {', '.join(f'`{n}`' for n in names)}"
        + (f" ({', '.join(devices)})" if devices else "")
        + f": {counts.get('ok', 0)} measured, {counts.get('n/a', 0)} n/a, {counts.get('failed', 0)} failed. "
        + _solvers_line(frame)
        + "Times are medians of asv's samples; shaded bands are interquartile ranges. Commit, grid, threads "
        "and versions: see Provenance."
    )
    from .store import interrupted_note  # first on the page: the results come from a stopped sweep

    subtitle = interrupted_note(result.sweeps) + subtitle
    write_html(sections, out, title, subtitle, folder.path("index.html"))
    write_markdown(sections, title, subtitle, folder.path("summary.md"))
    folder.finish()
    return out


__all__ = ["build_report", "fill_fixed_shapes"]
