"""Numba kernels of Newton and quasi-Newton: the linearisation and the parallel scan.

:func:`linearise` assembles every step's transition (the full transposed Jacobian or its
diagonal) from the cells' structured coefficients (``kernels_cells``) and its offset;
:func:`linear_scan` solves the linear recurrence by a chunked parallel scan over time.

Newton's Jacobians are stored **transposed** (``AT[k, i] = dF_i/ds_k``) so that every
matrix-vector and matrix-matrix product is an axpy over a contiguous row, which LLVM
vectorises without reassociating sums (we compile with ``fastmath=False``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.core.extending import overload

from .kernels_cells import _JIT, _block, _cell, _coeff_scratch

# --------------------------------------------------------------------------- Newton


# The transition of one row from the structured coefficients, specialised at compile time
# on whether it is full (``A_i: (S, S)`` transposed) or diagonal (``A_i: (S,)``), and
# ``f -= A_i sp`` with it. Coefficient rows are taken as 1-D views before the loops:
# indexing ``c[g, p, j]`` in the inner loop is markedly slower.


def _transition(c, d, whhT, A_i, v, f, sub):
    """``A_i`` = the Jacobian (transposed) or its diagonal, from ``c, d`` and ``W_hh``; then,
    if ``sub``, ``f -= A_i v`` (fused into the assembly of one-part cells). ``sub`` is a
    constant at every call site: inlined, LLVM drops the branch."""


def _sub_apply(A_i, v, f):
    """``f -= A v`` for one row (``A_i`` as :func:`_transition` stores it)."""


@njit(inline="always", **_JIT)
def _one_part_transition(c, d, whhT, A_i, v, f, sub):
    """The full transition of a one-part cell of one or three gate blocks (Elman, GRU), each row
    of ``A_i`` in one vectorisable pass, and, if ``sub``, ``f -= A_i v`` row by row. The
    diagonal ``d`` is added in a pass of its own, skipped when it is zero: a scalar update
    between two row loops stops LLVM vectorising them."""
    G, H = c.shape[0], c.shape[2]
    c0 = c[0, 0]
    if G == 1:
        for k in range(H):
            w, a = whhT[k], A_i[k]
            for j in range(H):
                a[j] = c0[j] * w[j]
            if sub:
                vk = v[k]
                for j in range(H):
                    f[j] -= a[j] * vk
    else:
        c1, c2 = c[1, 0], c[2, 0]
        for k in range(H):
            w, a = whhT[k], A_i[k]
            w0, w1, w2 = w[:H], w[H : 2 * H], w[2 * H : 3 * H]
            for j in range(H):
                a[j] = c0[j] * w0[j] + c1[j] * w1[j] + c2[j] * w2[j]
            if sub:
                vk = v[k]
                for j in range(H):
                    f[j] -= a[j] * vk
    d0 = d[0, 0]
    if np.any(d0):  # (Elman's d is zero: this pass would cost it a quarter of its time)
        for k in range(H):
            A_i[k, k] += d0[k]
            if sub:
                f[k] -= d0[k] * v[k]


@njit(**_JIT)
def _many_part_transition(c, d, whhT, A_i):
    """The full transition of any cell (LSTM: two parts)."""
    # AT[k, p*H + j] = dF_{pH+j}/ds_k = sum_g c[g, p, j] W_g[j, k] [k < H] + d[p, q, j] [k = qH + j]
    G, P, H = c.shape
    zero = A_i.dtype.type(0.0)
    for k in range(H):
        w = whhT[k]
        a = A_i[k]
        for p in range(P):
            o = p * H
            for j in range(H):
                a[o + j] = c[0, p, j] * w[j]
            for g in range(1, G):
                for j in range(H):
                    a[o + j] += c[g, p, j] * w[g * H + j]
            a[o + k] += d[p, 0, k]
    for q in range(1, P):
        for k in range(H):
            a = A_i[q * H + k]
            for j in range(P * H):
                a[j] = zero
            for p in range(P):
                a[p * H + k] = d[p, q, k]


@overload(_transition, jit_options=_JIT, inline="always")
def _transition_ov(c, d, whhT, A_i, v, f, sub):
    if A_i.ndim == 3:  # a diagonal cell's per-unit blocks

        def blocks(c, d, whhT, A_i, v, f, sub):
            _unit_blocks(c, d, whhT, A_i)
            if sub:
                _sub_apply(A_i, v, f)

        return blocks

    if A_i.ndim == 2:

        def full(c, d, whhT, A_i, v, f, sub):
            G, P = c.shape[0], c.shape[1]
            # one-part cells of one or three gate blocks (the shapes _one_part_transition
            # unrolls; a shape, not a cell: any such cell takes it) get one pass per row
            if P == 1 and (G == 1 or G == 3):
                _one_part_transition(c, d, whhT, A_i, v, f, sub)
            else:
                _many_part_transition(c, d, whhT, A_i)
                if sub:
                    _sub_apply(A_i, v, f)

        return full

    def diagonal(c, d, whhT, A_i, v, f, sub):
        G, P, H = c.shape
        for p in range(P):
            for j in range(H):
                A_i[p * H + j] = d[p, p, j]
        for g in range(G):
            for j in range(H):
                A_i[j] += c[g, 0, j] * _w_diag(whhT, g * H + j, j)
        if sub:
            _sub_apply(A_i, v, f)

    return diagonal


def _w_diag(whhT, k, j):
    """``W_hh[k, j]`` on the diagonal (``k = g H + j``): ``whhT[j, k]``, or entry ``k`` of a
    diagonal cell's vector ``whhT``."""


@overload(_w_diag, jit_options=_JIT, inline="always")
def _w_diag_ov(whhT, k, j):
    if whhT.ndim == 1:
        return lambda whhT, k, j: whhT[k]
    return lambda whhT, k, j: whhT[j, k]


@njit(inline="always", **_JIT)
def _unit_blocks(c, d, a, A_i):
    """A diagonal cell's Jacobian per unit (:meth:`fpbench.Cell.unit_jacobian`), stored
    transposed as the full ones: ``A_i[j, q, p] = dF_{pH+j} / ds_{qH+j}`` (``A_i: (H, P,
    P)``), from ``c, d`` and the recurrent vectors ``a (gH,)``; never ``S x S``."""
    G, P, H = c.shape
    for j in range(H):
        blk = A_i[j]
        for p in range(P):
            for q in range(P):
                blk[q, p] = d[p, q, j]
            for g in range(G):
                blk[0, p] += c[g, p, j] * a[g * H + j]


@overload(_sub_apply, jit_options=_JIT)
def _sub_apply_ov(A_i, v, f):
    if A_i.ndim == 3:  # per-unit blocks (H, P, P), transposed

        def blocks(A_i, v, f):
            H, P = A_i.shape[0], A_i.shape[1]
            for j in range(H):
                for p in range(P):
                    for q in range(P):
                        f[p * H + j] -= A_i[j, q, p] * v[q * H + j]

        return blocks

    if A_i.ndim == 2:

        def full(A_i, v, f):
            S = v.shape[0]
            for k in range(S):
                vk = v[k]
                a = A_i[k]
                for j in range(S):
                    f[j] -= a[j] * vk

        return full

    def diagonal(A_i, v, f):
        for j in range(v.shape[0]):
            f[j] -= A_i[j] * v[j]

    return diagonal


@njit(parallel=True, **_JIT)
def linearise(cell, G, gi, gh, whhT, bhh, s, A, bvec, B, correction, nblk):
    """Linearise ``F`` at the iterate ``S`` over all rows: transitions and offsets.

    ``A: (N, S, S)`` full transposed Jacobians (``A[i, k, j] = dF_j/ds_k`` at row i) or
    ``(N, S)`` their diagonals; ``s: (N + B, S)`` the flat state buffer, previous states
    ``s[:N]``. ``bvec: (N, S)`` receives ``F(S)_i - A_i s[i]`` (Newton's offset) or, with
    ``correction``, ``F(S)_i - s[B + i]`` (the damped solvers' right-hand side ``e``).
    """
    N, S = gi.shape[0], s.shape[1]
    for blk in prange(nblk):
        lo, hi = _block(N, nblk, blk)
        c, d = _coeff_scratch(G, S, gh.shape[1], s.dtype)
        for i in range(lo, hi):
            sp, f, A_i = s[i], bvec[i], A[i]
            _cell(cell, gi[i], gh[i], bhh, sp, f, c, d, c, 1)
            if correction:
                _transition(c, d, whhT, A_i, sp, f, False)
                y = s[B + i]
                for j in range(S):
                    f[j] -= y[j]
            else:
                _transition(c, d, whhT, A_i, sp, f, True)


# The scan's three per-step operations, specialised at compile time on whether the
# transition is full (``A_t: (B, S, S)`` transposed), diagonal (``A_t: (B, S)``) or a
# diagonal cell's per-unit blocks (``A_t: (B, H, P, P)``, each transposed).


def _apply(A_t, v, out):
    """``out += A_t v`` row by row: ``v, out: (B, S)``."""


def _compose(A_t, C_prev, tmp):
    """``A_t <- A_t C_prev`` (the transition from the chunk start to t); ``tmp`` scratch."""


def _compose_scratch(A):
    """The scratch of :func:`_compose` for the transitions ``A (T, B, ...)``: ``(S, S)``
    for full ones, ``(P, P)`` for per-unit blocks, one element for diagonal ones."""


@overload(_compose_scratch, jit_options=_JIT)
def _compose_scratch_ov(A):
    if A.ndim >= 4:
        return lambda A: np.empty((A.shape[-2], A.shape[-1]), dtype=A.dtype)
    return lambda A: np.empty((1, 1), dtype=A.dtype)


@overload(_apply, jit_options=_JIT)
def _apply_ov(A_t, v, out):
    if A_t.ndim == 4:

        def blocks(A_t, v, out):
            B, H, P = A_t.shape[0], A_t.shape[1], A_t.shape[2]
            for b in range(B):
                for j in range(H):
                    blk = A_t[b, j]
                    for q in range(P):
                        vq = v[b, q * H + j]
                        for p in range(P):
                            out[b, p * H + j] += blk[q, p] * vq

        return blocks

    if A_t.ndim == 3:

        def full(A_t, v, out):
            B, S = v.shape
            for b in range(B):
                for k in range(S):
                    vk = v[b, k]
                    a = A_t[b, k]
                    o = out[b]
                    for j in range(S):
                        o[j] += a[j] * vk

        return full

    def diag(A_t, v, out):
        B, S = v.shape
        for b in range(B):
            for j in range(S):
                out[b, j] += A_t[b, j] * v[b, j]

    return diag


@overload(_compose, jit_options=_JIT)
def _compose_ov(A_t, C_prev, tmp):
    if A_t.ndim == 4:

        def blocks(A_t, C_prev, tmp):
            # per unit, transposed storage as the full ones: A_t^T <- C_prev^T A_t^T
            B, H, P = A_t.shape[0], A_t.shape[1], A_t.shape[2]
            zero = A_t.dtype.type(0.0)
            t = tmp
            for b in range(B):
                for j in range(H):
                    a, cp = A_t[b, j], C_prev[b, j]
                    for i in range(P):
                        for jj in range(P):
                            acc = zero
                            for k in range(P):
                                acc += cp[i, k] * a[k, jj]
                            t[i, jj] = acc
                    a[:, :] = t

        return blocks

    if A_t.ndim == 3:

        def full(A_t, C_prev, tmp):
            # transposed storage: (A_t C)^T = C^T A_t^T
            B, S = A_t.shape[0], A_t.shape[1]
            zero = A_t.dtype.type(0.0)
            for b in range(B):
                for i in range(S):
                    t = tmp[i]
                    for j in range(S):
                        t[j] = zero
                    for k in range(S):
                        ck = C_prev[b, i, k]
                        a = A_t[b, k]
                        for j in range(S):
                            t[j] += ck * a[j]
                A_t[b] = tmp

        return full

    def diag(A_t, C_prev, tmp):
        B, S = A_t.shape
        for b in range(B):
            for j in range(S):
                A_t[b, j] *= C_prev[b, j]

    return diag


@njit(**_JIT)
def _scan_bounds(T, P, weight):
    """Chunk bounds ``(P + 1,)`` over ``range(T)``: chunk 0 is solved directly from
    ``s0``; every other chunk also composes its transitions, ``weight`` times the cost
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
    """Solve ``S[t+1] = A_t S[t] + b_t`` (t = 0..T-1, ``S[0] = s0``) by a chunked
    parallel scan over time; destroys ``A`` and ``bvec``.

    ``A: (T, B, S, S)`` transposed, ``(T, B, S)`` diagonal or ``(T, B, H, P, P)`` per-unit
    blocks (each transposed), ``bvec: (T, B, S)``,
    ``s: (T + 1, B, S)``. With P threads, T is cut into P chunks:

    1. in parallel: chunk 0 runs the recurrence from ``s0``; every other chunk c runs it
       from zero (``bvec[t]`` becomes the local state) while composing its transitions
       (``A[t]`` becomes the product from the chunk start to t);
    2. sequentially, chunk by chunk: the true state at each chunk's end from the one at
       its start (one product with the composed transition);
    3. in parallel over all steps after chunk 0: ``S[t+1] = A[t] S[start] + bvec[t]``.
    """
    T = bvec.shape[0]
    P = max(1, min(nthreads, T))
    bounds = _scan_bounds(T, P, weight)
    for ch in prange(P):
        t0, t1 = bounds[ch], bounds[ch + 1]
        if ch == 0:
            for t in range(t0, t1):
                s[t + 1] = bvec[t]
                _apply(A[t], s[t], s[t + 1])
        else:
            tmp = _compose_scratch(A)
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
