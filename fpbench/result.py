"""The result of a solve and the one place its diagnostics are derived."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .solvers import Solver, iteration_cap
from .spec import RNNSpec


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
        residuals: per-iteration ``max |H_new - H_old|`` (empty for sequential solvers).
        converged: True when the states are the fixed point: the last residual is
            ``<= tol``, or ``T`` iterations of a solver exact after T ran, or the last
            update was 0. Never True for a diverged solve. (On a chaotic problem,
            ``fpbench.lyapunov(problem) > 0``, "exact" float32 states can still be far
            from the float64 ones.)
        diverged: True when states or residuals hold NaN or Inf (a non-finite residual
            is NaN or +inf on every backend, and the solve stops after it).
        backend, device, solver: where and how it was computed.
        chunks: the effective number of chunks of a :class:`~fpbench.solvers.Chunked`
            solve (``ChunkLayout.chunks``: at most T); None for other solvers.
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


def make_result(
    states: np.ndarray,
    residuals: np.ndarray | list[float],
    solver: Solver,
    spec: RNNSpec,
    backend: str,
    device: str,
) -> Result:
    """Build a :class:`Result`, deriving ``converged`` and ``diverged``; warn on divergence.

    Args:
        states: ``(T, B, S)`` host array of full states (``S = H``, or ``2H`` for ``lstm``:
            ``[h, c]``), or ``(T, B, H)`` where the state is ``h`` only.
        residuals: the residual of each iteration that ran (a host array or list).
        solver: the solver configuration that ran.
        spec: the problem's spec; states are cast to its dtype and split into h and c.

    Raises:
        RuntimeError: the backend ran more iterations than
            :func:`~fpbench.solvers.iteration_cap` allows (a backend bug).
    """
    states = np.asarray(states, dtype=spec.dtype)
    H = spec.hidden_size
    if states.shape[-1] != spec.state_size:
        raise ValueError(f"states have {states.shape[-1]} features, the spec's state has {spec.state_size}")
    cell_states = states[..., H:] if spec.model.parts == 2 else None
    states = states[..., :H]
    res = [float(r) for r in np.asarray(residuals, dtype=np.float64).ravel()]
    diverged = not (np.isfinite(states).all() and all(np.isfinite(res)))
    if cell_states is not None:
        diverged = diverged or not np.isfinite(cell_states).all()
    if not solver.iterative:
        converged = not diverged
    else:
        T = states.shape[0]
        cap = iteration_cap(solver, T)
        if len(res) > cap:
            raise RuntimeError(
                f"{backend}:{device} {solver} ran {len(res)} iterations on T={T}, more than its cap {cap}"
            )
        tol = getattr(solver, "tol", None)
        last = res[-1] if res else float("inf")
        needed = solver.exact_after(T)
        exact = needed is not None and len(res) >= needed
        converged = not diverged and ((tol is not None and last <= tol) or exact or last == 0.0)
    if diverged:
        warnings.warn(
            f"{backend}:{device} {solver} diverged (non-finite states or residuals)",
            DivergenceWarning,
            stacklevel=3,
        )
    chunks = solver.layout(states.shape[0]).chunks if solver.transition == "window" else None
    return Result(
        states, len(res), res, converged, diverged, backend, device, str(solver), cell_states, chunks
    )
