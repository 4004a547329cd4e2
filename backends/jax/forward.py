"""The forward programs: Sequential's and Native's ``lax.scan``, and every iterative solver
(Jacobi, Newton, quasi-Newton, ELK) as one update (:func:`_update`, by the solver's traits)
under an on-device ``lax.while_loop`` (:func:`_iterate`).

- Iterative solvers: a ``lax.while_loop`` whose carry is
  ``(S, k, residuals[slots], done)``, so tolerance and divergence checks never leave
  the device; ``to_host`` keeps ``residuals[:k]``. The loop runs at most ``cap`` times,
  ``fpbench.solvers.iteration_cap`` (at most T unless damped), so an unreachable
  ``max_iters`` never sizes an array. ``tol``, ``damping`` and ``cap`` are runtime
  arguments, and the residual buffer has :func:`residual_slots` entries (``cap`` rounded up
  to a multiple of :data:`RESIDUAL_SLOTS`), so one compiled program serves every value,
  and every budget up to 64 iterations (a budget sweep, or a budget and its ``tol`` run on a
  short sequence) shares one program and one entry of the persistent cache. The residual
  is NaN if any difference is NaN (XLA's CPU ``max`` reduction drops NaNs and can return
  -inf: :func:`_max_change`).

  - ``transition == "none"`` (Jacobi): one ``(T*B, H) x (H, gH)`` product plus fused
    elementwise work per iteration.
  - ``"full"`` / ``"diagonal"`` (Newton / QuasiNewton): ``cell.linearise`` gives ``f`` and
    the structured Jacobian ``(c, d)``; the full ``(T, B, S, S)`` Jacobian or its diagonal
    ``(T, B, S)`` is assembled from it (the diagonal elementwise, never from the matrix),
    ``b_t = f - A_t s_{t-1}`` uses the products the step already computed, and the linear
    recurrence ``s_t = A_t s_{t-1} + b_t`` is one ``lax.associative_scan``.
  - ``damping > 0`` (ELK / QuasiELK): the same linearisation, then the damped
    least-squares step solved exactly by a Kalman filter and a Rauch-Tung-Striebel
    smoother (:mod:`backends.jax.kalman`). ``damping == 0`` runs Newton's (QuasiNewton's)
    program.
- Chunked (``transition == "window"``) runs the same loop: :mod:`backends.jax.chunked`.
- Sequential: ``lax.scan`` over the precomputed ``gi``. Native: ``lax.scan`` of the plain
  ``cell.step`` computing ``W_ih x_t`` inside each step, as a user writes an RNN in JAX (the
  ``jax.lax.scan`` baseline of docs/design.md, "Baselines").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from fpbench.cells import Cell, input_projection

from .kalman import _COMPOSE, _kalman_smoother
from .maths import (
    _diag_jacobian,
    _full_jacobian,
    _hidden_product,
    _input_projection,
    _shifted,
    _structured_apply,
    xp,
)


def _sequential(cell: Cell, x, s0, w):
    """Sequential: ``lax.scan`` over the precomputed ``gi``. Returns ``(states (T, B, S),)``."""

    def step(s, gi_t):
        s = cell.activate(xp, s, gi_t, _hidden_product(s, w) + w["b_hh"])
        return s, s

    return (lax.scan(step, s0, _input_projection(x, w))[1],)


def _native_step(cell: Cell, params: dict[str, jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The plain step ``(s (N, S), x_t (N, I)) -> s' (N, S)``: ``cell.step`` with torch-layout
    ``params``, ``W_ih x_t`` computed inside it. Native's scan body, and Chunked's on every
    window."""

    def step(s, x_t):
        return cell.step(xp, params, s, input_projection(params, x_t, xp))

    return step


def _native(cell: Cell, x, s0, w):
    """Native: the plain ``lax.scan`` RNN of :func:`_native_step`, as a user writes an RNN in
    JAX. Returns ``(states (T, B, S),)``."""
    step = _native_step(cell, w["torch"])

    def body(s, x_t):
        s = step(s, x_t)
        return s, s

    return (lax.scan(body, s0, x)[1],)


RESIDUAL_SLOTS = 64
"""Residual buffers are sized in multiples of this (:func:`residual_slots`)."""


def residual_slots(cap: int) -> int:
    """The residual buffer's length for an iteration cap: ``cap`` rounded up to a multiple of
    :data:`RESIDUAL_SLOTS` (a static shape; the cap itself is a runtime argument)."""
    return max(1, -(-cap // RESIDUAL_SLOTS)) * RESIDUAL_SLOTS


def _iterate(update: Callable[[Any], tuple[Any, jax.Array]], state: Any, slots: int, tol: jax.Array, cap):
    """``state, r <- update(state)`` until ``cap`` iterations (a runtime scalar, at most
    ``slots``), a residual ``r <= tol`` or a non-finite ``r``, all on device (``state`` is
    any pytree of arrays).

    Returns ``(state, residuals (slots,), k)``: ``residuals[:k]`` are the residuals of the
    ``k`` iterations that ran.
    """

    def cond(carry):
        _, k, _, done = carry
        return (k < cap) & ~done

    def body(carry):
        state, k, res, _ = carry
        state, r = update(state)
        return state, k + 1, res.at[k].set(r), ~jnp.isfinite(r) | (r <= tol)

    init = (state, jnp.int32(0), jnp.zeros(slots, tol.dtype), jnp.bool_(False))
    state, k, res, _ = lax.while_loop(cond, body, init)
    return state, res, k


def _max_change(new: jax.Array, old: jax.Array) -> jax.Array:
    """``max |new - old|``, NaN when ``new`` holds a NaN, for a finite ``old``.

    XLA's CPU ``max`` reduction drops NaNs (an all-NaN difference gives ``-inf``), so a
    diverged solve would look converged; NumPy and torch give NaN. ``old`` is always finite
    here: every :func:`_iterate` loop starts from zeros and stops at the first non-finite
    residual. So ``|new - old|`` holds a NaN exactly when ``new`` does, and the NaN test is
    the sum of ``new``, which is also NaN when ``new`` holds infinities of both signs (a
    diverged solve either way). Written so, XLA fuses the difference into the ``max``
    reduction and reads ``new`` once more for the sum; a NaN test on ``|new - old|`` itself
    would write that array out and read it twice.
    """
    return jnp.where(jnp.isnan(jnp.sum(new)), jnp.nan, jnp.max(jnp.abs(new - old)))


def _update(cell: Cell, transition: str, damped: bool, gi, s0, w, damping) -> Callable:
    """One iteration ``S -> (S_new, residual)`` of the iterative solver with these traits:
    ``transition`` ``"none"`` (Jacobi), ``"full"`` (Newton) or ``"diagonal"`` (quasi-Newton);
    ``damped``: solve each linearised step by the Kalman smoother with the runtime
    ``damping`` (ELK, quasi-ELK)."""

    def jacobi(S):
        Sp = _shifted(S, s0)
        S_new = cell.activate(xp, Sp, gi, _hidden_product(Sp, w) + w["b_hh"])
        return S_new, _max_change(S_new, S)

    def newton(S):
        # Linearise at S: s_t = A_t s_{t-1} + b_t with b_t = f(S_{t-1}) - A_t S_{t-1}. For
        # t = 1, s_0 is known, so b_1 = f(s_0) exactly and A_1 never enters the states.
        Sp = _shifted(S, s0)
        wh = _hidden_product(Sp, w)
        f, c, d = cell.linearise(xp, Sp, gi, wh + w["b_hh"])
        if transition == "full":
            A = _full_jacobian(c, d, w["blocks"])
            b = f - _structured_apply(c, d, wh, Sp)
        else:
            A = _diag_jacobian(c, d, w["diag"])
            b = f - A * Sp
        b = b.at[0].set(f[0])
        if damped:
            S_new = _kalman_smoother(transition == "full", A.at[0].set(0.0), b, S, damping)
        else:
            S_new = lax.associative_scan(_COMPOSE[transition], (A, b))[1]
        return S_new, _max_change(S_new, S)

    return jacobi if transition == "none" else newton


def _fixed_point(cell: Cell, transition: str, damped: bool, slots: int, x, s0, w, tol, damping, cap):
    """Any iterative solver from ``S = 0``, by its traits (:func:`_update`). Returns
    ``(states (T, B, S), residuals (slots,), k)``; ``cap`` is the solver's
    ``iteration_cap`` (a runtime scalar), ``slots`` its :func:`residual_slots`."""
    gi = _input_projection(x, w)
    update = _update(cell, transition, damped, gi, s0, w, damping)
    return _iterate(update, jnp.zeros(gi.shape[:2] + s0.shape[-1:], gi.dtype), slots, tol, cap)
