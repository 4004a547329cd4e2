"""Numba kernels of the numba backend's backward pass: coefficients, VJPs and adjoint steps.

Notation as :mod:`fpbench.reference_grad`: row ``i = k*B + b`` of the flat ``(N, S)``
arrays is step k of sequence b; the adjoint ``lam_k = dL/ds_k`` solves
``lam_{T-1} = g_{T-1}``, ``lam_k = g_k + J_{k+1}^T lam_{k+1}``. Everything is built from the
cells' structured coefficients (``kernels_cells._cell`` with ``coeffs=2``): with ``c[g, p]``
(``df_p/d gh_g``), ``ci[g, p]`` (``df_p/d gi_g``) and ``d[p, q]`` at row i, the VJP of step i
for a cotangent ``v`` is

    dgh_g = sum_p c[g, p] v_p,   dgi_g = sum_p ci[g, p] v_p,
    J_i^T v = [sum_p d[p, 0] v_p + W_hh^T dgh,  sum_p d[p, q] v_p  (q >= 1)],

computed for all rows in parallel (:func:`vjp_rows`) plus one BLAS product ``dgh @ W_hh``.

Cached kernels here call kernels of ``kernels_cells`` and ``kernels_scan``; numba's cache
does not notice when those files change, so clear ``backends/numba/__pycache__`` after
editing them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.core.extending import overload

from .kernels_cells import _JIT, _block, _cell
from .kernels_scan import _transition


@njit(parallel=True, **_JIT)
def coefficients(cell, gi, gh, bhh, s, C, Dd, CI, F, nblk):
    """The structured Jacobian of every step at its previous state ``s[:N]``:
    ``C, CI: (N, G, P, H)``, ``Dd: (N, P, P, H)`` (``gh = W_hh h_prev`` without bias);
    ``F (N, S)`` receives the steps ``f(s[:N])`` (a cell with peepholes needs its ``c'``),
    or has no rows (nothing kept)."""
    N, S = gi.shape[0], s.shape[1]
    for blk in prange(nblk):
        lo, hi = _block(N, nblk, blk)
        f = np.empty(S, dtype=s.dtype)
        for i in range(lo, hi):
            out = F[i] if F.shape[0] > 0 else f
            _cell(cell, gi[i], gh[i], bhh, s[i], out, C[i], Dd[i], CI[i], 2)


def _add_back(dgh, whh, o, H):
    """``o[:H] += W_hh^T dgh`` for one row: an axpy loop over the rows of ``whh (gH, H)``,
    or, for a diagonal cell's vectors ``whh (gH,)``, ``sum_g a_g dgh_g`` elementwise."""


@overload(_add_back, jit_options=_JIT, inline="always")
def _add_back_ov(dgh, whh, o, H):
    if whh.ndim == 1:

        def diagonal(dgh, whh, o, H):
            for k in range(whh.shape[0]):
                o[k % H] += dgh[k] * whh[k]

        return diagonal

    def dense(dgh, whh, o, H):
        for k in range(whh.shape[0]):
            v = dgh[k]
            w = whh[k]
            for e in range(H):
                o[e] += v * w[e]

    return dense


# Complex step: for an analytic ``q``, ``Im q(z + i eps u) / eps`` is the derivative of ``q``
# along ``u`` up to ``O(eps^2)`` relative terms, with no difference of nearby values to lose
# digits to. With ``eps = 1e-30`` those terms are far below rounding, so the cells' own
# coefficient code, run on complex numbers, gives their second derivatives exactly to
# rounding; the cells use only arithmetic, tanh and the tanh-based logistic, all analytic.
_EPS = 1e-30


@njit(parallel=True, **_JIT)
def coefficient_tangents(cell, gi, gh, bhh, s, ugi, ugh, us, Ct, Ddt, CIt, Ft, nblk):
    """The derivatives of every row's structured coefficients (:func:`coefficients`: ``C, Dd,
    CI`` at ``gi, gh, s``) along the direction ``(ugi, ugh, us)``, by complex step (above):
    ``Ct, CIt (N, G, P, H)``, ``Ddt (N, P, P, H)``; ``Ft (N, S)`` receives the derivative of
    the step ``f`` itself (``J us`` where ``ugh = W_hh us_h``: a cell with peepholes needs
    its ``c'``'s), or has no rows (nothing kept). A direction array of one row applies to
    every row. Computed in complex128 whatever the dtype."""
    N, S, gH = gi.shape[0], s.shape[1], gi.shape[1]
    G, P, H = Ct.shape[1], Ct.shape[2], Ct.shape[3]
    eps = _EPS
    inv = 1.0 / eps
    for blk in prange(nblk):
        lo, hi = _block(N, nblk, blk)
        zgi, zgh = np.empty(gH, dtype=np.complex128), np.empty(gH, dtype=np.complex128)
        zb = bhh.astype(np.complex128)
        zs, f = np.empty(S, dtype=np.complex128), np.empty(S, dtype=np.complex128)
        c, ci = np.empty((G, P, H), dtype=np.complex128), np.empty((G, P, H), dtype=np.complex128)
        d = np.empty((P, P, H), dtype=np.complex128)
        for i in range(lo, hi):
            a, b = ugi[min(i, ugi.shape[0] - 1)], ugh[min(i, ugh.shape[0] - 1)]
            e = us[min(i, us.shape[0] - 1)]
            for j in range(gH):
                zgi[j] = gi[i, j] + 1j * (eps * a[j])
                zgh[j] = gh[i, j] + 1j * (eps * b[j])
            for j in range(S):
                zs[j] = s[i, j] + 1j * (eps * e[j])
            _cell(cell, zgi, zgh, zb, zs, f, c, d, ci, 2)
            if Ft.shape[0] > 0:
                for j in range(S):
                    Ft[i, j] = f[j].imag * inv
            for g in range(G):
                for p in range(P):
                    for j in range(H):
                        Ct[i, g, p, j] = c[g, p, j].imag * inv
                        CIt[i, g, p, j] = ci[g, p, j].imag * inv
            for p in range(P):
                for q in range(P):
                    for j in range(H):
                        Ddt[i, p, q, j] = d[p, q, j].imag * inv


@njit(**_JIT)
def _vjp_row(c, d, ci, v, dgh, dgi, ds):
    """One row's VJP (module docstring) without the ``W_hh^T dgh`` term of ``ds``."""
    G, P, H = c.shape
    zero = v.dtype.type(0.0)
    for g in range(G):
        for j in range(H):
            dgh[g * H + j] = zero
            dgi[g * H + j] = zero
        for p in range(P):
            for j in range(H):
                dgh[g * H + j] += c[g, p, j] * v[p * H + j]
                dgi[g * H + j] += ci[g, p, j] * v[p * H + j]
    for q in range(P):
        for j in range(H):
            ds[q * H + j] = zero
        for p in range(P):
            for j in range(H):
                ds[q * H + j] += d[p, q, j] * v[p * H + j]


@njit(inline="always", **_JIT)
def adjoint_rows(C, Dd, CI, whh, g, t0, step, live, every, nc, cur, nxt, dgh, dgi, ds):
    """One step of ``nc`` chunks of the adjoint recurrence run backwards in time, as
    :func:`bptt` steps it: chunk q at reversed step ``tau`` (time ``t = T - 1 - tau``)
    maps ``cur = lam_{t+1}`` to ``nxt = lam_t = g_t + J_{t+1}^T lam_{t+1}`` (``g_{T-1}`` at
    ``tau = 0``), with ``tau = t0[q] + step`` and the arguments ``live, every`` of
    :func:`backends.numba.kernels_cells.cell_rows`.

    ``C, CI: (N, G, P, H)``, ``Dd: (N, P, P, H)`` the coefficients of every step, ``whh (gH,
    H)`` (a diagonal cell's: its vectors ``(gH,)``), ``g: (T, B, S)``; ``cur, nxt: (>= nc*B,
    S)`` (chunk q's rows ``q*B ..``); ``dgh, dgi: (>= nc*B, gH)``, ``ds: (>= nc*B, S)`` scratch.
    """
    T, B, S = g.shape
    H = C.shape[3]
    for q in range(nc):
        if not every and live[q] == 0:
            continue
        t = T - 1 - (t0[q] + step)
        for b in range(B):
            r = q * B + b
            o, gt = nxt[r], g[t, b]
            if t == T - 1:
                for e in range(S):
                    o[e] = gt[e]
                continue
            i = (t + 1) * B + b
            _vjp_row(C[i], Dd[i], CI[i], cur[r], dgh[r], dgi[r], ds[r])
            src = ds[r]
            for e in range(S):
                o[e] = gt[e] + src[e]
            _add_back(dgh[r], whh, o, H)


@njit(parallel=True, **_JIT)
def vjp_rows(C, Dd, CI, lam, dgh, dgi, ds, nblk):
    """The VJP of every step for the cotangents ``lam (N, S)`` on its output:
    ``dgh, dgi (N, gH)`` and the direct part ``ds (N, S)`` of ``J^T lam``."""
    N = lam.shape[0]
    for blk in prange(nblk):
        lo, hi = _block(N, nblk, blk)
        for i in range(lo, hi):
            _vjp_row(C[i], Dd[i], CI[i], lam[i], dgh[i], dgi[i], ds[i])


@njit(parallel=True, **_JIT)
def adjoint_rhs(g, ds, wdgh, Dg, lam_old, diagonal, out, B, nblk):
    """``out_k = g_k + J_{k+1}^T lam_{k+1}`` (0 beyond the last step) from the VJP parts
    ``ds (N, S)`` and ``wdgh = dgh @ W_hh (N, H)`` of ``lam_old``; with ``diagonal``,
    minus ``Dg_{k+1} lam_old_{k+1}`` (the diagonal part the reverse scan then adds back)."""
    N, S = g.shape
    H = wdgh.shape[1]
    for blk in prange(nblk):
        lo, hi = _block(N, nblk, blk)
        for i in range(lo, hi):
            o, gi_ = out[i], g[i]
            if i + B < N:
                n, w = ds[i + B], wdgh[i + B]
                for j in range(S):
                    o[j] = gi_[j] + n[j]
                for j in range(H):
                    o[j] += w[j]
                if diagonal:
                    dn, ln = Dg[i + B], lam_old[i + B]
                    for j in range(S):
                        o[j] -= dn[j] * ln[j]
            else:
                for j in range(S):
                    o[j] = gi_[j]


@njit(parallel=True, **_JIT)
def diagonals(C, Dd, whhT, Dg, nblk):
    """``Dg (N, S)``: the diagonal of every step's Jacobian, from its coefficients."""
    N = Dg.shape[0]
    for blk in prange(nblk):
        lo, hi = _block(N, nblk, blk)
        for i in range(lo, hi):
            _transition(C[i], Dd[i], whhT, Dg[i], Dg[i], Dg[i], False)


@njit(parallel=True, **_JIT)
def reverse_diagonal(Dg, lam, B, nblk):
    """In place, ``lam_k <- lam_k + Dg_{k+1} lam_{k+1}`` backwards in k: the elementwise
    reverse recurrence, in parallel over the ``B*S`` independent lanes."""
    N, S = lam.shape
    T = N // B
    L = B * S
    lam_l, D_l = lam.reshape(T, L), Dg.reshape(T, L)
    for blk in prange(nblk):
        lo, hi = _block(L, nblk, blk)
        for k in range(T - 2, -1, -1):
            cur, nxt, dn = lam_l[k], lam_l[k + 1], D_l[k + 1]
            for j in range(lo, hi):
                cur[j] += dn[j] * nxt[j]


def _row_scratch(A_rev):
    """One row's transition as ``linearise`` stores it, for the rows of ``A_rev (T, B, ...)``."""


@overload(_row_scratch, jit_options=_JIT)
def _row_scratch_ov(A_rev):
    if A_rev.ndim == 5:
        return lambda A_rev: np.empty(A_rev.shape[2:], dtype=A_rev.dtype)
    if A_rev.ndim == 4:
        return lambda A_rev: np.empty((A_rev.shape[2], A_rev.shape[3]), dtype=A_rev.dtype)
    return lambda A_rev: np.empty(A_rev.shape[2], dtype=A_rev.dtype)


def _store_transposed(A_rev, tp, b, tmp):
    """``A_rev[tp, b]`` = the transpose of the row transition ``tmp`` (per unit for blocks;
    a diagonal is its own)."""


@overload(_store_transposed, jit_options=_JIT)
def _store_transposed_ov(A_rev, tp, b, tmp):
    if A_rev.ndim == 5:

        def blocks(A_rev, tp, b, tmp):
            A = A_rev[tp, b]
            for j in range(A.shape[0]):
                for p in range(A.shape[1]):
                    for q in range(A.shape[2]):
                        A[j, p, q] = tmp[j, q, p]

        return blocks

    if A_rev.ndim == 4:

        def full(A_rev, tp, b, tmp):
            A = A_rev[tp, b]
            for p in range(A.shape[0]):
                for q in range(A.shape[1]):
                    A[p, q] = tmp[q, p]

        return full

    def diagonal(A_rev, tp, b, tmp):
        A_rev[tp, b] = tmp

    return diagonal


@njit(parallel=True, **_JIT)
def reverse_transitions(C, Dd, whhT, A_rev, g, b_rev, B, nblk):
    """The adjoint recurrence in forward time order for ``linear_scan``: with
    ``t' = T - 1 - k``, ``u_t' = lam_k = J_{k+1}^T u_{t'-1} + g_k``. ``A_rev (T, B, S, S)``
    gets ``J_{T-t'}`` row-major (``linear_scan`` applies the transpose of what it
    stores; a diagonal cell's per-unit blocks ``(T, B, H, P, P)`` likewise, or its diagonal
    ``(T, B, S)``), ``A_rev[0] = 0``; ``b_rev (T, B, S)`` gets ``g`` reversed in time."""
    T = A_rev.shape[0]
    for blk in prange(nblk):
        lo, hi = _block(T, nblk, blk)
        tmp = _row_scratch(A_rev)
        for tp in range(lo, hi):
            k = T - 1 - tp
            for b in range(B):
                b_rev[tp, b] = g[k * B + b]
                if tp == 0:
                    tmp.fill(0.0)
                else:
                    i = (k + 1) * B + b
                    v = b_rev[tp, b]  # (unused: no product is subtracted)
                    _transition(C[i], Dd[i], whhT, tmp, v, v, False)
                _store_transposed(A_rev, tp, b, tmp)


@njit(**_JIT)
def bptt(C, Dd, CI, whh, g, lam, dgh, dgi, ds, B):
    """BPTT: the adjoint recurrence one step at a time, backwards (``lam (N, S)`` out;
    ``dgh, dgi (B, gH)``, ``ds (B, S)`` scratch). The ``W_hh^T dgh`` product is an axpy
    loop over rows of ``whh (gH, H)`` (:func:`_add_back`)."""
    N, S = g.shape
    T = N // B
    H = C.shape[3]
    for j in range(S):
        for b in range(B):
            lam[(T - 1) * B + b, j] = g[(T - 1) * B + b, j]
    for k in range(T - 2, -1, -1):
        for b in range(B):
            i = (k + 1) * B + b
            _vjp_row(C[i], Dd[i], CI[i], lam[i], dgh[b], dgi[b], ds[b])
            o, src = lam[k * B + b], ds[b]
            for j in range(S):
                o[j] = g[k * B + b, j] + src[j]
            _add_back(dgh[b], whh, o, H)
