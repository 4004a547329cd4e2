"""The report's section on ParaRNN's diagonal cells (``benchmarks/bench_diag.py``: ``DiagNewton``).

Newton's linearised scan composes H x H Jacobians on a dense cell (O(T H^3) an iteration) and
per-unit blocks on a diagonal one (O(T H), a sequential pass's order). The section draws each
parallel solver's speedup over the fastest sequential baseline against H, the dense cells
beside their diagonal counterparts (:data:`fpbench.grids.DIAGONAL_PAIRS`), one line per
backend, and says from the data where Newton and quasi-Newton win, or come closest, on the
diagonal cells and not on the dense ones, and how their speedup and time change with H on each.
Without a measured diagonal-cell row the section has no blocks (the report leaves it out).
"""

from __future__ import annotations

import pandas as pd

from fpbench.grids import DIAGONAL_PAIRS

from . import analysis, figures, fmt
from .figure_files import FigureFiles
from .fmt import number as fmt_num
from .page import Section, Table, Text

GROUP = "DiagNewton"
TITLE = "Dense vs diagonal cells: Newton's speedup against H"
NEWTON_SOLVERS = ("newton", "quasi_newton")
"""The solvers the section's sentences are about (the figure and table show every parallel solver)."""


def diag_speedups(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`.analysis.speedups` of the ``DiagNewton`` rows, with ``pair`` (the dense cell a
    row's cell is compared with: itself, or its dense counterpart) and ``recurrence``
    (``"dense"`` or ``"diagonal"``). Empty when no diagonal-cell solve was measured."""
    times = analysis.solve_rows(frame, groups=(GROUP,))
    if times.empty or not (times["cell"].isin(list(DIAGONAL_PAIRS)) & times["status"].eq("ok")).any():
        return pd.DataFrame()
    sp = analysis.speedups(times)
    return sp.assign(
        pair=sp["cell"].map(lambda c: DIAGONAL_PAIRS.get(c, c)),
        recurrence=sp["cell"].map(lambda c: "diagonal" if c in DIAGONAL_PAIRS else "dense"),
    )


def _trend(g: pd.DataFrame) -> str:
    """``0.31× at H = 8 → 0.28× at H = 128 (×0.9; time ×14.2)`` for the measured rows of one
    cell: the speedup at the smallest and largest H, its change, and the solver's own time's."""
    g = g.sort_values("hidden_size")
    first, last = g.iloc[0], g.iloc[-1]
    if len(g) == 1:
        return f"{fmt.speedup(first['speedup'])} at H = {fmt_num(first['hidden_size'])}"
    return (
        f"{fmt.speedup(first['speedup'])} at H = {fmt_num(first['hidden_size'])} → "
        f"{fmt.speedup(last['speedup'])} at H = {fmt_num(last['hidden_size'])} "
        f"(×{fmt_num(last['speedup'] / first['speedup'])}; time ×{fmt_num(last['time_s'] / first['time_s'])})"
    )


def solver_sentence(sp: pd.DataFrame, backend: str, solver: str) -> str | None:
    """One sentence, from the data, on ``solver`` on ``backend`` (rows of one machine and
    device): the (cell, H) where it wins on a diagonal cell while the dense cell at that H does
    not (or, where it wins nowhere there, its closest point on each kind), and its speedup
    and its own time from the smallest to the largest H on each cell. None without
    diagonal-cell rows."""
    ok = sp[sp["backend"].eq(backend) & sp["solver"].eq(solver) & sp["status"].eq("ok")]
    ok = ok[ok["speedup"].notna()]
    diag, dense = ok[ok["recurrence"].eq("diagonal")], ok[ok["recurrence"].eq("dense")]
    if diag.empty:
        return None
    dense_at = dense.set_index(["pair", "hidden_size"])["speedup"]
    only = [
        r
        for _, r in diag[diag["speedup"] > 1].iterrows()
        if not dense_at.get((r["pair"], r["hidden_size"]), 0.0) > 1
    ]
    lead = f"**`{backend}` {solver}**: "
    if only:
        where = ", ".join(
            f"{r['cell']} at H = {fmt_num(r['hidden_size'])} ({fmt.speedup(r['speedup'])}"
            + (
                f"; {r['pair']} {fmt.speedup(dense_at[(r['pair'], r['hidden_size'])])})"
                if (r["pair"], r["hidden_size"]) in dense_at
                else ")"
            )
            for r in only
        )
        text = lead + f"wins on diagonal cells where the dense cell does not: {where}."
    else:
        best = diag.loc[diag["speedup"].idxmax()]
        text = lead + (
            f"wins nowhere measured on the diagonal cells; closest {fmt.speedup(best['speedup'])} "
            f"({best['cell']}, H = {fmt_num(best['hidden_size'])})"
        )
        if not dense.empty:
            top = dense.loc[dense["speedup"].idxmax()]
            text += (
                f", against {fmt.speedup(top['speedup'])} at best on the dense cells "
                f"({top['cell']}, H = {fmt_num(top['hidden_size'])})"
            )
        text += "."
    trends = [f"{cell} {_trend(g)}" for cell, g in ok.groupby("cell", sort=True)]
    return text + " Against H: " + "; ".join(trends) + "."


def _speedup_table(sp: pd.DataFrame) -> Table:
    """Speedup per H, one row per (machine, device, backend, solver, cell); ``failed`` where
    the gate failed."""
    measured = sp[sp["status"].isin(["ok", "failed"])]
    shown = measured.assign(
        speedup=measured.apply(
            lambda r: "failed" if r["status"] == "failed" else fmt.speedup(r["speedup"]), axis=1
        )
    )
    table = shown.pivot_table(
        index=["machine", "device", "backend", "solver", "pair", "cell"],
        columns="hidden_size",
        values="speedup",
        aggfunc="first",
    )
    table = table.reindex(columns=sorted(table.columns)).rename(columns=lambda h: f"H = {fmt_num(h)}")
    caption = "Speedup over the fastest sequential baseline by H"
    return Table(table.reset_index().drop(columns="pair"), caption)


def diag_section(frame: pd.DataFrame, figs: FigureFiles) -> Section:
    """The diagonal-cell section (no blocks, so not drawn, without diagonal-cell results)."""
    section = Section(TITLE)
    sp = diag_speedups(frame)
    if sp.empty or sp["speedup"].notna().sum() == 0:
        return section
    fixed = fmt.fixed(sp, {"seq_len": "T", "batch": "B"})
    section.blocks.append(
        Text(
            "ParaRNN's diagonal cells (`gru_diag`, `lstm_cifg_diag`: recurrent weights are vectors) beside "
            f"the dense cells they simplify (`gru`, `lstm`), {fixed}, iterative solvers to tolerance. "
            "Newton's scan composes H × H Jacobians on a dense cell, O(T·H³) an iteration, and per-unit "
            "blocks on a diagonal one, O(T·H), the order of a sequential pass: its speedup over the "
            "fastest sequential baseline (any backend, same cell and H) should fall with H on the dense "
            "cells and stay flat on the diagonal ones. On `gru_diag` quasi-Newton's diagonal Jacobian is "
            "the exact one."
        )
    )
    for (machine, device), g in sp.groupby(["machine", "device"], sort=True):
        ok = g[g["status"].eq("ok")]
        if ok.empty:  # nothing measured there (e.g. no GPU on that machine): no sentence
            continue
        backends = sorted(ok["backend"].dropna().unique())
        said = (solver_sentence(g, b, solver) for b in backends for solver in NEWTON_SOLVERS)
        sentences = [s for s in said if s is not None]
        diagonal = ok[ok["recurrence"].eq("diagonal")]
        dense_only = [b for b in backends if not diagonal["backend"].eq(b).any()]
        if dense_only:
            sentences.append(
                f"{', '.join(f'`{b}`' for b in dense_only)} measured the dense cells only (the diagonal "
                "ones are n/a there: see the gaps)."
            )
        section.blocks.append(Text(f"Machine `{machine}`, {device}. " + " ".join(sentences)))
    section.blocks += figs.per_machine(
        "speedup-diag",
        sp,
        lambda g, t: figures.speedup_against(g, "hidden_size", t, row="solver", col="cell"),
        "Dense vs diagonal cells: speedup over the fastest sequential baseline against H (log-log), one "
        "panel per parallel solver (rows) and cell (columns: each dense cell beside its diagonal one), one "
        "line per backend; dashed: break-even; red crosses: failed correctness gate (no number).",
    )
    section.blocks.append(_speedup_table(sp))
    return section


__all__ = ["diag_section", "diag_speedups", "solver_sentence"]
