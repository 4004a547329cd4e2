"""The forward programs: Sequential's and Native's ``lax.scan``, and every iterative solver
(Jacobi, Newton, quasi-Newton, ELK) as the shared iteration of its traits
(:func:`backends.shared.iteration.update`, run over :data:`backends.jax.ops.OPS`) under an
on-device ``lax.while_loop`` (:func:`_iterate`).

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
  -inf: :func:`backends.shared.iteration.max_change`). The iterations themselves (Jacobi;
  Newton and quasi-Newton by one ``lax.associative_scan``; ELK and quasi-ELK by the Kalman
  filter and smoother, :mod:`backends.shared.linear`) are described there.
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

from backends.shared import iteration
from fpbench.cells import Cell

from .maths import _input_projection, xp
from .ops import OPS


def _sequential(cell: Cell, x, s0, w):
    """Sequential: ``lax.scan`` over the precomputed ``gi``. Returns ``(states (T, B, S),)``."""
    rec = w["rec"]

    def step(s, gi_t):
        s = cell.activate(xp, s, gi_t, rec.preactivation(xp, s))
        return s, s

    return (lax.scan(step, s0, _input_projection(x, w))[1],)


def _native_step(cell: Cell, params: dict[str, jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The plain step ``(s (N, S), x_t (N, I)) -> s' (N, S)``: ``cell.step`` with torch-layout
    ``params``, ``W_ih x_t`` computed inside it. Native's scan body, and Chunked's on every
    window."""

    def step(s, x_t):
        return cell.step(xp, params, s, cell.input_projection(xp, params, x_t))

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
    ``k`` iterations that ran. The stopping rule is :func:`backends.shared.iteration.stopped`.
    """

    def cond(carry):
        _, k, _, done = carry
        return (k < cap) & ~done

    def body(carry):
        state, k, res, _ = carry
        state, r = update(state)
        return state, k + 1, res.at[k].set(r), iteration.stopped(jnp, r, tol)

    init = (state, jnp.int32(0), jnp.zeros(slots, tol.dtype), jnp.bool_(False))
    state, k, res, _ = lax.while_loop(cond, body, init)
    return state, res, k


def _fixed_point(cell: Cell, transition: str, damped: bool, slots: int, x, s0, w, tol, damping, cap):
    """Any iterative solver from ``S = 0``, by its traits (one iteration:
    :func:`backends.shared.iteration.update`). Returns
    ``(states (T, B, S), residuals (slots,), k)``; ``cap`` is the solver's
    ``iteration_cap`` (a runtime scalar), ``slots`` its :func:`residual_slots`."""
    gi = _input_projection(x, w)
    step = iteration.update(OPS, cell, transition, damped, gi, s0, w["rec"], damping)
    return _iterate(step, jnp.zeros(gi.shape[:2] + s0.shape[-1:], gi.dtype), slots, tol, cap)
