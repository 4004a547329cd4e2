"""Numba kernels of the numba backend (imported lazily by :mod:`backends.numba`).

Layout: the states of an iterate live in one C-contiguous buffer ``S`` of shape
``(T + 1, B, H)`` whose first slab is ``h0``; then ``S[:-1]`` viewed as ``(T*B, H)`` is
the *previous* state of every step and ``S[1:]`` the states themselves, so Jacobi needs
no shifted copy. Kernels compute in the dtype of their arrays (float32 or float64:
constants are made with ``x.dtype.type`` so nothing is promoted to float64), and are
compiled once per dtype with ``cache=True``.

Parallel kernels take their block count ``nblk`` (the numba thread count) as an argument:
calling ``numba.get_num_threads()`` inside a ``parallel=True`` function makes it uncachable.
Cells are selected by an integer (``ELMAN``, ``GRU``) rather than by passing a function:
cached dispatch stays simple and the per-row branch costs nothing measurable.
Newton's Jacobians are stored **transposed** (``AT[k, i] = dF_i/dh_k``) so that every
matrix-vector and matrix-matrix product is an axpy over a contiguous row, which LLVM
vectorises without reassociating sums (we compile with ``fastmath=False``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.core.extending import overload

ELMAN = 0
GRU = 1
CELL_IDS = {"elman": ELMAN, "gru": GRU}

# error_model="numpy": IEEE division (inf/NaN, no ZeroDivisionError branch), which lets
# LLVM vectorise loops that divide.
_JIT = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")


# --------------------------------------------------------------------------- cell maths


def _tanh(x):
    """``tanh`` for the kernels (see the overload below)."""


@overload(_tanh, jit_options=_JIT)
def _tanh_ov(x):
    if x == types.float32:
        # numba's np.tanh is a scalar libm call that blocks vectorisation and dominates
        # every kernel; float32 uses the clamped odd rational approximation of Eigen and
        # XLA instead (max error 3.5e-7 on [-20, 20], about 4 ulp). float64 keeps libm.
        c = np.float32(7.99881172180175781)
        a1, a3, a5, a7, a9, a11, a13 = (
            np.float32(v)
            for v in (
                4.89352455891786e-03,
                6.37261928875436e-04,
                1.48572235717979e-05,
                5.12229709037114e-08,
                -8.60467152213735e-11,
                2.00018790482477e-13,
                -2.76076847742355e-16,
            )
        )
        b0, b2, b4, b6 = (
            np.float32(v)
            for v in (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
        )

        def tanh32(x):
            x = c if x > c else x  # selects, unlike min/max, vectorise; NaN stays NaN
            x = -c if x < -c else x
            x2 = x * x
            p = ((((((a13 * x2 + a11) * x2 + a9) * x2 + a7) * x2 + a5) * x2 + a3) * x2 + a1) * x
            q = ((b6 * x2 + b4) * x2 + b2) * x2 + b0
            return p / q

        return tanh32
    return lambda x: np.tanh(x)


@njit(**_JIT)
def _cell_row(cell, gi, gh, bhh, hp, out):
    """One state row ``out = f(hp, x)``: ``gi, gh, bhh: (gH,)`` (``gh = W_hh hp`` without
    bias), ``hp, out: (H,)``. The sigmoid is the overflow-free ``(1 + tanh(a/2)) / 2``
    of :func:`fpbench.cells.sigmoid`."""
    H = hp.shape[0]
    if cell == ELMAN:
        for j in range(H):
            out[j] = _tanh(gi[j] + gh[j] + bhh[j])
    else:
        half = hp.dtype.type(0.5)
        for j in range(H):
            r = half + half * _tanh(half * (gi[j] + gh[j] + bhh[j]))
            z = half + half * _tanh(half * (gi[H + j] + gh[H + j] + bhh[H + j]))
            n = _tanh(gi[2 * H + j] + r * (gh[2 * H + j] + bhh[2 * H + j]))
            out[j] = n + z * (hp[j] - n)  # (1 - z) n + z h


@njit(**_JIT)
def _nan_max(m, d):
    """Running maximum that turns NaN into +inf (a NaN would be lost by later ``>``)."""
    if d > m:
        return d
    if d != d:
        return np.inf
    return m


@njit(**_JIT)
def _block(n, nblk, k):
    """Bounds ``[lo, hi)`` of block ``k`` of ``nblk`` equal contiguous blocks of ``range(n)``."""
    return (n * k) // nblk, (n * (k + 1)) // nblk


# --------------------------------------------------------------------------- Jacobi / floor


@njit(**_JIT)
def hidden_projection(s_prev, whhT, gh):
    """``gh = s_prev @ whhT`` into a preallocated buffer (SciPy's BLAS through numba):
    ``s_prev: (N, H)``, ``whhT: (H, gH)``, ``gh: (N, gH)``."""
    np.dot(s_prev, whhT, gh)


@njit(parallel=True, **_JIT)
def cell_update(cell, gi, gh, bhh, s_old, s_new, B, nblk):
    """``S_new[1:] = F(S_old)`` over all ``N = T*B`` rows and the residual
    ``max |S_new[1:] - S_old[1:]|`` (per-thread maxima, then reduced; NaN -> inf).

    ``gi, gh: (N, gH)``, ``bhh: (gH,)``, ``s_old, s_new: (N + B, H)`` flat state buffers.
    """
    N, H = gi.shape[0], s_old.shape[1]
    maxes = np.zeros(nblk, dtype=s_old.dtype)
    for k in prange(nblk):
        lo, hi = _block(N, nblk, k)
        m = s_old.dtype.type(0.0)
        for i in range(lo, hi):
            out = s_new[B + i]
            _cell_row(cell, gi[i], gh[i], bhh, s_old[i], out)
            old = s_old[B + i]
            for j in range(H):
                m = _nan_max(m, abs(out[j] - old[j]))
        maxes[k] = m
    r = maxes[0]
    for k in range(1, nblk):
        r = _nan_max(r, maxes[k])
    return r


@njit(parallel=True, **_JIT)
def _floor_cells(cell, gi, gh, bhh, hp, out):
    N = gi.shape[0]
    for i in prange(N):
        _cell_row(cell, gi[i], gh[i], bhh, hp[i], out[i])


@njit(**_JIT)
def iteration_floor(cell, gi, hp, whhT, bhh, gh, out):
    """The plain floor of one Jacobi iteration: ``gh = hp @ whhT`` (BLAS) plus the cell's
    elementwise work ``out = f(hp, gi)`` over ``N = T*B`` rows in a ``prange`` loop."""
    np.dot(hp, whhT, gh)
    _floor_cells(cell, gi, gh, bhh, hp, out)


# --------------------------------------------------------------------------- Sequential


@njit(**_JIT)
def sequential(cell, gi, whhT, bhh, s, gh):
    """The recurrence ``S[t+1] = f(S[t], x_t)``, t = 0..T-1, with no allocation.

    ``gi: (T, B, gH)``, ``whhT: (H, gH)``, ``s: (T + 1, B, H)`` with ``s[0] = h0``,
    ``gh: (B, gH)`` scratch. The ``B x H x gH`` product is an axpy loop over rows of
    ``whhT`` (vectorised, and cheaper than a BLAS call at these sizes).
    """
    T, B, G = gi.shape
    H = s.shape[2]
    zero = s.dtype.type(0.0)
    for t in range(T):
        hp = s[t]
        for b in range(B):
            row = gh[b]
            for j in range(G):
                row[j] = zero
            for k in range(H):
                hk = hp[b, k]
                w = whhT[k]
                for j in range(G):
                    row[j] += hk * w[j]
            _cell_row(cell, gi[t, b], row, bhh, hp[b], s[t + 1, b])


# --------------------------------------------------------------------------- Newton


@njit(**_JIT)
def _gate_coeffs(cell, gi, gh, bhh, hp, f, c):
    """Row ``f = f(hp)`` and the coefficients of its Jacobian, ``c: (4, H)``:
    ``dF_i/dh_k = c0_i Wr[i,k] + c1_i Wz[i,k] + c2_i Wn[i,k] + c3_i [i == k]``
    (elman: ``c0_i W[i,k]`` only), following :func:`fpbench.cells.jacobian`."""
    H = hp.shape[0]
    one = hp.dtype.type(1.0)
    half = hp.dtype.type(0.5)
    if cell == ELMAN:
        for j in range(H):
            y = _tanh(gi[j] + gh[j] + bhh[j])
            f[j] = y
            c[0, j] = one - y * y
    else:
        for j in range(H):
            r = half + half * _tanh(half * (gi[j] + gh[j] + bhh[j]))
            z = half + half * _tanh(half * (gi[H + j] + gh[H + j] + bhh[H + j]))
            hn = gh[2 * H + j] + bhh[2 * H + j]
            n = _tanh(gi[2 * H + j] + r * hn)
            f[j] = n + z * (hp[j] - n)
            dn = (one - z) * (one - n * n)
            c[0, j] = dn * hn * r * (one - r)  # through r
            c[1, j] = (hp[j] - n) * z * (one - z)  # through z
            c[2, j] = dn * r  # through n directly
            c[3, j] = z  # the identity term


@njit(parallel=True, **_JIT)
def newton_linearise(cell, gi, gh, whhT, bhh, s, AT, bvec, nblk):
    """Linearise ``F`` at ``S``: full transposed Jacobians and offsets, over all rows.

    ``AT: (N, H, H)`` with ``AT[i, k, j] = dF_j/dh_k`` at row i; ``bvec: (N, H)``
    ``= F(S)_i - J_i S_prev_i``. ``s: (N + B, H)``, previous states are ``s[:N]``.
    """
    N, H = gi.shape[0], s.shape[1]
    for blk in prange(nblk):
        lo, hi = _block(N, nblk, blk)
        c = np.empty((4, H), dtype=s.dtype)
        for i in range(lo, hi):
            hp, f, A = s[i], bvec[i], AT[i]
            _gate_coeffs(cell, gi[i], gh[i], bhh, hp, f, c)
            for k in range(H):
                w = whhT[k]
                a = A[k]
                if cell == ELMAN:
                    for j in range(H):
                        a[j] = c[0, j] * w[j]
                else:
                    for j in range(H):
                        a[j] = c[0, j] * w[j] + c[1, j] * w[H + j] + c[2, j] * w[2 * H + j]
                    a[k] += c[3, k]
                hk = hp[k]
                for j in range(H):
                    f[j] -= a[j] * hk  # f becomes b = F - J hp


@njit(parallel=True, **_JIT)
def quasi_linearise(cell, gi, gh, whhT, bhh, s, a, bvec, nblk):
    """Diagonal linearisation: ``a: (N, H)`` the Jacobian diagonal, ``bvec = F - a * hp``."""
    N, H = gi.shape[0], s.shape[1]
    for blk in prange(nblk):
        lo, hi = _block(N, nblk, blk)
        c = np.empty((4, H), dtype=s.dtype)
        for i in range(lo, hi):
            hp, f, d = s[i], bvec[i], a[i]
            _gate_coeffs(cell, gi[i], gh[i], bhh, hp, f, c)
            if cell == ELMAN:
                for j in range(H):
                    d[j] = c[0, j] * whhT[j, j]
            else:
                for j in range(H):
                    d[j] = c[0, j] * whhT[j, j] + c[1, j] * whhT[j, H + j] + c[2, j] * whhT[j, 2 * H + j]
                    d[j] += c[3, j]
            for j in range(H):
                f[j] -= d[j] * hp[j]


# The scan's three per-step operations, specialised at compile time on whether the
# transition is full (``A_t: (B, H, H)`` transposed) or diagonal (``A_t: (B, H)``).


def _apply(A_t, v, out):
    """``out += A_t v`` row by row: ``v, out: (B, H)``."""


def _compose(A_t, C_prev, tmp):
    """``A_t <- A_t C_prev`` (the transition from the chunk start to t); ``tmp`` scratch."""


@overload(_apply, jit_options=_JIT)
def _apply_ov(A_t, v, out):
    if A_t.ndim == 3:

        def full(A_t, v, out):
            B, H = v.shape
            for b in range(B):
                for k in range(H):
                    vk = v[b, k]
                    a = A_t[b, k]
                    o = out[b]
                    for j in range(H):
                        o[j] += a[j] * vk

        return full

    def diag(A_t, v, out):
        B, H = v.shape
        for b in range(B):
            for j in range(H):
                out[b, j] += A_t[b, j] * v[b, j]

    return diag


@overload(_compose, jit_options=_JIT)
def _compose_ov(A_t, C_prev, tmp):
    if A_t.ndim == 3:

        def full(A_t, C_prev, tmp):
            # transposed storage: (A_t C)^T = C^T A_t^T
            B, H = A_t.shape[0], A_t.shape[1]
            zero = A_t.dtype.type(0.0)
            for b in range(B):
                for i in range(H):
                    t = tmp[i]
                    for j in range(H):
                        t[j] = zero
                    for k in range(H):
                        ck = C_prev[b, i, k]
                        a = A_t[b, k]
                        for j in range(H):
                            t[j] += ck * a[j]
                A_t[b] = tmp

        return full

    def diag(A_t, C_prev, tmp):
        B, H = A_t.shape
        for b in range(B):
            for j in range(H):
                A_t[b, j] *= C_prev[b, j]

    return diag


@njit(**_JIT)
def _scan_bounds(T, P, weight):
    """Chunk bounds ``(P + 1,)`` over ``range(T)``: chunk 0 is solved directly from
    ``h0``; every other chunk also composes its transitions, ``weight`` times the cost
    per step, so it gets ``1 / weight`` as many steps and all threads finish together."""
    bounds = np.empty(P + 1, dtype=np.int64)
    L = T / (weight + P - 1)
    bounds[0] = 0
    bounds[1] = min(T, max(1, int(weight * L + 0.5)))
    for c in range(2, P + 1):
        bounds[c] = bounds[1] + ((T - bounds[1]) * (c - 1)) // (P - 1)
    return bounds


@njit(parallel=True, **_JIT)
def linear_scan(A, bvec, s, weight, nthreads):
    """Solve ``S[t+1] = A_t S[t] + b_t`` (t = 0..T-1, ``S[0] = h0``) by a chunked
    parallel scan over time; destroys ``A`` and ``bvec``.

    ``A: (T, B, H, H)`` transposed or ``(T, B, H)`` diagonal, ``bvec: (T, B, H)``,
    ``s: (T + 1, B, H)``. With P threads, T is cut into P chunks:

    1. in parallel: chunk 0 runs the recurrence from ``h0``; every other chunk c runs it
       from zero (``bvec[t]`` becomes the local state) while composing its transitions
       (``A[t]`` becomes the product from the chunk start to t);
    2. sequentially, chunk by chunk: the true state at each chunk's end from the one at
       its start (one product with the composed transition);
    3. in parallel over all steps after chunk 0: ``S[t+1] = A[t] S[start] + bvec[t]``.
    """
    T, H = bvec.shape[0], bvec.shape[2]
    P = max(1, min(nthreads, T))
    bounds = _scan_bounds(T, P, weight)
    for ch in prange(P):
        t0, t1 = bounds[ch], bounds[ch + 1]
        if ch == 0:
            for t in range(t0, t1):
                s[t + 1] = bvec[t]
                _apply(A[t], s[t], s[t + 1])
        else:
            tmp = np.empty((H, H), dtype=bvec.dtype)
            for t in range(t0 + 1, t1):
                _apply(A[t], bvec[t - 1], bvec[t])
                _compose(A[t], A[t - 1], tmp)
    for ch in range(1, P):
        t0, t1 = bounds[ch], bounds[ch + 1]
        if t1 > t0:
            s[t1] = bvec[t1 - 1]
            _apply(A[t1 - 1], s[t0], s[t1])
    start = bounds[1]
    n = T - start
    for k in prange(P):
        lo, hi = _block(n, P, k)
        c = 1
        for t in range(start + lo, start + hi):
            while t >= bounds[c + 1]:
                c += 1
            if t + 1 != bounds[c + 1]:  # chunk ends were written in step 2
                s[t + 1] = bvec[t]
                _apply(A[t], s[bounds[c]], s[t + 1])


@njit(parallel=True, **_JIT)
def max_abs_diff(a, b, nblk):
    """``max |a - b|`` over 2-D arrays of equal shape (per-thread maxima; NaN -> inf)."""
    N, H = a.shape
    maxes = np.zeros(nblk, dtype=a.dtype)
    for k in prange(nblk):
        lo, hi = _block(N, nblk, k)
        m = a.dtype.type(0.0)
        for i in range(lo, hi):
            for j in range(H):
                m = _nan_max(m, abs(a[i, j] - b[i, j]))
        maxes[k] = m
    r = maxes[0]
    for k in range(1, nblk):
        r = _nan_max(r, maxes[k])
    return r
