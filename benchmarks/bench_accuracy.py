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

from . import common
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
        common.tick()
        found = common.memo("Accuracy", params, lambda: self.measure(*params))
        self.iterations, self.diverged, self.errors = found["iterations"], found["diverged"], found["errors"]

    @staticmethod
    def measure(target, cell, solver, max_iters, contraction) -> dict:
        """Solve, gate and measure one combination: ``{"iterations", "diverged", "errors"}``."""
        T = GRID.accuracy_seq_len
        spec = common.spec(cell, T, GRID.accuracy_hidden, contraction)
        solv = common.solver(solver, max_iters, T)
        prepared = common.prepare(target, spec, solv)
        states, residuals = prepared.to_host(prepared.run())
        residuals = np.asarray(residuals, dtype=np.float64).ravel()
        iterations = residuals.size
        if not (np.isfinite(states).all() and np.isfinite(residuals).all()):
            return {"iterations": iterations, "diverged": True, "errors": {}}
        label = f"{target} {solv}"
        common.check_iterations(label, solv, residuals, T)
        problem = common.problem(spec)
        exact = fpbench.reference.sequential(problem)
        if solv.exact_after_seq_len:
            n = solv.exact_steps(iterations, T)
            common.assert_close(f"{label} states t<={n} vs exact", states[:n], exact[:n], spec.dtype)
        else:  # damped: no state is exact after k iterations; check against the same solver's reference
            ref, _ = fpbench.reference.fixed_point(problem, solv)
            common.assert_close(f"{label} vs NumPy reference of the same solver", states, ref, spec.dtype)
        H = spec.hidden_size  # the error of h_t, the states a result reports
        found = {k: float(v) for k, v in errors(states[..., :H], exact[..., :H]).items()}
        return {"iterations": iterations, "diverged": False, "errors": found}

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
