"""The report's accuracy sections: the error against the iteration budget, the iterations
to tolerance with each problem's Lyapunov exponent, and Chunked's error against its overlap."""

from __future__ import annotations

import pandas as pd

from fpbench import grids as fpbench_grids

from ..cells import CELLS
from ..lyapunov import lyapunov
from ..spec import RNNSpec, make_problem
from . import analysis, figures, fmt
from .figure_files import FigureFiles
from .page import Section, Table


def accuracy_section(frame: pd.DataFrame, figs: FigureFiles) -> Section:
    section = Section("Accuracy: error vs iteration budget, iterations to tolerance")
    err = analysis.suite_rows(frame, "Accuracy", "track_max_abs_error", ())
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
    it = analysis.suite_rows(frame, "Accuracy", "track_iterations", ())
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


def overlap_section(frame: pd.DataFrame, figs: FigureFiles) -> Section:
    section = Section("Accuracy: Chunked's error vs overlap")
    err = analysis.suite_rows(
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


__all__ = ["LYAPUNOV_STEPS", "accuracy_section", "lyapunov_table", "overlap_section"]
