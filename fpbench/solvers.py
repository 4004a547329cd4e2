"""Solver configurations: frozen, validated, backend-independent.

A solver says *what* to compute; each backend decides how. Iterative solvers start
from zero states ``H = 0`` and, at iteration k, form ``H_new`` from ``H_old``; the
residual of that iteration is ``max |H_new - H_old|``. With ``tol=None`` exactly
``max_iters`` iterations run; otherwise the solve stops after the first iteration
whose residual is ``<= tol``. Either way it stops after an iteration whose residual is
not finite (NaN or +inf: diverged).

Backends, estimates and benchmarks branch on a solver's *traits*, never on its class or
name:

- ``kind``: ``"sequential"`` (the recurrence, step by step), ``"native"`` (the framework's
  own RNN) or ``"iterative"`` (a fixed-point solver with a budget); the first two are the
  *baselines* (:attr:`Solver.baseline`);

- ``transition``: the matrix of the linear recurrence one iteration solves,
  ``h_t = A_t h_{t-1} + b_t`` — ``"none"`` (``A = 0``: Jacobi), ``"full"`` (the Jacobian:
  Newton/DEER), ``"diagonal"`` (its diagonal: quasi-Newton);
  ``"window"`` (no linearisation: the recurrence itself, run on overlapping windows of
  the sequence, all windows at once: :class:`Chunked`);
- ``damping``: the Levenberg-Marquardt weight of ELK (0 for the undamped solvers); a
  damped iteration solves the damped least-squares problem by a Kalman smoother.

So ``ELK`` is Newton's transition with damping, and a subclass can never be silently
run as its parent. The traits are checked when a class is defined (a known ``kind``; a
``transition`` exactly for the iterative kind) and when a solver is constructed (a damping
> 0 only with a linearised transition, ``"full"`` or ``"diagonal"``: Jacobi's and Chunked's
iterations have no damped form, and would otherwise run undamped).

Jacobi, Newton and QuasiNewton (and ELK with damping 0) are exact after T iterations
(states t <= k are exact after k), and Chunked after as many iterations as it has chunks,
so they run at most that many (:meth:`Solver.exact_after`): :func:`iteration_cap` is the one
place that rule lives, and every backend sizes its loop and its residual buffer by it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

KINDS: tuple[str, ...] = ("sequential", "native", "iterative")
"""The kinds of solver (module docstring); every kind but ``"iterative"`` is a baseline."""
TRANSITIONS: tuple[str, ...] = ("none", "full", "diagonal")
"""The linearising transitions (Jacobi, Newton, quasi-Newton and their damped forms)."""
DAMPABLE: tuple[str, ...] = ("full", "diagonal")
"""The transitions whose step has a damped (Kalman smoother) form."""
BACKWARDS: tuple[str, ...] = ("implicit", "unrolled")
"""Backward modes of iterative solvers (``fpbench.grad``): the implicit-function-theorem
gradient at the returned states, or the exact gradient of the iterations that ran."""


@dataclass(frozen=True)
class Solver:
    """Base of every solver configuration (abstract: use a subclass)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    """``"sequential"``, ``"native"`` or ``"iterative"`` (module docstring)."""
    iterative: ClassVar[bool] = False
    """``kind == "iterative"`` (derived when the class is defined)."""
    transition: ClassVar[str | None] = None
    """``"none"``, ``"full"``, ``"diagonal"`` or ``"window"`` for iterative solvers, None for
    the baselines (module docstring)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind not in KINDS:
            raise TypeError(f"{cls.__name__}.kind must be one of {list(KINDS)}, got {cls.kind!r}")
        cls.iterative = cls.kind == "iterative"
        allowed = (*TRANSITIONS, "window", None) if cls.iterative else (None,)
        if cls.transition not in allowed:
            raise TypeError(
                f"{cls.__name__}.transition must be one of {list(allowed)} for a solver of kind "
                f"{cls.kind!r}, got {cls.transition!r}"
            )

    @property
    def baseline(self) -> bool:
        """True for the sequential baselines (``kind`` ``"sequential"`` or ``"native"``)."""
        return not self.iterative

    @property
    def damping(self) -> float:
        """The Levenberg-Marquardt damping (0: undamped)."""
        return 0.0

    @property
    def exact_after_seq_len(self) -> bool:
        """True when some number of iterations gives the exact states
        (:meth:`exact_after`): Jacobi, Newton, quasi-Newton and Chunked; not so with
        damping > 0."""
        return self.iterative and self.damping == 0

    def exact_after(self, seq_len: int) -> int | None:
        """The number of iterations after which the states are exact on a sequence of
        ``seq_len`` steps (each iteration makes at least one more step exact: ``seq_len``),
        or None where no budget is exact (damped solvers, sequential ones)."""
        return seq_len if self.exact_after_seq_len else None

    def exact_steps(self, iterations: int, seq_len: int) -> int:
        """How many leading steps are exact after ``iterations`` iterations (undamped: one
        more per iteration; damped: none)."""
        return min(iterations, seq_len) if self.exact_after_seq_len else 0

    def fields(self) -> dict[str, Any]:
        """Every configuration field: ``make_solver(s.name, **s.fields()) == s``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Sequential(Solver):
    """The recurrence itself, t = 1..T: exact, T dependent steps."""

    name: ClassVar[str] = "sequential"
    kind: ClassVar[str] = "sequential"


@dataclass(frozen=True)
class Native(Solver):
    """The framework's own sequential RNN, the baseline to beat.

    ``torch.nn.RNN`` / ``torch.nn.GRU`` (oneDNN on CPU, cuDNN on CUDA) in the torch
    backend, ``jax.lax.scan`` of the plain cell in the JAX backend; other backends
    do not support it.
    """

    name: ClassVar[str] = "native"
    kind: ClassVar[str] = "native"


@dataclass(frozen=True)
class Iterative(Solver):
    """A fixed-point solver with an iteration budget ``max_iters`` and optional ``tol``.

    NumPy scalars are accepted and stored as Python ``int`` / ``float``.
    """

    kind: ClassVar[str] = "iterative"
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
        if self.transition is None:
            raise TypeError(f"{type(self).__name__} is abstract: it declares no transition")
        self._check_damping()

    def _check_damping(self) -> None:
        """A damping > 0 needs a transition with a damped step (:data:`DAMPABLE`)."""
        if self.damping > 0 and self.transition not in DAMPABLE:
            raise ValueError(
                f"{type(self).__name__}: damping={self.damping!r} needs a linearised transition "
                f"({' or '.join(map(repr, DAMPABLE))}); transition {self.transition!r} has no damped "
                f"step and would run undamped"
            )

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
class Damped(Iterative):
    """An iterative solver with a Levenberg-Marquardt ``damping`` field (abstract: a subclass
    declares a transition in :data:`DAMPABLE`)."""

    damping: float = 0.1  # type: ignore[assignment]  (a field here, a property on Solver)

    def _check_damping(self) -> None:
        if isinstance(self.damping, numbers.Real) and not isinstance(self.damping, (bool, int)):
            object.__setattr__(self, "damping", float(self.damping))  # NumPy scalars too
        d = self.damping
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d < 0:
            raise ValueError(f"{type(self).__name__}.damping must be a finite number >= 0, got {d!r}")
        super()._check_damping()


@dataclass(frozen=True)
class ELK(Damped):
    """ELK (Gonzalez et al. 2024): Newton's linearisation, then the damped least-squares
    step ``min_H sum_t |h_t - A_t h_{t-1} - b_t|^2 + damping * sum_t |h_t - h_t^(i)|^2``,
    solved exactly as a Kalman smoother (dynamics noise 1, the iterate observed with
    variance ``1 / damping``). ``damping = 0`` is Newton."""

    name: ClassVar[str] = "elk"
    transition: ClassVar[str] = "full"


@dataclass(frozen=True)
class QuasiELK(Damped):
    """Quasi-ELK: ELK with the diagonal Jacobian (elementwise Kalman smoothers).
    ``damping = 0`` is QuasiNewton."""

    name: ClassVar[str] = "quasi_elk"
    transition: ClassVar[str] = "diagonal"


@dataclass(frozen=True)
class ChunkLayout:
    """Where :class:`Chunked`'s chunks and windows lie on a sequence (0-based steps).

    Chunk p covers steps ``starts[p] .. ends[p] - 1``: ``length = ceil(T / chunks)`` steps
    each, the last one shorter. The first iteration runs chunk p over the window that
    begins at ``warm_starts[p] = max(0, starts[p] - overlap)`` (from ``s0`` where that is
    step 0, so the chunk is exact, and from the zero state otherwise); every window is
    ``window`` steps long (``min(length + overlap, T)``), which covers every chunk's warm-up
    and steps: a window's steps past ``T - 1`` are padding whose outputs are dropped.

    Attributes:
        seq_len: T.
        chunks: the effective number of chunks, ``ceil(T / length)`` (at most the solver's).
        length: steps per chunk.
        overlap: warm-up steps before each chunk in the first iteration.
        window: steps of a first-iteration window.
    """

    seq_len: int
    chunks: int
    length: int
    overlap: int
    window: int

    @classmethod
    def of(cls, seq_len: int, chunks: int, overlap: int) -> ChunkLayout:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be an integer >= 1, got {seq_len!r}")
        length = -(-seq_len // min(chunks, seq_len))
        return cls(seq_len, -(-seq_len // length), length, overlap, min(length + overlap, seq_len))

    @property
    def starts(self) -> list[int]:
        """The first step of every chunk."""
        return [p * self.length for p in range(self.chunks)]

    @property
    def ends(self) -> list[int]:
        """One past the last step of every chunk."""
        return [min((p + 1) * self.length, self.seq_len) for p in range(self.chunks)]

    @property
    def warm_starts(self) -> list[int]:
        """The first step of every chunk's first-iteration window."""
        return [max(0, s - self.overlap) for s in self.starts]

    def exact_chunks(self) -> int:
        """How many leading chunks the first iteration already makes exact (their window
        starts at step 0, from ``s0``)."""
        return sum(1 for a in self.warm_starts if a == 0)

    def gather_index(self, first_chunk: int, warm: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index arrays that fold the windows of chunks ``first_chunk..chunks-1`` into a
        batch and unfold their outputs.

        ``warm`` selects the first iteration's windows (from :attr:`warm_starts`,
        :attr:`window` steps); otherwise the reruns' windows (from :attr:`starts`,
        :attr:`length` steps). Returns ``(steps (W, n), pos (T'), chunk (T'))``: the input step
        each window position reads (clipped to T - 1 where it is padding), and, for every step
        ``t = starts[first_chunk] .. T - 1``, the window position and window (0-based among
        the n windows) whose output is that step's new state.
        """
        first = self.starts[first_chunk]
        begin = np.array(self.warm_starts if warm else self.starts)[first_chunk:]
        width = self.window if warm else self.length
        steps = np.minimum(begin[None, :] + np.arange(width)[:, None], self.seq_len - 1)
        t = np.arange(first, self.seq_len)
        chunk = t // self.length - first_chunk
        return steps, t - begin[chunk], chunk


@dataclass(frozen=True)
class Chunked(Iterative):
    """Coarse-grained parallel in time: the recurrence run on P chunks at once.

    The sequence is split into ``chunks`` contiguous chunks (:class:`ChunkLayout`).
    Iteration 1 runs every chunk, all at once, from the zero state ``overlap`` steps before
    its first step (from ``s0`` at step 1 where the warm-up would reach past it: such a chunk
    is exact), so after it every state is at least the ``(overlap + 1)``-truncated model's
    (a stable RNN forgets its initial state geometrically). Iteration i >= 2 reruns every
    chunk but the first from its left neighbour's last state as it was at the end of
    iteration i - 1 (Jacobi over chunks: the result does not depend on scheduling); with a
    ``tol``, a chunk's rerun stops after the first step whose state moved by ``<= tol``, and
    the steps after it keep their values. Iteration 1's residual is measured against the
    zero start, later ones over the steps that ran.

    After i iterations chunks 1..i are exact, so ``max_iters >= chunks`` is exact
    (:meth:`exact_after`) without a ``tol``; with one, the early exit can leave later steps
    stale, so ``Result.converged`` checks the fixed-point residual. ``chunks = 1`` is
    :class:`Sequential`; ``overlap = 0`` is plain block Jacobi. Work: ``T + P * overlap``
    steps in iteration 1, depth ``T / P + overlap``. Backends may skip the reruns of chunks
    2..i-1 in iteration i: they start from a state that has not changed since their last
    run, so in exact arithmetic they change nothing.
    """

    name: ClassVar[str] = "chunked"
    transition: ClassVar[str] = "window"
    chunks: int = field(default=2, kw_only=True)
    overlap: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("chunks", "overlap"):
            v = getattr(self, name)
            if isinstance(v, numbers.Integral) and not isinstance(v, bool):
                object.__setattr__(self, name, int(v))
        c, o = self.chunks, self.overlap
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"Chunked.chunks must be an integer >= 1, got {c!r}")
        if isinstance(o, bool) or not isinstance(o, int) or o < 0:
            raise ValueError(f"Chunked.overlap must be an integer >= 0, got {o!r}")

    def layout(self, seq_len: int) -> ChunkLayout:
        """Where the chunks and windows lie on a sequence of ``seq_len`` steps."""
        return ChunkLayout.of(seq_len, self.chunks, self.overlap)

    def exact_after(self, seq_len: int) -> int | None:
        """Exact after as many iterations as it has chunks."""
        return self.layout(seq_len).chunks

    def exact_steps(self, iterations: int, seq_len: int) -> int:
        """The steps of the chunks ``iterations`` iterations made exact (at least those whose
        first-iteration window starts at step 1)."""
        lay = self.layout(seq_len)
        done = min(lay.chunks, max(iterations, lay.exact_chunks() if iterations else 0))
        return lay.ends[done - 1] if done else 0


def iteration_cap(solver: Solver, seq_len: int) -> int:
    """The most iterations ``solver`` runs on a sequence of length ``seq_len``.

    ``min(max_iters, exact_after(seq_len))`` for a solver that is exact after that many
    iterations (Jacobi, Newton, QuasiNewton, undamped ELK: T; Chunked: its chunks),
    ``max_iters`` for one that is not (damped ELK), 0 for a sequential solver. Every backend
    loops at most this often and sizes its residual buffer by it, so an unreachable budget
    (``max_iters=10**9``) costs nothing.
    """
    if not solver.iterative:
        return 0
    exact = solver.exact_after(seq_len)
    return solver.max_iters if exact is None else min(solver.max_iters, exact)


def stopped(xp: Any, r: Any, tol: Any) -> Any:
    """The stopping rule of every iterative run, forward and adjoint, in every backend: stop
    after the first residual ``r <= tol`` or the first non-finite one (a diverged run stops
    with or without a ``tol``). ``tol`` None (or below 0, as JAX's runtime scalar encodes
    None) never stops a finite run; the cap on iterations (:func:`iteration_cap`) is the
    caller's. ``xp``: the array namespace of ``r`` (``numpy`` for a host float)."""
    bad = ~xp.isfinite(r)
    return bad if tol is None else bad | (r <= tol)


SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls for cls in (Sequential, Native, Jacobi, Newton, QuasiNewton, ELK, QuasiELK, Chunked)
}


def make_solver(name: str, max_iters: int | None = None, tol: float | None = None, **fields: Any) -> Solver:
    """Build a solver from its name (``"jacobi"``, ...) and fields, as the CLI and
    benchmarks do; ``make_solver(s.name, **s.fields())`` rebuilds ``s`` exactly.
    ``max_iters`` and ``tol`` are ignored for the sequential solvers.

    Raises:
        ValueError: unknown name, a missing ``max_iters``, or a field the solver lacks.
    """
    cls = SOLVERS.get(name) if isinstance(name, str) else None
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
