"""Numba kernels of ELK and quasi-ELK: the damped step by a Kalman filter and smoother.

:func:`damped_full` (ELK: Cholesky-factored ``S x S`` blocks, parallel over the batch) and
:func:`damped_diagonal` (quasi-ELK: scalar lanes, parallel over batch x state).

The damped solvers (ELK, quasi-ELK) solve their step for the *correction* ``delta = H_new - Y``
to the current iterate ``Y``: ``min sum_t |delta_t - A_t delta_{t-1} - e_t|^2 + damping
|delta_t|^2`` with ``e_t = F(Y)_t - Y_t``, which has the same minimiser as the problem in
docs/design.md ("ELK") but a right-hand side that vanishes at the fixed point (so rounding in the solve
does not stop convergence). Its normal equations are block tridiagonal; their forward
elimination is the Kalman filter in information form, and the back substitution is the
Rauch-Tung-Striebel smoother (see :func:`damped_full`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kernels_cells import _JIT, _block, _nan_max, _reduce_max

# --------------------------------------------------------------------------- ELK / quasi-ELK
#
# The damped step for the correction delta (module docstring), 0-based in t with
# delta_{-1} = 0, has the block-tridiagonal normal equations
#
#     -A_t delta_{t-1} + D_t delta_t - A_{t+1}^T delta_{t+1} = r_t,
#     D_t = (1 + damping) I + A_{t+1}^T A_{t+1},   r_t = e_t - A_{t+1}^T e_{t+1}
#
# (the A_{T} terms absent at t = T - 1). Forward elimination (the information filter):
# D'_0 = D_0, r'_0 = r_0, D'_t = D_t - A_t D'^{-1}_{t-1} A_t^T, r'_t = r_t + A_t D'^{-1}_{t-1} r'_{t-1};
# back substitution (the smoother): delta_t = D'^{-1}_t (r'_t + A_{t+1}^T delta_{t+1}).
# Every D'_t is symmetric positive definite (>= damping I) for damping > 0. This is the same
# minimiser as the reference's covariance-form Kalman filter + RTS smoother, with a cheaper
# smoother pass (two triangular solves per step). The elimination is sequential in t,
# so these kernels run in parallel over independent systems: the batch for ELK (one
# S x S-block system per sequence) and batch x state components for quasi-ELK (each a
# scalar system; lanes are contiguous in memory, so each thread's inner loop vectorises).


@njit(parallel=True, **_JIT)
def damped_diagonal(a, e, Dp, y, out, lam, nblk, rhs=False):
    """Quasi-ELK's damped step over ``L = B*S`` independent scalar lanes.

    ``a, e, Dp: (T, L)``: diagonal transitions, right-hand sides ``e_t = F(Y)_t - Y_t``
    (destroyed: they become ``r'_t``) and scratch for ``D'_t``; ``y, out: (T, L)`` the
    current iterate and the new one, ``out = y + delta``; ``lam > 0`` the damping. Returns
    ``max |delta|`` (NaN -> inf). With ``rhs``, ``e`` holds ``r_t`` itself: the solve of
    the normal equations for any right-hand side (the unrolled backward's adjoint).
    """
    T, L = e.shape
    one = e.dtype.type(1.0) + lam
    maxes = np.zeros(nblk, dtype=e.dtype)
    for blk in prange(nblk):
        lo, hi = _block(L, nblk, blk)
        for t in range(T):
            D, r = Dp[t], e[t]
            for j in range(lo, hi):
                D[j] = one
            if t + 1 < T:
                an, en = a[t + 1], e[t + 1]
                if rhs:
                    for j in range(lo, hi):
                        D[j] += an[j] * an[j]
                else:
                    for j in range(lo, hi):
                        D[j] += an[j] * an[j]
                        r[j] -= an[j] * en[j]
            if t > 0:
                at, Dprev, rprev = a[t], Dp[t - 1], e[t - 1]
                for j in range(lo, hi):
                    g = at[j] / Dprev[j]
                    D[j] -= g * at[j]
                    r[j] += g * rprev[j]
        delta = np.zeros(hi - lo, dtype=e.dtype)
        m = e.dtype.type(0.0)
        for t in range(T - 1, -1, -1):
            D, r, yt, o = Dp[t], e[t], y[t], out[t]
            an = a[min(t + 1, T - 1)]
            nxt = e.dtype.type(1.0) if t + 1 < T else e.dtype.type(0.0)
            for j in range(lo, hi):
                v = (r[j] + nxt * an[j] * delta[j - lo]) / D[j]
                delta[j - lo] = v
                o[j] = yt[j] + v
                m = _nan_max(m, abs(v))
        maxes[blk] = m
    return _reduce_max(maxes)


@njit(**_JIT)
def _cholesky(M):
    """In-place lower Cholesky factor of the SPD ``M`` (upper triangle left as is)."""
    n = M.shape[0]
    for j in range(n):
        s = M[j, j]
        for k in range(j):
            s -= M[j, k] * M[j, k]
        M[j, j] = np.sqrt(s)
        inv = M.dtype.type(1.0) / M[j, j]
        for i in range(j + 1, n):
            s = M[i, j]
            for k in range(j):
                s -= M[i, k] * M[j, k]
            M[i, j] = s * inv


@njit(**_JIT)
def _forward_solve(Lf, v):
    """``v <- L^{-1} v`` (``L`` lower triangular, row-major)."""
    for i in range(v.shape[0]):
        s = v[i]
        for k in range(i):
            s -= Lf[i, k] * v[k]
        v[i] = s / Lf[i, i]


@njit(**_JIT)
def _backward_solve(Lf, v):
    """``v <- L^{-T} v``, column-oriented: row ``i`` of ``L`` is contiguous."""
    for i in range(v.shape[0] - 1, -1, -1):
        v[i] = v[i] / Lf[i, i]
        vi = v[i]
        for k in range(i):
            v[k] -= Lf[i, k] * vi


@njit(**_JIT)
def _gram_update(D, r, M, v, sign):
    """``D += sign M^T M`` and ``r -= sign M^T v``, by rows of ``M`` (axpys)."""
    S = M.shape[0]
    sg = D.dtype.type(sign)
    for j in range(S):
        Mj = M[j]
        for p in range(S):
            mp = sg * Mj[p]
            Dp = D[p]
            for q in range(S):
                Dp[q] += mp * Mj[q]
        vj = sg * v[j]
        for p in range(S):
            r[p] -= vj * Mj[p]


@njit(parallel=True, **_JIT)
def damped_full(AT, e, Lbuf, y, out, lam, rhs=False):
    """ELK's damped step, one block-tridiagonal system per sequence, in parallel over B.

    ``AT: (T, B, S, S)`` transposed Jacobians (``AT[t, b] = A_t^T``), ``e: (T, B, S)``
    right-hand sides ``e_t = F(Y)_t - Y_t`` (destroyed: they become ``z_t = L_t^{-1} r'_t``),
    ``Lbuf: (T, B, S, S)`` receives the Cholesky factors ``L_t`` of ``D'_t``; ``y, out:
    (T, B, S)`` the iterate and ``out = y + delta``. Returns ``max |delta|`` (NaN -> inf).
    With ``rhs``, ``e`` holds ``r_t`` itself (as :func:`damped_diagonal`).
    """
    T, B, S = e.shape
    dt = e.dtype
    one, zero = dt.type(1.0) + lam, dt.type(0.0)
    maxes = np.zeros(B, dtype=dt)
    for b in prange(B):
        X = np.empty((S, S), dtype=dt)
        v = np.empty(S, dtype=dt)
        nothing = np.zeros(S, dtype=dt)
        for t in range(T):
            D, r = Lbuf[t, b], e[t, b]
            for p in range(S):
                for q in range(S):
                    D[p, q] = zero
                D[p, p] = one
            if t + 1 < T:  # D += A^T A (rows of A are the columns of AT), r -= A^T e_{t+1}
                An, en = AT[t + 1, b], e[t + 1, b]
                for j in range(S):
                    for p in range(S):
                        X[j, p] = An[p, j]
                _gram_update(D, r, X, nothing if rhs else en, 1.0)
            if t > 0:  # X = L_{t-1}^{-1} A_t^T; D -= X^T X; r += X^T z_{t-1}
                Lp, At, zp = Lbuf[t - 1, b], AT[t, b], e[t - 1, b]
                for i in range(S):
                    Xi = X[i]
                    Xi[:] = At[i]
                    for k in range(i):
                        lik = Lp[i, k]
                        Xk = X[k]
                        for q in range(S):
                            Xi[q] -= lik * Xk[q]
                    inv = dt.type(1.0) / Lp[i, i]
                    for q in range(S):
                        Xi[q] *= inv
                _gram_update(D, r, X, zp, -1.0)
            _cholesky(D)
            _forward_solve(D, r)  # r becomes z_t
        m = zero
        for t in range(T - 1, -1, -1):  # delta_t = L^{-T} (z_t + L^{-1} A_{t+1}^T delta_{t+1})
            Lt = Lbuf[t, b]
            if t + 1 < T:
                An = AT[t + 1, b]
                for p in range(S):
                    acc = zero
                    for j in range(S):
                        acc += An[p, j] * v[j]
                    X[0, p] = acc
                _forward_solve(Lt, X[0])
                for p in range(S):
                    v[p] = e[t, b, p] + X[0, p]
            else:
                v[:] = e[t, b]
            _backward_solve(Lt, v)
            yt, o = y[t, b], out[t, b]
            for p in range(S):
                o[p] = yt[p] + v[p]
                m = _nan_max(m, abs(v[p]))
        maxes[b] = m
    return _reduce_max(maxes)
