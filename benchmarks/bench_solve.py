"""Forward-solve time and peak memory: T scaling, H scaling, iteration budget, the T x H
product and the batch size.

``SeqLen``, ``Hidden``, ``Budget`` and ``Batch`` sweep one axis of the grid
(:mod:`fpbench.grids`) with the others fixed, ``Product`` sweeps T x H together, for every
target x cell x solver of the grid (``Grid.solvers``: a solver added there is swept
here); the sequential baselines (``sequential``, ``native``) sit in the same suites as the
fixed-point solvers, so every speedup compares timings of one run. The timed call is the prepared,
synchronised solve, and only after it passed the correctness gate (``common.verify``).
"""

from __future__ import annotations

from . import common, grids
from .common import GRID, TARGETS


class SeqLen(common.Solve):
    """Time and peak memory against T at H = ``grid.seq_lens_hidden``; iterative solvers
    run with the grid's ``solve_budget`` (``"tol"``: to tolerance, the fair comparison
    with the exact sequential baselines)."""

    params = (TARGETS, GRID.cells, GRID.solvers, GRID.seq_lens)
    param_names = ("target", "cell", "solver", "seq_len")

    def case(self, target, cell, solver, seq_len):
        spec = common.spec(cell, seq_len, GRID.seq_lens_hidden)
        return target, spec, common.solver(solver, GRID.solve_budget, seq_len)


class Hidden(common.Solve):
    """Time and peak memory against H at T = ``grid.hidden_seq_len``."""

    params = (TARGETS, GRID.cells, GRID.solvers, GRID.hidden_sizes)
    param_names = ("target", "cell", "solver", "hidden_size")

    def case(self, target, cell, solver, hidden_size):
        spec = common.spec(cell, GRID.hidden_seq_len, hidden_size)
        return target, spec, common.solver(solver, GRID.solve_budget, GRID.hidden_seq_len)


class Budget(common.Solve if GRID.budget_peakmem else common.SolveTime):  # type: ignore[misc]
    """Time and peak memory against the iteration budget ``max_iters`` at
    (T, H) = (``grid.budget_seq_len``, ``grid.budget_hidden``), for the grid's
    ``budget_cells`` and ``budget_solvers`` (default: its ``cells`` and ``solvers``); peak
    memory only where the grid's ``budget_peakmem`` says so. The gate of every solve records
    its error against the exact states: the error against k of the same solves.

    The baselines do not iterate: they appear once, under ``max_iters="tol"`` (where the
    fixed-point solvers give the same, exact, answer), and are n/a for the other budgets.
    At most 3 samples or 1 s of them: a budget sweep has many combinations, and its slow
    ones (Newton at the largest k) take the longest.
    """

    repeat = (1, 3, 1.0)

    params = (TARGETS, GRID.budget_cells or GRID.cells, GRID.budget_solvers or GRID.solvers, GRID.budgets)
    param_names = ("target", "cell", "solver", "max_iters")

    def case(self, target, cell, solver, max_iters):
        if solver in grids.BASELINES and max_iters != grids.TOL:
            raise NotImplementedError(f"{solver} does not iterate: see max_iters={grids.TOL!r}")
        spec = common.spec(cell, GRID.budget_seq_len, GRID.budget_hidden)
        return target, spec, common.solver(solver, max_iters, GRID.budget_seq_len)


class Product(common.SolveTime):
    """Time over the product T x H at B = ``grid.product_batch`` with input size I = H:
    DEER's speedup protocol (GRU, B = 16), so the report draws a T x H heatmap with its
    break-even contour. Iterative solvers run to tolerance (``"tol"``). At most 3 samples
    or 1 s of them: a product grid has many combinations."""

    repeat = (1, 3, 1.0)

    params = (TARGETS, GRID.product_cells, GRID.solvers, GRID.product_seq_lens, GRID.product_hidden_sizes)
    param_names = ("target", "cell", "solver", "seq_len", "hidden_size")

    def case(self, target, cell, solver, seq_len, hidden_size):
        spec = common.spec(cell, seq_len, hidden_size, batch=GRID.product_batch, input_size=hidden_size)
        return target, spec, common.solver(solver, grids.TOL, seq_len)


class Batch(common.SolveTime):
    """Time against the batch size B at (T, H) = (``grid.batch_seq_len``, ``grid.batch_hidden``),
    every cell and solver: at B = 1 the sequential scan is latency-bound, which is where
    parallel-in-time solvers have the most room. Iterative solvers run to tolerance. At
    most 3 samples or 1 s of them."""

    repeat = (1, 3, 1.0)

    params = (TARGETS, GRID.cells, GRID.solvers, GRID.batch_sizes)
    param_names = ("target", "cell", "solver", "batch")

    def case(self, target, cell, solver, batch):
        spec = common.spec(cell, GRID.batch_seq_len, GRID.batch_hidden, batch=batch)
        return target, spec, common.solver(solver, grids.TOL, GRID.batch_seq_len)
