"""The Numba backend (``"numba"``, device ``"cpu"``): parallel CPU kernels.

Every solve is a short Python loop over compiled kernels (``backends._numba_kernels``):
per iteration one BLAS product ``(T*B, H) x (H, gH)`` (``np.dot`` into a preallocated
buffer, SciPy's BLAS) and one or two ``prange`` kernels. An iteration costs milliseconds
at benchmark sizes and the Python loop a few microseconds, while separate kernels keep
each compile unit small and cacheable (``cache=True``: asv starts a fresh process per
benchmark). ``prepare`` copies the (read-only) problem into its own buffers, allocates
every buffer and runs each kernel once on the real data.

Cells: ``_numba_kernels.CELL_IDS`` (elman, gru, lstm) is the one table; a cell missing from
it raises ``UnsupportedError``. The state is ``s = h`` or, for lstm, ``s = [h, c]`` (``2H``);
``Prepared.to_host`` returns the full states ``(T, B, S)``.

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
(scalar filters) for quasi-ELK. We chose this over a chunked parallel-in-time smoother
because the benchmark batches (B >= 8) already give every core independent work, and the
sequential elimination costs about ``2 S^3`` per step against the several times more of the
associative Kalman elements; with a batch smaller than the core count the full ELK step
leaves cores idle. ``transition == "window"`` (``Chunked``): after the input projection, one
``prange`` kernel per iteration (``backends._numba_chunked``) over groups of chunks, one
group per thread, whose chunks advance together through the step
``_numba_kernels.cell_rows`` (a product over the group's ``chunks x B`` rows), in place on
one state buffer; ``Sequential`` runs that same group code on one chunk; iteration i >= 2
reruns only chunks ``max(1, i - 1)..`` (the earlier ones would start from unchanged states),
a rerun stops at the first step that moved by ``<= tol``. So the time against ``Sequential``
is the parallel gain and the overlap's extra steps. ``Native`` is unsupported.

Gradients (``prepare_grad``, kernels in ``backends._numba_grad``): the forward solve, then
the structured coefficients of every step at the returned states (parallel over (t, b)),
the adjoint ``lambda_t = g_t + J_{t+1}^T lambda_{t+1}`` by BPTT (``Sequential``), by the
chunked parallel scan run backwards in time (``transition == "full"``: Newton, ELK), or by
iterations on the adjoint to the solver's ``tol``, at most ``min(max_iters, T)``
(``"none"``: Jacobi; ``"diagonal"``: each iteration an elementwise reverse recurrence with
the diagonal, the rest of ``J^T`` from the previous iterate), then one VJP over all (t, b)
in parallel and the parameter gradients as BLAS products. ``backward="unrolled"``: Jacobi
backpropagates through its recorded sweeps (the k-truncated model's gradient); the
linearising solvers through their recorded iterations, each an adjoint solve of the same
kind as the forward's (reverse scan, or the damped smoother with another right-hand side)
plus the cells' second derivatives, which the cells' own coefficient code gives when run on
complex numbers (complex step, exact to rounding: :func:`_backward_unrolled_linearised`).
``Chunked``: implicit is ``"implicit: chunked adjoint"``, the adjoint by Chunked's own
iterations on the time-reversed adjoint recurrence (the same grouped kernel with BPTT's
step, parallel over chunks; its residuals are the backward's), then the parameter products
as above; unrolled (:func:`_backward_unrolled_chunked`) backpropagates through every run
the forward recorded, each window recomputed and differentiated by the BPTT kernel.

Threads: ``numba.set_num_threads(min(FPBENCH_THREADS or os.cpu_count(),
NUMBA_NUM_THREADS))``, applied once, when the backend first prepares a solve, on the
threading layer Numba chooses (GNU OpenMP's ``omp`` where it is installed) unless
``NUMBA_THREADING_LAYER`` names one. ``omp`` is the faster on an otherwise idle machine;
its threads spin while they wait, so where other processes share the cores ``workqueue``
is several times faster, and only ``workqueue`` and ``tbb`` let a process that started
the threads fork a child that runs parallel kernels (asv's fork server warms the kernels
there only then: ``benchmarks/common.py``). ``reports/vm/numba_threading_layer.md`` has
the comparison; ``fpbench info`` shows the layer in use.

BLAS threads: the products go to SciPy's OpenBLAS, whose worker threads by default keep
spinning for a long while after each call and take the cores from Numba's threads in the
``prange`` kernels that follow (reports/ holds what that costs).
The backend therefore sets ``OPENBLAS_THREAD_TIMEOUT=4`` (the shortest spin) unless it is
already set, when it first prepares a solve (:func:`_kernels`; importing the module or
querying ``devices()`` sets nothing); OpenBLAS reads it when SciPy's BLAS is loaded, i.e.
when this backend first compiles or loads its kernels (a process that loaded SciPy's BLAS
earlier keeps its own setting). ``fpbench info`` shows the value.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from fpbench.backend import (
    Backend,
    BackendUnavailableError,
    GradHost,
    GradOutput,
    Prepared,
    UnsupportedError,
    requested_threads,
)
from fpbench.solvers import Iterative, Solver, iteration_cap
from fpbench.spec import Problem, RNNSpec

_threads_applied = False


def _require_numba() -> None:
    """Raise :class:`BackendUnavailableError` unless numba and SciPy import (nothing else)."""
    try:
        import numba  # noqa: F401
        import scipy  # noqa: F401  numba's np.dot calls SciPy's BLAS
    except ImportError as e:
        raise BackendUnavailableError(f"backend 'numba' is unavailable: {e}") from e


def _kernels():
    """The kernel module, for a solve being prepared: on first use, sets the BLAS spin
    (module docstring) before the kernels load SciPy's BLAS, and applies the thread count."""
    global _threads_applied
    _require_numba()
    import numba

    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see the module docstring
    from backends import _numba_kernels

    if not _threads_applied:
        numba.set_num_threads(min(requested_threads(), numba.config.NUMBA_NUM_THREADS))
        _threads_applied = True
    return _numba_kernels


class _Arrays:
    """A problem laid out for the kernels (see ``_numba_kernels``), in writable buffers of
    this backend: ``x_aug (T*B, I+1)`` with a ones column, so that one product
    ``x_aug @ w_aug`` is ``gi = x W_ih^T + b_ih``; ``whhT (H, gH)``; ``bhh (gH,)``; ``s0 (B, S)``;
    the ``(T*B, gH)`` buffers ``gi`` and ``gh``; ``hbuf (T*B, H)`` (lstm: the contiguous h for
    the product).

    Raises:
        UnsupportedError: the kernels have no entry for the problem's cell.
    """

    def __init__(self, problem: Problem) -> None:
        s = problem.spec
        cell = _kernels().CELL_IDS.get(s.cell)
        if cell is None:
            raise UnsupportedError(f"backend 'numba' does not implement cell {s.cell!r}")
        self.cell, self.G = cell, s.gates
        self.T, self.B, self.H, self.S = s.seq_len, s.batch, s.hidden_size, s.state_size
        self.N, gH, dt = s.seq_len * s.batch, s.gates * s.hidden_size, problem.x.dtype
        self.x_aug = np.ones((self.N, s.input_size + 1), dtype=dt)
        self.x_aug[:, :-1] = problem.x.reshape(self.N, s.input_size)
        self.w_aug = np.ascontiguousarray(np.vstack([problem.weight_ih.T, problem.bias_ih[None]]))
        self.whhT = np.array(problem.weight_hh.T, order="C")  # writable (numba types read-only apart)
        self.bhh = np.array(problem.bias_hh, order="C", copy=True)
        self.s0 = np.array(problem.s0, order="C", copy=True)
        self.gi = np.empty((self.N, gH), dtype=dt)
        self.gh = np.empty((self.N, gH), dtype=dt)
        self.hbuf = np.empty((self.N if self.S > self.H else 1, self.H), dtype=dt)

    def state_buffer(self) -> np.ndarray:
        """A ``(T + 1, B, S)`` state buffer whose first slab is ``s0``, the rest zero."""
        s = np.zeros((self.T + 1, self.B, self.S), dtype=self.s0.dtype)
        s[0] = self.s0
        return s


def _states_to_host(out: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    s, residuals = out
    return s[1:].copy(), residuals.copy()  # buffers are reused by the next run


class NumbaBackend(Backend):
    """Numba ``@njit(parallel=True)`` kernels on the CPU, float32 or float64."""

    name = "numba"

    def backward_kept(self, spec: RNNSpec, solver: Solver) -> tuple[int, int]:
        """For the unrolled backward the forward records every iterate (``S`` items a row);
        the backward recomputes the rest. The others keep nothing beyond the common
        working set."""
        unrolled = solver.iterative and solver.backward == "unrolled"
        return (iteration_cap(solver, spec.seq_len), spec.state_size) if unrolled else (0, 0)

    def devices(self) -> list[str]:
        _require_numba()
        return ["cpu"]

    def prepare(self, problem: Problem, solver: Solver, device: str) -> Prepared:
        K = _kernels()
        _check_device(device)
        a = _Arrays(problem)
        run = _forward(K, a, solver)
        run()  # compile (or load from cache) and warm up
        return Prepared(run, _states_to_host)

    def prepare_grad(self, problem: Problem, solver: Solver, device: str, cotangent: np.ndarray) -> Prepared:
        """The forward solve and its hand-written backward pass (``_numba_grad``): BPTT for
        ``Sequential``; for the iterative solvers the implicit gradient at the returned states,
        the adjoint solved by a reverse parallel scan (``transition == "full"``: Newton, ELK),
        by iterations to the solver's tolerance (``"none"``: Jacobi on the adjoint;
        ``"diagonal"``: diagonal-preconditioned, each an elementwise reverse recurrence), at
        most ``min(max_iters, T)`` of them; then the parameter gradients as batched products
        over all ``(t, b)``. ``backward="unrolled"``: Jacobi's forward keeps every sweep's
        input and backpropagates through the sweeps (each sweep's VJP parallel over
        ``(t, b)``); the linearising solvers likewise through their iterations
        (:func:`_backward_unrolled_linearised`). ``Chunked`` (``transition == "window"``):
        the adjoint by Chunked's iterations on the reversed adjoint recurrence (implicit),
        or BPTT through every recorded run's window (:func:`_backward_unrolled_chunked`)."""
        K = _kernels()
        _check_device(device)
        a = _Arrays(problem)
        iterates: list[np.ndarray] = []
        backward = _backward(K, a, problem, solver, cotangent, iterates)
        unrolled = solver.iterative and solver.backward == "unrolled"
        forward = _forward(K, a, solver, iterates if unrolled else None)

        def run() -> GradOutput:
            s, residuals = forward()  # (the backward's output, completed by the forward's)
            return dataclasses.replace(
                backward(s), states=s[1:], residuals=residuals, iterations=len(residuals)
            )

        run()  # compile (or load from cache) and warm up
        return Prepared(run, _grad_to_host)

    def iteration_floor(self, problem: Problem, device: str) -> Callable[[], Any]:
        K = _kernels()
        _check_device(device)
        a = _Arrays(problem)
        K.hidden_projection(a.x_aug, a.w_aug, a.gi, a.hbuf)
        hp = np.ascontiguousarray(np.broadcast_to(a.s0, (a.T, a.B, a.S)).reshape(a.N, a.S))
        out = np.empty_like(hp)

        def floor() -> np.ndarray:
            K.iteration_floor(a.cell, a.G, a.gi, hp, a.whhT, a.bhh, a.gh, a.hbuf, out)
            return out

        floor()
        return floor

    def info(self) -> dict[str, str]:
        import numba
        import scipy

        K = _kernels()
        K.max_abs_diff(np.zeros((1, 1)), np.zeros((1, 1)), 1)  # the threading layer starts on first use
        return {
            "numba": numba.__version__,
            "scipy": scipy.__version__,  # its BLAS does numba's np.dot
            "numba_threads": str(numba.get_num_threads()),
            "numba_threading_layer": numba.threading_layer(),
            "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT", ""),
        }


def _check_device(device: str) -> None:
    if device != "cpu":
        raise UnsupportedError(f"backend 'numba' runs on 'cpu' only, not {device!r}")


def _forward(
    K, a: _Arrays, solver: Solver, record: list[np.ndarray] | None = None
) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """The prepared forward solve: ``run() -> (states (T + 1, B, S) with s0 first,
    residuals)``, buffers reused by the next run. ``record`` (iterative solvers): a list
    that each run refills with a copy of every iteration's input iterate (Chunked: with
    what each iteration ran, see :func:`_chunked_run`)."""
    if solver.iterative:
        run = (_chunked_run if solver.transition == "window" else _iterative_run)(K, a, solver, record)
        cap = iteration_cap(solver, a.T)
        return lambda: run(cap)
    if solver.kind == "sequential":  # Chunked's group code on one chunk (_numba_chunked)
        KC = _chunked_kernels()
        s, op = a.state_buffer(), _forward_op(a)
        work = tuple(w[0] for w in KC.group_buffers(1, a.B, a.S, a.gi.shape[1], a.gi.dtype))
        empty = np.empty(0, dtype=np.float64)

        def run_sequential() -> tuple[np.ndarray, np.ndarray]:
            K.hidden_projection(a.x_aug, a.w_aug, a.gi, a.hbuf)
            KC.sequential(op, s, *work)
            return s, empty

        return run_sequential
    raise UnsupportedError(f"backend 'numba' does not implement solver {solver.name!r}")


def _iterative_run(
    K, a: _Arrays, solver: Iterative, record: list[np.ndarray] | None = None
) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """``run(max_iters)`` for an iterative solver, by its traits (module docstring): from
    ``H = 0``, iterate ``S_new = update(S_old)`` with double-buffered states, one residual
    per iteration, stopping at ``solver.tol`` or on a non-finite residual (as the reference
    does). The thread count is read at every iteration, so ``numba.set_num_threads``
    between runs takes effect."""
    import numba

    T, B, S, N = a.T, a.B, a.S, a.N
    bufs = (a.state_buffer(), a.state_buffer())
    flat = tuple(s.reshape((T + 1) * B, S) for s in bufs)
    prev = tuple(f[:N] for f in flat)  # the previous state of every step
    tol = -1.0 if solver.tol is None else solver.tol
    residuals = np.empty(iteration_cap(solver, T), dtype=np.float64)  # at most T iterations run
    dt = a.gi.dtype

    def project(old: int) -> None:
        K.hidden_projection(prev[old], a.whhT, a.gh, a.hbuf)

    if solver.transition == "none":  # Jacobi

        def update(old: int, new: int) -> float:
            project(old)
            P = numba.get_num_threads()
            return K.cell_update(a.cell, a.G, a.gi, a.gh, a.bhh, flat[old], flat[new], B, P)

    elif solver.transition in ("full", "diagonal"):
        full = solver.transition == "full"
        A = np.empty((N, S, S) if full else (N, S), dtype=dt)
        bvec = np.empty((N, S), dtype=dt)
        A_t, b_t = A.reshape((T, B, *A.shape[1:])), bvec.reshape(T, B, S)
        damped = solver.damping > 0

        def linearise(old: int, P: int) -> None:
            project(old)
            K.linearise(a.cell, a.G, a.gi, a.gh, a.whhT, a.bhh, flat[old], A, bvec, B, damped, P)

        if not damped:  # Newton, quasi-Newton: the linear recurrence by a parallel scan
            # a chunk after the first also composes its transitions: an S x S product per
            # step (full) against a matrix-vector one, or a second elementwise pass (diagonal)
            weight = float(S + 1) if full else 1.0

            def update(old: int, new: int) -> float:
                P = numba.get_num_threads()
                linearise(old, P)
                K.linear_scan(A_t, b_t, bufs[new], weight, P)
                return K.max_abs_diff(flat[new][B:], flat[old][B:], P)

        elif full:  # ELK: a Kalman filter + smoother per sequence, in parallel over B
            Lbuf = np.empty_like(A_t)
            lam = dt.type(solver.damping)

            def update(old: int, new: int) -> float:
                linearise(old, numba.get_num_threads())
                return K.damped_full(A_t, b_t, Lbuf, bufs[old][1:], bufs[new][1:], lam)

        else:  # quasi-ELK: scalar filters + smoothers over the B*S lanes in parallel
            Dp = np.empty((T, B * S), dtype=dt)
            a_l, e_l = A.reshape(T, B * S), bvec.reshape(T, B * S)
            lanes = tuple(s[1:].reshape(T, B * S) for s in bufs)
            lam = dt.type(solver.damping)

            def update(old: int, new: int) -> float:
                P = numba.get_num_threads()
                linearise(old, P)
                return K.damped_diagonal(a_l, e_l, Dp, lanes[old], lanes[new], lam, P)

    else:
        raise UnsupportedError(f"backend 'numba' does not implement transition {solver.transition!r}")

    def run(max_iters: int) -> tuple[np.ndarray, np.ndarray]:
        K.hidden_projection(a.x_aug, a.w_aug, a.gi, a.hbuf)
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
            if not np.isfinite(r) or r <= tol:
                break
        return bufs[old], residuals[:n]

    return run


def _forward_op(a: _Arrays, gi3: np.ndarray | None = None) -> tuple:
    """The forward op of ``_numba_chunked``: ``(cell, G, gi (T, B, gH), whhT, bhh)``
    (``gi3``: another slab of steps' ``gi`` in place of all of them)."""
    return (a.cell, a.G, a.gi.reshape(a.T, a.B, -1) if gi3 is None else gi3, a.whhT, a.bhh)


def _chunked_kernels():
    from backends import _numba_chunked

    return _numba_chunked


def _chunked_run(
    K, a: _Arrays, solver: Iterative, record: list | None = None
) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """``run(max_iters)`` for ``transition == "window"`` (Chunked): its iterations in place
    on one state buffer (``_numba_chunked``), one parallel kernel each, after the input
    projection. ``record``: refilled with every iteration's ``(old iterate, first chunk,
    begins, stops)`` (the unrolled backward)."""
    import numba

    s = a.state_buffer()
    it = _chunked_kernels().ChunkedIterations(
        _forward_op(a), s, solver.layout(a.T), solver.tol, a.gi.shape[1], numba.get_num_threads
    )
    residuals = np.empty(iteration_cap(solver, a.T), dtype=np.float64)

    def run(max_iters: int) -> tuple[np.ndarray, np.ndarray]:
        K.hidden_projection(a.x_aug, a.w_aug, a.gi, a.hbuf)
        return s, it.run(max_iters, residuals, record)

    return run


def _grad_kernels():
    from backends import _numba_grad

    return _numba_grad


def _backward(
    K, a: _Arrays, problem: Problem, solver: Solver, cotangent: np.ndarray, iterates: list[np.ndarray]
):
    """``backward(s) -> (params, dx, ds0, backward residuals, method)`` at the forward
    states ``s (T + 1, B, S)`` (see :meth:`NumbaBackend.prepare_grad`); ``iterates``: the
    sweeps' inputs the forward recorded (``backward="unrolled"``)."""
    import numba

    KG = _grad_kernels()
    T, B, S, H, N = a.T, a.B, a.S, a.H, a.N
    G, gH, dt = a.G, a.gi.shape[1], a.gi.dtype
    P = S // H
    g = np.array(cotangent, dtype=dt, order="C").reshape(N, S)
    whh = np.array(problem.weight_hh, order="C", copy=True)
    wih = np.array(problem.weight_ih, order="C", copy=True)
    C, CI = np.empty((N, G, P, H), dtype=dt), np.empty((N, G, P, H), dtype=dt)
    Dd = np.empty((N, P, P, H), dtype=dt)
    lam = np.empty((N, S), dtype=dt)
    dgh, dgi = np.empty((N, gH), dtype=dt), np.empty((N, gH), dtype=dt)
    ds, wdgh = np.empty((N, S), dtype=dt), np.empty((N, H), dtype=dt)
    empty = np.empty(0, dtype=np.float64)
    tol = -1.0 if not solver.iterative or solver.tol is None else solver.tol

    def vjp(v: np.ndarray, nblk: int) -> None:  # dgh, dgi, ds = the VJP of every step for v
        KG.vjp_rows(C, Dd, CI, v, dgh, dgi, ds, nblk)
        np.dot(dgh, whh, out=wdgh)

    def linearise(flat_prev: np.ndarray, nblk: int) -> np.ndarray:
        """C, Dd, CI at the previous states ``flat_prev (N, S)``; returns their ``h (N, H)``."""
        K.hidden_projection(flat_prev, a.whhT, a.gh, a.hbuf)
        KG.coefficients(a.cell, a.gi, a.gh, a.bhh, flat_prev, C, Dd, CI, nblk)
        return flat_prev if S == H else a.hbuf  # (lstm: hidden_projection copied h there)

    def result(dgi_total: np.ndarray, dW_hh: np.ndarray, db_hh: np.ndarray, ds0: np.ndarray, res_b, method):
        w_ih_aug = dgi_total.T @ a.x_aug
        params = {
            "weight_ih": w_ih_aug[:, :-1],
            "weight_hh": dW_hh,
            "bias_ih": w_ih_aug[:, -1].copy(),
            "bias_hh": db_hh,
        }
        dx = (dgi_total @ wih).reshape(T, B, -1)
        return GradOutput(None, empty, 0, params, dx, ds0, res_b.copy(), len(res_b), method)

    if solver.iterative and solver.backward == "unrolled" and solver.transition == "window":
        return _backward_unrolled_chunked(K, KG, a, solver, g, whh, iterates, result)

    if solver.iterative and solver.backward == "unrolled" and solver.transition != "none":
        return _backward_unrolled_linearised(
            K, KG, a, solver, g, whh, iterates, (C, Dd, CI), (dgh, dgi, ds, wdgh), linearise, vjp, result
        )

    if solver.iterative and solver.backward == "unrolled":
        v = np.empty((N, S), dtype=dt)

        def backward_unrolled(s: np.ndarray):
            """Backpropagation through the recorded sweeps ``S <- F(S)``, last first: the
            VJP of every step of a sweep in parallel; the cotangent of a sweep's input is
            that of the previous states of the steps after it (``s0``'s goes to ``ds0``)."""
            P_ = numba.get_num_threads()
            v[:] = g
            dgi_sum, dW_hh = np.zeros((N, gH), dtype=dt), np.zeros((gH, H), dtype=dt)
            db_hh, ds0 = np.zeros(gH, dtype=dt), np.zeros((B, S), dtype=dt)
            for it in reversed(iterates):
                h_prev = linearise(it.reshape((T + 1) * B, S)[:N], P_)
                vjp(v, P_)
                ds[:, :H] += wdgh
                dgi_sum += dgi
                dW_hh += dgh.T @ h_prev
                db_hh += dgh.sum(0)
                ds0 += ds[:B]
                v[: N - B] = ds[B:]
                v[N - B :] = 0.0
            return result(dgi_sum, dW_hh, db_hh, ds0, empty, "unrolled: backpropagation through the sweeps")

        return backward_unrolled

    if solver.kind == "sequential":
        method = "bptt"
        scratch = (np.empty((B, gH), dtype=dt), np.empty((B, gH), dtype=dt), np.empty((B, S), dtype=dt))

        def adjoint(flat_prev: np.ndarray, P_: int):
            KG.bptt(C, Dd, CI, whh, g, lam, *scratch, B)
            return empty

    elif solver.transition == "full":
        method = "implicit: reverse scan"
        A_rev = np.empty((T, B, S, S), dtype=dt)
        b_rev = np.empty((T, B, S), dtype=dt)
        u = np.zeros((T + 1, B, S), dtype=dt)

        def adjoint(flat_prev: np.ndarray, P_: int):
            KG.reverse_transitions(C, Dd, a.whhT, A_rev, g, b_rev, B, P_)
            K.linear_scan(A_rev, b_rev, u, float(S + 1), P_)
            lam.reshape(T, B, S)[:] = u[:0:-1]
            return empty

    elif solver.transition in ("none", "diagonal"):
        diagonal = solver.transition == "diagonal"
        method = (
            "implicit: diagonal-preconditioned adjoint iterations"
            if diagonal
            else "implicit: jacobi on the adjoint"
        )
        Dg = np.empty((N, S), dtype=dt)
        lam_new = np.empty((N, S), dtype=dt)
        cap = min(solver.max_iters, T)
        res = np.empty(cap, dtype=np.float64)

        def adjoint(flat_prev: np.ndarray, P_: int):
            if diagonal:
                KG.diagonals(C, Dd, a.whhT, Dg, P_)
            lam[:] = 0.0
            n = 0
            while n < cap:
                vjp(lam, P_)
                KG.adjoint_rhs(g, ds, wdgh, Dg, lam, diagonal, lam_new, B, P_)
                if diagonal:
                    KG.reverse_diagonal(Dg, lam_new, B, P_)
                r = float(K.max_abs_diff(lam_new, lam, P_))
                lam[:] = lam_new
                res[n] = r
                n += 1
                if not np.isfinite(r) or r <= tol:
                    break
            return res[:n]

    elif solver.transition == "window":
        method = "implicit: chunked adjoint"
        u_rev = np.zeros((T + 1, B, S), dtype=dt)  # the adjoint in reversed time, u_rev[0] = 0
        adjoint_op = (C, Dd, CI, whh, g.reshape(T, B, S))
        chunked_adjoint = _chunked_kernels().ChunkedIterations(
            adjoint_op, u_rev, solver.layout(T), solver.tol, gH, numba.get_num_threads
        )
        res = np.empty(iteration_cap(solver, T), dtype=np.float64)

        def adjoint(flat_prev: np.ndarray, P_: int):
            r = chunked_adjoint.run(len(res), res)
            lam.reshape(T, B, S)[:] = u_rev[:0:-1]
            return r

    else:
        raise UnsupportedError(f"backend 'numba' has no backward pass for {solver}")

    def backward(s: np.ndarray):
        P_ = numba.get_num_threads()
        flat_prev = s.reshape((T + 1) * B, S)[:N]
        h_prev = linearise(flat_prev, P_)
        res_b = adjoint(flat_prev, P_)
        vjp(lam, P_)
        ds[:, :H] += wdgh
        return result(dgi, dgh.T @ h_prev, dgh.sum(0), ds[:B].copy(), res_b, method)

    return backward


def _backward_unrolled_chunked(K, KG, a: _Arrays, solver: Iterative, g, whh, record, result):
    """``backward(s)`` through the runs of Chunked's iterations that the forward recorded
    (``(old iterate, first chunk, begins, stops)`` each), last iteration first, as
    :func:`fpbench.reference_grad.unrolled_chunked`: each run's window is recomputed from its
    start state (the Sequential kernel), differentiated by BPTT (``_numba_grad.bptt`` on the
    cotangents of the steps it wrote), and its start state's cotangent goes to ``ds0`` (a
    window from ``s0``) or to the old iterate (a rerun); the cotangent of a step no run
    wrote passes through to the old iterate. ``g (N, S)``, ``whh (gH, H)``; ``result`` as in
    :func:`_backward`."""
    import numba

    T, B, S, H, G = a.T, a.B, a.S, a.H, a.G
    gH, dt = a.gi.shape[1], a.gi.dtype
    lay = solver.layout(T)
    starts = lay.starts
    W = lay.window  # the longest run
    win = np.empty((W + 1, B, S), dtype=dt)
    KC = _chunked_kernels()
    work = tuple(w[0] for w in KC.group_buffers(1, B, S, gH, dt))
    P_ = S // H
    C, CI = np.empty((W * B, G, P_, H), dtype=dt), np.empty((W * B, G, P_, H), dtype=dt)
    Dd = np.empty((W * B, P_, P_, H), dtype=dt)
    gh, hbuf = np.empty((W * B, gH), dtype=dt), np.empty((W * B if S > H else 1, H), dtype=dt)
    gwin, lam, ds = (np.empty((W * B, S), dtype=dt) for _ in range(3))
    dgh, dgi = np.empty((W * B, gH), dtype=dt), np.empty((W * B, gH), dtype=dt)
    scratch = (np.empty((B, gH), dtype=dt), np.empty((B, gH), dtype=dt), np.empty((B, S), dtype=dt))
    gi3 = a.gi.reshape(T, B, gH)

    def backward(s: np.ndarray):
        nblk = numba.get_num_threads()
        Gc = g.reshape(T, B, S).copy()  # dL/d(the iterate after the iteration differentiated)
        dgi_sum, dW_hh = np.zeros((T * B, gH), dtype=dt), np.zeros((gH, H), dtype=dt)
        db_hh, ds0 = np.zeros(gH, dtype=dt), np.zeros((B, S), dtype=dt)
        for n_it, (old, first, begins, stops) in reversed(list(enumerate(record))):
            G_old = Gc.copy()  # steps no run wrote pass their cotangent to the old iterate
            for p in range(first, lay.chunks):
                G_old[starts[p] : stops[p]] = 0.0
            for p in range(first, lay.chunks):
                lo, hi, written = int(begins[p]), int(stops[p]), starts[p]
                n, m = hi - lo, (hi - lo) * B
                if n_it > 0:
                    win[0] = old[written]  # the old state at step written - 1
                elif lo == 0:
                    win[0] = a.s0
                else:
                    win[0] = 0.0
                KC.sequential(_forward_op(a, gi3[lo:hi]), win[: n + 1], *work)
                prev = win[:n].reshape(m, S)
                K.hidden_projection(prev, a.whhT, gh[:m], hbuf[: m if S > H else 1])
                KG.coefficients(a.cell, a.gi[lo * B : hi * B], gh[:m], a.bhh, prev, C, Dd, CI, nblk)
                gw = gwin[:m].reshape(n, B, S)
                gw[: written - lo] = 0.0
                gw[written - lo :] = Gc[written:hi]
                KG.bptt(C[:m], Dd[:m], CI[:m], whh, gwin[:m], lam[:m], *scratch, B)
                KG.vjp_rows(C[:m], Dd[:m], CI[:m], lam[:m], dgh[:m], dgi[:m], ds[:m], nblk)
                dgi_sum[lo * B : hi * B] += dgi[:m]
                dW_hh += dgh[:m].T @ prev[:, :H]
                db_hh += dgh[:m].sum(0)
                mu = ds[:B].copy()  # the start state's cotangent
                mu[:, :H] += dgh[:B] @ whh
                if n_it > 0:
                    G_old[written - 1] += mu
                elif lo == 0:
                    ds0 += mu
            Gc = G_old
        return result(dgi_sum, dW_hh, db_hh, ds0, np.empty(0), "unrolled: bptt through every run's window")

    return backward


def _backward_unrolled_linearised(
    K, KG, a: _Arrays, solver: Iterative, g, whh, iterates, coeffs, vjp_out, linearise, vjp, result
):
    """``backward(s)`` through the recorded iterations of Newton, quasi-Newton, ELK or
    quasi-ELK, last first. From :func:`_backward`: ``coeffs = (C, Dd, CI)`` and ``vjp_out =
    (dgh, dgi, ds, wdgh)``, the buffers its helpers ``linearise`` and ``vjp`` fill, and ``result``.

    Every iteration maps the iterate ``y`` (previous states ``y_{t-1}``, ``y_{-1} = s0``) to
    ``h = y + delta``, where ``delta`` solves ``M delta = D^T e``: ``e_t = F(y_{t-1}) - y_t``,
    ``(D x)_t = x_t - A_t x_{t-1}`` with ``A_t`` the transition at ``y_{t-1}`` (the Jacobian
    ``J_t`` or its diagonal; ``x_{-1} = 0``) and ``M = D^T D + damping I``. For the cotangent
    ``v`` of ``h``, with ``mu = M^{-1} v``, ``ebar = D mu`` (undamped: ``ebar = D^{-T} v``, the
    implicit backward's reverse scan) and ``rho = e - D delta`` (0 undamped), the cotangent
    of ``y`` is

        v_t - ebar_t + J_{t+1}^T ebar_{t+1} + grad_y sum_t (ebar_t^T A_t delta_{t-1} - rho_t^T A_t mu_{t-1}),

    and the parameters get ``F``'s VJP for ``ebar`` plus the parameter gradient of the sum.
    The sum needs the cells' second derivatives: the derivatives of the structured
    coefficients along ``delta`` (and ``mu``), by complex step (``_numba_grad``), then the
    coefficients' VJP, plus the explicit ``W_hh`` term ``dgh(ebar) delta_h^T``. For a diagonal
    ``A`` the sum is ``sum_t w_t . diag(J_t)`` with ``w_t = ebar_t delta_{t-1} - rho_t mu_{t-1}``,
    differentiated one block of pre-activations at a time (a coefficient depends on its own
    component's pre-activations only). The first iterate is 0: its cotangent is dropped."""
    import numba

    T, B, S, H, N, G = a.T, a.B, a.S, a.H, a.N, a.G
    gH, dt, P = a.gi.shape[1], a.gi.dtype, S // H
    C, Dd, CI = coeffs
    dgh, dgi, ds, wdgh = vjp_out
    full, damped = solver.transition == "full", solver.damping > 0
    Ct, CIt, Ddt = np.empty_like(C), np.empty_like(CI), np.empty_like(Dd)
    dgh2, dgi2, ds2 = np.empty_like(dgh), np.empty_like(dgi), np.empty_like(ds)
    ugh, hbuf2 = np.empty_like(a.gh), np.empty_like(a.hbuf)
    A = np.empty((N, S, S) if full else (N, S), dtype=dt)
    evec, mu, ebar, Dg = (np.empty((N, S), dtype=dt) for _ in range(4))
    no_direction = np.zeros((1, gH), dtype=dt)
    damping = dt.type(solver.damping)
    if full and not damped:
        A_rev, b_rev = np.empty((T, B, S, S), dtype=dt), np.empty((T, B, S), dtype=dt)
        u_scan = np.zeros((T + 1, B, S), dtype=dt)
    if damped:
        Lbuf = np.empty((T, B, S, S) if full else (T, B * S), dtype=dt)
        zeros = np.zeros((N, S), dtype=dt)
    method = (
        "unrolled: backpropagation through the linearised iterations (second derivatives by complex step)"
    )
    blocks = [(0, gg) for gg in range(G)] + [(1, gg) for gg in range(G)] + [(2, q) for q in range(P)]
    diag_idx = np.arange(H)

    def shift(x: np.ndarray) -> np.ndarray:
        """Row ``i`` gets ``x[i - B]``, the previous step's (0 for the first step)."""
        out = np.zeros_like(x)
        out[B:] = x[: N - B]
        return out

    def apply_D(x: np.ndarray) -> np.ndarray:
        """``(D x)_t = x_t - A_t x_{t-1}`` (``A`` transposed or diagonal, as stored)."""
        xp = shift(x)
        return x - (np.matmul(xp[:, None, :], A)[:, 0, :] if full else A * xp)

    def add_params(acc: dict, dgi_: np.ndarray, dgh_: np.ndarray) -> None:
        """Add pre-activation gradients ``dgi_, dgh_ (N, gH)`` to the parameter sums."""
        acc["dgi"] += dgi_
        acc["dW_hh"] += dgh_.T @ acc["h_prev"]
        acc["db_hh"] += dgh_.sum(0)

    def add_second_order(acc: dict, dy: np.ndarray) -> None:
        """Route the pre-activation gradients ``dgh2, dgi2, ds2`` of the sum to ``dy`` (the
        previous states') and the parameter sums."""
        ds2[:, :H] += dgh2 @ whh
        dy += ds2
        add_params(acc, dgi2, dgh2)

    def along(y_prev, weight, u, nblk, acc, dy) -> None:
        """Full ``A``: the gradient of ``sum_t weight_t^T J_t u_t`` (``u`` per row); ``dgh``
        must hold ``vjp(weight)``'s (the explicit term: ``W_hh`` multiplies ``u_h`` in ``J u``)."""
        acc["dW_hh"] += dgh.T @ u[:, :H]
        K.hidden_projection(u, a.whhT, ugh, hbuf2)
        KG.coefficient_tangents(a.cell, a.gi, a.gh, a.bhh, y_prev, no_direction, ugh, u, Ct, Ddt, CIt, nblk)
        KG.vjp_rows(Ct, Ddt, CIt, weight, dgh2, dgi2, ds2, nblk)
        add_second_order(acc, dy)

    def diagonal(y_prev, w, nblk, acc, dy) -> None:
        """Diagonal ``A``: the gradient of ``sum_t w_t . diag(J_t)``."""
        for kind, k in blocks:
            u = [np.zeros((1, gH), dtype=dt), np.zeros((1, gH), dtype=dt), np.zeros((1, S), dtype=dt)]
            u[kind][0, k * H : (k + 1) * H] = 1.0
            KG.coefficient_tangents(a.cell, a.gi, a.gh, a.bhh, y_prev, *u, Ct, Ddt, CIt, nblk)
            KG.diagonals(Ct, Ddt, a.whhT, Dg, nblk)
            (dgi2, dgh2, ds2)[kind][:, k * H : (k + 1) * H] = (w * Dg).reshape(N, P, H).sum(1)
        add_second_order(acc, dy)
        wc = np.einsum("ij,igj->gj", w[:, :H], C[:, :, 0, :])  # diag(J)_j has c[g, 0, j] W_g[j, j]
        for gg in range(G):
            acc["dW_hh"][gg * H + diag_idx, diag_idx] += wc[gg]

    def backward(s: np.ndarray):
        nblk = numba.get_num_threads()
        v = np.array(g, copy=True)  # the cotangent of the current iteration's output
        acc = {
            "dgi": np.zeros((N, gH), dtype=dt),
            "dW_hh": np.zeros((gH, H), dtype=dt),
            "db_hh": np.zeros(gH, dtype=dt),
        }
        ds0 = np.zeros((B, S), dtype=dt)
        for y_buf, h_buf in zip(reversed(iterates), reversed([*iterates[1:], s]), strict=True):
            y_flat = y_buf.reshape((T + 1) * B, S)
            y_prev = y_flat[:N]
            delta = h_buf.reshape((T + 1) * B, S)[B:] - y_flat[B:]
            # a.gh (and a.hbuf, lstm's h_prev) hold y_prev's until the next iteration:
            # the direction products below go to their own buffers, ugh and hbuf2
            acc["h_prev"] = linearise(y_prev, nblk)
            if damped or not full:  # the transitions A as the forward had them, and e
                K.linearise(a.cell, G, a.gi, a.gh, a.whhT, a.bhh, y_flat, A, evec, B, True, nblk)
            if not damped and full:
                KG.reverse_transitions(C, Dd, a.whhT, A_rev, v, b_rev, B, nblk)
                K.linear_scan(A_rev, b_rev, u_scan, float(S + 1), nblk)
                ebar.reshape(T, B, S)[:] = u_scan[:0:-1]
            elif not damped:
                ebar[:] = v
                KG.reverse_diagonal(A, ebar, B, nblk)
            else:
                rhs = np.array(v, copy=True)
                if full:
                    shape = (T, B, S)
                    K.damped_full(
                        A.reshape(T, B, S, S),
                        rhs.reshape(shape),
                        Lbuf,
                        zeros.reshape(shape),
                        mu.reshape(shape),
                        damping,
                        True,
                    )
                else:
                    shape = (T, B * S)
                    K.damped_diagonal(
                        A.reshape(shape),
                        rhs.reshape(shape),
                        Lbuf,
                        zeros.reshape(shape),
                        mu.reshape(shape),
                        damping,
                        nblk,
                        True,
                    )
                ebar[:] = apply_D(mu)
            # F's VJP for ebar: the parameters, and J_{t+1}^T ebar_{t+1} for y_t
            vjp(ebar, nblk)
            ds[:, :H] += wdgh
            add_params(acc, dgi, dgh)
            ds0 += ds[:B]
            dy = ds.copy()  # the cotangent of the previous states y_prev
            u1 = shift(delta)
            if full:
                along(y_prev, ebar, u1, nblk, acc, dy)  # dgh is still vjp(ebar)'s
                if damped:
                    minus_rho = apply_D(delta) - evec
                    vjp(minus_rho, nblk)
                    along(y_prev, minus_rho, shift(mu), nblk, acc, dy)
            else:
                w = ebar * u1
                if damped:
                    w -= (evec - apply_D(delta)) * shift(mu)
                diagonal(y_prev, w, nblk, acc, dy)
            v = v - ebar
            v[: N - B] += dy[B:]  # row i + B's previous state is y_i; dy[:B] is s0's
        return result(acc["dgi"], acc["dW_hh"], acc["db_hh"], ds0, np.empty(0, dtype=np.float64), method)

    return backward


def _grad_to_host(out: GradOutput) -> GradHost:
    return out.to_host(np.array)  # (copies: the next run overwrites the buffers)
