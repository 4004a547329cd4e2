"""The in-place fast path of :func:`backends.shared.linear.kalman_smoother` (ELK's damped
step, the forward solves): the shared filter and smoother gains, then the smoother's reverse
recurrence by the in-place :class:`~.scan._Scan` in the solve's own buffers.

The damped step ``min sum_t |s_t - A_t s_{t-1} - b_t|^2 + damping sum_t |s_t - y_t|^2``
(``y`` the current iterate) is the smoothing problem of a linear-Gaussian model
(:mod:`backends.shared.linear`). The filter is the shared associative scan
(:func:`~backends.shared.linear.kalman_filter`, run with :data:`~.ops.OPS`); the
Rauch-Tung-Striebel smoother ``m^s_t = G_t m^s_{t+1} + g_t`` is the same affine recurrence
as Newton's, reversed, so it runs on the time-reversed sequences through :class:`_Scan`,
all B sequences as one of length ``B*T``. ``damping = 0`` runs Newton's (quasi-Newton's)
update itself, as the reference does: the smoother would reach the same states, but its
covariances grow without bound on expansive problems.
"""

from __future__ import annotations

import torch

from backends.shared.linear import kalman_filter, smoother_recurrence

from .ops import OPS
from .scan import _Scan


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
    A_tm, b_tm = A.transpose(0, 1), b.transpose(0, 1)  # the shared layer is time-major
    m, P = kalman_filter(OPS, full, A_tm, b_tm, y.transpose(0, 1), damping)
    G, g = smoother_recurrence(OPS, full, A_tm, b_tm, m, P)
    # the reverse recurrence as the forward one on the time-reversed sequences (G[-1] = 0
    # restarts the composition for each sequence)
    A.copy_(G.flip(0).transpose(0, 1))
    b.copy_(g.flip(0).transpose(0, 1))
    B, T = b.shape[:2]
    scan(A.view(B * T, *A.shape[2:]), b.view(B * T, -1))
    return b.flip(1)
