"""Solver configurations: frozen, validated, backend-independent.

A solver says *what* to compute; each backend decides how. Iterative solvers start
from zero states ``H = 0`` and, at iteration k, form ``H_new`` from ``H_old``; the
residual of that iteration is ``max |H_new - H_old|``. With ``tol=None`` exactly
``max_iters`` iterations run; otherwise the solve stops after the first iteration
whose residual is ``<= tol``. Either way it stops after an iteration whose residual is
not finite (NaN or +inf: diverged).

Jacobi, Newton and QuasiNewton are exact after T iterations (states t <= k are exact
after k), so they run at most T: :func:`iteration_cap` is the one place that rule
lives, and every backend sizes its loop and its residual buffer by it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Solver:
    """Base of every solver configuration (abstract: use a subclass)."""

    name: ClassVar[str] = ""
    iterative: ClassVar[bool] = False

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Sequential(Solver):
    """The recurrence itself, t = 1..T: exact, T dependent steps."""

    name: ClassVar[str] = "sequential"


@dataclass(frozen=True)
class Native(Solver):
    """The framework's own sequential RNN, the baseline to beat.

    ``torch.nn.RNN`` / ``torch.nn.GRU`` (oneDNN on CPU, cuDNN on CUDA) in the torch
    backend, ``jax.lax.scan`` of the plain cell in the JAX backend; other backends
    do not support it.
    """

    name: ClassVar[str] = "native"


@dataclass(frozen=True)
class Iterative(Solver):
    """A fixed-point solver with an iteration budget ``max_iters`` and optional ``tol``.

    NumPy scalars are accepted and stored as Python ``int`` / ``float``.
    """

    iterative: ClassVar[bool] = True
    exact_after_seq_len: ClassVar[bool] = True
    """The states are exact after T iterations, so at most T run (:func:`iteration_cap`).
    A damped or approximate solver sets it False and then runs its whole budget."""
    max_iters: int = 64
    tol: float | None = None

    def __post_init__(self) -> None:
        if type(self) is Iterative:
            raise TypeError("Iterative is abstract: use Jacobi, Newton or QuasiNewton")
        # NumPy scalars (np.int64(5), np.float32(1e-4)) become Python numbers (frozen: setattr)
        if isinstance(self.max_iters, numbers.Integral) and not isinstance(self.max_iters, bool):
            object.__setattr__(self, "max_iters", int(self.max_iters))
        if isinstance(self.tol, numbers.Real) and not isinstance(self.tol, (bool, int)):
            object.__setattr__(self, "tol", float(self.tol))
        m = self.max_iters
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"{type(self).__name__}.max_iters must be an integer >= 1, got {m!r}")
        t = self.tol
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0
        ):
            raise ValueError(f"{type(self).__name__}.tol must be None or a finite number >= 0, got {t!r}")

    def __str__(self) -> str:
        tol = "" if self.tol is None else f", tol={self.tol:g}"
        return f"{self.name}(max_iters={self.max_iters}{tol})"


@dataclass(frozen=True)
class Jacobi(Iterative):
    """Picard iteration ``H <- F(H)`` for all t at once.

    After k iterations states t <= k are exact and every state equals the k-truncated
    model (the RNN run from a zero state at t - k).
    """

    name: ClassVar[str] = "jacobi"


@dataclass(frozen=True)
class Newton(Iterative):
    """DEER: linearise at the iterate, solve the linear recurrence by a parallel scan."""

    name: ClassVar[str] = "newton"


@dataclass(frozen=True)
class QuasiNewton(Iterative):
    """Quasi-DEER: Newton with the Jacobian replaced by its diagonal (elementwise scan)."""

    name: ClassVar[str] = "quasi_newton"


def iteration_cap(solver: Solver, seq_len: int) -> int:
    """The most iterations ``solver`` runs on a sequence of length ``seq_len``.

    ``min(max_iters, seq_len)`` for a solver that is exact after T iterations
    (``exact_after_seq_len``: Jacobi, Newton, QuasiNewton), ``max_iters`` for one that is
    not, 0 for a sequential solver. Every backend loops at most this often and sizes its
    residual buffer by it, so an unreachable budget (``max_iters=10**9``) costs nothing.
    """
    if not isinstance(solver, Iterative):
        return 0
    if solver.exact_after_seq_len:
        return min(solver.max_iters, seq_len)
    return solver.max_iters


SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls for cls in (Sequential, Native, Jacobi, Newton, QuasiNewton)
}


def make_solver(name: str, max_iters: int | None = None, tol: float | None = None) -> Solver:
    """Build a solver from its name (``"jacobi"``, ...), as the CLI and benchmarks do."""
    cls = SOLVERS.get(name)
    if cls is None:
        raise ValueError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    if not cls.iterative:
        return cls()
    if max_iters is None:
        raise ValueError(f"solver {name!r} needs max_iters")
    return cls(max_iters=max_iters, tol=tol)
