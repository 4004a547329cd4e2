"""The backward pass of every solver in JAX (``prepare_grad``, :mod:`fpbench.grad`): autodiff
through the scans, the unrolled backward through the iterations that ran, and the implicit
backward's adjoint at the returned states followed by the parameter products.

- Sequential (``"bptt"``) and Native (``"autograd"``): ``jax.vjp`` through their ``lax.scan``.
- ``backward="unrolled"``: ``jax.vjp`` through the iterations that ran, written as a
  ``lax.scan`` over the iteration cap whose body is skipped (``lax.cond``) once the forward
  stopped (a ``while_loop`` is not reverse-differentiable; :func:`_unrolled_iterate`, which
  Chunked's unrolled backward uses too). A scan stores its body's intermediates for every
  step of its length, run or skipped, so above 64 iterations the scan is over checkpointed
  chunks of ``ceil(sqrt(cap))`` iterations (:func:`unrolled_chunks`): about
  ``2 sqrt(cap)`` iterations' worth instead of ``cap``.
- ``backward="implicit"``: the forward ``while_loop``, then the adjoint
  ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` at the returned states: a reverse
  ``associative_scan`` over the transposed full Jacobians for ``transition == "full"``
  (Newton, ELK; exact, no iterations), adjoint iterations to ``tol`` (at most
  ``min(max_iters, T)``, residuals reported) for ``"none"`` (Jacobi on the adjoint) and
  ``"diagonal"`` (each iteration an elementwise reverse scan with the diagonal, the rest of
  ``J^T`` lagged), and Chunked's own iterations on the time-reversed adjoint recurrence for
  ``"window"`` (``"implicit: chunked adjoint"``, :mod:`backends.jax.chunked`; residuals
  reported); then every parameter gradient as one batched ``cell.vjp_preact`` over all t
  and contractions over (t, b).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from backends.shared import adjoint
from backends.shared.iteration import shifted, stopped, update
from fpbench.backend import GradOutput
from fpbench.cells import Cell

from .forward import _fixed_point, _iterate
from .maths import _input_projection, _layouts, xp
from .ops import OPS

if not getattr(GradOutput, "_fpbench_jax_pytree", False):  # the gradient programs return it
    jax.tree_util.register_dataclass(
        GradOutput,
        data_fields=[f.name for f in dataclasses.fields(GradOutput) if f.name != "backward_method"],
        meta_fields=["backward_method"],
    )
    GradOutput._fpbench_jax_pytree = True  # type: ignore[attr-defined]


# Gradient programs take the parameters in torch layout and derive the programs' layouts
# inside the program (a few transposes: maths._layouts), so that autodiff gives dL/dparams in
# torch layout. They return (states, residuals, k, dparams, dx, ds0, backward residuals,
# backward k).


def _no_iterations(dtype) -> tuple[jax.Array, jax.Array]:
    return jnp.zeros(1, dtype), jnp.int32(0)


def _grad_autodiff(cell: Cell, forward: Callable, x, s0, params, g):
    """``jax.vjp`` of ``forward(x, s0, w) -> states`` (Native, Sequential: BPTT)."""
    S, vjp = jax.vjp(lambda x, s0, p: forward(x, s0, _layouts(xp, p, cell))[0], x, s0, params)
    dx, ds0, dparams = vjp(g)
    return GradOutput(S, *_no_iterations(S.dtype), dparams, dx, ds0, *_no_iterations(S.dtype))


UNROLLED_LINEARISED_SCALE = 8
"""How many times torch's record (:func:`fpbench.memory.unrolled_items`) an unrolled
Newton-type iteration keeps under XLA (the residuals of every level of its associative
scans): the memory estimate's factor, from the resident memory of unrolled Newton."""

UNROLLED_CHECKPOINT_ABOVE = 64
"""An unrolled backward with an iteration cap above this checkpoints (:func:`unrolled_chunks`)."""


def unrolled_chunks(cap: int) -> tuple[int, int]:
    """``(chunks, length)`` of the unrolled backward's checkpointed scan for an iteration cap.

    Up to :data:`UNROLLED_CHECKPOINT_ABOVE` iterations, one chunk of ``cap``: every
    iteration's intermediates are kept. Above, ``ceil(cap / L)`` chunks of ``L = ceil(sqrt(cap))``
    iterations: the forward keeps each chunk's input state, and the backward recomputes one
    chunk at a time, so it holds about ``chunks + L`` iterations' worth instead of ``cap``
    (a scan's stored intermediates are sized by its length, not by the iterations that ran).
    """
    if cap <= UNROLLED_CHECKPOINT_ABOVE:
        return 1, cap
    length = math.isqrt(cap - 1) + 1
    return -(-cap // length), length


def _unrolled_iterate(update: Callable[[Any], tuple[Any, jax.Array]], state: Any, cap: int, tol: jax.Array):
    """:func:`_iterate` written so that reverse-mode autodiff goes through it: a ``lax.scan``
    over ``cap`` iterations (static: the scan's length, and what it keeps for the backward,
    depend on it) whose body skips (``lax.cond``) once the iteration stopped; above
    :data:`UNROLLED_CHECKPOINT_ABOVE` iterations, a scan of checkpointed chunks of it
    (:func:`unrolled_chunks`) whose chunks after the stop are skipped whole. ``state`` is any
    pytree of arrays. Returns ``(state, residuals (cap,), k)`` as :func:`_iterate`."""
    chunks, length = unrolled_chunks(cap)

    def body(carry, _):
        state, i, done = carry
        skip = done | (i >= cap)
        state, r = lax.cond(skip, lambda state: (state, jnp.zeros((), tol.dtype)), update, state)
        return (state, i + 1, skip | stopped(jnp, r, tol)), (r, ~skip)

    def chunk(carry):
        return lax.scan(body, carry, None, length=length)

    init = (state, jnp.int32(0), jnp.bool_(False))
    if chunks == 1:
        (state, _, _), (res, ran) = chunk(init)
    else:
        kept = jax.checkpoint(chunk)

        def skipped(carry):
            return carry, (jnp.zeros(length, tol.dtype), jnp.zeros(length, bool))

        def outer(carry, _):
            return lax.cond(carry[2] | (carry[1] >= cap), skipped, kept, carry)

        (state, _, _), (res, ran) = lax.scan(outer, init, None, length=chunks)
        res, ran = res.reshape(-1)[:cap], ran.reshape(-1)[:cap]
    return state, res, ran.sum(dtype=jnp.int32)


def _grad_unrolled(cell: Cell, transition: str, damped: bool, cap: int, x, s0, params, tol, damping, _cap, g):
    """``jax.vjp`` through the iterations that ran (:func:`_unrolled_iterate`; the cap is
    static here, so the runtime ``_cap`` every iterative program takes is unused)."""

    def forward(x, s0, params):
        w = _layouts(xp, params, cell)
        gi = _input_projection(x, w)
        step = update(OPS, cell, transition, damped, gi, s0, w["rec"], damping)
        S0 = jnp.zeros(gi.shape[:2] + s0.shape[-1:], gi.dtype)
        S, res, k = _unrolled_iterate(step, S0, cap, tol)
        return S, (res, k)

    S, vjp, (res, k) = jax.vjp(forward, x, s0, params, has_aux=True)
    dx, ds0, dparams = vjp(g)
    return GradOutput(S, res, k, dparams, dx, ds0, *_no_iterations(S.dtype))


def _grad_implicit(
    cell: Cell, transition: str, damped: bool, slots: int, x, s0, params, tol, damping, cap, g
):
    """The forward solve, then the adjoint ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` at its
    states (:mod:`backends.shared.adjoint`: one reverse scan for ``"full"``, else adjoint
    iterations under :func:`_iterate`, to ``tol`` and at most ``min(max_iters, T)`` times),
    then the parameter products."""
    w = _layouts(xp, params, cell)
    rec = w["rec"]
    S, res, k = _fixed_point(cell, transition, damped, slots, x, s0, w, tol, damping, cap)
    gi = _input_projection(x, w)
    Sp = shifted(xp, S, s0)
    gh = adjoint.hidden_preactivations(xp, Sp, rec)
    if transition == "full":
        lam = adjoint.full_adjoint(OPS, cell, Sp, gi, gh, rec, g)
        res_b, k_b = _no_iterations(S.dtype)
    else:
        step = adjoint.adjoint_update(OPS, cell, transition, Sp, gi, gh, rec, g)
        lam, res_b, k_b = _iterate(step, jnp.zeros_like(g), slots, tol, jnp.minimum(cap, g.shape[0]))
    dparams, dx, ds0 = adjoint.param_products(xp, cell, Sp, x, gi, gh, lam, rec, params["weight_ih"])
    return GradOutput(S, res, k, dparams, dx, ds0, res_b, k_b)
