"""Chunked (``transition == "window"``) in the JAX backend: forward, implicit and unrolled
backward, as programs that :mod:`backends.jax.backend` compiles like every other solver's.

The windows of all chunks are folded into the batch: every input of the recurrence,
``(T, B, ...)``, is gathered by :meth:`fpbench.solvers.ChunkLayout.gather_index` (static
NumPy index arrays) into ``(window, n * B, ...)``, one ``lax.scan`` of the step runs all
``n`` windows at once, and its ``(window, n * B, S)`` outputs are gathered back onto the
steps ``(T', B, S)`` they write (padding positions past ``T - 1`` are never read back).

One iteration (:func:`chunked_update`), on the carry ``(U (T, B, S), i)``:

- ``i == 0``: every chunk over its warm window (``window`` steps), from ``s0`` where the
  window starts at step 0 and from the zero state otherwise;
- ``i >= 1``: every chunk ``p >= 1`` over its own ``length`` steps from the old iterate's
  state at ``starts[p] - 1`` (all of them rerun, so the shapes are static). With a ``tol``,
  the stopping rule is applied afterwards as a mask: a chunk keeps its new values up to and
  including its first step whose change ``max |new - old|`` over ``(B, S)`` is ``<= tol``
  (NaN-aware), and its old values after it, as if its rerun had stopped there.

The iterations run under :func:`backends.jax.forward._iterate` (a ``lax.while_loop`` recording the
NaN-aware residuals, at most ``iteration_cap`` = ``min(max_iters, chunks)`` times); the two
kinds of iteration are the branches of one ``lax.cond`` (no ``cond`` when the cap is 1).
Static program arguments: the cell, the :class:`~fpbench.solvers.ChunkLayout`, whether a
second iteration can run (``reruns``: the cap is above 1), whether there is a ``tol``
(without one no mask is computed) and the residual buffer's length (the unrolled backward:
the cap itself, its scan's length); ``tol`` and the cap are runtime arguments.

Gradients:

- implicit (``"implicit: chunked adjoint"``): the forward, then the adjoint
  ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` at the returned states by the same iterations on the
  time-reversed sequence (:func:`chunked_update` on reversed inputs: the overlap lies to the
  right and reruns restart from the right neighbour), whose step is the cell's VJP with the
  hidden preactivations of all steps precomputed, its residuals reported as the backward's;
  then the parameter products of :func:`backends.shared.adjoint.param_products`.
- unrolled: ``jax.vjp`` through the iterations that ran, the same update under
  :func:`backends.jax.grad._unrolled_iterate` (a scan with a done flag); the ``tol`` masks are
  comparisons, so the stopping decisions are not differentiated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from backends.shared.adjoint import hidden_preactivations, param_products, vjp_steps
from backends.shared.iteration import later, max_change, shifted
from fpbench.backend import GradOutput
from fpbench.cells import Cell
from fpbench.solvers import ChunkLayout

from .forward import _iterate, _native_step
from .grad import _no_iterations, _unrolled_iterate
from .maths import _input_projection, _layouts, xp

Step = Callable[[jax.Array, Any], jax.Array]
"""A recurrence step ``(u (N, S), inputs of one step: leaves (N, ...)) -> u (N, S)``."""


def _fold(xs: Any, steps: np.ndarray) -> Any:
    """Gather the windows into the batch: leaves ``(T, B, ...)`` -> ``(width, n * B, ...)``,
    window ``j``'s position ``i`` reading step ``steps[i, j]`` (``steps (width, n)``)."""
    return jax.tree_util.tree_map(lambda a: a[steps].reshape(steps.shape[0], -1, *a.shape[2:]), xs)


def _run(step: Step, u: jax.Array, xs: Any) -> jax.Array:
    """``lax.scan`` of ``step`` from ``u (N, S)`` over folded inputs: ``(width, N, S)``."""

    def body(u, x):
        u = step(u, x)
        return u, u

    return lax.scan(body, u, xs)[1]


def _moved(new: jax.Array, old: jax.Array, axes: tuple[int, ...] = (2, 3)) -> jax.Array:
    """Every window position's change ``max |new - old|`` over ``axes`` (``(B, S)``:
    ``(width, n, B, S)`` -> ``(width, n)``), NaN where ``new`` holds one (as
    :func:`backends.shared.iteration.max_change` over all axes)."""
    change = jnp.max(jnp.abs(new - old), axis=axes)
    return jnp.where(jnp.isnan(jnp.sum(new, axis=axes)), jnp.nan, change)


def chunked_update(
    step: Step, xs: Any, u0: jax.Array, lay: ChunkLayout, reruns: bool, stop_early: bool, tol: jax.Array
) -> tuple[Callable[[Any], tuple[Any, jax.Array]], Any]:
    """One Chunked iteration of the recurrence ``u_t = step(u_{t-1}, xs_t)`` from ``u0``
    (module docstring), and the state it starts from.

    Args:
        step: the recurrence.
        xs: its inputs, a pytree of ``(T, B, ...)`` arrays.
        u0: ``(B, S)`` the state before step 0.
        lay: the chunk layout on T.
        reruns: whether iterations after the first can run (else none is built).
        stop_early: apply the ``tol`` stopping rule to the reruns.
        tol: the runtime tolerance (a scalar).
    Returns:
        ``(update, init)``: ``update((U (T, B, S), i)) -> ((U_new, i + 1), residual)`` and
        ``init = (zeros (T, B, S), 0)``.
    """
    n, B, S = lay.chunks, u0.shape[0], u0.shape[-1]
    steps, pos, chunk = lay.gather_index(0, True)
    xs_warm = _fold(xs, steps)
    cold = (np.array(lay.warm_starts) == 0)[:, None, None]
    u_warm = jnp.where(cold, u0, jnp.zeros_like(u0)).reshape(n * B, S)

    def warm(U):
        return _run(step, u_warm, xs_warm).reshape(-1, n, B, S)[pos, chunk]

    if reruns:  # then n > 1 (the cap is at most the chunks)
        steps_r, pos_r, chunk_r = lay.gather_index(1, False)
        xs_rerun = _fold(xs, steps_r)
        sources = np.array(lay.starts[1:]) - 1
        first = lay.starts[1]

        def rerun(U):
            new = _run(step, U[sources].reshape(-1, S), xs_rerun).reshape(-1, n - 1, B, S)
            if stop_early:  # keep new values up to and including the first step that moved <= tol
                old = U[steps_r]
                hit = (_moved(new, old) <= tol).astype(jnp.int32)
                new = jnp.where((jnp.cumsum(hit, 0) - hit == 0)[..., None, None], new, old)
            return U.at[first:].set(new[pos_r, chunk_r])

    def update(state):
        U, i = state
        U_new = lax.cond(i == 0, warm, rerun, U) if reruns else warm(U)
        return (U_new, i + 1), max_change(jnp, U_new, U)

    T = lay.seq_len
    return update, (jnp.zeros((T, B, S), u0.dtype), jnp.int32(0))


def fixed_point(
    cell: Cell, lay: ChunkLayout, reruns: bool, stop_early: bool, slots: int, x, s0, w, tol, damping, cap
):
    """The Chunked forward program (``damping`` unused): ``(states (T, B, S), residuals
    (slots,), k)``, as :func:`backends.jax.forward._fixed_point`."""
    update, init = chunked_update(_native_step(cell, w["torch"]), x, s0, lay, reruns, stop_early, tol)
    (S, _), res, k = _iterate(update, init, slots, tol, cap)
    return S, res, k


def _adjoint(
    cell: Cell, lay: ChunkLayout, reruns: bool, stop_early: bool, slots: int, S, s0, gi, w, tol, cap, g
):
    """The adjoint ``lam (T, B, S)`` at the states ``S`` by Chunked's iterations on the
    time-reversed recurrence ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` (``lam_{T-1} = g_{T-1}``),
    and their ``(residuals (cap,), k)``."""
    rec = w["rec"]
    gh = hidden_preactivations(xp, S, rec)  # step t + 1's, from S[t]
    T, B = g.shape[:2]
    has_next = jnp.broadcast_to((jnp.arange(T) < T - 1)[:, None, None], (T, B, 1))
    xs = (g, S, later(xp, gi), gh, has_next)  # step t + 1's inputs at t; none at T - 1

    def step(lam, inputs):
        g_t, prev, gi_next, gh_next, next_exists = inputs
        back = vjp_steps(xp, cell, prev, gi_next, gh_next, lam, rec)[0]  # J_{t+1}^T lam_{t+1}
        return g_t + jnp.where(next_exists, back, 0.0)

    reverse = jax.tree_util.tree_map(lambda a: a[::-1], xs)
    update, init = chunked_update(step, reverse, jnp.zeros_like(s0), lay, reruns, stop_early, tol)
    (lam, _), res, k = _iterate(update, init, slots, tol, cap)
    return lam[::-1], res, k


def grad_implicit(
    cell: Cell,
    lay: ChunkLayout,
    reruns: bool,
    stop_early: bool,
    slots: int,
    x,
    s0,
    params,
    tol,
    damping,
    cap,
    g,
):
    """The forward, then the chunked adjoint (:func:`_adjoint`) and the parameter products.
    Returns a :class:`~fpbench.backend.GradOutput`."""
    w = _layouts(xp, params, cell)
    S, res, k = fixed_point(cell, lay, reruns, stop_early, slots, x, s0, w, tol, damping, cap)
    gi = _input_projection(x, w)
    lam, res_b, k_b = _adjoint(cell, lay, reruns, stop_early, slots, S, s0, gi, w, tol, cap, g)
    Sp = shifted(xp, S, s0)
    gh = hidden_preactivations(xp, Sp, w["rec"])
    dparams, dx, ds0 = param_products(xp, cell, Sp, x, gi, gh, lam, w["rec"], params["weight_ih"])
    return GradOutput(S, res, k, dparams, dx, ds0, res_b, k_b)


def grad_unrolled(
    cell: Cell,
    lay: ChunkLayout,
    reruns: bool,
    stop_early: bool,
    cap: int,
    x,
    s0,
    params,
    tol,
    damping,
    _cap,
    g,
):
    """``jax.vjp`` through the iterations that ran (:func:`backends.jax.grad._unrolled_iterate`; the
    cap is static here, the scan's length, so the runtime ``_cap`` is unused).
    Returns a :class:`~fpbench.backend.GradOutput` (no backward iterations)."""

    def forward(x, s0, params):
        update, init = chunked_update(_native_step(cell, params), x, s0, lay, reruns, stop_early, tol)
        (S, _), res, k = _unrolled_iterate(update, init, cap, tol)
        return S, (res, k)

    S, vjp, (res, k) = jax.vjp(forward, x, s0, params, has_aux=True)
    dx, ds0, dparams = vjp(g)
    return GradOutput(S, res, k, dparams, dx, ds0, *_no_iterations(S.dtype))
