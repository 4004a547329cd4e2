"""The sharded solve in JAX: :mod:`fpbench.sharding`'s updates under ``jax.shard_map``.

A one-axis :class:`jax.sharding.Mesh` (axis ``"t"``) of N devices holds the time axis: the
per-shard inputs ``(N, halo + T / N, B, I)`` (and Chunked's index arrays) are placed with
``NamedSharding(mesh, P("t"))``, the parameters, ``s0`` and ``tol`` replicated. Inside the
mapped function every shard sees its own block, the neighbour's state arrives by
``lax.ppermute``, chunk summaries by ``lax.all_gather``, the residual by ``lax.pmax`` (so
every shard takes the same branch of the ``lax.while_loop``). The program is compiled ahead
of time in :func:`prepare`, like every program of :mod:`backends.jax.backend`.

Devices: on a CPU, XLA's host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``
set before JAX is imported), which share the host's cores; on a GPU machine, the GPUs. On
several hosts, every process calls ``jax.distributed.initialize(coordinator, num_processes,
process_id)`` before anything else and ``jax.devices()`` then lists every host's devices: the
same program runs over them (not testable on one machine).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from backends.shared.iteration import max_change, shifted
from backends.shared.shard import (
    chunked_adjoint,
    chunked_update,
    linear_update,
    newton_adjoint,
    param_products,
)
from fpbench.backend import BackendUnavailableError, GradHost
from fpbench.cells import Cell, input_projection
from fpbench.sharding import CHUNKED_ADJOINT, REVERSE, ShardedRun, ShardPlan
from fpbench.solvers import Chunked, Solver
from fpbench.spec import Problem

from .chunked import _moved
from .forward import _iterate
from .maths import _cell_of, xp

AXIS = "t"
"""The mesh axis along T."""

_PLATFORMS = {"cpu": "cpu", "gpu": "gpu"}


class _Comm:
    """:class:`fpbench.sharding.Comm` inside ``shard_map`` over :data:`AXIS`."""

    xp = xp

    def __init__(self, shards: int, dtype: Any) -> None:
        self.shards = shards
        self.dtype = dtype

    def index(self) -> jax.Array:
        return lax.axis_index(AXIS)

    def from_left(self, last: jax.Array, s0: jax.Array) -> jax.Array:
        got = lax.ppermute(last, AXIS, [(i, i + 1) for i in range(self.shards - 1)])
        return jnp.where(self.index() == 0, s0, got)

    def from_right(self, first: jax.Array, default: jax.Array) -> jax.Array:
        got = lax.ppermute(first, AXIS, [(i + 1, i) for i in range(self.shards - 1)])
        return jnp.where(self.index() == self.shards - 1, default, got)

    def all_gather(self, a: jax.Array) -> jax.Array:
        return lax.all_gather(a, AXIS)

    def sum(self, a: jax.Array) -> jax.Array:
        return lax.psum(a, AXIS)

    def change(self, new: jax.Array, old: jax.Array, axes: tuple[int, ...] | None = None) -> jax.Array:
        return max_change(jnp, new, old) if axes is None else _moved(new, old, axes)

    def max(self, r: jax.Array) -> jax.Array:
        nan = lax.pmax(jnp.isnan(r).astype(jnp.int32), AXIS)
        return jnp.where(nan > 0, jnp.nan, lax.pmax(jnp.where(jnp.isnan(r), -jnp.inf, r), AXIS))

    def scan(self, compose, elems):
        return lax.associative_scan(compose, elems)

    def recur(self, step, u, xs):
        def body(u, x):
            u = step(u, x)
            return u, u

        return lax.scan(body, u, xs)[1]

    def const(self, a: np.ndarray) -> jax.Array:
        return jnp.asarray(a, self.dtype if a.dtype.kind == "f" else None)


def _shard_body(cell: Cell, solver: Solver, plan: ShardPlan, cap: int, x, s0, params, tol, warm, *grad):
    """One shard's solve: ``x (1, halo + L, B, I)``, ``warm`` its Chunked index blocks.
    Returns ``(states (L, B, S), residuals (cap,), k)``; with ``grad = (g (L, B, S),
    *reversed warm blocks)``, then also the implicit gradient ``(dparams, dx (L, B, I), ds0,
    backward residuals (cap,), their count)``."""
    comm = _Comm(plan.shards, s0.dtype)
    h = plan.halo
    gi = input_projection(params, x[0], xp)
    stop_early = solver.tol is not None
    if isinstance(solver, Chunked):
        step = partial(cell.step, xp, params)
        updates = chunked_update(
            step, plan, gi, tuple(w[0] for w in warm), s0, tol if stop_early else None, comm
        )
        S, res, k = _chunked_loop(*updates, jnp.zeros((plan.steps, *s0.shape), s0.dtype), cap, tol)
    else:
        L = plan.steps
        first_step = ((jnp.arange(L) == 0) & (comm.index() == 0)).astype(s0.dtype)[:, None, None]
        update = linear_update(cell, solver.transition, params, gi, s0, first_step, comm)
        S, res, k = _iterate(update, _varying(jnp.zeros((L, *s0.shape), s0.dtype)), cap, tol, cap)
    if not grad:
        return S, res, k
    g = grad[0]
    if not isinstance(solver, Chunked):
        res_b, k_b = jnp.zeros(1, res.dtype), jnp.int32(0)
        return S, res, k, *newton_adjoint(cell, params, gi, x[0], s0, S, g, comm), res_b, k_b
    warm_r = tuple(w[0] for w in grad[1:])
    first, rerun = chunked_adjoint(
        cell, plan, params, gi[h:], S, g, warm_r, tol if stop_early else None, comm
    )
    lam, res_b, k_b = _chunked_loop(first, rerun, jnp.zeros(g.shape, g.dtype), cap, tol)
    Sp = shifted(jnp, S, comm.from_left(S[-1], s0))
    return S, res, k, *param_products(cell, params, gi[h:], x[0][h:], Sp, lam[::-1], comm), res_b, k_b


def _chunked_loop(first, rerun, init, cap: int, tol):
    """Chunked's iterations from ``init``: ``first``, then ``rerun`` (a ``lax.cond`` on the
    iteration count), under :func:`backends.jax.forward._iterate`."""

    def update(state):
        U, i = state
        U_new, r = first(U) if cap == 1 else lax.cond(i == 0, first, rerun, U)
        return (U_new, i + 1), r

    (U, _), res, k = _iterate(update, (_varying(init), jnp.int32(0)), cap, tol, cap)
    return U, res, k


def _varying(a: jax.Array) -> jax.Array:
    """``a`` marked as differing between shards (a loop carry that becomes the states)."""
    return lax.pcast(a, (AXIS,), to="varying")


def _mesh(device: str, shards: int) -> jax.sharding.Mesh:
    """A mesh of the first ``shards`` devices of kind ``device``.

    Raises:
        BackendUnavailableError: fewer devices than shards (the message says how to get more).
    """
    try:
        devices = jax.devices(_PLATFORMS[device])
    except RuntimeError:
        devices = []
    if len(devices) < shards:
        how = (
            f"set XLA_FLAGS=--xla_force_host_platform_device_count={shards} (or call "
            f"backends.jax.sharded.use_host_devices({shards})) before JAX first uses a device"
            if device == "cpu"
            else "use a machine with more GPUs, or several hosts with jax.distributed.initialize"
        )
        raise BackendUnavailableError(
            f"shards={shards} needs {shards} jax {device} devices, this process has {len(devices)}: {how}"
        )
    return jax.sharding.Mesh(np.array(devices[:shards]), (AXIS,))


def _warm_blocks(solver: Solver, plan: ShardPlan, reverse: bool = False) -> tuple[np.ndarray, ...]:
    """Chunked's per-shard index data, stacked over shards: ``(steps (N, W, m), pos (N, L),
    cold (N, m))`` (``reverse``: of the time-reversed sequence, whose shard p is N - 1 - p);
    empty blocks for the other solvers."""
    if not isinstance(solver, Chunked):
        return ()
    N = plan.shards
    blocks = [plan.warm_index(solver, N - 1 - p if reverse else p) for p in range(N)]
    return tuple(np.stack([b[i] for b in blocks]) for i in range(3))


def prepare(
    problem: Problem,
    solver: Solver,
    device: str,
    plan: ShardPlan,
    cap: int,
    cotangent: np.ndarray | None = None,
) -> ShardedRun:
    """Place the problem on the mesh, compile the sharded program and warm it; with a
    ``cotangent (T, B, S)``, the program also computes the implicit gradient and ``to_host``
    gives a :class:`~fpbench.grad.GradHost`."""
    spec = problem.spec
    cell = _cell_of(spec.cell)
    mesh = _mesh(device, plan.shards)
    Pt, rep = jax.sharding.PartitionSpec(AXIS), jax.sharding.PartitionSpec()
    along_t = jax.sharding.NamedSharding(mesh, Pt)
    replicated = jax.sharding.NamedSharding(mesh, rep)
    warm = _warm_blocks(solver, plan)
    grad = () if cotangent is None else (cotangent, *_warm_blocks(solver, plan, reverse=True))
    body = partial(_shard_body, cell, solver, plan, cap)
    mapped = jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(Pt, rep, rep, rep, tuple(Pt for _ in warm), *(Pt for _ in grad)),
        out_specs=(Pt, rep, rep) + ((rep, Pt, rep, rep, rep) if grad else ()),
    )
    with jax.enable_x64(spec.dtype == "float64"):
        x = np.stack([plan.local_inputs(problem.x, p) for p in range(plan.shards)])
        params = {k: np.asarray(v, spec.dtype) for k, v in problem.params.items()}
        tol = np.asarray(-1.0 if solver.tol is None else solver.tol, spec.dtype)
        args = (
            jax.device_put(x, along_t),
            jax.device_put(np.asarray(problem.s0, spec.dtype), replicated),
            jax.device_put(params, replicated),
            jax.device_put(tol, replicated),
            tuple(jax.device_put(w, along_t) for w in warm),
        )
        args += tuple(jax.device_put(a, along_t) for a in grad)
        compiled = jax.jit(mapped).lower(*args).compile()

    def run() -> Any:
        return jax.block_until_ready(compiled(*args))

    def timed(repeats: int) -> tuple[Any, list[float]]:
        seconds, out = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = run()
            seconds.append(time.perf_counter() - t0)
        return out, seconds

    def to_host(out: Any) -> Any:
        states, residuals = np.asarray(out[0], dtype=spec.dtype), np.asarray(out[1])[: int(out[2])]
        if cotangent is None:
            return states, residuals
        params = {k: np.asarray(v) for k, v in out[3].items()}
        method = CHUNKED_ADJOINT if isinstance(solver, Chunked) else REVERSE
        res_b = np.asarray(out[6])[: int(out[7])]
        return GradHost(states, residuals, params, np.asarray(out[4]), np.asarray(out[5]), res_b, method)

    run()  # warm
    return ShardedRun(timed, to_host)


def use_host_devices(n: int) -> bool:
    """Ask XLA for ``n`` CPU host devices (``jax_num_cpu_devices``), as
    ``--xla_force_host_platform_device_count=n`` does; it can only take effect before JAX's
    CPU client exists (the first use of a device). Returns whether it could."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return len(jax.devices("cpu")) >= n
    jax.config.update("jax_num_cpu_devices", n)
    return True
