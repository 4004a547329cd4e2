"""Linear recurrences over time, parallel: the composition of affine maps (Newton's scan)
and ELK's damped step, a Kalman filter and RTS smoother, both as associative scans.

Arrays are time-major: ``A (T, ..., S, S)`` (full) or ``(T, ..., S)`` (diagonal),
``b (T, ..., S)``.

ELK's damped step minimises ``sum_t |s_t - A_t s_{t-1} - b_t|^2 + damping sum_t |s_t - y_t|^2``
(``y`` the current iterate, ``s_0`` known): the smoothed means of the linear-Gaussian model
``s_t = A_t s_{t-1} + b_t + N(0, I)``, ``y_t = s_t + N(0, I / damping)``. With observation
noise a multiple of ``I``, one step's Kalman gain is ``kappa I``, ``kappa = damping / (1 +
damping)``.

Filter (Sarkka & Garcia-Fernandez 2021, parallel form): element t is the conditional
``p(s_t | s_{t-1}, y_t) = N(E s_{t-1} + e, C)`` with the likelihood of ``y_t`` as a function
of ``s_{t-1}`` in information form ``(eta, J)``:
``E = (1 - kappa) A_t``, ``e = b_t + kappa (y_t - b_t)``, ``C = (1 - kappa) I``,
``eta = kappa A_t^T (y_t - b_t)``, ``J = kappa A_t^T A_t``; the first takes ``A_1 = 0``
(``s_0`` is known). Two elements (1 earlier, 2 later) combine with ``M = I + C1 J2`` as
``E = E2 M^-1 E1``, ``e = E2 M^-1 (e1 + C1 eta2) + e2``, ``C = E2 M^-1 C1 E2^T + C2``,
``eta = E1^T M^-T (eta2 - J2 e1) + eta1``, ``J = E1^T M^-T J2 E1 + J1``; the prefix up to t
holds the filtered mean and covariance ``(m_t, P_t)``.
Smoother (Rauch-Tung-Striebel): ``m^s_t = G_t m^s_{t+1} + (m_t - G_t (A_{t+1} m_t + b_{t+1}))``,
``G_t = P_t A_{t+1}^T (A_{t+1} P_t A_{t+1}^T + I)^-1``, ``m^s_T = m_T``: an affine recurrence
backwards in time, the same composition as Newton's scan, reversed. With ``damping = 0`` the
filter is Newton's recurrence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .ops import Ops

Array = Any


def mv(xp: Any, A: Array, v: Array) -> Array:
    """``A v`` for ``A (..., n, m)``, ``v (..., m)``."""
    return xp.matmul(A, v[..., None])[..., 0]


def compose(xp: Any, full: bool) -> Callable:
    """``(A1, b1) then (A2, b2) = (A2 A1, A2 b1 + b2)``: full ``A (..., S, S)`` or diagonal
    ``A (..., S)`` (elementwise)."""

    def full_op(earlier, later):
        (A1, b1), (A2, b2) = earlier, later
        return xp.matmul(A2, A1), mv(xp, A2, b1) + b2

    def diagonal_op(earlier, later):
        (a1, b1), (a2, b2) = earlier, later
        return a2 * a1, a2 * b1 + b2

    return full_op if full else diagonal_op


def linear_recurrence(ops: Ops, full: bool, A: Array, b: Array, reverse: bool = False) -> Array:
    """``s_t = A_t s_{t-1} + b_t`` from ``s_{-1} = 0`` (``A_0`` never enters), or with
    ``reverse`` ``s_t = A_t s_{t+1} + b_t`` from the end (``A_{T-1}`` never enters)."""
    return ops.scan(compose(ops.xp, full), (A, b), reverse)[1]


def _filter_op(ops: Ops, full: bool) -> Callable:
    """Combine two filter elements ``(E, e, C, eta, J)`` (module docstring)."""
    xp = ops.xp

    def full_op(earlier, later):
        E1, e1, C1, eta1, J1 = earlier
        E2, e2, C2, eta2, J2 = later
        S = E1.shape[-1]
        M = ops.eye(S, E1) + xp.matmul(C1, J2)
        X = ops.solve(M, xp.concatenate([E1, C1, (e1 + mv(xp, C1, eta2))[..., None]], -1))
        Zt = xp.swapaxes(X[..., :S], -1, -2)  # E1^T M^-T: one factorisation serves both sides
        return (
            xp.matmul(E2, X[..., :S]),
            mv(xp, E2, X[..., 2 * S]) + e2,
            xp.matmul(xp.matmul(E2, X[..., S : 2 * S]), xp.swapaxes(E2, -1, -2)) + C2,
            mv(xp, Zt, eta2 - mv(xp, J2, e1)) + eta1,
            xp.matmul(xp.matmul(Zt, J2), E1) + J1,
        )

    def diagonal_op(earlier, later):
        E1, e1, C1, eta1, J1 = earlier
        E2, e2, C2, eta2, J2 = later
        inv = 1.0 / (1.0 + C1 * J2)
        return (
            E2 * inv * E1,
            E2 * inv * (e1 + C1 * eta2) + e2,
            E2 * inv * C1 * E2 + C2,
            E1 * inv * (eta2 - J2 * e1) + eta1,
            E1 * inv * J2 * E1 + J1,
        )

    return full_op if full else diagonal_op


def kalman_smoother(ops: Ops, full: bool, A: Array, b: Array, y: Array, damping: Array) -> Array:
    """ELK's damped step (module docstring): ``A`` with ``A[0] = 0``, ``b, y (T, ..., S)``
    with ``b[0] = f(s_0)``; ``damping`` a scalar (a runtime one in JAX). Returns the smoothed
    means ``(T, ..., S)``."""
    G, g = smoother_recurrence(ops, full, A, b, *kalman_filter(ops, full, A, b, y, damping))
    return linear_recurrence(ops, full, G, g, reverse=True)


def kalman_filter(ops: Ops, full: bool, A: Array, b: Array, y: Array, damping: Array):
    """The filter of :func:`kalman_smoother` by one associative scan: the filtered means
    ``m (T, ..., S)`` and covariances ``P`` (shaped as ``A``)."""
    xp = ops.xp
    kappa = damping / (1.0 + damping)
    r = y - b
    if full:
        At = xp.swapaxes(A, -1, -2)
        C = xp.broadcast_to((1.0 - kappa) * ops.eye(A.shape[-1], A), A.shape)
        elems = ((1.0 - kappa) * A, b + kappa * r, C, kappa * mv(xp, At, r), kappa * xp.matmul(At, A))
    else:
        C = xp.zeros_like(A) + (1.0 - kappa)
        elems = ((1.0 - kappa) * A, b + kappa * r, C, kappa * A * r, kappa * A * A)
    _, m, P, _, _ = ops.scan(_filter_op(ops, full), elems, False)
    return m, P


def smoother_recurrence(ops: Ops, full: bool, A: Array, b: Array, m: Array, P: Array):
    """The RTS smoother as the reverse affine recurrence ``m^s_t = G_t m^s_{t+1} + g_t``:
    ``(G, g)`` shaped as ``(A, b)``, from the filtered ``m``, ``P``; ``G_{T-1} = 0``,
    ``g_{T-1} = m_{T-1}``."""
    xp = ops.xp
    F, Pt = A[1:], P[:-1]
    if full:
        FP = xp.matmul(F, xp.swapaxes(Pt, -1, -2))  # F P^T, P symmetric up to rounding
        pred_cov = xp.matmul(FP, xp.swapaxes(F, -1, -2)) + ops.eye(A.shape[-1], A)
        G = xp.swapaxes(ops.solve(pred_cov, FP), -1, -2)  # P F^T (F P F^T + I)^-1
        g = m[:-1] - mv(xp, G, mv(xp, F, m[:-1]) + b[1:])
    else:
        G = Pt * F / (F * F * Pt + 1.0)
        g = m[:-1] - G * (F * m[:-1] + b[1:])
    G = xp.concatenate([G, xp.zeros_like(A[:1])])  # m^s_T = m_T (G is empty at T = 1)
    return G, xp.concatenate([g, m[-1:]])
