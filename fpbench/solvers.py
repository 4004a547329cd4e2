"""Solver configurations: frozen, validated, backend-independent.

A solver says *what* to compute; each backend decides how. Iterative solvers start
from zero states ``H = 0`` and, at iteration k, form ``H_new`` from ``H_old``; the
residual of that iteration is ``max |H_new - H_old|``. With ``tol=None`` exactly
``max_iters`` iterations run; otherwise the solve stops after the first iteration
whose residual is ``<= tol``.
"""

from __future__ import annotations

import math
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
    """A fixed-point solver with an iteration budget ``max_iters`` and optional ``tol``."""

    iterative: ClassVar[bool] = True
    max_iters: int = 64
    tol: float | None = None

    def __post_init__(self) -> None:
        if type(self) is Iterative:
            raise TypeError("Iterative is abstract: use Jacobi, Newton or QuasiNewton")
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
