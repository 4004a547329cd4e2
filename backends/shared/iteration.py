"""One iteration of every iterative solver, by its traits, and when a run of them stops.

An iteration maps the iterate ``S (T, B, S)`` (the states of steps ``1..T``) to the next:
Jacobi applies the step to every previous state at once; Newton (``"full"``) and
quasi-Newton (``"diagonal"``) linearise every step at the iterate and solve the linear
recurrence ``s_t = A_t s_{t-1} + b_t`` with ``b_t = f(S_{t-1}) - A_t S_{t-1}`` by a parallel
scan; with damping (ELK, quasi-ELK) the Kalman smoother solves the damped problem instead.
For a diagonal cell Newton's transitions are its per-unit ``P x P`` blocks, solved on
unit-major states (:func:`transitions`): no ``S x S`` matrix is formed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fpbench.cells import Cell
from fpbench.solvers import stopped

from . import structured
from .linear import kalman_smoother, linear_recurrence
from .ops import Ops, Recurrent

Array = Any

__all__ = ["later", "linearised", "max_change", "shifted", "stopped", "transitions", "update"]


def shifted(xp: Any, S: Array, s0: Array) -> Array:
    """``(s0, S_1, ..., S_{T-1})``: the previous state of every step."""
    return xp.concatenate([s0[None], S[:-1]])


def later(xp: Any, v: Array) -> Array:
    """``out_t = v_{t+1}`` (0 at the last step): what step t+1 sends back to step t."""
    return xp.concatenate([v[1:], xp.zeros_like(v[:1])])


def max_change(xp: Any, new: Array, old: Array) -> Array:
    """``max |new - old|``, NaN when ``new`` holds a NaN, for a finite ``old``.

    XLA's CPU ``max`` reduction drops NaNs (an all-NaN difference gives ``-inf``), so a
    diverged solve would look converged; NumPy and torch give NaN. ``old`` is always finite
    here (every run starts from zeros and stops at the first non-finite residual), so
    ``|new - old|`` holds a NaN exactly when ``new`` does; the test is the sum of ``new``,
    also NaN when ``new`` holds infinities of both signs. Written so, XLA fuses the
    difference into the ``max`` and reads ``new`` once more for the sum.
    """
    return xp.where(xp.isnan(xp.sum(new)), xp.nan, xp.max(xp.abs(new - old)))


def update(
    ops: Ops,
    cell: Cell,
    transition: str,
    damped: bool,
    gi: Array,
    s0: Array,
    rec: Recurrent,
    damping: Array | float,
) -> Callable[[Array], tuple[Array, Array]]:
    """One iteration ``S -> (S_new, max |S_new - S|)`` of the solver with these traits:
    ``transition`` ``"none"`` (Jacobi), ``"full"`` (Newton) or ``"diagonal"`` (quasi-Newton);
    ``damped``: the damped step by the Kalman smoother (ELK, quasi-ELK). ``gi (T, B, gH)``
    is the input projection, ``s0 (B, S)`` the initial state."""
    xp = ops.xp

    def jacobi(S: Array) -> tuple[Array, Array]:
        Sp = shifted(xp, S, s0)
        S_new = cell.activate(xp, Sp, gi, rec.preactivation(xp, Sp))
        return S_new, max_change(xp, S_new, S)

    def newton(S: Array) -> tuple[Array, Array]:
        # For t = 1, s_0 is known: b_1 = f(s_0) exactly and A_1 never enters the states.
        Sp = shifted(xp, S, s0)
        (A, full, units), b = linearised(ops, cell, transition, Sp, gi, rec)
        if damped:
            A = ops.with_first(A, xp.zeros_like(A[0]))
            y = structured.to_units(xp, S, units) if units else S
            S_new = kalman_smoother(ops, full, A, b, y, damping)
        else:
            S_new = linear_recurrence(ops, full, A, b)
        if units:
            S_new = structured.from_units(xp, S_new)
        return S_new, max_change(xp, S_new, S)

    return jacobi if transition == "none" else newton


Transitions = tuple[Any, bool, int]
"""``(A, full, units)``: the linearised steps' transitions, whether they are matrices, and
``units``: 0, or the parts ``P`` of a diagonal cell whose ``A`` are its per-unit ``P x P``
blocks ``(..., H, P, P)``, acting on unit-major states (:func:`structured.to_units`)."""


def transitions(ops: Ops, transition: str, c: Array, d: Array, rec: Recurrent) -> Transitions:
    """The transitions of the linearised steps from the structured Jacobian ``(c, d)``
    (:meth:`fpbench.Cell.linearise`): for ``transition == "full"`` the Jacobians ``(..., S,
    S)``, or a diagonal cell's per-unit blocks ``(..., H, P, P)`` (never ``S x S``; with
    ``P = 1`` they are the diagonal, ``(..., S)``); else the diagonals ``(..., S)``."""
    xp = ops.xp
    if transition != "full":
        return structured.diagonal(xp, c, d, rec.diag), False, 0
    if not rec.diagonal:
        eye = ops.eye(rec.blocks.shape[-1], c)
        return structured.full(xp, c, d, rec.blocks, eye, ops.gate_product), True, 0
    P = c.shape[-2]
    U = structured.units(xp, c, d, rec.diag)
    return (U, True, P) if P > 1 else (U[..., 0, 0], False, 0)


def linearised(ops: Ops, cell: Cell, transition: str, Sp: Array, gi: Array, rec: Recurrent):
    """The linearised steps at the previous states ``Sp``: ``((A, full, units), b)`` with the
    transitions of :func:`transitions` (the Jacobians ``(T, B, S, S)``, a diagonal cell's
    per-unit blocks, or the diagonals ``(T, B, S)``) and ``b_t = f(Sp_t) - A_t Sp_t``, except
    ``b_0 = f(s_0)``; ``b (T, B, S)``, unit-major ``(T, B, H, P)`` when ``units``."""
    xp = ops.xp
    wh = None if rec.diagonal else rec.hidden(xp, Sp)  # a diagonal cell's gh is its vector
    f, c, d = cell.linearise(xp, Sp, gi, rec.preactivation(xp, Sp, wh))
    A, full, units = transitions(ops, transition, c, d, rec)
    if full:  # J s without forming J (a diagonal cell's W_g h only here, where it is used)
        b = f - structured.apply(xp, c, d, rec.hidden(xp, Sp) if wh is None else wh, Sp)
    else:
        b = f - A * Sp
    b = ops.with_first(b, f[0])
    return (A, full, units), (structured.to_units(xp, b, units) if units else b)
