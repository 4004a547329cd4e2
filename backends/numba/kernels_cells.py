"""Numba kernels of the numba backend: the cells, their steps and the shared helpers.

The cells' row functions and their dispatch (:data:`CELL_IDS`), Jacobi's parallel cell
update, the iteration floor, the grouped step of Sequential and Chunked (:func:`cell_rows`),
the residual (:func:`max_abs_diff`), and the jit options and block helpers of every kernel
module here. The package imports its kernel modules only once a solve is prepared.

Layout: the states of an iterate live in one C-contiguous buffer ``S`` of shape
``(T + 1, B, S)`` whose first slab is the initial state ``s0``; then ``S[:-1]`` viewed as
``(T*B, S)`` is the *previous* state of every step and ``S[1:]`` the states themselves, so
Jacobi needs no shifted copy. The state of a row is ``s = h`` (``S = H``: elman, gru,
gru_diag) or ``s = [h, c]`` (``S = 2H``: lstm, lstm_cifg_diag), as in :mod:`fpbench.cells`.
Kernels compute in the dtype of their arrays (float32 or float64: constants are made with
``x.dtype.type`` so nothing is promoted to float64), and are compiled once per dtype with
``cache=True``.

Parallel kernels take their block count ``nblk`` (the numba thread count) as an argument:
calling ``numba.get_num_threads()`` inside a ``parallel=True`` function makes it uncachable.

Cells. :data:`CELL_IDS` is the one table, cell name -> kernel cell id; a cell missing from
it is unsupported (the backend raises ``UnsupportedError``). Each cell is written once, as
one row function (``_elman``, ``_gru``, ``_lstm``, ``_gru_diag``, ``_lstm_cifg_diag``) that
computes the step ``f(s)`` and, when asked, the coefficients of its structured Jacobian
(:mod:`fpbench.cells`)::

    J[p, q] = sum_g diag(c[g, p]) W_g [q == 0] + diag(d[p, q])

with ``c (G, P, H)``, ``d (P, P, H)`` (a diagonal cell's ``W_g = diag(a_g)``: the kernels
take its ``whhT`` as the 1-D vector ``[a_1 .. a_G]`` and specialise on that at compile
time: no recurrent product, elementwise ``W^T``, per-unit Jacobian blocks). Everything else
(the full Jacobian, its diagonal) is assembled from ``(c, d)`` by cell-independent code.
Cells are selected by an integer rather than by passing a function: cached dispatch stays
simple and the per-row branch costs nothing measurable.

Kernels of the other modules (``kernels_scan``, ``kernels_damped``, ``grad_kernels``,
``chunked``) call kernels of this one; numba's cache does not notice when another file
changes, so clear ``backends/numba/__pycache__`` after editing a kernel module.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.core.extending import overload

CELL_IDS: dict[str, int] = {"elman": 0, "gru": 1, "lstm": 2, "gru_diag": 3, "lstm_cifg_diag": 4}
"""Cell name (of :data:`fpbench.CELLS`) -> kernel cell id: the one table of the cells these
kernels implement, each with a row function and a branch of :func:`_cell`. The ids are
written here, not derived from another module, because the kernels are cached
(``cache=True``) by this file's contents: a global read from elsewhere could go stale."""
ELMAN, GRU, LSTM = CELL_IDS["elman"], CELL_IDS["gru"], CELL_IDS["lstm"]
GRU_DIAG, LSTM_CIFG_DIAG = CELL_IDS["gru_diag"], CELL_IDS["lstm_cifg_diag"]
PEEPHOLE_GATES: dict[str, tuple[tuple[int, bool], ...]] = {"lstm_cifg_diag": ((0, False), (2, True))}
"""Diagonal cell name -> its peepholes, in ``weight_hh`` order: ``(gate, new)``, the gate
block whose pre-activation the peephole enters and whether it multiplies the new cell
state ``c'`` (else the previous ``c``); the peephole's gradient is that gate's ``dgh``
times that cell state, summed over the rows."""

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
# ``grad_kernels``). ``coeffs`` is a constant at every call site, so LLVM drops the
# coefficient work from the step. A diagonal cell's ``gi`` holds both biases, ``gh`` is
# unused and ``bhh`` is the vector ``weight_hh ((G + peepholes) H,)``, applied
# elementwise (``gh_g = a_g h`` in the form above).


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


@njit(inline="always", **_JIT)
def _gru_coefficients(j, dn, hn, r, z, dz, dd, c0, c1, c2, d0, i0, i1, i2, coeffs):
    """Unit j's coefficients of the GRU family (``gru``, ``gru_diag``): ``dn`` = dh'/d(n's
    pre-activation), ``hn`` = n's recurrent part (scaled by r), ``dz`` = dh'/dz, ``dd`` = d;
    ``c = (dn hn r (1 - r), dz z (1 - z), dn r)``, ``ci`` the same but ``dn`` for n."""
    one = c0.dtype.type(1.0)
    c0[j] = dn * hn * r * (one - r)
    c1[j] = dz * z * (one - z)
    c2[j] = dn * r
    d0[j] = dd
    if coeffs >= 2:
        i0[j] = c0[j]
        i1[j] = c1[j]
        i2[j] = dn


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
            _gru_coefficients(j, dn, hn, r, z, sp[j] - n, z, c0, c1, c2, d0, i0, i1, i2, coeffs)


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


@njit(**_JIT)
def _gru_diag(gi, gh, w, sp, f, c, d, ci, coeffs):
    """ParaRNN's diagonal GRU (:class:`fpbench.cells.GRUDiag`): ``h' = z n + (1 - z) h``
    with ``w = [a_r, a_z, a_n]``; ``c`` as :meth:`~fpbench.cells.GRUDiag.linearise`,
    ``d = 1 - z``; ``ci`` differs from ``c`` in n, whose recurrent part is scaled by r."""
    H = f.shape[0]
    one = f.dtype.type(1.0)
    c0, c1, c2, d0 = c[0, 0], c[1, 0], c[2, 0], d[0, 0]
    i0, i1, i2 = ci[0, 0], ci[1, 0], ci[2, 0]
    for j in range(H):
        h = sp[j]
        r = _sigmoid(gi[j] + w[j] * h)
        z = _sigmoid(gi[H + j] + w[H + j] * h)
        hn = w[2 * H + j] * h
        n = _tanh(gi[2 * H + j] + r * hn)
        f[j] = h + z * (n - h)  # z n + (1 - z) h
        if coeffs >= 1:
            dn = z * (one - n * n)
            _gru_coefficients(j, dn, hn, r, z, n - h, one - z, c0, c1, c2, d0, i0, i1, i2, coeffs)


@njit(**_JIT)
def _lstm_cifg_diag(gi, gh, w, sp, f, c, d, ci, coeffs):
    """ParaRNN's diagonal CIFG LSTM with peepholes (:class:`fpbench.cells.LSTMCIFGDiag`) on
    ``s = [h, c]``, ``w = [a_f, a_g, a_o, p_f, p_o]``: ``c' = f c + (1 - f) g``, ``h' = o
    tanh(c')``; the peepholes are elementwise, so they sit in ``d``; ``ci = c``."""
    H = f.shape[0] // 2
    one, zero = f.dtype.type(1.0), f.dtype.type(0.0)
    for j in range(H):
        h, cp = sp[j], sp[H + j]
        p_f, p_o = w[3 * H + j], w[4 * H + j]
        fg = _sigmoid(gi[j] + w[j] * h + p_f * cp)
        gg = _tanh(gi[H + j] + w[H + j] * h)
        cn = fg * cp + (one - fg) * gg
        og = _sigmoid(gi[2 * H + j] + w[2 * H + j] * h + p_o * cn)
        tc = _tanh(cn)
        f[j] = og * tc
        f[H + j] = cn
        if coeffs >= 1:
            do = tc * og * (one - og)  # dh'/d(o's pre-activation)
            u = og * (one - tc * tc) + do * p_o  # dh'/dc', also through o's peephole
            df = (cp - gg) * fg * (one - fg)  # dc'/d(pre-activations) of f, g
            dg = (one - fg) * (one - gg * gg)
            dcc = fg + df * p_f  # dc'/dc, also through f's peephole
            c[0, 0, j], c[0, 1, j] = u * df, df
            c[1, 0, j], c[1, 1, j] = u * dg, dg
            c[2, 0, j], c[2, 1, j] = do, zero
            d[0, 0, j], d[0, 1, j] = zero, u * dcc
            d[1, 0, j], d[1, 1, j] = zero, dcc
            if coeffs >= 2:
                for g in range(3):
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
    elif cell == GRU_DIAG:
        _gru_diag(gi, gh, bhh, sp, f, c, d, ci, coeffs)
    elif cell == LSTM_CIFG_DIAG:
        _lstm_cifg_diag(gi, gh, bhh, sp, f, c, d, ci, coeffs)


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


def _hidden_product(s_prev, whhT, gh, hbuf):
    """``gh = h_prev @ whhT`` into a preallocated buffer (SciPy's BLAS through numba):
    ``s_prev: (N, S)`` whose first H columns are ``h``, ``whhT: (H, gH)``, ``gh: (N, gH)``.
    When ``S > H`` (lstm), ``h`` is first copied into the contiguous ``hbuf: (N, H)``.
    A diagonal cell's ``whhT`` is the vector ``[a_1 .. a_G] (gH,)``: nothing to compute
    (its row function applies the vector itself)."""


@overload(_hidden_product, jit_options=_JIT)
def _hidden_product_ov(s_prev, whhT, gh, hbuf):
    if whhT.ndim == 1:
        return lambda s_prev, whhT, gh, hbuf: None

    def dense(s_prev, whhT, gh, hbuf):
        H = whhT.shape[0]
        if s_prev.shape[1] == H:
            np.dot(s_prev, whhT, gh)
        else:
            for i in range(s_prev.shape[0]):
                hbuf[i] = s_prev[i, :H]
            np.dot(hbuf, whhT, gh)

    return dense


@njit(**_JIT)
def hidden_projection(s_prev, whhT, gh, hbuf):
    """:func:`_hidden_product`, jitted (it also computes the input projection, ``x_aug @
    w_aug``)."""
    _hidden_product(s_prev, whhT, gh, hbuf)


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


def _rows_product(cur, whhT, gh, lo, hi):
    """``gh[lo:hi] = cur[lo:hi, :H] @ whhT`` (:func:`_dense_rows_product`); nothing for a
    diagonal cell's vector ``whhT`` (as :func:`hidden_projection`)."""


@overload(_rows_product, jit_options=_JIT)
def _rows_product_ov(cur, whhT, gh, lo, hi):
    if whhT.ndim == 1:
        return lambda cur, whhT, gh, lo, hi: None
    return lambda cur, whhT, gh, lo, hi: _dense_rows_product(cur, whhT, gh, lo, hi)


@njit(inline="always", **_JIT)
def _dense_rows_product(cur, whhT, gh, lo, hi):
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


# --------------------------------------------------------------------------- residual


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
