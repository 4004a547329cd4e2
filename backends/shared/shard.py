"""The sharded solve's mathematics, written once over an engine's collectives.

Every update here runs inside one shard, on its own steps, against an array namespace
``xp`` (``jax.numpy`` or ``torch``) and the few collective operations the engine provides
(:class:`Comm`: JAX inside ``shard_map``, :mod:`backends.jax.sharded`; torch over
``torch.distributed``, :mod:`backends.torch.distributed`). The cell maths is
:mod:`fpbench.cells`. What each update sends between shards is in :mod:`fpbench.sharding`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from fpbench.cells import Cell
from fpbench.sharding import ShardPlan

from . import adjoint
from .linear import compose
from .ops import Recurrent

Array = Any  # a JAX or torch array


class Comm(Protocol):
    """What an engine provides to the sharded updates, inside one shard."""

    xp: Any
    """The array namespace the cells are evaluated in."""
    shards: int

    def index(self) -> Any:
        """This shard's position 0..N-1 (an int, or a traced scalar under ``shard_map``)."""

    def from_left(self, last: Array, s0: Array) -> Array:
        """The left neighbour's ``last (B, S)``; ``s0`` on shard 0 (point to point)."""

    def from_right(self, first: Array, default: Array) -> Array:
        """The right neighbour's ``first``; ``default`` on shard N - 1 (point to point)."""

    def all_gather(self, a: Array) -> Array:
        """Every shard's ``a``, stacked: ``(N, *a.shape)``."""

    def sum(self, a: Array) -> Array:
        """``a`` summed over the shards (all-reduce)."""

    def change(self, new: Array, old: Array, axes: tuple[int, ...] | None = None) -> Array:
        """This shard's ``max |new - old|`` over ``axes`` (None: all), NaN where ``new``
        holds a NaN."""

    def const(self, a: np.ndarray) -> Array:
        """A host array as the engine's (on this shard's device, floats in its dtype)."""

    def max(self, r: Array) -> Array:
        """The largest ``r`` over all shards, NaN when any is NaN."""

    def scan(self, compose: Callable, elems: tuple[Array, Array]) -> tuple[Array, Array]:
        """The inclusive prefix composition along axis 0 of ``elems`` (an associative scan)."""

    def recur(self, step: Callable[[Array, Array], Array], u: Array, xs: Array) -> Array:
        """``u <- step(u, xs[i])`` for i = 0..W-1 from ``u (N', S)``: the ``(W, N', S)`` states."""


def _apply(xp: Any, A: Array, v: Array, full: bool) -> Array:
    """``A v`` for full ``A (..., S, S)`` or diagonal ``A (..., S)``, broadcasting."""
    return xp.matmul(A, v[..., None])[..., 0] if full else A * v


def linear_update(
    cell: Cell, transition: str, params: dict[str, Array], gi: Array, s0: Array, first: Array, comm: Comm
) -> Callable[[Array], tuple[Array, Array]]:
    """One iteration of Jacobi, Newton or QuasiNewton on this shard's steps:
    ``S (L, B, S) -> (S_new (L, B, S), global residual)``.

    Args:
        cell: the cell.
        transition: ``"none"``, ``"full"`` or ``"diagonal"``.
        params: the cell's parameters in torch layout, in the engine's arrays.
        gi: ``(L, B, gH)`` this shard's input projections.
        s0: ``(B, S)`` the initial state.
        first: ``(L, 1, 1)`` 1 at the sequence's first step (on shard 0), 0 elsewhere: there
            ``s_0`` is known, so the step's transition is zero and its offset is ``f(s_0)``.
        comm: the engine's collectives.
    """
    xp = comm.xp
    full = transition == "full"
    jacobian = {"full": cell.jacobian, "diagonal": cell.jacobian_diag}.get(transition)

    def update(S: Array) -> tuple[Array, Array]:
        Sp = xp.concatenate([comm.from_left(S[-1], s0)[None], S[:-1]])
        f = cell.step(xp, params, Sp, gi)
        if jacobian is None:
            S_new = f
        else:
            A = jacobian(xp, params, Sp, gi)
            A = A * (1.0 - (first[..., None] if full else first))
            S_new = linear_solve(comm, A, f - _apply(xp, A, Sp, full), s0, full)
        return S_new, comm.max(comm.change(S_new, S))

    return update


def linear_solve(comm: Comm, A: Array, b: Array, carry: Array, full: bool, reverse: bool = False) -> Array:
    """The two-level scan: ``h_i = A_i h_{i-1} + b_i`` over every shard's steps from ``carry``
    before the first step (``reverse``: ``h_i = A_i h_{i+1} + b_i`` from ``carry`` after the
    last step). Each shard scans its own steps into prefix maps, the shards all-gather every
    shard's composed map, each runs the length-N scan of those from ``carry`` to its incoming
    state and applies it to its prefix maps.

    Args:
        A: ``(L, B, S, S)`` (``full``) or ``(L, B, S)`` transitions of this shard's steps.
        b: ``(L, B, S)`` offsets.
        carry: ``(B, S)``.
    Returns:
        ``(L, B, S)`` this shard's ``h``.
    """
    xp = comm.xp
    if reverse:
        A, b = xp.flip(A, (0,)), xp.flip(b, (0,))
    PA, Pb = comm.scan(compose(xp, full), (A, b))
    GA, Gb = comm.all_gather(PA[-1]), comm.all_gather(Pb[-1])
    carries: list[Any] = [None] * comm.shards
    for q in reversed(range(comm.shards)) if reverse else range(comm.shards):  # the scan over shards
        carries[q] = carry
        carry = _apply(xp, GA[q], carry, full) + Gb[q]
    h = _apply(xp, PA, xp.stack(carries)[comm.index()], full) + Pb
    return xp.flip(h, (0,)) if reverse else h


def newton_adjoint(
    cell: Cell, params: dict[str, Array], gi: Array, x: Array, s0: Array, S: Array, g: Array, comm: Comm
) -> tuple[dict[str, Array], Array, Array]:
    """The implicit gradient at this shard's converged states ``S (L, B, S)`` for the cotangent
    ``g (L, B, S)``: the adjoint ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` solved exactly by the
    reverse two-level scan (:func:`linear_solve`; ``J_{t+1}`` of a shard's last step is the
    right neighbour's first, sent point to point), then the parameter products of one batched
    VJP, summed over the shards.

    Returns:
        ``(dparams (all-reduced), dx (L, B, I) of this shard's steps, ds0 (B, S))``.
    """
    xp = comm.xp
    Sp = xp.concatenate([comm.from_left(S[-1], s0)[None], S[:-1]])
    Jt = xp.swapaxes(cell.jacobian(xp, params, Sp, gi), -1, -2)
    A = xp.concatenate([Jt[1:], comm.from_right(Jt[0], xp.zeros_like(Jt[0]))[None]])
    lam = linear_solve(comm, A, g, xp.zeros_like(s0), True, reverse=True)
    return param_products(cell, params, gi, x, Sp, lam, comm)


def _vjp(cell: Cell, params: dict[str, Array], prev: Array, gi: Array, lam: Array, xp: Any):
    """The VJP of the steps ``f(prev, gi)`` for the cotangent ``lam`` on their outputs:
    ``(J^T lam (..., S), dgi (..., gH), dgh (..., gH))`` (:func:`backends.shared.adjoint.vjp_steps`)."""
    rec = Recurrent.of(xp, params["weight_hh"], params["bias_hh"], cell.gates)
    return adjoint.vjp_steps(xp, cell, prev, gi, rec.preactivation(xp, prev), lam, rec)


def param_products(
    cell: Cell, params: dict[str, Array], gi: Array, x: Array, Sp: Array, lam: Array, comm: Comm
) -> tuple[dict[str, Array], Array, Array]:
    """Everything from this shard's adjoint ``lam (L, B, S)`` at the previous states
    ``Sp (L, B, S)`` of its steps: ``(dparams summed over the shards, dx (L, B, I), ds0)``."""
    xp = comm.xp
    rec = Recurrent.of(xp, params["weight_hh"], params["bias_hh"], cell.gates)
    gh = adjoint.hidden_preactivations(xp, Sp, rec)
    dparams, dx, ds0 = adjoint.param_products(xp, cell, Sp, x, gi, gh, lam, rec, params["weight_ih"])
    dparams = {name: comm.sum(v) for name, v in dparams.items()}
    return dparams, dx, comm.sum(ds0 * ((comm.index() == 0) * 1.0))


class _Reversed:
    """A :class:`Comm` in reversed time: shard p is shard N - 1 - p, and the left neighbour
    is the right one."""

    def __init__(self, comm: Comm) -> None:
        self.comm, self.xp, self.shards = comm, comm.xp, comm.shards

    def __getattr__(self, name: str) -> Any:
        return getattr(self.comm, name)

    def index(self) -> Any:
        return self.shards - 1 - self.comm.index()

    def from_left(self, last: Array, s0: Array) -> Array:
        return self.comm.from_right(last, s0)

    def from_right(self, first: Array, default: Array) -> Array:
        return self.comm.from_left(first, default)


def _right_halo(comm: Comm, Z: Array, h: int) -> Array:
    """The ``h`` rows after this shard's ``Z (L, ...)`` on the shards to its right (zeros
    past the sequence's end): ``ceil(h / L)`` point-to-point hops."""
    xp, blocks, cur = comm.xp, [], Z
    for _ in range(-(-h // Z.shape[0])):
        cur = comm.from_right(cur, xp.zeros_like(cur))
        blocks.append(cur)
    return xp.concatenate(blocks)[:h] if blocks else Z[:0]


def chunked_adjoint(
    cell: Cell,
    plan: ShardPlan,
    params: dict[str, Array],
    gi: Array,
    S: Array,
    g: Array,
    warm: tuple[Array, Array, Array],
    tol: Array | None,
    comm: Comm,
) -> tuple[Callable, Callable]:
    """Chunked's iterations on the adjoint ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` at this
    shard's states ``S (L, B, S)``, as the single-device solver runs them: the chunk layout
    of the time-reversed sequence (every window's overlap lies later in time, reruns restart
    from the right neighbour). Everything is in reversed local time: the shard's steps
    flipped, its inputs ``(g_t, S_t, gi_{t+1}, t < T - 1)`` concatenated with the ``halo``
    steps after it (from the shards to its right: the only exchange besides the reruns').

    Args:
        gi: ``(L, B, gH)`` this shard's input projections.
        g: ``(L, B, S)`` this shard's cotangent.
        warm: :meth:`ShardPlan.warm_index` of reversed shard ``N - 1 - p``.
    Returns:
        ``(first, rerun)``: the two iterations (``chunked_update``) on the reversed adjoint,
        from a zero ``(L, B, S)`` iterate; flip their result back.
    """
    xp, rev = comm.xp, _Reversed(comm)
    L, n = plan.steps, g.shape[-1]
    gi_next = xp.concatenate([gi[1:], comm.from_right(gi[0], xp.zeros_like(gi[0]))[None]])
    last = comm.const((np.arange(L)[:, None, None] == L - 1) * 1.0) * (comm.index() == comm.shards - 1)
    has_next = 1.0 - last * xp.ones_like(g[..., :1])
    Z = xp.concatenate([g, S, gi_next, has_next], -1)
    Z = xp.concatenate([Z, _right_halo(comm, Z, plan.halo)])
    zs = xp.flip(Z, (0,))  # reversed: the halo first

    def step(lam: Array, z: Array) -> Array:
        back = _vjp(cell, params, z[..., n : 2 * n], z[..., 2 * n : -1], lam, xp)[0]
        return z[..., :n] + z[..., -1:] * back

    return chunked_update(step, plan, zs, warm, xp.zeros_like(g[0]), tol, rev)


def chunked_update(
    step: Callable[[Array, Array], Array],
    plan: ShardPlan,
    xs_ext: Array,
    warm: tuple[Array, Array, Array],
    s0: Array,
    tol: Array | None,
    comm: Comm,
) -> tuple[Callable[[Array], tuple[Array, Array]], Callable[[Array], tuple[Array, Array]]]:
    """Chunked's two iterations of the recurrence ``u_t = step(u_{t-1}, xs_t)`` on this
    shard's ``m`` chunks: ``(first, rerun)``, each ``U (L, B, S) -> (U_new, global residual)``.

    ``first`` runs every chunk over its warm window (from the halo-extended inputs
    ``xs_ext (halo + L, B, F)`` gathered by ``warm = (steps (W, m), pos (L,), cold (m,))`` of
    :meth:`ShardPlan.warm_index`); ``rerun`` reruns every chunk from its left neighbour's last
    state (the shard's first chunk from the left shard's; the sequence's first chunk keeps
    its states), with ``tol`` (None: no early stop) applied afterwards as a mask, as the
    single-device backends do. ``s0 (B, S)`` is the state before the sequence.
    """
    xp = comm.xp
    m, n, h = plan.chunks, plan.length, plan.halo
    B, S = s0.shape
    steps, pos, cold = warm
    xs_own = xs_ext[h:]
    chunk = comm.const(np.arange(plan.steps) // n)  # a local step's chunk

    def first(U: Array) -> Array:
        u = xp.where(cold[:, None, None], s0, xp.zeros_like(s0)).reshape(m * B, S)
        xs = xs_ext[steps].reshape(steps.shape[0], m * B, -1)
        new = comm.recur(step, u, xs).reshape(-1, m, B, S)[pos, chunk]
        return new, comm.max(comm.change(new, U))

    # the sequence's first chunk (shard 0's chunk 0) never reruns: it keeps its states
    frozen = comm.const((np.arange(m) == 0)[None, :, None, None] * 1.0) * (comm.index() == 0)

    def rerun(U: Array) -> Array:
        old = xp.swapaxes(U.reshape(m, n, B, S), 0, 1)  # (n, m, B, S)
        sources = xp.concatenate([comm.from_left(U[-1], s0)[None], old[-1, :-1]])
        xs = xp.swapaxes(xs_own.reshape(m, n, B, -1), 0, 1).reshape(n, m * B, -1)
        new = comm.recur(step, sources.reshape(m * B, S), xs).reshape(n, m, B, S)
        if tol is not None:  # keep new values up to and including the first step that moved <= tol
            hit = (comm.change(new, old, (2, 3)) <= tol) * 1
            new = xp.where((xp.cumsum(hit, 0) - hit == 0)[..., None, None], new, old)
        new = xp.where(frozen > 0, old, new)
        new = xp.swapaxes(new, 0, 1).reshape(plan.steps, B, S)
        return new, comm.max(comm.change(new, U))

    return first, rerun
