"""ELK's damped step as a parallel Kalman filter and Rauch-Tung-Striebel smoother: the
in-place :func:`_kalman_smoother` (the forward solves) and the functional
:func:`_kalman_smoother_diff` (what autograd differentiates).

ELK and quasi-ELK (damping > 0). The damped step ``min sum_t |s_t - A_t s_{t-1} - b_t|^2 +
damping sum_t |s_t - y_t|^2`` (``y`` the current iterate) is the smoothing problem of a
linear-Gaussian model with dynamics noise ``I`` and observations ``y_t`` of noise ``I /
damping``. :func:`_kalman_smoother` solves it exactly and in parallel: the Kalman filter
as an associative scan of Särkkä & García-Fernández's filtering elements ``(A, b, C, eta,
J)`` (:func:`_associative_scan`, odd/even, over time with the batch as a batch dimension),
then the Rauch-Tung-Striebel smoother as a reverse affine scan ``m^s_t = E_t m^s_{t+1} +
g_t`` (:class:`_Scan` on the time-reversed sequences). One code path serves both: the
full transitions use matrix products and batched solves (:class:`_FullAlgebra`),
quasi-ELK's diagonal ones the same formulas elementwise (:class:`_DiagonalAlgebra`: every
state component is its own scalar Kalman filter). ``damping = 0`` runs Newton's
(quasi-Newton's) update itself, as the reference does: the smoother would reach the same
states, but its covariances grow without bound on expansive problems.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .scan import Algebra, _affine_op, _associative_scan, _DiagonalAlgebra, _FullAlgebra, _Scan


def _kalman_op(
    alg: Algebra,
) -> Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], list[torch.Tensor]]:
    """The associative operator of the parallel Kalman filter (Särkkä & García-Fernández,
    2021) on elements ``(A, b, C, eta, J)``: an element is the conditional density of a
    state given the state ``A``-steps before and the observations in between (``A, b, C``)
    and the likelihood of those observations as a function of that earlier state (``eta,
    J``); composing ``earlier o later``, with ``M = I + C_1 J_2``:

        A = A_2 M^-1 A_1              b = A_2 M^-1 (b_1 + C_1 eta_2) + b_2
        C = A_2 M^-1 C_1 A_2^T + C_2   eta = A_1^T M^-T (eta_2 - J_2 b_1) + eta_1
        J = A_1^T M^-T J_2 A_1 + J_1
    """

    def op(left: Sequence[torch.Tensor], right: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        A1, b1, C1, e1, J1 = left
        A2, b2, C2, e2, J2 = right
        M = alg.add_eye(alg.mm(C1, J2))
        Z, w, V = alg.solve(M, A1, b1 + alg.mv(C1, e2), C1)  # M^-1 A_1, M^-1 (..), M^-1 C_1
        Zt = alg.t(Z)  # = A_1^T M^-T
        return [
            alg.mm(A2, Z),
            alg.mv(A2, w) + b2,
            alg.mm(alg.mm(A2, V), alg.t(A2)) + C2,
            alg.mv(Zt, e2 - alg.mv(J2, b1)) + e1,
            alg.mm(alg.mm(Zt, J2), A1) + J1,
        ]

    return op


def _kalman_smoother(
    A: torch.Tensor, b: torch.Tensor, y: torch.Tensor, damping: float, full: bool, scan: _Scan
) -> torch.Tensor:
    """ELK's damped step: the minimiser of ``sum_t |s_t - A_t s_{t-1} - b_t|^2 + damping
    sum_t |s_t - y_t|^2``, by a parallel Kalman filter and RTS smoother.

    Args:
        A: ``(B, T, S, S)`` full or ``(B, T, S)`` diagonal transitions, batch-major, with
            ``A[:, 0] = 0`` and the known ``s0`` folded into ``b[:, 0] = f(s0)``. Overwritten.
        b, y: ``(B, T, S)`` offsets (overwritten) and observations (the current iterate).
        scan: a :class:`_Scan` of ``N = B*T`` and the same kind, for the smoother.
    Returns:
        ``(B, T, S)`` smoothed means.
    """
    alg: Algebra = _FullAlgebra if full else _DiagonalAlgebra
    m, P = _kalman_filter(alg, A, b, y, damping)  # filtered means, covariances
    # RTS smoother: m^s_t = E_t m^s_{t+1} + g_t, E_t = P_t A_{t+1}^T (A_{t+1} P_t A_{t+1}^T + I)^-1,
    # g_t = m_t - E_t (A_{t+1} m_t + b_{t+1}); at t = T: E = 0, g = m_T.
    An, mk = A[:, 1:], m[:, :-1]
    AP = alg.mm(An, P[:, :-1])
    E = alg.t(alg.solve(alg.add_eye(alg.mm(AP, alg.t(An))), AP)[0])
    g = mk - alg.mv(E, alg.mv(An, mk) + b[:, 1:])
    # ... a reverse affine recurrence: the forward scan on the time-reversed sequences.
    A[:, 0] = 0.0
    A[:, 1:] = E.flip(1)
    b[:, 0] = m[:, -1]
    b[:, 1:] = g.flip(1)
    B, T = b.shape[:2]
    scan(A.view(B * T, *A.shape[2:]), b.view(B * T, -1))
    return b.flip(1)


def _kalman_filter(alg: Algebra, A: torch.Tensor, b: torch.Tensor, y: torch.Tensor, damping: float):
    """The parallel Kalman filter of the damped step: ``(filtered means, covariances)``,
    ``(B, T, ...)`` batch-major, by one associative scan (no in-place writes)."""
    nu, kappa = 1.0 / (1.0 + damping), damping / (1.0 + damping)
    # Filtering elements of observing y_t with noise I/damping after dynamics noise I: the
    # gain is kappa * I, so (I - K) = nu * I. With A_1 = 0 the first is the exact prior too.
    At = alg.t(A)
    elems = [
        nu * A,
        nu * b + kappa * y,
        alg.scaled_eye(b, nu),
        kappa * alg.mv(At, y - b),
        kappa * alg.mm(At, A),
    ]
    _, m, P, _, _ = _associative_scan(_kalman_op(alg), elems)
    return m, P


def _kalman_smoother_diff(A: torch.Tensor, b: torch.Tensor, y: torch.Tensor, damping: float, full: bool):
    """:func:`_kalman_smoother` written functionally (no in-place writes, no ``_Scan``), so
    autograd differentiates through it: the unrolled backward of ELK and quasi-ELK.
    ``A, b, y (B, T, ...)`` batch-major with ``A[:, 0] = 0``; returns the smoothed means."""
    alg: Algebra = _FullAlgebra if full else _DiagonalAlgebra
    m, P = _kalman_filter(alg, A, b, y, damping)
    An, mk = A[:, 1:], m[:, :-1]
    AP = alg.mm(An, P[:, :-1])
    E = alg.t(alg.solve(alg.add_eye(alg.mm(AP, alg.t(An))), AP)[0])
    g = mk - alg.mv(E, alg.mv(An, mk) + b[:, 1:])
    Ar = torch.cat([torch.zeros_like(A[:, :1]), E.flip(1)], 1)
    br = torch.cat([m[:, -1:], g.flip(1)], 1)
    return _associative_scan(_affine_op(alg), [Ar, br])[1].flip(1)
