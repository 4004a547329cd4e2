"""The NumPy float64 reference: the oracle every backend is tested against.

Clear before fast: straight time loops where the maths is a time loop, and the same
iteration structure as DESIGN §1. Whatever the spec's dtype, it computes in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import cells
from .backend import Backend, Prepared, UnsupportedError
from .solvers import Iterative, Jacobi, Newton, QuasiNewton, Sequential, Solver, iteration_cap
from .spec import Problem


def sequential(problem: Problem) -> np.ndarray:
    """Exact states by the recurrence ``h_t = f(h_{t-1}, x_t)``: ``(T, B, H)`` float64."""
    p = problem.astype("float64")
    gi = cells.input_projection(p.params, p.x)
    out = np.empty(gi.shape[:2] + p.h0.shape[-1:])
    h = p.h0
    for t in range(gi.shape[0]):
        h = out[t] = cells.step(p.spec.cell, p.params, h, gi[t])
    return out


def truncated(problem: Problem, k: int) -> np.ndarray:
    """The k-truncated model (Miller & Hardt): state t is the RNN run for k steps from a
    zero state at t - k (from ``h0`` where t <= k). Brute force, ``O(T k)`` steps."""
    p = problem.astype("float64")
    gi = cells.input_projection(p.params, p.x)
    T = gi.shape[0]
    out = np.empty(gi.shape[:2] + p.h0.shape[-1:])
    for t in range(T):
        start = t - k + 1  # first input applied; state before it is zero (or h0 at 0)
        h = p.h0 if start <= 0 else np.zeros_like(p.h0)
        for s in range(max(start, 0), t + 1):
            h = cells.step(p.spec.cell, p.params, h, gi[s])
        out[t] = h
    return out


def shifted(H: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """``(H_0, ..., H_{T-1})`` with ``H_0 = h0``: the previous state of every step."""
    return np.concatenate([h0[None], H[:-1]])


def linear_recurrence(A: np.ndarray, b: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """Solve ``h_t = A_t h_{t-1} + b_t`` sequentially.

    Args:
        A: ``(T, B, H, H)`` full, or ``(T, B, H)`` diagonal transition matrices.
        b: ``(T, B, H)`` offsets.
        h0: ``(B, H)`` initial state.
    Returns:
        ``(T, B, H)`` states.
    """
    out = np.empty_like(b)
    h = h0
    for t in range(b.shape[0]):
        Ah = A[t] * h if A.ndim == 3 else np.einsum("bij,bj->bi", A[t], h)
        h = out[t] = Ah + b[t]
    return out


def iterate(update: Callable[[np.ndarray], np.ndarray], H: np.ndarray, solver: Iterative):
    """Run ``H <- update(H)`` under the budget and tolerance of ``solver``, at most
    :func:`~fpbench.solvers.iteration_cap` times.

    Returns the final iterate and the residual ``max |H_new - H_old|`` of every
    iteration that ran. Stops early on a non-finite residual (diverged).
    """
    residuals = []
    for _ in range(iteration_cap(solver, H.shape[0])):
        H_new = update(H)
        r = float(np.max(np.abs(H_new - H)))
        residuals.append(r)
        H = H_new
        if not np.isfinite(r) or (solver.tol is not None and r <= solver.tol):
            break
    return H, np.array(residuals)


def fixed_point(problem: Problem, solver: Iterative) -> tuple[np.ndarray, np.ndarray]:
    """Jacobi, Newton or QuasiNewton in float64: ``(states (T, B, H), residuals)``."""
    p = problem.astype("float64")
    cell, params, h0 = p.spec.cell, p.params, p.h0
    gi = cells.input_projection(params, p.x)

    def jacobi(H):
        return cells.step(cell, params, shifted(H, h0), gi)

    def newton(H):
        Hp = shifted(H, h0)
        fH = cells.step(cell, params, Hp, gi)
        if isinstance(solver, QuasiNewton):
            A = cells.jacobian_diag(cell, params, Hp, gi)
            b = fH - A * Hp
        else:
            A = cells.jacobian(cell, params, Hp, gi)
            b = fH - np.einsum("tbij,tbj->tbi", A, Hp)
        return linear_recurrence(A, b, h0)

    update = jacobi if isinstance(solver, Jacobi) else newton
    with np.errstate(over="ignore", invalid="ignore"):
        return iterate(update, np.zeros_like(gi[..., : h0.shape[-1]]), solver)


class NumpyBackend(Backend):
    """The reference as a backend (``"numpy"``, device ``"cpu"``), always float64."""

    name = "numpy"
    compute_dtype = "float64"

    def devices(self) -> list[str]:
        return ["cpu"]

    def prepare(self, problem: Problem, solver: Solver, device: str) -> Prepared:
        if isinstance(solver, Sequential):
            return Prepared(lambda: (sequential(problem), np.empty(0)), tuple)
        if isinstance(solver, (Jacobi, Newton, QuasiNewton)):
            return Prepared(lambda: fixed_point(problem, solver), tuple)
        raise UnsupportedError(f"the numpy reference does not implement solver {solver.name!r}")

    def info(self) -> dict[str, str]:
        return {"numpy": np.__version__}
