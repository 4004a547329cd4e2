"""Accuracy of the fixed-point solvers against the exact states, over budget and contraction.

The error of k iterations against the exact float64 states (what the report plots with
the ``L^k`` bound), and the iterations a ``"tol"`` run needs. A solve that produced NaN
or Inf (diverged, e.g. Newton on an expansive problem) has no error: its error tracks
are n/a while ``track_iterations`` still records where it stopped, so "errors n/a,
iterations a number" reads as diverged and "all n/a" as unavailable.
"""

from __future__ import annotations

import numpy as np

import fpbench
from fpbench.testing import errors

from . import common, sweep_state
from .common import GRID, TARGETS


class Accuracy:
    """Max-abs and relative-RMS error and iterations of one (target, cell, solver,
    budget, contraction) at (T, H) = (``grid.accuracy_seq_len``, ``grid.accuracy_hidden``).

    Before any number, the solve must pass a gate that does not depend on the error it
    measures: the iteration count (:func:`common.check_iterations`) and the states t <= k
    that k iterations make exact (``check_close`` against the exact states).
    """

    params = (TARGETS, GRID.accuracy_cells, GRID.accuracy_solvers, GRID.accuracy_budgets, GRID.contractions)
    param_names = ("target", "cell", "solver", "max_iters", "contraction")
    timeout = 300.0

    def setup(self, *params) -> None:
        sweep_state.tick()
        found = sweep_state.memo("Accuracy", params, lambda: self.measure(*params))
        self.iterations, self.diverged, self.errors = found["iterations"], found["diverged"], found["errors"]

    @staticmethod
    def measure(target, cell, solver, max_iters, contraction) -> dict:
        """Solve, gate and measure one combination: ``{"iterations", "diverged", "errors"}``."""
        return measure(target, cell, contraction, common.solver(solver, max_iters, GRID.accuracy_seq_len))

    def _error(self, kind: str) -> float:
        if self.diverged:
            common.skip("diverged: the solve produced NaN or Inf")
        return self.errors[kind]

    def track_max_abs_error(self, *params) -> float:
        return self._error("max_abs")

    track_max_abs_error.unit = "abs error"

    def track_rel_error(self, *params) -> float:
        return self._error("rel_rms")

    track_rel_error.unit = "rel error"

    def track_iterations(self, *params) -> int:
        return self.iterations

    track_iterations.unit = "iterations"


class ChunkedOverlap(Accuracy):
    """Error of one ``Chunked`` iteration against its overlap (and contraction ρ): every state
    ran at least overlap + 1 steps from a zero state, so for elman its error is at most
    ``ρ^(overlap + 1) max‖h‖`` (what the report draws beside it). ``Chunked(1,
    chunks=grid.overlap_chunks, overlap=o)`` at the accuracy (T, H); the gate checks the chunks
    it makes exact."""

    params = (TARGETS, GRID.accuracy_cells, GRID.overlaps, GRID.contractions)
    param_names = ("target", "cell", "overlap", "contraction")

    def setup(self, *params) -> None:
        sweep_state.tick()
        found = sweep_state.memo("ChunkedOverlap", params, lambda: self.measure(*params))
        self.iterations, self.diverged, self.errors = found["iterations"], found["diverged"], found["errors"]

    @staticmethod
    def measure(target, cell, overlap, contraction) -> dict:  # type: ignore[override]
        solv = fpbench.Chunked(1, chunks=GRID.overlap_chunks, overlap=overlap)
        return measure(target, cell, contraction, solv)


def measure(target: str, cell: str, contraction: float, solv: fpbench.Solver) -> dict:
    """Solve, gate and measure one accuracy combination: ``{"iterations", "diverged", "errors"}``."""
    T = GRID.accuracy_seq_len
    spec = common.spec(cell, T, GRID.accuracy_hidden, contraction)
    prepared = common.prepare(target, spec, solv)
    states, residuals = prepared.to_host(prepared.run())
    residuals = np.asarray(residuals, dtype=np.float64).ravel()
    iterations = residuals.size
    if not (np.isfinite(states).all() and np.isfinite(residuals).all()):
        return {"iterations": iterations, "diverged": True, "errors": {}}
    label = f"{target} {solv}"
    common.check_iterations(label, solv, residuals, T)
    problem = common.problem(spec)
    exact = common.exact_states(problem)
    n = solv.exact_steps(iterations, T)
    if n:
        common.assert_close(f"{label} states t<={n} vs exact", states[:n], exact[:n], spec.dtype)
    if not n or solv.transition == "window":  # and every state against the same solver's reference
        ref = common.solver_reference(problem, solv)
        common.assert_close(f"{label} vs NumPy reference of the same solver", states, ref, spec.dtype)
    H = spec.hidden_size  # the error of h_t, the states a result reports
    found = {k: float(v) for k, v in errors(states[..., :H], exact[..., :H]).items()}
    return {"iterations": iterations, "diverged": False, "errors": found}
