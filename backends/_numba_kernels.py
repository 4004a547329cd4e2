"""Numba kernels of the numba backend (imported lazily by :mod:`backends.numba`).

Layout: the states of an iterate live in one C-contiguous buffer ``S`` of shape
``(T + 1, B, S)`` whose first slab is the initial state ``s0``; then ``S[:-1]`` viewed as
``(T*B, S)`` is the *previous* state of every step and ``S[1:]`` the states themselves, so
Jacobi needs no shifted copy. The state of a row is ``s = h`` (``S = H``: elman, gru) or
``s = [h, c]`` (``S = 2H``: lstm), as in :mod:`fpbench.cells`. Kernels compute in the dtype
of their arrays (float32 or float64: constants are made with ``x.dtype.type`` so nothing is
promoted to float64), and are compiled once per dtype with ``cache=True``.

Parallel kernels take their block count ``nblk`` (the numba thread count) as an argument:
calling ``numba.get_num_threads()`` inside a ``parallel=True`` function makes it uncachable.

Cells. :data:`CELL_IDS` is the one table, cell name -> kernel cell id; a cell missing from
it is unsupported (the backend raises ``UnsupportedError``). Each cell is written once, as
one row function (``_elman``, ``_gru``, ``_lstm``) that computes the step ``f(s)`` and, when
asked, the coefficients of its structured Jacobian (:mod:`fpbench.cells`)::

    J[p, q] = sum_g diag(c[g, p]) W_g [q == 0] + diag(d[p, q])

with ``c (G, P, H)``, ``d (P, P, H)``. Everything else (the full Jacobian, its diagonal) is
assembled from ``(c, d)`` by cell-independent code. Cells are selected by an integer
rather than by passing a function: cached dispatch stays simple and the per-row branch
costs nothing measurable.

Newton's Jacobians are stored **transposed** (``AT[k, i] = dF_i/ds_k``) so that every
matrix-vector and matrix-matrix product is an axpy over a contiguous row, which LLVM
vectorises without reassociating sums (we compile with ``fastmath=False``).

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
from numba import njit, prange, types
from numba.core.extending import overload

CELL_IDS: dict[str, int] = {"elman": 0, "gru": 1, "lstm": 2}
"""Cell name (of :data:`fpbench.CELLS`) -> kernel cell id: the one table of the cells these
kernels implement, each with a row function and a branch of :func:`_cell`. The ids are
written here, not derived from another module, because the kernels are cached
(``cache=True``) by this file's contents: a global read from elsewhere could go stale."""
ELMAN, GRU, LSTM = CELL_IDS["elman"], CELL_IDS["gru"], CELL_IDS["lstm"]

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


def _sigmoid(x):
    """The overflow-free logistic ``(1 + tanh(x/2)) / 2`` of :func:`fpbench.cells.sigmoid`."""


@overload(_sigmoid, jit_options=_JIT)
def _sigmoid_ov(x):
    half = np.float32(0.5) if x == types.float32 else np.float64(0.5)
    return lambda x: half + half * _tanh(half * x)


# Each row function: ``gi, gh, bhh: (gH,)`` (``gh = W_hh h`` without its bias), ``sp: (S,)``
# the previous state, ``f: (S,)`` receives ``f(sp)``; with ``coeffs >= 1`` also the
# structured Jacobian ``c: (G, P, H)``, ``d: (P, P, H)`` (module docstring), following the
# cell's ``linearise`` in :mod:`fpbench.cells`: ``c[g, p]`` is ``df_p / d(gh_g)``; with
# ``coeffs >= 2`` also ``ci: (G, P, H)``, ``df_p / d(gi_g)`` (the gradients' VJP: see
# ``_numba_grad``). ``coeffs`` is a constant at every call site, so LLVM drops the
# coefficient work from the step.


@njit(**_JIT)
def _elman(gi, gh, bhh, sp, f, c, d, ci, coeffs):
    """``h' = tanh(gi + W h + b)``; ``c[0] = ci[0] = 1 - h'^2``, ``d = 0``."""
    H = f.shape[0]
    one, zero = f.dtype.type(1.0), f.dtype.type(0.0)
    c0, d0, i0 = c[0, 0], d[0, 0], ci[0, 0]
    for j in range(H):
        y = _tanh(gi[j] + gh[j] + bhh[j])
        f[j] = y
        if coeffs >= 1:
            c0[j] = one - y * y
            d0[j] = zero
        if coeffs >= 2:
            i0[j] = one - y * y


@njit(**_JIT)
def _gru(gi, gh, bhh, sp, f, c, d, ci, coeffs):
    """``h' = (1 - z) n + z h``; ``c`` through r, z, n; ``d = z`` (the identity term);
    ``ci`` differs from ``c`` in n, whose ``gh`` part is scaled by r."""
    H = f.shape[0]
    one = f.dtype.type(1.0)
    c0, c1, c2, d0 = c[0, 0], c[1, 0], c[2, 0], d[0, 0]
    i0, i1, i2 = ci[0, 0], ci[1, 0], ci[2, 0]
    for j in range(H):
        r = _sigmoid(gi[j] + gh[j] + bhh[j])
        z = _sigmoid(gi[H + j] + gh[H + j] + bhh[H + j])
        hn = gh[2 * H + j] + bhh[2 * H + j]
        n = _tanh(gi[2 * H + j] + r * hn)
        f[j] = n + z * (sp[j] - n)  # (1 - z) n + z h
        if coeffs >= 1:
            dn = (one - z) * (one - n * n)
            c0[j] = dn * hn * r * (one - r)
            c1[j] = (sp[j] - n) * z * (one - z)
            c2[j] = dn * r
            d0[j] = z
            if coeffs >= 2:
                i0[j] = c0[j]
                i1[j] = c1[j]
                i2[j] = dn


@njit(**_JIT)
def _lstm(gi, gh, bhh, sp, f, c, d, ci, coeffs):
    """``c' = f c + i g``, ``h' = o tanh(c')`` on ``s = [h, c]`` (gates i, f, g, o);
    ``ci = c``."""
    H = f.shape[0] // 2
    one, zero = f.dtype.type(1.0), f.dtype.type(0.0)
    for j in range(H):
        ig = _sigmoid(gi[j] + gh[j] + bhh[j])
        fg = _sigmoid(gi[H + j] + gh[H + j] + bhh[H + j])
        gg = _tanh(gi[2 * H + j] + gh[2 * H + j] + bhh[2 * H + j])
        og = _sigmoid(gi[3 * H + j] + gh[3 * H + j] + bhh[3 * H + j])
        cp = sp[H + j]
        cn = fg * cp + ig * gg
        tc = _tanh(cn)
        f[j] = og * tc
        f[H + j] = cn
        if coeffs >= 1:
            u = og * (one - tc * tc)  # dh'/dc'
            di = gg * ig * (one - ig)  # dc'/d(preactivations) of i, f, g
            df = cp * fg * (one - fg)
            dg = ig * (one - gg * gg)
            c[0, 0, j], c[0, 1, j] = u * di, di
            c[1, 0, j], c[1, 1, j] = u * df, df
            c[2, 0, j], c[2, 1, j] = u * dg, dg
            c[3, 0, j], c[3, 1, j] = tc * og * (one - og), zero
            d[0, 0, j], d[0, 1, j] = zero, u * fg
            d[1, 0, j], d[1, 1, j] = zero, fg
            if coeffs >= 2:
                for g in range(4):
                    ci[g, 0, j], ci[g, 1, j] = c[g, 0, j], c[g, 1, j]


@njit(inline="always", **_JIT)
def _cell(cell, gi, gh, bhh, sp, f, c, d, ci, coeffs):
    """Dispatch one row to the cell's function (an id missing here computes nothing; the
    backend never passes one, see :data:`CELL_IDS`)."""
    if cell == ELMAN:
        _elman(gi, gh, bhh, sp, f, c, d, ci, coeffs)
    elif cell == GRU:
        _gru(gi, gh, bhh, sp, f, c, d, ci, coeffs)
    elif cell == LSTM:
        _lstm(gi, gh, bhh, sp, f, c, d, ci, coeffs)


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


@njit(**_JIT)
def _reduce_max(maxes):
    r = maxes[0]
    for k in range(1, maxes.shape[0]):
        r = _nan_max(r, maxes[k])
    return r


# --------------------------------------------------------------------------- Jacobi / floor


@njit(**_JIT)
def hidden_projection(s_prev, whhT, gh, hbuf):
    """``gh = h_prev @ whhT`` into a preallocated buffer (SciPy's BLAS through numba):
    ``s_prev: (N, S)`` whose first H columns are ``h``, ``whhT: (H, gH)``, ``gh: (N, gH)``.
    When ``S > H`` (lstm), ``h`` is first copied into the contiguous ``hbuf: (N, H)``."""
    H = whhT.shape[0]
    if s_prev.shape[1] == H:
        np.dot(s_prev, whhT, gh)
    else:
        for i in range(s_prev.shape[0]):
            hbuf[i] = s_prev[i, :H]
        np.dot(hbuf, whhT, gh)


@njit(parallel=True, **_JIT)
def cell_update(cell, G, gi, gh, bhh, s_old, s_new, B, nblk):
    """``S_new[1:] = F(S_old)`` over all ``N = T*B`` rows and the residual
    ``max |S_new[1:] - S_old[1:]|`` (per-thread maxima, then reduced; NaN -> inf).

    ``G`` gates; ``gi, gh: (N, gH)``, ``bhh: (gH,)``, ``s_old, s_new: (N + B, S)`` flat
    state buffers.
    """
    N, S = gi.shape[0], s_old.shape[1]
    maxes = np.zeros(nblk, dtype=s_old.dtype)
    for k in prange(nblk):
        lo, hi = _block(N, nblk, k)
        c, d = _coeff_scratch(G, S, gh.shape[1], s_old.dtype)
        m = s_old.dtype.type(0.0)
        for i in range(lo, hi):
            out = s_new[B + i]
            _cell(cell, gi[i], gh[i], bhh, s_old[i], out, c, d, c, 0)
            old = s_old[B + i]
            for j in range(S):
                m = _nan_max(m, abs(out[j] - old[j]))
        maxes[k] = m
    return _reduce_max(maxes)


@njit(**_JIT)
def _coeff_scratch(G, S, gH, dtype):
    """Scratch ``c (G, P, H)`` and ``d (P, P, H)`` for one thread."""
    H = gH // G
    P = S // H
    return np.empty((G, P, H), dtype=dtype), np.empty((P, P, H), dtype=dtype)


@njit(parallel=True, **_JIT)
def _floor_cells(cell, G, gi, gh, bhh, hp, out):
    N = gi.shape[0]
    c, d = _coeff_scratch(G, hp.shape[1], gh.shape[1], hp.dtype)
    for i in prange(N):
        _cell(cell, gi[i], gh[i], bhh, hp[i], out[i], c, d, c, 0)


@njit(**_JIT)
def iteration_floor(cell, G, gi, hp, whhT, bhh, gh, hbuf, out):
    """The plain floor of one Jacobi iteration: ``gh = h @ whhT`` (BLAS) plus the cell's
    elementwise work ``out = f(hp, gi)`` over ``N = T*B`` rows in a ``prange`` loop."""
    hidden_projection(hp, whhT, gh, hbuf)
    _floor_cells(cell, G, gi, gh, bhh, hp, out)


# --------------------------------------------------------------------------- Sequential / Chunked


@njit(inline="always", **_JIT)
def _rows_product(cur, whhT, gh, lo, hi):
    """``gh[lo:hi] = cur[lo:hi, :H] @ whhT`` (``whhT: (H, gH)``), each entry summed over k in
    order (the same bits however the rows are grouped). Rows go four at a time through an
    axpy loop over the rows of ``whhT`` (vectorised along gH): every loaded row of ``whhT``
    serves four rows, which matters once ``whhT`` no longer fits in L1 (the product is then
    bound by streaming ``whhT``, once per row without blocking)."""
    H, gH = whhT.shape
    zero = cur.dtype.type(0.0)
    r = lo
    while r + 4 <= hi:
        g0, g1, g2, g3 = gh[r], gh[r + 1], gh[r + 2], gh[r + 3]
        p0, p1, p2, p3 = cur[r], cur[r + 1], cur[r + 2], cur[r + 3]
        for j in range(gH):
            g0[j] = zero
            g1[j] = zero
            g2[j] = zero
            g3[j] = zero
        for k in range(H):
            h0, h1, h2, h3 = p0[k], p1[k], p2[k], p3[k]
            w = whhT[k]
            for j in range(gH):
                wj = w[j]
                g0[j] += h0 * wj
                g1[j] += h1 * wj
                g2[j] += h2 * wj
                g3[j] += h3 * wj
        r += 4
    while r < hi:
        row, hp = gh[r], cur[r]
        for j in range(gH):
            row[j] = zero
        for k in range(H):
            hk = hp[k]
            w = whhT[k]
            for j in range(gH):
                row[j] += hk * w[j]
        r += 1


@njit(inline="always", **_JIT)
def cell_rows(cell, gi, whhT, bhh, t0, step, live, every, nc, cur, nxt, gh, c, d):
    """One step of ``nc`` independent recurrences (chunks) of ``B`` rows each, advanced
    together: the Sequential step of every row, ``nxt = f(cur, x_t)`` with chunk q at step
    ``t = t0[q] + step``, skipping the chunks with ``live[q] == 0`` unless ``every`` (all live).

    ``gi: (T, B, gH)``, ``whhT: (H, gH)``, ``bhh: (gH,)``, ``t0, live: (>= nc,)`` int64,
    ``cur, nxt: (>= nc*B, S)`` (chunk q's rows ``q*B .. q*B + B - 1``), ``gh: (>= nc*B, gH)``
    scratch, ``c, d`` the cell's coefficient scratch (:func:`_coeff_scratch`). The
    ``(rows, H) x (H, gH)`` product (:func:`_rows_product`, cheaper than a BLAS call at
    these sizes) takes all rows at once while every chunk is live.
    """
    B = gi.shape[1]
    if every:
        _rows_product(cur, whhT, gh, 0, nc * B)
    else:
        for q in range(nc):
            if live[q] != 0:
                _rows_product(cur, whhT, gh, q * B, (q + 1) * B)
    for q in range(nc):
        if every or live[q] != 0:
            t = t0[q] + step
            for b in range(B):
                r = q * B + b
                _cell(cell, gi[t, b], gh[r], bhh, cur[r], nxt[r], c, d, c, 0)


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
                A_i[j] += c[g, 0, j] * whhT[j, g * H + j]
        if sub:
            _sub_apply(A_i, v, f)

    return diagonal


@overload(_sub_apply, jit_options=_JIT)
def _sub_apply_ov(A_i, v, f):
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
# transition is full (``A_t: (B, S, S)`` transposed) or diagonal (``A_t: (B, S)``).


def _apply(A_t, v, out):
    """``out += A_t v`` row by row: ``v, out: (B, S)``."""


def _compose(A_t, C_prev, tmp):
    """``A_t <- A_t C_prev`` (the transition from the chunk start to t); ``tmp`` scratch."""


@overload(_apply, jit_options=_JIT)
def _apply_ov(A_t, v, out):
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

    ``A: (T, B, S, S)`` transposed or ``(T, B, S)`` diagonal, ``bvec: (T, B, S)``,
    ``s: (T + 1, B, S)``. With P threads, T is cut into P chunks:

    1. in parallel: chunk 0 runs the recurrence from ``s0``; every other chunk c runs it
       from zero (``bvec[t]`` becomes the local state) while composing its transitions
       (``A[t]`` becomes the product from the chunk start to t);
    2. sequentially, chunk by chunk: the true state at each chunk's end from the one at
       its start (one product with the composed transition);
    3. in parallel over all steps after chunk 0: ``S[t+1] = A[t] S[start] + bvec[t]``.
    """
    T, S = bvec.shape[0], bvec.shape[2]
    P = max(1, min(nthreads, T))
    bounds = _scan_bounds(T, P, weight)
    for ch in prange(P):
        t0, t1 = bounds[ch], bounds[ch + 1]
        if ch == 0:
            for t in range(t0, t1):
                s[t + 1] = bvec[t]
                _apply(A[t], s[t], s[t + 1])
        else:
            tmp = np.empty((S, S), dtype=bvec.dtype)
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
    N, S = a.shape
    maxes = np.zeros(nblk, dtype=a.dtype)
    for k in prange(nblk):
        lo, hi = _block(N, nblk, k)
        m = a.dtype.type(0.0)
        for i in range(lo, hi):
            for j in range(S):
                m = _nan_max(m, abs(a[i, j] - b[i, j]))
        maxes[k] = m
    return _reduce_max(maxes)


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
