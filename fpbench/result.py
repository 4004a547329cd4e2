"""The result of a solve and the one place its diagnostics are derived."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .reference import fixed_point_residual
from .solvers import Solver, iteration_cap
from .spec import Problem


class DivergenceWarning(RuntimeWarning):
    """A solve produced NaN or Inf: its states must not be used as a result."""


@dataclass(frozen=True, eq=False)
class Result:
    """What a solve returns.

    Attributes:
        states: ``(T, B, H)`` states ``h_t`` in the spec's dtype.
        cell_states: ``(T, B, H)`` cell states ``c_t`` for ``lstm`` (the fixed point is over
            the pair); None for the other cells.
        iterations: fixed-point iterations run (0 for sequential solvers).
        residuals: the step of each iteration that ran, as the backend measured it in
            the dtype it computes in: ``max |H_new - H_old|`` over every step, sequence and
            feature of the full state (``[h, c]`` for ``lstm``); for
            :class:`~fpbench.solvers.Chunked`, iteration 1's step is measured against the
            zero start and later ones over the steps that ran. Empty for sequential
            solvers. A small step is *not* a small residual: a damped solver (ELK) takes
            small steps far from the fixed point. ``converged`` does not read it.
        converged: True when the returned states are the fixed point:
            ``fixed_point_residual <= fixed_point_tol``, and the solve did not diverge.
            The same rule for every solver, the exact ones included (their residual is
            rounding). (On a chaotic problem, ``fpbench.lyapunov(problem) > 0``, float32
            states that satisfy the recurrence to rounding can still be far from the
            float64 ones.)
        diverged: True when states or residuals hold NaN or Inf (a non-finite residual
            is NaN or +inf on every backend, and the solve stops after it).
        backend, device, solver: where and how it was computed.
        chunks: the effective number of chunks of a :class:`~fpbench.solvers.Chunked`
            solve (``ChunkLayout.chunks``: at most T); None for other solvers.
        fixed_point_residual: ``max |F(S) - S|`` of the returned full states ``S``
            (:func:`fpbench.reference.fixed_point_residual`): ``F`` is one Jacobi sweep of
            the cell over the whole sequence, ``F(S)_t = f(S_{t-1}, x_t)`` for t = 1..T
            with ``S_0 = s0``, evaluated in float64 on the states as returned (cast to the
            spec's dtype). 0 at the exact fixed point; NaN or +inf when diverged. (None
            only in a ``Result`` built by hand, not by a solve.)
        fixed_point_tol: what ``converged`` compares it with (:func:`convergence_tol`):
            ``max(tol, floor)``, or the floor alone when the solver has no ``tol``. The
            floor, :data:`RESIDUAL_FLOOR_ULPS` units of the dtype's epsilon times
            ``max(1, max |S|)``, is the residual that rounding alone leaves in states
            computed in the spec's dtype.
    """

    states: np.ndarray
    iterations: int
    residuals: list[float]
    converged: bool
    diverged: bool
    backend: str = ""
    device: str = ""
    solver: str = field(default="")
    cell_states: np.ndarray | None = None
    chunks: int | None = None
    fixed_point_residual: float | None = None
    fixed_point_tol: float | None = None


RESIDUAL_FLOOR_ULPS = 64
"""The floor of :func:`convergence_tol`, in units of the dtype's epsilon times the state's
scale: the fixed-point residual that rounding alone leaves in states computed in that
dtype, with room to spare. Every solver that is exact in exact arithmetic (Sequential,
Native, and Jacobi, Newton, QuasiNewton and Chunked after their exact budget) stays well
below it in float32 and float64 on the test problems (``tests/test_convergence.py``), so
they report ``converged=True`` by the same rule as everyone else; a ``tol`` below it (or
``tol=0``) asks for more than the dtype can show, and means the floor."""


def convergence_tol(solver: Solver, dtype: str, states: np.ndarray) -> float:
    """The fixed-point residual at or below which a solve counts as converged:
    ``max(tol, floor)`` (the floor alone without a ``tol``), where
    ``floor = RESIDUAL_FLOOR_ULPS * eps(dtype) * max(1, max |states|)``.

    Args:
        solver: the solver that ran (its ``tol``, if any).
        dtype: the dtype the states were computed in (the spec's).
        states: ``(T, B, S)`` full states, whose largest magnitude scales the floor
            (a scale of 1 where they are not finite: such a solve diverged).
    """
    big = max(float(np.max(states)), -float(np.min(states))) if states.size else 1.0
    scale = max(1.0, big) if np.isfinite(big) else 1.0
    floor = RESIDUAL_FLOOR_ULPS * float(np.finfo(dtype).eps) * scale
    tol = getattr(solver, "tol", None)
    return floor if tol is None else max(float(tol), floor)


def make_result(
    states: np.ndarray,
    residuals: np.ndarray | list[float],
    solver: Solver,
    problem: Problem,
    backend: str,
    device: str,
) -> Result:
    """Build a :class:`Result`, deriving ``converged`` and ``diverged``; warn on divergence.

    ``converged`` is ``fixed_point_residual <= fixed_point_tol`` and not diverged, for every
    solver (see :class:`Result`): the residual of the states as returned, never the last
    step, which a damped solver can make small far from the fixed point. Costs one float64
    cell evaluation over the sequence (:func:`fpbench.reference.fixed_point_residual`).

    Args:
        states: ``(T, B, S)`` host array of full states (``S = H``, or ``2H`` for ``lstm``:
            ``[h, c]``).
        residuals: the step ``max |H_new - H_old|`` of each iteration that ran (a host
            array or list).
        solver: the solver configuration that ran.
        problem: the problem solved; states are cast to its spec's dtype and split into
            h and c, and the fixed-point residual is measured on its inputs and ``s0``.

    Raises:
        TypeError: ``problem`` is not a :class:`~fpbench.Problem` (an ``RNNSpec`` is not
            enough: the residual needs the weights and inputs).
        ValueError: the states do not have the problem's shape ``(T, B, S)``.
        RuntimeError: the backend ran more iterations than
            :func:`~fpbench.solvers.iteration_cap` allows (a backend bug).
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"make_result needs the fpbench.Problem solved, got {type(problem).__name__}")
    spec = problem.spec
    states = np.asarray(states, dtype=spec.dtype)
    H, T = spec.hidden_size, spec.seq_len
    if states.shape != (T, spec.batch, spec.state_size):
        raise ValueError(
            f"states have shape {states.shape}, the problem's (T, B, S) is {(T, spec.batch, spec.state_size)}"
        )
    res = [float(r) for r in np.asarray(residuals, dtype=np.float64).ravel()]
    if solver.iterative and len(res) > (cap := iteration_cap(solver, T)):
        raise RuntimeError(
            f"{backend}:{device} {solver} ran {len(res)} iterations on T={T}, more than its cap {cap}"
        )
    diverged = not (np.isfinite(states).all() and all(np.isfinite(res)))
    fp_residual = fixed_point_residual(problem, states)
    fp_tol = convergence_tol(solver, spec.dtype, states)
    converged = not diverged and fp_residual <= fp_tol
    cell_states = states[..., H:] if spec.model.has_cell_state else None
    if diverged:
        warnings.warn(
            f"{backend}:{device} {solver} diverged (non-finite states or residuals)",
            DivergenceWarning,
            stacklevel=3,
        )
    chunks = solver.layout(T).chunks if solver.transition == "window" else None
    return Result(
        states[..., :H],
        len(res),
        res,
        converged,
        diverged,
        backend,
        device,
        str(solver),
        cell_states,
        chunks,
        fp_residual,
        fp_tol,
    )
