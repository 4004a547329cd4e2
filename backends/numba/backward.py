"""The numba backend's gradients: BPTT, the implicit adjoints, and the choice of backward.

:func:`prepare_backward` picks the backward pass by the solver's traits; the implicit
adjoint solves are here (:func:`_adjoint`), the unrolled backward passes through the
linearising solvers and Chunked in :mod:`.backward_unrolled`.

Gradients (kernels in :mod:`.grad_kernels`): the forward solve, then the structured
coefficients of every step at the returned states (parallel over (t, b)), the adjoint
``lambda_t = g_t + J_{t+1}^T lambda_{t+1}`` by BPTT (``Sequential``), by the chunked
parallel scan run backwards in time (``transition == "full"``: Newton, ELK), or by
iterations on the adjoint to the solver's ``tol``, at most ``min(max_iters, T)``
(``"none"``: Jacobi; ``"diagonal"``: each iteration an elementwise reverse recurrence with
the diagonal, the rest of ``J^T`` from the previous iterate), then one VJP over all (t, b)
in parallel and the parameter gradients as BLAS products. ``backward="unrolled"``: Jacobi
backpropagates through its recorded sweeps (the k-truncated model's gradient); the
linearising solvers through their recorded iterations, each an adjoint solve of the same
kind as the forward's (reverse scan, or the damped smoother with another right-hand side)
plus the cells' second derivatives, which the cells' own coefficient code gives when run on
complex numbers (complex step, exact to rounding:
:class:`.backward_unrolled.UnrolledLinearised`). ``Chunked``: implicit is ``"implicit:
chunked adjoint"``, the adjoint by Chunked's own iterations on the time-reversed adjoint
recurrence (the same grouped kernel with BPTT's step, parallel over chunks; its residuals
are the backward's), then the parameter products as above (a diagonal cell's vector
``weight_hh`` gets elementwise sums, :func:`.vjp.weight_hh_grad`); unrolled
(:func:`.backward_unrolled.unrolled_chunked`) backpropagates through every run the forward
recorded, each window recomputed and differentiated by the BPTT kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

from fpbench.backend import GradOutput, UnsupportedError
from fpbench.solvers import Iterative, Solver, iteration_cap, stopped
from fpbench.spec import Problem

from . import chunked
from .arrays import Arrays
from .backward_unrolled import UnrolledLinearised, unrolled_chunked
from .grad_kernels import adjoint_rhs, bptt, diagonals, reverse_diagonal, reverse_transitions
from .kernels_cells import max_abs_diff
from .kernels_scan import linear_scan
from .vjp import ParamSums, StepVJP, weight_hh_grad

Backward = Callable[[np.ndarray], GradOutput]
"""``backward(s)``: the gradients at the forward states ``s (T + 1, B, S)``, ``s0`` first."""
Adjoint = Callable[[np.ndarray, int], np.ndarray]
"""``adjoint(flat_prev, nblk) -> residuals``: fills ``lam (N, S)`` with the adjoint, the
coefficients already at the previous states ``flat_prev (N, S)``."""


def prepare_backward(
    a: Arrays, problem: Problem, solver: Solver, cotangent: np.ndarray, iterates: list
) -> Backward:
    """``backward(s) -> GradOutput`` (parameters, dx, ds0, backward residuals and method) at
    the forward states ``s (T + 1, B, S)`` (see :meth:`NumbaBackend.prepare_grad`);
    ``iterates``: what the forward recorded (``backward="unrolled"``)."""
    w = StepVJP(a, problem, cotangent)
    if solver.iterative and solver.backward == "unrolled":
        if solver.transition == "window":
            return unrolled_chunked(w, solver, iterates)
        if solver.transition != "none":
            return UnrolledLinearised(w, solver, iterates)
        return _unrolled_sweeps(w, iterates)
    lam = np.empty((a.N, a.S), dtype=a.gi.dtype)
    method, adjoint = _adjoint(w, solver, lam)

    def backward(s: np.ndarray) -> GradOutput:
        P_ = numba.get_num_threads()
        flat_prev = s.reshape((a.T + 1) * a.B, a.S)[: a.N]
        h_prev = w.coefficients(flat_prev, P_)
        res_b = adjoint(flat_prev, P_)
        w.vjp(lam, P_)
        w.ds[:, : a.H] += w.wdgh
        sums = ParamSums(w.dgi, weight_hh_grad(a, w.dgh, h_prev, (flat_prev, w.F)), w.dgh.sum(0))
        return w.result(sums, w.ds[: a.B].copy(), res_b, method)

    return backward


def _unrolled_sweeps(w: StepVJP, iterates: list[np.ndarray]) -> Backward:
    """Jacobi's unrolled backward: backpropagation through the recorded sweeps ``S <- F(S)``,
    last first: the VJP of every step of a sweep in parallel; the cotangent of a sweep's
    input is that of the previous states of the steps after it (``s0``'s goes to ``ds0``)."""
    a = w.a
    T, B, S, H, N = a.T, a.B, a.S, a.H, a.N
    v = np.empty((N, S), dtype=a.gi.dtype)

    def backward_unrolled(s: np.ndarray) -> GradOutput:
        P_ = numba.get_num_threads()
        v[:] = w.g
        sums, ds0 = ParamSums.zeros(a), np.zeros((B, S), dtype=a.gi.dtype)
        for it in reversed(iterates):
            prev = it.reshape((T + 1) * B, S)[:N]
            h_prev = w.coefficients(prev, P_)
            w.vjp(v, P_)
            w.ds[:, :H] += w.wdgh
            sums.add(a, w.dgi, w.dgh, h_prev, states=(prev, w.F))
            ds0 += w.ds[:B]
            v[: N - B] = w.ds[B:]
            v[N - B :] = 0.0
        empty = np.empty(0, dtype=np.float64)
        return w.result(sums, ds0, empty, "unrolled: backpropagation through the sweeps")

    return backward_unrolled


def _adjoint(w: StepVJP, solver: Solver, lam: np.ndarray) -> tuple[str, Adjoint]:
    """The implicit backward's adjoint solve for ``solver`` and its method name."""
    if solver.kind == "sequential":
        return "bptt", _bptt_adjoint(w, lam)
    if solver.transition == "full":
        return "implicit: reverse scan", _scan_adjoint(w, lam)
    if solver.transition in ("none", "diagonal"):
        return _iterated_adjoint(w, solver, lam)
    if solver.transition == "window":
        return "implicit: chunked adjoint", _chunked_adjoint(w, solver, lam)
    raise UnsupportedError(f"backend 'numba' has no backward pass for {solver}")


def _bptt_adjoint(w: StepVJP, lam: np.ndarray) -> Adjoint:
    """BPTT: the adjoint recurrence step by step (``Sequential``)."""
    B, S, gH, dt = w.a.B, w.a.S, w.a.gi.shape[1], w.a.gi.dtype
    scratch = (np.empty((B, gH), dtype=dt), np.empty((B, gH), dtype=dt), np.empty((B, S), dtype=dt))
    empty = np.empty(0, dtype=np.float64)

    def adjoint(flat_prev: np.ndarray, P_: int) -> np.ndarray:
        bptt(w.C, w.Dd, w.CI, w.whh, w.g, lam, *scratch, B)
        return empty

    return adjoint


def _scan_adjoint(w: StepVJP, lam: np.ndarray) -> Adjoint:
    """The adjoint by the chunked parallel scan run backwards in time (full transitions)."""
    T, B, S, dt = w.a.T, w.a.B, w.a.S, w.a.gi.dtype
    A_rev = np.empty((T, B, *w.a.transition_shape("full")), dtype=dt)
    weight = w.a.scan_weight("full")
    b_rev = np.empty((T, B, S), dtype=dt)
    u = np.zeros((T + 1, B, S), dtype=dt)
    empty = np.empty(0, dtype=np.float64)

    def adjoint(flat_prev: np.ndarray, P_: int) -> np.ndarray:
        reverse_transitions(w.C, w.Dd, w.a.whhT, A_rev, w.g, b_rev, B, P_)
        linear_scan(A_rev, b_rev, u, weight, P_)
        lam.reshape(T, B, S)[:] = u[:0:-1]
        return empty

    return adjoint


def _iterated_adjoint(w: StepVJP, solver: Iterative, lam: np.ndarray) -> tuple[str, Adjoint]:
    """Iterations on the adjoint to the solver's ``tol``, at most ``min(max_iters, T)``:
    Jacobi's (``"none"``) or diagonal-preconditioned ones (``"diagonal"``)."""
    a = w.a
    diagonal = solver.transition == "diagonal"
    method = "implicit: " + (
        "diagonal-preconditioned adjoint iterations" if diagonal else "jacobi on the adjoint"
    )
    Dg = np.empty((a.N, a.S), dtype=a.gi.dtype)
    lam_new = np.empty((a.N, a.S), dtype=a.gi.dtype)
    cap = min(solver.max_iters, a.T)
    res = np.empty(cap, dtype=np.float64)
    tol = -1.0 if solver.tol is None else solver.tol

    def adjoint(flat_prev: np.ndarray, P_: int) -> np.ndarray:
        if diagonal:
            diagonals(w.C, w.Dd, a.whhT, Dg, P_)
        lam[:] = 0.0
        n = 0
        while n < cap:
            w.vjp(lam, P_)
            adjoint_rhs(w.g, w.ds, w.wdgh, Dg, lam, diagonal, lam_new, a.B, P_)
            if diagonal:
                reverse_diagonal(Dg, lam_new, a.B, P_)
            r = float(max_abs_diff(lam_new, lam, P_))
            lam[:] = lam_new
            res[n] = r
            n += 1
            if stopped(np, r, tol):
                break
        return res[:n]

    return method, adjoint


def _chunked_adjoint(w: StepVJP, solver: Iterative, lam: np.ndarray) -> Adjoint:
    """Chunked's iterations on the time-reversed adjoint recurrence (:mod:`.chunked`)."""
    a = w.a
    T, B, S = a.T, a.B, a.S
    u_rev = np.zeros((T + 1, B, S), dtype=a.gi.dtype)  # the adjoint in reversed time, u_rev[0] = 0
    adjoint_op = (w.C, w.Dd, w.CI, w.whh, w.g.reshape(T, B, S))
    iterations = chunked.ChunkedIterations(
        adjoint_op, u_rev, solver.layout(T), solver.tol, a.gi.shape[1], numba.get_num_threads
    )
    res = np.empty(iteration_cap(solver, T), dtype=np.float64)

    def adjoint(flat_prev: np.ndarray, P_: int) -> np.ndarray:
        r = iterations.run(len(res), res)
        lam.reshape(T, B, S)[:] = u_rev[:0:-1]
        return r

    return adjoint
