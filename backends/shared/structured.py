"""The Jacobian of a step from a cell's structured form (:meth:`fpbench.cells.Cell.linearise`):

    J[p, q] = sum_g diag(c[g, p]) W_g [q == 0] + diag(d[p, q]),

``c (..., g, P, H)``, ``d (..., P, P, H)``, ``W_g`` the gate blocks of ``W_hh``: ``J s``
without forming ``J``, the full ``J`` (Newton, ELK) and its diagonal (quasi-Newton).

A diagonal cell (:attr:`fpbench.Cell.recurrence`, ``W_g = diag(a_g)``) couples only the
``P`` parts of one unit: its full Jacobian is :func:`units`, one ``P x P`` block per unit
acting on unit-major states (:func:`to_units`), never ``S x S``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Array = Any


def apply(xp: Any, c: Array, d: Array, wh: Array, s: Array) -> Array:
    """``J s`` without forming ``J``: ``wh (..., gH)`` holds ``W_g h`` of every gate (the
    product the step computed anyway), ``s (..., P*H)`` the state. Returns ``(..., P*H)``."""
    g, P, H = c.shape[-3:]
    # Sums written out over the (few) gates and parts: XLA's CPU fusion of a reshape and a
    # reduction over the gate axis is much slower.
    parts = [
        sum(c[..., k, p, :] * wh[..., k * H : (k + 1) * H] for k in range(g))
        + sum(d[..., p, q, :] * s[..., q * H : (q + 1) * H] for q in range(P))
        for p in range(P)
    ]
    return parts[0] if P == 1 else xp.concatenate(parts, -1)


def gates_einsum(xp: Any, c: Array, blocks: Array) -> Array:
    """``sum_g diag(c[g, p]) W_g``: ``c (..., g, P, H)``, ``blocks (g, H, H)`` -> ``(..., P, H,
    H)``, as one contraction (torch's and NumPy's faster form)."""
    return xp.einsum("...gpi,gij->...pij", c, blocks)


def gates_summed(xp: Any, c: Array, blocks: Array) -> Array:
    """:func:`gates_einsum` as a sum over the (few) gates of broadcast products (XLA's
    faster form on the CPU: it fuses them, where its contraction does not)."""
    return sum(c[..., k, :, :, None] * blocks[k] for k in range(c.shape[-3]))


def full(
    xp: Any, c: Array, d: Array, blocks: Array, eye: Array, gate_product: Callable = gates_einsum
) -> Array:
    """``J (..., P*H, P*H)``; ``blocks (g, H, H)`` are the ``W_g``, ``eye`` the ``H x H``
    identity; ``gate_product`` the framework's form of ``sum_g diag(c[g, p]) W_g``
    (:attr:`~backends.shared.ops.Ops.gate_product`)."""
    P, H = c.shape[-2:]
    gate = gate_product(xp, c, blocks)  # (..., P, H, H)
    diag = d[..., None] * eye  # (..., P, Q, H, H)
    if P == 1:  # (elman, gru): no block layout to assemble
        return diag[..., 0, 0, :, :] + gate[..., 0, :, :]
    J = xp.concatenate([diag[..., :1, :, :] + gate[..., None, :, :], diag[..., 1:, :, :]], -3)
    return xp.swapaxes(J, -3, -2).reshape(*J.shape[:-4], P * H, P * H)


def diagonal(xp: Any, c: Array, d: Array, w_diag: Array) -> Array:
    """``diag(J) (..., P*H)``, elementwise; ``w_diag (g, H)`` are the diagonals of the
    ``W_g``. Only the ``h`` part (``p = q = 0``) sees the gates."""
    g, P, _ = c.shape[-3:]
    h_part = d[..., 0, 0, :] + sum(c[..., k, 0, :] * w_diag[k] for k in range(g))
    return xp.concatenate([h_part] + [d[..., p, p, :] for p in range(1, P)], -1)


def units(xp: Any, c: Array, d: Array, w_diag: Array) -> Array:
    """A diagonal cell's Jacobian per unit (:meth:`fpbench.Cell.unit_jacobian`): ``(..., H, P,
    P)``, entry ``[i, p, q] = d s'[p, i] / d s[q, i]``, from ``c (..., g, P, H)``, ``d (..., P,
    P, H)`` and the recurrent vectors ``w_diag (g, H)`` (``W_g = diag(a_g)``)."""
    g, P, _ = c.shape[-3:]
    h_column = d[..., :, 0, :] + sum(c[..., k, :, :] * w_diag[k] for k in range(g))  # (..., P, H)
    J = xp.stack([h_column] + [d[..., :, q, :] for q in range(1, P)], -2)  # (..., P, Q, H)
    return xp.moveaxis(J, -1, -3)


def to_units(xp: Any, v: Array, parts: int) -> Array:
    """States ``(..., P H)`` (parts stacked) in the unit-major layout ``(..., H, P)`` that
    :func:`units` acts on."""
    return xp.swapaxes(v.reshape(*v.shape[:-1], parts, -1), -1, -2)


def from_units(xp: Any, v: Array) -> Array:
    """The inverse of :func:`to_units`: ``(..., H, P)`` -> ``(..., P H)``."""
    return xp.swapaxes(v, -1, -2).reshape(*v.shape[:-2], -1)
