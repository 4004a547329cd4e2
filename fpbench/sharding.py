"""One sequence over several devices or processes: the sharded solve, written once.

:func:`solve_sharded` splits the time axis ``T`` into ``shards`` contiguous pieces of ``T / N``
steps, one per device (JAX: ``shard_map`` over a one-axis mesh, :mod:`backends.jax.sharded`)
or per process (torch: ``torch.distributed``, :mod:`backends.torch.distributed`). Every shard
runs the *same* iteration as the single-device solver on its own steps, so the states, the
number of iterations and the residual trace equal the single-device solve's to the dtype's
rounding. The cell maths is :mod:`fpbench.cells`, evaluated in the engine's array namespace.

What crosses between shards, per iteration (``B`` sequences, state size ``S``):

- ``Jacobi``: one ``(B, S)`` state, the left neighbour's last state (point to point), then
  the residual (one scalar, all-reduce max).
- ``Newton`` / ``QuasiNewton`` (the two-level scan): the left neighbour's last state; each
  shard linearises its steps and scans them into its prefix maps; the shards all-gather every
  shard's composed affine map ``(A_chunk (B, S, S) or (B, S), b_chunk (B, S))``; every shard
  runs the length-N scan of those maps from ``s0`` to its incoming state and applies it to its
  prefix maps locally; then the residual.
- ``Chunked``: iteration 1 needs nothing (each shard also holds the ``overlap`` input steps
  before its first step, a halo placed once with the data); a rerun needs the left
  neighbour's last state for the shard's first chunk; then the residual.

Gradients (:func:`grad_sharded`, ``backward="implicit"``): Newton's adjoint by the same
two-level scan run in reverse (``newton_adjoint``), Chunked's by its iterations on the
time-reversed adjoint (``chunked_adjoint``); the parameter products of each shard are
summed over the shards (``param_products``).

The updates are written once, in :mod:`backends.shared.shard`, against the engine's few
collective operations and an array namespace ``xp``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import UnsupportedError
from .grad import GradResult
from .result import Result, make_result
from .solvers import Chunked, Solver, iteration_cap
from .spec import Problem

SHARDED_ENGINES: tuple[str, ...] = ("jax", "torch")
"""Backends with a sharded form."""
SHARDED_SOLVERS: tuple[str, ...] = ("jacobi", "newton", "quasi_newton", "chunked")
"""Solvers with a sharded form (by name; the damped ELK family has none)."""
DEFAULT_TIMEOUT_S = 300.0
"""How long a torch rank waits on one communication before the run fails."""


@dataclass(frozen=True)
class ShardPlan:
    """How a sharded solve splits ``T``, and the per-shard index data of ``Chunked``.

    Attributes:
        seq_len: T.
        shards: N.
        steps: ``T / N``, the steps each shard holds.
        halo: input steps held before a shard's first step (Chunked's ``overlap``; 0 otherwise).
        chunks: Chunked's chunks per shard (0 for the other solvers).
        length: Chunked's steps per chunk (0 for the other solvers).
    """

    seq_len: int
    shards: int
    steps: int
    halo: int
    chunks: int
    length: int

    @classmethod
    def of(cls, seq_len: int, solver: Solver, shards: int) -> ShardPlan:
        """Check that ``solver`` on ``seq_len`` steps splits over ``shards``.

        Raises:
            ValueError: ``shards`` is not an integer >= 1, exceeds T, does not divide T, or
                (Chunked) the chunks do not fall evenly on the shards.
            UnsupportedError: the solver has no sharded form.
        """
        if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
            raise ValueError(f"shards must be an integer >= 1, got {shards!r}")
        shards = int(shards)
        if solver.name not in SHARDED_SOLVERS or solver.damping:
            raise UnsupportedError(
                f"solver {solver} has no sharded form; sharded solvers: {list(SHARDED_SOLVERS)}"
            )
        if shards > seq_len:
            raise ValueError(f"shards={shards} is more than the {seq_len} steps of the sequence (T)")
        if seq_len % shards:
            raise ValueError(f"shards={shards} must divide the sequence length T={seq_len}")
        steps = seq_len // shards
        if not isinstance(solver, Chunked):
            return cls(seq_len, shards, steps, 0, 0, 0)
        lay = solver.layout(seq_len)
        if lay.length * lay.chunks != seq_len or lay.chunks % shards:
            raise ValueError(
                f"sharded Chunked needs equal chunks, a whole number per shard: T={seq_len} "
                f"gives {lay.chunks} chunks of {lay.length} steps (the last "
                f"{seq_len - lay.length * (lay.chunks - 1)}) on shards={shards}; choose chunks "
                f"dividing T and a multiple of shards"
            )
        return cls(seq_len, shards, steps, solver.overlap, lay.chunks // shards, lay.length)

    def bounds(self, p: int) -> tuple[int, int]:
        """Shard ``p``'s steps ``start .. stop - 1``."""
        return p * self.steps, (p + 1) * self.steps

    def local_inputs(self, x: np.ndarray, p: int) -> np.ndarray:
        """Shard ``p``'s inputs with their halo: ``x (T, B, I)`` -> ``(halo + T / N, B, I)``,
        the ``halo`` steps before its first step in front (zeros before step 0: never read)."""
        a, b = self.bounds(p)
        front = x[max(0, a - self.halo) : a]
        pad = np.zeros((self.halo - len(front), *x.shape[1:]), x.dtype)
        return np.concatenate([pad, front, x[a:b]])

    def warm_index(self, solver: Chunked, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shard ``p``'s part of Chunked's first iteration, from the global layout's
        :meth:`~fpbench.solvers.ChunkLayout.gather_index`: ``(steps (W, m), pos (T/N,),
        cold (m,))``: the halo-extended local input each window position reads, the window
        position whose output is each local step, and whether a window starts from ``s0``."""
        lay = solver.layout(self.seq_len)
        steps, pos, _ = lay.gather_index(0, True)
        a, b = self.bounds(p)
        cols = slice(p * self.chunks, (p + 1) * self.chunks)
        # positions past the shard's last step are padding whose outputs are dropped
        local = np.minimum(steps[:, cols], b - 1) - (a - self.halo)
        cold = np.array(lay.warm_starts[cols]) == 0
        return local, pos[a:b], cold


def check_sharded(problem: Problem, solver: Solver, backend: str, shards: int) -> ShardPlan:
    """The checks of :func:`solve_sharded` that need no engine: the plan, or an error."""
    name = backend.partition(":")[0] if isinstance(backend, str) else backend
    if name not in SHARDED_ENGINES:
        raise UnsupportedError(
            f"backend {backend!r} has no sharded form; sharded backends: {list(SHARDED_ENGINES)}"
        )
    cell = problem.spec.model
    if cell.recurrence != "dense":
        raise UnsupportedError(
            f"the sharded solve has no form for cell {cell.name!r} (a {cell.recurrence} cell: its "
            "updates read dense W_hh blocks); solve it on one device"
        )
    return ShardPlan.of(problem.spec.seq_len, solver, shards)


def solve_sharded(
    problem: Problem,
    solver: Solver,
    backend: str = "jax",
    device: str | None = None,
    shards: int = 2,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Result:
    """Solve ``problem`` with ``T`` split over ``shards`` devices (JAX) or processes (torch).

    The result equals ``fpbench.solve(problem, solver, backend, device)`` (states,
    iterations, residual trace) to the dtype's rounding; see the module docstring for what
    crosses between shards.

    - ``backend="jax"``: one process, ``shards`` JAX devices of kind ``device`` under
      ``shard_map``: GPUs, or on a CPU XLA host devices, which exist only when
      ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` is set before JAX is imported.
      On several hosts, call ``jax.distributed.initialize`` first in every process.
    - ``backend="torch"``: ``shards`` processes started by ``torch.multiprocessing.spawn``
      over ``torch.distributed`` on the loopback address (``gloo`` on ``"cpu"``, ``nccl`` on
      ``"cuda"``, one GPU a rank). A rank that dies fails the run; one that hangs fails it
      after ``timeout`` seconds (the process group's timeout).

    Args:
        problem: the problem; ``T`` must be a multiple of ``shards``.
        solver: ``Jacobi``, ``Newton``, ``QuasiNewton`` or ``Chunked`` (whose chunks must be
            equal and a multiple of ``shards``).
        backend: ``"jax"`` or ``"torch"`` (or ``"jax:gpu"``, ``"torch:cuda"``).
        device: ``"cpu"`` (default), ``"gpu"`` (jax) or ``"cuda"`` (torch).
        shards: N >= 1.
        timeout: seconds a torch rank waits on a communication (ignored by jax).
    Returns:
        A :class:`~fpbench.Result` whose ``device`` reads e.g. ``"cpu x4"``.
    Raises:
        ValueError: bad ``shards`` (not >= 1, more than T, not dividing T; uneven chunks).
        UnsupportedError: a backend or solver without a sharded form.
        BackendUnavailableError: fewer than ``shards`` devices (the message says how to get
            more).
        ShardFailure: a torch rank died, hung past ``timeout`` or raised.
    """
    from .registry import checked_target

    plan = check_sharded(problem, solver, backend, shards)
    impl, dev = checked_target(problem, solver, backend, device, 1)
    states, residuals = prepare_sharded(problem, solver, impl.name, dev, plan, timeout).run_to_host()
    return make_result(states, residuals, solver, problem, impl.name, f"{dev} x{plan.shards}")


class ShardFailure(RuntimeError):
    """A shard (a torch rank) died, hung past the timeout, or raised."""


@dataclass(frozen=True)
class ShardedRun:
    """A prepared sharded solve.

    Attributes:
        timed: ``repeats -> (the last solve's output, seconds of each solve)``: ``repeats``
            synchronised solves, timed by the engine (jax: around each call of the compiled
            program; torch: inside the ranks, between barriers, process start-up excluded).
        to_host: an output -> ``(states (T, B, S), residuals (k,))`` NumPy arrays.
    """

    timed: Callable[[int], tuple[Any, list[float]]]
    to_host: Callable[[Any], tuple[np.ndarray, np.ndarray]]

    def run_to_host(self) -> tuple[np.ndarray, np.ndarray]:
        """One solve: ``(states (T, B, S), residuals (k,))``."""
        return self.to_host(self.timed(1)[0])


def prepare_sharded(
    problem: Problem,
    solver: Solver,
    backend: str,
    device: str,
    plan: ShardPlan,
    timeout: float = DEFAULT_TIMEOUT_S,
    cotangent: np.ndarray | None = None,
) -> ShardedRun:
    """The engine's prepared sharded solve (compiled, data placed, for jax); with a full
    ``cotangent (T, B, S)`` also its implicit gradient (``to_host`` gives a ``GradHost``)."""
    cap = iteration_cap(solver, plan.seq_len)
    if backend == "jax":
        from backends.jax.sharded import prepare

        return prepare(problem, solver, device, plan, cap, cotangent)
    from backends.torch.distributed import prepare

    return prepare(problem, solver, device, plan, cap, timeout, cotangent)


REVERSE = "implicit: sharded reverse scan"
"""The backward method of the sharded Newton gradient."""

CHUNKED_ADJOINT = "implicit: chunked adjoint"
"""The backward method of the sharded Chunked gradient (the single-device one's name)."""

SHARDED_GRADIENTS: tuple[str, ...] = ("newton", "chunked")
"""Solvers whose ``backward="implicit"`` gradient has a sharded form."""


def grad_sharded(
    problem: Problem,
    solver: Solver,
    backend: str = "jax",
    device: str | None = None,
    shards: int = 2,
    cotangent: np.ndarray | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> GradResult:
    """:func:`fpbench.grad` with ``T`` split over ``shards`` devices or processes, as
    :func:`solve_sharded`: the sharded forward, then the implicit gradient at its states,
    equal to the single-device gradient to the dtype's rounding. The adjoint is
    ``lam_t = g_t + J_{t+1}^T lam_{t+1}``:

    - ``Newton``: solved exactly by the two-level scan run in reverse (each shard sends its
      first step's Jacobian to its left neighbour, then the shards all-gather their composed
      maps, as in the forward);
    - ``Chunked``: by Chunked's own iterations on the time-reversed adjoint, as the
      single-device backward (:func:`backends.shared.shard.chunked_adjoint`; the same backward
      residuals).

    The parameter gradients are each shard's batched products, summed over the shards
    (all-reduce).

    Args:
        cotangent: ``(T, B, H)`` on the states ``h_t`` (None: :func:`fpbench.default_cotangent`).
        Others: as :func:`solve_sharded`.
    Returns:
        A :class:`~fpbench.GradResult` (backward method ``"implicit: sharded reverse scan"``
        for Newton, ``"implicit: chunked adjoint"`` for Chunked).
    Raises:
        UnsupportedError: a solver or ``backward`` without a sharded gradient.
        As :func:`solve_sharded` and :func:`fpbench.grad` otherwise.
    """
    from .grad import full_cotangent, make_grad_result
    from .registry import checked_target

    plan = check_sharded(problem, solver, backend, shards)
    if solver.name not in SHARDED_GRADIENTS or getattr(solver, "backward", None) != "implicit":
        raise UnsupportedError(
            f"{solver} has no sharded gradient; sharded gradients: backward='implicit' of "
            f"{list(SHARDED_GRADIENTS)}"
        )
    impl, dev = checked_target(problem, solver, backend, device, 1, grad=True)
    g = full_cotangent(problem, cotangent)
    run = prepare_sharded(problem, solver, impl.name, dev, plan, timeout, g)
    return make_grad_result(run.run_to_host(), problem, solver, g, impl.name, f"{dev} x{plan.shards}")
