"""The numba backend's forward solves: ``Sequential`` and the iterative solvers, by traits.

:func:`prepare_forward` builds the prepared solve; an iterative solver's update per
iteration comes from its ``transition`` and ``damping`` (:func:`_update`), Chunked's
iterations from :mod:`.chunked`.

Solvers, by their traits (never by class): ``Sequential`` is the recurrence (one
allocation-free kernel: Chunked's per-thread group code on a single chunk, below); an
iterative solver's ``transition`` picks the update: ``"none"`` is Jacobi (one parallel cell
evaluation), ``"full"`` / ``"diagonal"`` linearise at the iterate (full transposed ``S x S``
Jacobians or their diagonals, assembled from the cells' structured coefficients) and then,
with ``damping == 0`` (Newton, quasi-Newton), solve the linear recurrence by a chunked
parallel scan over time, or, with ``damping > 0`` (ELK, quasi-ELK), solve the damped
least-squares step exactly by an information-form Kalman filter and smoother
(``damped_full``, ``damped_diagonal``). The damped solves are sequential in time and
parallel over independent systems: over the batch for ELK, over batch x state components
(scalar filters) for quasi-ELK. A diagonal cell's ``"full"`` transition is its per-unit
``P x P`` blocks (``Arrays.transition_shape``; ``P = 1``: its diagonal, so Newton is the
diagonal scan), scanned per unit; ELK on blocks solves ``B*H`` independent ``P x P``-block
systems by the same filter (:class:`UnitSystems`). We chose this over a chunked parallel-in-time smoother
because the benchmark batches (B >= 8) already give every core independent work, and the
sequential elimination costs about ``2 S^3`` per step against the several times more of the
associative Kalman elements; with a batch smaller than the core count the full ELK step
leaves cores idle. ``transition == "window"`` (``Chunked``): after the input projection, one
``prange`` kernel per iteration (:mod:`.chunked`) over groups of chunks, one
group per thread, whose chunks advance together through the step
``kernels_cells.cell_rows`` (a product over the group's ``chunks x B`` rows), in place on
one state buffer; ``Sequential`` runs that same group code on one chunk; iteration i >= 2
reruns only chunks ``max(1, i - 1)..`` (the earlier ones would start from unchanged states),
a rerun stops at the first step that moved by ``<= tol``. So the time against ``Sequential``
is the parallel gain and the overlap's extra steps. ``Native`` is unsupported.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

from fpbench.backend import UnsupportedError
from fpbench.solvers import Iterative, Solver, iteration_cap, stopped

from . import chunked
from .arrays import Arrays
from .kernels_cells import cell_update, hidden_projection, max_abs_diff
from .kernels_damped import damped_diagonal, damped_full
from .kernels_scan import linear_scan, linearise

Update = Callable[[int, int], float]
"""``update(old, new) -> residual``: one iteration from state buffer ``old`` into ``new``."""


def prepare_forward(
    a: Arrays, solver: Solver, record: list[np.ndarray] | None = None
) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """The prepared forward solve: ``run() -> (states (T + 1, B, S) with s0 first,
    residuals)``, buffers reused by the next run. ``record`` (iterative solvers): a list
    that each run refills with a copy of every iteration's input iterate (Chunked: with
    what each iteration ran, see :func:`_chunked_run`)."""
    if solver.iterative:
        run = (_chunked_run if solver.transition == "window" else _iterative_run)(a, solver, record)
        cap = iteration_cap(solver, a.T)
        return lambda: run(cap)
    if solver.kind == "sequential":
        return _sequential_run(a)
    raise UnsupportedError(f"backend 'numba' does not implement solver {solver.name!r}")


def _sequential_run(a: Arrays) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """The recurrence: Chunked's group code on one chunk (:mod:`.chunked`)."""
    s, op = a.state_buffer(), a.forward_op()
    work = tuple(w[0] for w in chunked.group_buffers(1, a.B, a.S, a.gi.shape[1], a.gi.dtype))
    empty = np.empty(0, dtype=np.float64)

    def run_sequential() -> tuple[np.ndarray, np.ndarray]:
        hidden_projection(a.x_aug, a.w_aug, a.gi, a.hbuf)
        chunked.sequential(op, s, *work)
        return s, empty

    return run_sequential


def _iterative_run(
    a: Arrays, solver: Iterative, record: list[np.ndarray] | None = None
) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """``run(max_iters)`` for an iterative solver, by its traits (module docstring): from
    ``H = 0``, iterate ``S_new = update(S_old)`` with double-buffered states, one residual
    per iteration, stopping at ``solver.tol`` or on a non-finite residual (as the reference
    does). The thread count is read at every iteration, so ``numba.set_num_threads``
    between runs takes effect."""
    bufs = (a.state_buffer(), a.state_buffer())
    update = _update(a, solver, bufs)
    tol = -1.0 if solver.tol is None else solver.tol
    residuals = np.empty(iteration_cap(solver, a.T), dtype=np.float64)  # at most T iterations run

    def run(max_iters: int) -> tuple[np.ndarray, np.ndarray]:
        hidden_projection(a.x_aug, a.w_aug, a.gi, a.hbuf)
        bufs[0][1:] = 0.0
        old, n = 0, 0
        if record is not None:
            record.clear()
        while n < max_iters:
            if record is not None:
                record.append(bufs[old].copy())
            r = float(update(old, 1 - old))
            residuals[n] = r
            old, n = 1 - old, n + 1
            if stopped(np, r, tol):
                break
        return bufs[old], residuals[:n]

    return run


def _flat(a: Arrays, bufs: tuple[np.ndarray, np.ndarray]) -> tuple[tuple[np.ndarray, ...], ...]:
    """The state buffers as flat ``(N + B, S)`` views and their previous states ``(N, S)``."""
    flat = tuple(s.reshape((a.T + 1) * a.B, a.S) for s in bufs)
    return flat, tuple(f[: a.N] for f in flat)


def _update(a: Arrays, solver: Iterative, bufs: tuple[np.ndarray, np.ndarray]) -> Update:
    """The iteration of ``solver`` on the double buffer ``bufs``, by its ``transition``."""
    if solver.transition == "none":  # Jacobi
        flat, prev = _flat(a, bufs)

        def update(old: int, new: int) -> float:
            hidden_projection(prev[old], a.whhT, a.gh, a.hbuf)
            P = numba.get_num_threads()
            return cell_update(a.cell, a.G, a.gi, a.gh, a.bhh, flat[old], flat[new], a.B, P)

        return update
    if solver.transition in ("full", "diagonal"):
        return _linearised_update(a, solver, bufs)
    raise UnsupportedError(f"backend 'numba' does not implement transition {solver.transition!r}")


def _linearised_update(a: Arrays, solver: Iterative, bufs: tuple[np.ndarray, np.ndarray]) -> Update:
    """Linearise at the iterate (full transposed Jacobians or their diagonals), then solve
    the linear recurrence by a parallel scan (undamped) or the damped step by a Kalman
    filter and smoother (module docstring)."""
    T, B, S, N, dt = a.T, a.B, a.S, a.N, a.gi.dtype
    flat, prev = _flat(a, bufs)
    shape = a.transition_shape(solver.transition)
    A = np.empty((N, *shape), dtype=dt)
    bvec = np.empty((N, S), dtype=dt)
    A_t, b_t = A.reshape((T, B, *shape)), bvec.reshape(T, B, S)
    damped = solver.damping > 0

    def linearise_at(old: int, P: int) -> None:
        hidden_projection(prev[old], a.whhT, a.gh, a.hbuf)
        linearise(a.cell, a.G, a.gi, a.gh, a.whhT, a.bhh, flat[old], A, bvec, B, damped, P)

    if not damped:  # Newton, quasi-Newton: the linear recurrence by a parallel scan
        # a chunk after the first also composes its transitions: an S x S product per
        # step (full) against a matrix-vector one, or a second elementwise pass (diagonal)
        weight = a.scan_weight(solver.transition)

        def update(old: int, new: int) -> float:
            P = numba.get_num_threads()
            linearise_at(old, P)
            linear_scan(A_t, b_t, bufs[new], weight, P)
            return max_abs_diff(flat[new][B:], flat[old][B:], P)

    elif len(shape) == 2:  # ELK: a Kalman filter + smoother per sequence, in parallel over B
        Lbuf = np.empty_like(A_t)
        lam = dt.type(solver.damping)

        def update(old: int, new: int) -> float:
            linearise_at(old, numba.get_num_threads())
            return damped_full(A_t, b_t, Lbuf, bufs[old][1:], bufs[new][1:], lam)

    elif len(shape) == 3:  # ELK on per-unit blocks: P x P filters over the B*H units
        return _damped_blocks(a, solver, bufs, linearise_at, A, bvec)

    else:  # quasi-ELK: scalar filters + smoothers over the B*S lanes in parallel
        Dp = np.empty((T, B * S), dtype=dt)
        a_l, e_l = A.reshape(T, B * S), bvec.reshape(T, B * S)
        lanes = tuple(s[1:].reshape(T, B * S) for s in bufs)
        lam = dt.type(solver.damping)

        def update(old: int, new: int) -> float:
            P = numba.get_num_threads()
            linearise_at(old, P)
            return damped_diagonal(a_l, e_l, Dp, lanes[old], lanes[new], lam, P)

    return update


def units(x: np.ndarray, P: int) -> np.ndarray:
    """The view ``(T, B, H, P)`` of states ``x (T, B, S)``, ``S = P H``: unit j's parts
    together (not contiguous)."""
    T, B, S = x.shape
    return x.reshape(T, B, P, S // P).transpose(0, 1, 3, 2)


class UnitSystems:
    """The damped step of a diagonal cell of ``P > 1`` parts: its Jacobians are per-unit
    blocks, so the step decouples into ``B*H`` independent systems of ``P x P`` blocks,
    solved by ``damped_full`` with the units as its batch; this holds the buffers of that
    layout (states copied to and from it). ``A (N, H, P, P)``: the transitions as
    ``linearise`` stores them."""

    def __init__(self, a: Arrays, A: np.ndarray, damping: float) -> None:
        T, B, H, P, dt = a.T, a.B, a.H, a.P, a.gi.dtype
        self.P, self.lam = P, dt.type(damping)
        self.AT_l = A.reshape(T, B * H, P, P)
        self.Lbuf = np.empty_like(self.AT_l)
        self.e_l, self.y_l, self.o_l = (np.empty((T, B * H, P), dtype=dt) for _ in range(3))

    def solve(self, e: np.ndarray, y: np.ndarray, out: np.ndarray, rhs: bool = False) -> float:
        """``out = y + delta`` for the right-hand sides ``e`` (as ``damped_full``'s, or with
        ``rhs`` the normal equations' own), all ``(T, B, S)``; returns ``max |delta|``."""
        P, shape = self.P, (*e.shape[:2], -1, self.P)
        self.e_l.reshape(shape)[:] = units(e, P)
        self.y_l.reshape(shape)[:] = units(y, P)
        r = damped_full(self.AT_l, self.e_l, self.Lbuf, self.y_l, self.o_l, self.lam, rhs)
        units(out, P)[:] = self.o_l.reshape(shape)
        return r


def _damped_blocks(
    a: Arrays,
    solver: Iterative,
    bufs: tuple[np.ndarray, np.ndarray],
    linearise_at: Callable[[int, int], None],
    A: np.ndarray,
    bvec: np.ndarray,
) -> Update:
    """ELK on a diagonal cell of ``P > 1`` parts: :class:`UnitSystems` after linearising."""
    systems = UnitSystems(a, A, solver.damping)
    e = bvec.reshape(a.T, a.B, a.S)

    def update(old: int, new: int) -> float:
        linearise_at(old, numba.get_num_threads())
        return systems.solve(e, bufs[old][1:], bufs[new][1:])

    return update


def _chunked_run(
    a: Arrays, solver: Iterative, record: list | None = None
) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """``run(max_iters)`` for ``transition == "window"`` (Chunked): its iterations in place
    on one state buffer (:mod:`.chunked`), one parallel kernel each, after the input
    projection. ``record``: refilled with every iteration's ``(old iterate, first chunk,
    begins, stops)`` (the unrolled backward)."""
    s = a.state_buffer()
    it = chunked.ChunkedIterations(
        a.forward_op(), s, solver.layout(a.T), solver.tol, a.gi.shape[1], numba.get_num_threads
    )
    residuals = np.empty(iteration_cap(solver, a.T), dtype=np.float64)

    def run(max_iters: int) -> tuple[np.ndarray, np.ndarray]:
        hidden_projection(a.x_aug, a.w_aug, a.gi, a.hbuf)
        return s, it.run(max_iters, residuals, record)

    return run
