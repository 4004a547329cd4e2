"""The implicit backward: the adjoint ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` at the forward's
states, parallel in time, and the gradients of the parameters, inputs and initial state.

By transition: one reverse scan with the transposed Jacobians (``"full"``: Newton, ELK,
exact), Jacobi on the adjoint (``"none"``), or diagonal-preconditioned adjoint iterations
(``"diagonal"``: each an elementwise reverse scan); the iterations run to the forward's
``tol`` and at most ``min(max_iters, T)`` times (T of them give the exact adjoint).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fpbench.cells import Cell

from . import structured
from .iteration import Transitions, later, max_change, transitions
from .linear import linear_recurrence
from .ops import Ops, Recurrent

Array = Any


def vjp_steps(xp: Any, cell: Cell, Sp: Array, gi: Array, gh: Array, lam: Array, rec: Recurrent):
    """The VJP of every step ``f(Sp_t, x_t)`` at once for cotangents ``lam (T, B, S)``:
    ``(J_t^T lam_t (T, B, S), dgi (T, B, gH), dgh (T, B, gH))``; ``gh`` are the steps'
    hidden preactivations ``W_hh h_{t-1} + b_hh``. For a diagonal cell ``ds`` is already all
    of ``J^T lam`` and ``dgh (T, B, (g + peepholes) H)`` the per-row gradient of its vector
    ``weight_hh`` (:meth:`fpbench.Cell.vjp_preact`)."""
    ds, dgi, dgh = cell.vjp_preact(xp, Sp, gi, gh, lam)
    if rec.diagonal:
        return ds, dgi, dgh
    H = rec.w_hh.shape[-1]
    back = ds[..., :H] + xp.matmul(dgh, rec.w_hh)
    return (back if ds.shape[-1] == H else xp.concatenate([back, ds[..., H:]], -1)), dgi, dgh


def full_adjoint(ops: Ops, cell: Cell, Sp: Array, gi: Array, gh: Array, rec: Recurrent, g: Array) -> Array:
    """The exact adjoint by one reverse scan over ``J_{t+1}^T``: ``lam (T, B, S)``; ``gh``
    the steps' hidden preactivations (:func:`hidden_preactivations`). A diagonal cell's scan
    runs over its per-unit blocks on unit-major cotangents (:func:`next_jacobians_t`)."""
    xp = ops.xp
    A, full, units = next_jacobians_t(ops, cell, Sp, gi, gh, rec)
    if not units:
        return linear_recurrence(ops, full, A, g, reverse=True)
    return structured.from_units(xp, linear_recurrence(ops, full, A, structured.to_units(xp, g, units), True))


def hidden_preactivations(xp: Any, Sp: Array, rec: Recurrent) -> Array:
    """``gh = W_hh h_{t-1} + b_hh (T, B, gH)`` of every step (a diagonal cell's vector
    ``weight_hh``, broadcast: :meth:`Recurrent.preactivation`): computed once by the caller
    and passed to the adjoint and the parameter products."""
    return rec.preactivation(xp, Sp)


def next_jacobians_t(ops: Ops, cell: Cell, Sp: Array, gi: Array, gh: Array, rec: Recurrent) -> Transitions:
    """The full adjoint's transitions ``J_{t+1}^T`` (0 at the last step), as
    :func:`~.iteration.transitions` gives them: ``(A, full, units)`` with ``A (T, B, S, S)``
    for a dense cell, a diagonal cell's transposed per-unit blocks ``(T, B, H, P, P)``
    (``units = P``), or with ``P = 1`` its diagonal ``(T, B, S)``."""
    xp = ops.xp
    _, c, d = cell.linearise(xp, Sp, gi, gh)
    J, full, units = transitions(ops, "full", c, d, rec)
    return later(xp, xp.swapaxes(J, -1, -2) if full else J), full, units


def adjoint_update(
    ops: Ops, cell: Cell, transition: str, Sp: Array, gi: Array, gh: Array, rec: Recurrent, g: Array
) -> Callable[[Array], tuple[Array, Array]]:
    """One adjoint iteration ``lam -> (lam_new, max |lam_new - lam|)`` for transition
    ``"none"`` (Jacobi on the adjoint) or ``"diagonal"`` (``lam_t = g_t + D_{t+1} lam_{t+1} +
    (J_{t+1} - D_{t+1})^T lam_{t+1}^old``, solved by an elementwise reverse scan)."""
    xp = ops.xp

    def jacobi(lam: Array) -> tuple[Array, Array]:
        new = g + later(xp, vjp_steps(xp, cell, Sp, gi, gh, lam, rec)[0])
        return new, max_change(xp, new, lam)

    if transition == "none":
        return jacobi
    _, c, d = cell.linearise(xp, Sp, gi, gh)
    diag = structured.diagonal(xp, c, d, rec.diag)
    d_next = later(xp, diag)  # D_{t+1}

    def preconditioned(lam: Array) -> tuple[Array, Array]:
        b = g + later(xp, vjp_steps(xp, cell, Sp, gi, gh, lam, rec)[0] - diag * lam)
        new = linear_recurrence(ops, False, d_next, b, reverse=True)
        return new, max_change(xp, new, lam)

    return preconditioned


def param_products(
    xp: Any, cell: Cell, Sp: Array, x: Array, gi: Array, gh: Array, lam: Array, rec: Recurrent, w_ih: Array
) -> tuple[dict[str, Array], Array, Array]:
    """``(dparams, dx (T, B, I), ds0 (B, S))`` from the adjoint ``lam (T, B, S)`` at the
    previous states ``Sp`` and input projection ``gi``: one batched VJP of every step and
    products over all (t, b); ``w_ih (gH, I)`` in torch layout."""
    dprev, dgi, dgh = vjp_steps(xp, cell, Sp, gi, gh, lam, rec)
    dgi2, dgh2 = dgi.reshape(-1, dgi.shape[-1]), dgh.reshape(-1, dgh.shape[-1])
    if rec.diagonal:  # weight_hh: per-row sums; b_hh acts as b_ih (Cell.recurrent_grads)
        d_hh = dgh2.sum(0), dgi2.sum(0)
    else:
        H = rec.w_hh.shape[-1]
        d_hh = xp.matmul(dgh2.T, Sp[..., :H].reshape(-1, H)), dgh2.sum(0)
    dparams = {
        "weight_ih": xp.matmul(dgi2.T, x.reshape(-1, x.shape[-1])),
        "weight_hh": d_hh[0],
        "bias_ih": dgi2.sum(0),
        "bias_hh": d_hh[1],
    }
    return dparams, xp.matmul(dgi, w_ih), dprev[0]
