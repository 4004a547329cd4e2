"""Forward-solve time and peak memory: T scaling, H scaling, and iteration budget.

Each suite sweeps one axis of the grid (``benchmarks/grids.py``) with the others fixed,
for every target x cell x solver; the sequential baselines (``sequential``, ``native``)
sit in the same suites as the fixed-point solvers. The timed call is the prepared,
synchronised solve, and only after it passed the correctness gate (``common.verify``).
"""

from __future__ import annotations

from . import common, grids
from .common import GRID, TARGETS


class SeqLen(common.Solve):
    """Time and peak memory against T at H = ``grid.seq_lens_hidden``; iterative solvers
    run with the grid's ``solve_budget`` (``"tol"``: to tolerance, the fair comparison
    with the exact sequential baselines)."""

    params = (TARGETS, GRID.cells, grids.SOLVERS, GRID.seq_lens)
    param_names = ("target", "cell", "solver", "seq_len")

    def case(self, target, cell, solver, seq_len):
        spec = common.spec(cell, seq_len, GRID.seq_lens_hidden)
        return target, spec, common.solver(solver, GRID.solve_budget, seq_len)


class Hidden(common.Solve):
    """Time and peak memory against H at T = ``grid.hidden_seq_len``."""

    params = (TARGETS, GRID.cells, grids.SOLVERS, GRID.hidden_sizes)
    param_names = ("target", "cell", "solver", "hidden_size")

    def case(self, target, cell, solver, hidden_size):
        spec = common.spec(cell, GRID.hidden_seq_len, hidden_size)
        return target, spec, common.solver(solver, GRID.solve_budget, GRID.hidden_seq_len)


class Budget(common.Solve):
    """Time and peak memory against the iteration budget ``max_iters`` at
    (T, H) = (``grid.budget_seq_len``, ``grid.budget_hidden``).

    The baselines do not iterate: they appear once, under ``max_iters="tol"`` (where the
    fixed-point solvers give the same, exact, answer), and are n/a for the other budgets.
    """

    params = (TARGETS, GRID.cells, grids.SOLVERS, GRID.budgets)
    param_names = ("target", "cell", "solver", "max_iters")

    def case(self, target, cell, solver, max_iters):
        if solver in grids.BASELINES and max_iters != grids.TOL:
            raise NotImplementedError(f"{solver} does not iterate: see max_iters={grids.TOL!r}")
        spec = common.spec(cell, GRID.budget_seq_len, GRID.budget_hidden)
        return target, spec, common.solver(solver, max_iters, GRID.budget_seq_len)
