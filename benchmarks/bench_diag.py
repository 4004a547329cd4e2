"""Dense against diagonal cells: where a diagonal recurrence lets Newton win.

Newton's linearised scan composes the step Jacobians: on a dense cell these are H x H
matrices (``(T, B, S, S)`` per iteration, O(T B S^3) work), on ParaRNN's diagonal cells
(``gru_diag``, ``lstm_cifg_diag``) they are per-unit blocks (O(T B H), the order of one
sequential pass). ``DiagNewton`` times the grid's ``diag_solvers`` on ``diag_cells`` (each
diagonal cell beside its dense counterpart, :data:`fpbench.grids.DIAGONAL_PAIRS`) against H
at T = ``diag_seq_len``, B = ``diag_batch``, iterative solvers to tolerance, every
combination gated (``common.verify``) before it is timed. A backend whose
``Backend.recurrences`` lacks ``"diagonal"`` is n/a for the diagonal cells (its ``prepare``
raises ``UnsupportedError``, a ``NotImplementedError``), so a backend that adds them appears
here without a change.
"""

from __future__ import annotations

from . import common, grids
from .common import GRID, TARGETS


class DiagNewton(common.SolveTime):
    """Time against H at (T, B) = (``grid.diag_seq_len``, ``grid.diag_batch``) for dense and
    diagonal cells. At most 3 samples or 1 s of them: dense Newton's O(T H^3) work makes its
    largest H the slowest solves of the suite."""

    repeat = (1, 3, 1.0)

    params = (TARGETS, GRID.diag_cells, GRID.diag_solvers, GRID.diag_hidden_sizes)
    param_names = ("target", "cell", "solver", "hidden_size")

    def case(self, target, cell, solver, hidden_size):
        spec = common.spec(cell, GRID.diag_seq_len, hidden_size, batch=GRID.diag_batch)
        return target, spec, common.solver(solver, grids.TOL, GRID.diag_seq_len)
