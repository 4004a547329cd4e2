"""Chunked's iterations on the numba backend (``solver.transition == "window"``): one
parallel kernel per iteration, for the forward recurrence and for the adjoint recurrence
of its implicit backward alike, and :class:`ChunkedIterations`, which drives them.

Everything runs in the recurrence's own step order ``tau`` (the forward: time; the
adjoint: time reversed) on a buffer ``u (T + 1, B, S)`` whose slab ``tau + 1`` holds step
tau's state and slab 0 the state before step 0 (``s0``; zero for the adjoint). An
iteration splits the chunks it runs into one contiguous group per thread; a group's chunks
advance together, one step of all of them per pass, so the step is a product over
``chunks-in-group x B`` rows, and it is the very step of the sequential kernel
(:func:`backends.numba.kernels_cells.cell_rows`; :func:`backends.numba.grad_kernels.adjoint_rows` for
the adjoint, BPTT's step). A group's states live in its own double buffer; a chunk's steps
at or after its first step are written into ``u`` as they are computed, together with the
largest change against what ``u`` held (the residual, and a rerun's ``tol`` stop). No fold
or gather copies: every chunk reads its own steps' inputs where they lie.

Which op runs is picked at compile time from the op tuple (:func:`_advance`): the forward's
``(cell, G, gi (T, B, gH), whhT (H, gH), bhh (gH,))`` or the adjoint's ``(C, Dd, CI, whh
(gH, H), g (T, B, S))`` (coefficients as in ``grad_kernels``).

Cached kernels here call kernels of ``kernels_cells`` and ``grad_kernels``; numba's cache
does not notice when those files change, so clear ``backends/numba/__pycache__`` after
editing them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit, prange, types
from numba.core.extending import overload

from fpbench.solvers import ChunkLayout

from .grad_kernels import adjoint_rows
from .kernels_cells import _JIT, _block, _coeff_scratch, _nan_max, _reduce_max, cell_rows


def _op_scratch(op, S):
    """The op's per-thread scratch beyond the row buffers: the cell's coefficient scratch
    for states of ``S`` features (forward), nothing (adjoint)."""


def _advance(op, t0, step, live, every, nc, cur, nxt, w1, w2, w3, scratch):
    """One step of the op on a group of ``nc`` chunks (:func:`cell_rows` / :func:`adjoint_rows`)."""


def _is_forward(op) -> bool:
    return isinstance(op.types[0], types.Integer)


@overload(_op_scratch, jit_options=_JIT)
def _op_scratch_ov(op, S):
    if _is_forward(op):
        return lambda op, S: _coeff_scratch(op[1], S, op[2].shape[2], op[2].dtype)
    return lambda op, S: (op[4][0], op[4][0])


@overload(_advance, jit_options=_JIT, inline="always")
def _advance_ov(op, t0, step, live, every, nc, cur, nxt, w1, w2, w3, scratch):
    if _is_forward(op):

        def forward(op, t0, step, live, every, nc, cur, nxt, w1, w2, w3, scratch):
            cell_rows(
                op[0], op[2], op[3], op[4], t0, step, live, every, nc, cur, nxt, w1, scratch[0], scratch[1]
            )

        return forward

    def adjoint(op, t0, step, live, every, nc, cur, nxt, w1, w2, w3, scratch):
        adjoint_rows(op[0], op[1], op[2], op[3], op[4], t0, step, live, every, nc, cur, nxt, w1, w2, w3)

    return adjoint


@njit(inline="always", **_JIT)
def _run_group(op, u, starts, ends, t0, lo, nc, rerun, tol, start, stops, st, w1, w2, w3, live):
    """Chunks ``lo .. lo + nc - 1`` of one iteration (:func:`iteration`), advanced together
    from their first steps ``t0 (nc,)``, in the group buffers ``st (2, R, S)``, ``w1, w2 (R,
    gH)``, ``w3 (R, S)``, ``live (>= nc,)``; returns their residual."""
    B, S = u.shape[1], u.shape[2]
    zero = u.dtype.type(0.0)
    scratch = _op_scratch(op, S)
    cur = st[0]
    for q in range(nc):
        p = lo + q
        live[q] = 1
        stops[p] = ends[p]
        for b in range(B):
            r, src = q * B + b, start[p, b] if rerun else u[0, b]
            for e in range(S):
                cur[r, e] = src[e] if rerun or t0[q] == 0 else zero
    m, nlive, j = zero, nc, 0
    while True:
        for q in range(nc):  # chunks past their end
            if live[q] != 0 and t0[q] + j >= ends[lo + q]:
                live[q] = 0
                nlive -= 1
        if nlive == 0:
            break
        cur, nxt = st[j % 2], st[1 - j % 2]
        _advance(op, t0, j, live, nlive == nc, nc, cur, nxt, w1, w2, w3, scratch)
        for q in range(nc):
            t = t0[q] + j
            if live[q] == 0 or t < starts[lo + q]:
                continue  # (warm-up steps are not written)
            moved = zero
            for b in range(B):
                new, old = nxt[q * B + b], u[t + 1, b]
                for e in range(S):
                    moved = _nan_max(moved, abs(new[e] - old[e]) if rerun else abs(new[e]))
                    old[e] = new[e]
            m = _nan_max(m, moved)
            if rerun and tol >= zero and moved <= tol:
                live[q] = 0
                nlive -= 1
                stops[lo + q] = t + 1
        j += 1
    return m


@njit(parallel=True, **_JIT)
def iteration(op, u, starts, ends, begins, first, rerun, tol, start, stops, st, w1, w2, w3, cnt, maxes, nblk):
    """One Chunked iteration of the op on ``u (T + 1, B, S)`` in place, for chunks
    ``first .. P - 1``; returns the residual ``max |new - old|`` over the steps written
    (NaN -> inf).

    ``starts, ends, begins: (P,)`` int64: chunk bounds and where each chunk's run begins.
    ``rerun`` False (the first iteration): chunk p runs from ``begins[p]`` (its warm start),
    from ``u[0]`` where that is 0 and from zero otherwise, and the old iterate is zero;
    True: it runs from ``begins[p] = starts[p]``, from the old state ``u[starts[p]]`` (step
    ``starts[p] - 1``), and with ``tol >= 0`` stops after the first step that moved by
    ``<= tol``. ``stops (P,)`` receives one past the last step each chunk ran.
    Scratch: ``start (P, B, S)``; per group k (``nblk`` groups at most, one per thread)
    ``st[k] (2, R, S)`` its states, ``w1[k], w2[k] (R, gH)``, ``w3[k] (R, S)``, ``cnt[k]
    (>= P,)`` int64 (which chunks still run), ``maxes (nblk,)``, with R rows for its chunks'
    B rows each.
    """
    P = starts.shape[0]
    n = P - first
    nb = min(nblk, n)
    if rerun:  # (Jacobi over chunks: every rerun starts from the old iterate)
        for p in range(first, P):
            start[p] = u[starts[p]]
    for k in prange(nb):
        lo, hi = _block(n, nb, k)
        lo, nc = lo + first, hi - lo
        maxes[k] = _run_group(
            op, u, starts, ends, begins[lo : lo + nc], lo, nc, rerun, tol, start, stops,
            st[k], w1[k], w2[k], w3[k], cnt[k],
        )  # fmt: skip
    return _reduce_max(maxes[:nb])


@njit(**_JIT)
def sequential(op, u, st, w1, w2, w3):
    """The op's recurrence over all of ``u (T + 1, B, S)`` from ``u[0]``: one chunk, run by
    the very code of a group of :func:`iteration` (``Sequential``: the forward op). Group
    buffers ``st (2, >= B, S)``, ``w1, w2 (>= B, gH)``, ``w3 (>= B, S)``."""
    bounds = np.array([0, u.shape[0] - 1], dtype=np.int64)
    stops, live = np.empty(1, dtype=np.int64), np.empty(1, dtype=np.int64)
    _run_group(
        op, u, bounds[:1], bounds[1:], bounds[:1], 0, 1, False, -1.0, u[:1], stops, st, w1, w2, w3, live
    )


def group_buffers(nb: int, R: int, S: int, gH: int, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """The row buffers of ``nb`` groups of ``R`` rows: ``st (nb, 2, R, S)``, ``w1, w2 (nb,
    R, gH)``, ``w3 (nb, R, S)`` (:func:`iteration`)."""
    return (
        np.zeros((nb, 2, R, S), dtype=dtype),
        np.zeros((nb, R, gH), dtype=dtype),
        np.zeros((nb, R, gH), dtype=dtype),
        np.zeros((nb, R, S), dtype=dtype),
    )


class ChunkedIterations:
    """Chunked's iterations of one op on a buffer ``u (T + 1, B, S)`` (module docstring),
    with every buffer allocated here; ``run(cap)`` as the other iterative solvers' run.

    Args:
        op: the op tuple (module docstring).
        u: the ``(T + 1, B, S)`` buffer, ``u[0]`` the state before step 0.
        layout: the chunk layout of the op's step order.
        tol: the solver's tol (None: none).
        gH: the width of the op's row scratch.
        threads: the thread count, read at every iteration.
    """

    def __init__(
        self,
        op: tuple,
        u: np.ndarray,
        layout: ChunkLayout,
        tol: float | None,
        gH: int,
        threads: Callable[[], int],
    ) -> None:
        self.op, self.u, self.lay, self.gH, self.threads = op, u, layout, gH, threads
        self.tol = -1.0 if tol is None else tol
        self.starts = np.array(layout.starts, dtype=np.int64)
        self.ends = np.array(layout.ends, dtype=np.int64)
        self.warm = np.array(layout.warm_starts, dtype=np.int64)
        P, B, S = layout.chunks, u.shape[1], u.shape[2]
        self.stops = np.empty(P, dtype=np.int64)
        self.start = np.zeros((P, B, S), dtype=u.dtype)
        self._scratch: dict[int, tuple[np.ndarray, ...]] = {}

    def scratch(self, nblk: int) -> tuple[np.ndarray, ...]:
        """The group buffers for ``nblk`` threads (allocated once per thread count): each
        group's slab padded so that no two threads write one cache line."""
        if nblk not in self._scratch:
            P, (_, B, S), dt = self.lay.chunks, self.u.shape, self.u.dtype
            nb = max(1, min(nblk, P))
            R = -(-P // nb) * B + 16
            self._scratch[nblk] = (
                *group_buffers(nb, R, S, self.gH, dt),
                np.zeros((nb, P + 16), dtype=np.int64),
                np.zeros(nb, dtype=dt),
            )
        return self._scratch[nblk]

    def iteration(self, i: int) -> float:
        """Iteration ``i`` (0-based): all chunks from their warm starts at ``i = 0``, else
        the reruns of chunks ``max(1, i) .. P - 1`` (the earlier ones start from states
        that have not changed since their last run). ``self.stops`` then says where each
        run stopped."""
        nblk = self.threads()
        first, begins = self.first_chunk(i), self.warm if i == 0 else self.starts
        return float(
            iteration(
                self.op, self.u, self.starts, self.ends, begins, first, i > 0, self.tol,
                self.start, self.stops, *self.scratch(nblk), nblk,
            )
        )  # fmt: skip

    def first_chunk(self, i: int) -> int:
        """The first chunk iteration ``i`` (0-based) runs."""
        return 0 if i == 0 else max(1, i)

    def run(self, cap: int, residuals: np.ndarray, record: list | None = None) -> np.ndarray:
        """Up to ``cap`` iterations into ``residuals``, stopping at the tol or on a
        non-finite residual; returns the residuals that ran. ``record``: if given, cleared,
        then every iteration appends ``(old iterate copy, first chunk, begins, stops)``."""
        if record is not None:
            record.clear()
        n = 0
        while n < cap:
            old = self.u.copy() if record is not None else None
            r = self.iteration(n)
            if record is not None:
                begins = self.warm if n == 0 else self.starts
                record.append((old, self.first_chunk(n), begins.copy(), self.stops.copy()))
            residuals[n] = r
            n += 1
            if not np.isfinite(r) or r <= self.tol:
                break
        return residuals[:n]
