"""Solver configurations: frozen, validated, backend-independent.

A solver says *what* to compute; each backend decides how. Iterative solvers start
from zero states ``H = 0`` and, at iteration k, form ``H_new`` from ``H_old``; the
residual of that iteration is ``max |H_new - H_old|``. With ``tol=None`` exactly
``max_iters`` iterations run; otherwise the solve stops after the first iteration
whose residual is ``<= tol``. Either way it stops after an iteration whose residual is
not finite (NaN or +inf: diverged).

Backends, estimates and benchmarks branch on a solver's *traits*, never on its class:

- ``transition``: the matrix of the linear recurrence one iteration solves,
  ``h_t = A_t h_{t-1} + b_t`` — ``"none"`` (``A = 0``: Jacobi), ``"full"`` (the Jacobian:
  Newton/DEER), ``"diagonal"`` (its diagonal: quasi-Newton);
- ``damping``: the Levenberg-Marquardt weight of ELK (0 for the undamped solvers); a
  damped iteration solves the damped least-squares problem by a Kalman smoother.

So ``ELK`` is Newton's transition with damping, and a subclass can never be silently
run as its parent.

Jacobi, Newton and QuasiNewton (and ELK with damping 0) are exact after T iterations
(states t <= k are exact after k), so they run at most T: :func:`iteration_cap` is the one
place that rule lives, and every backend sizes its loop and its residual buffer by it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

TRANSITIONS: tuple[str, ...] = ("none", "full", "diagonal")
BACKWARDS: tuple[str, ...] = ("implicit", "unrolled")
"""Backward modes of iterative solvers (``fpbench.grad``): the implicit-function-theorem
gradient at the returned states, or the exact gradient of the iterations that ran."""


@dataclass(frozen=True)
class Solver:
    """Base of every solver configuration (abstract: use a subclass)."""

    name: ClassVar[str] = ""
    iterative: ClassVar[bool] = False
    transition: ClassVar[str | None] = None
    """``"none"``, ``"full"`` or ``"diagonal"`` for iterative solvers (module docstring)."""

    @property
    def damping(self) -> float:
        """The Levenberg-Marquardt damping (0: undamped)."""
        return 0.0

    @property
    def exact_after_seq_len(self) -> bool:
        """True when ``T`` iterations give the exact states (Jacobi, Newton, quasi-Newton:
        each iteration makes at least one more step exact; not so with damping > 0)."""
        return self.iterative and self.damping == 0

    def fields(self) -> dict[str, Any]:
        """Every configuration field: ``make_solver(s.name, **s.fields()) == s``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

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
    max_iters: int = 64
    tol: float | None = None
    backward: str = field(default="implicit", kw_only=True)
    """How :func:`fpbench.grad` differentiates it: ``"implicit"`` or ``"unrolled"``."""

    def __post_init__(self) -> None:
        if type(self) is Iterative:
            raise TypeError("Iterative is abstract: use Jacobi, Newton or QuasiNewton")
        if self.backward not in BACKWARDS:
            raise ValueError(
                f"{type(self).__name__}.backward must be one of {list(BACKWARDS)}, got {self.backward!r}"
            )
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
        extra = "".join(
            f", {k}={v:g}" if isinstance(v, float) else f", {k}={v}"
            for k, v in self.fields().items()
            if k != "max_iters" and v is not None and (k, v) != ("backward", "implicit")
        )
        return f"{self.name}(max_iters={self.max_iters}{extra})"


@dataclass(frozen=True)
class Jacobi(Iterative):
    """Picard iteration ``H <- F(H)`` for all t at once.

    After k iterations states t <= k are exact and every state equals the k-truncated
    model (the RNN run from a zero state at t - k).
    """

    name: ClassVar[str] = "jacobi"
    transition: ClassVar[str] = "none"


@dataclass(frozen=True)
class Newton(Iterative):
    """DEER: linearise at the iterate, solve the linear recurrence by a parallel scan."""

    name: ClassVar[str] = "newton"
    transition: ClassVar[str] = "full"


@dataclass(frozen=True)
class QuasiNewton(Iterative):
    """Quasi-DEER: Newton with the Jacobian replaced by its diagonal (elementwise scan)."""

    name: ClassVar[str] = "quasi_newton"
    transition: ClassVar[str] = "diagonal"


@dataclass(frozen=True)
class _Damped(Iterative):
    """An iterative solver with Levenberg-Marquardt damping (abstract)."""

    damping: float = 0.1  # type: ignore[assignment]  (a field here, a property on Solver)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.damping, numbers.Real) and not isinstance(self.damping, (bool, int)):
            object.__setattr__(self, "damping", float(self.damping))  # NumPy scalars too
        d = self.damping
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d < 0:
            raise ValueError(f"{type(self).__name__}.damping must be a finite number >= 0, got {d!r}")


@dataclass(frozen=True)
class ELK(_Damped):
    """ELK (Gonzalez et al. 2024): Newton's linearisation, then the damped least-squares
    step ``min_H sum_t |h_t - A_t h_{t-1} - b_t|^2 + damping * sum_t |h_t - h_t^(i)|^2``,
    solved exactly as a Kalman smoother (dynamics noise 1, the iterate observed with
    variance ``1 / damping``). ``damping = 0`` is Newton."""

    name: ClassVar[str] = "elk"
    transition: ClassVar[str] = "full"


@dataclass(frozen=True)
class QuasiELK(_Damped):
    """Quasi-ELK: ELK with the diagonal Jacobian (elementwise Kalman smoothers).
    ``damping = 0`` is QuasiNewton."""

    name: ClassVar[str] = "quasi_elk"
    transition: ClassVar[str] = "diagonal"


def iteration_cap(solver: Solver, seq_len: int) -> int:
    """The most iterations ``solver`` runs on a sequence of length ``seq_len``.

    ``min(max_iters, seq_len)`` for a solver that is exact after T iterations
    (``exact_after_seq_len``: Jacobi, Newton, QuasiNewton, undamped ELK), ``max_iters`` for
    one that is not (damped ELK), 0 for a sequential solver. Every backend loops at most
    this often and sizes its residual buffer by it, so an unreachable budget
    (``max_iters=10**9``) costs nothing.
    """
    if not solver.iterative:
        return 0
    if solver.exact_after_seq_len:
        return min(solver.max_iters, seq_len)
    return solver.max_iters


SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls for cls in (Sequential, Native, Jacobi, Newton, QuasiNewton, ELK, QuasiELK)
}


def make_solver(name: str, max_iters: int | None = None, tol: float | None = None, **fields: Any) -> Solver:
    """Build a solver from its name (``"jacobi"``, ...) and fields, as the CLI and
    benchmarks do; ``make_solver(s.name, **s.fields())`` rebuilds ``s`` exactly.
    ``max_iters`` and ``tol`` are ignored for the sequential solvers.

    Raises:
        ValueError: unknown name, a missing ``max_iters``, or a field the solver lacks.
    """
    cls = SOLVERS.get(name)
    if cls is None:
        raise ValueError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    if cls.iterative:  # (a budget given to a sequential solver is ignored, as the CLI relies on)
        if max_iters is None:
            raise ValueError(f"solver {name!r} needs max_iters")
        fields = {"max_iters": max_iters, "tol": tol, **fields}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"solver {name!r} has no field(s) {sorted(unknown)}; its fields: {sorted(known)}")
    return cls(**fields)
