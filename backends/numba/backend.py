"""The numba backend's class: devices, prepared solves and gradients, threads, host copies.

:class:`NumbaBackend` builds a solve from :mod:`.forward` and a gradient from :mod:`.backward`
on the problem's :class:`~.arrays.Arrays`; those modules import numba and are loaded only
once a solve is prepared, after :func:`_start` applied the settings below.

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
already set, when it first prepares a solve (:func:`_start`; importing the package or
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
from fpbench.solvers import Solver, iteration_cap
from fpbench.spec import Problem, RNNSpec

_threads_applied = False


def _require_numba() -> None:
    """Raise :class:`BackendUnavailableError` unless numba and SciPy import (nothing else)."""
    try:
        import numba  # noqa: F401
        import scipy  # noqa: F401  numba's np.dot calls SciPy's BLAS
    except ImportError as e:
        raise BackendUnavailableError(f"backend 'numba' is unavailable: {e}") from e


def _start() -> None:
    """Before a solve is prepared: on first use, sets the BLAS spin (module docstring) before
    the kernels load SciPy's BLAS, and applies the thread count."""
    global _threads_applied
    _require_numba()
    import numba

    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see the module docstring
    if not _threads_applied:
        numba.set_num_threads(min(requested_threads(), numba.config.NUMBA_NUM_THREADS))
        _threads_applied = True


def _states_to_host(out: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    s, residuals = out
    return s[1:].copy(), residuals.copy()  # buffers are reused by the next run


def _grad_to_host(out: GradOutput) -> GradHost:
    return out.to_host(np.array)  # (copies: the next run overwrites the buffers)


class NumbaBackend(Backend):
    """Numba ``@njit(parallel=True)`` kernels on the CPU, float32 or float64."""

    name = "numba"
    recurrences = ("dense", "diagonal")

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
        _start()
        _check_device(device)
        from .arrays import Arrays
        from .forward import prepare_forward

        run = prepare_forward(Arrays(problem), solver)
        run()  # compile (or load from cache) and warm up
        return Prepared(run, _states_to_host)

    def prepare_grad(self, problem: Problem, solver: Solver, device: str, cotangent: np.ndarray) -> Prepared:
        """The forward solve and its hand-written backward pass (:mod:`.backward`): BPTT for
        ``Sequential``; for the iterative solvers the implicit gradient at the returned states,
        the adjoint solved by a reverse parallel scan (``transition == "full"``: Newton, ELK),
        by iterations to the solver's tolerance (``"none"``: Jacobi on the adjoint;
        ``"diagonal"``: diagonal-preconditioned, each an elementwise reverse recurrence), at
        most ``min(max_iters, T)`` of them; then the parameter gradients as batched products
        over all ``(t, b)``. ``backward="unrolled"``: Jacobi's forward keeps every sweep's
        input and backpropagates through the sweeps (each sweep's VJP parallel over
        ``(t, b)``); the linearising solvers likewise through their iterations
        (:class:`.backward_unrolled.UnrolledLinearised`). ``Chunked`` (``transition == "window"``):
        the adjoint by Chunked's iterations on the reversed adjoint recurrence (implicit),
        or BPTT through every recorded run's window (:func:`.backward_unrolled.unrolled_chunked`)."""
        _start()
        _check_device(device)
        from .arrays import Arrays
        from .backward import prepare_backward
        from .forward import prepare_forward

        a = Arrays(problem)
        iterates: list[np.ndarray] = []
        backward = prepare_backward(a, problem, solver, cotangent, iterates)
        unrolled = solver.iterative and solver.backward == "unrolled"
        forward = prepare_forward(a, solver, iterates if unrolled else None)

        def run() -> GradOutput:
            s, residuals = forward()  # (the backward's output, completed by the forward's)
            return dataclasses.replace(
                backward(s), states=s[1:], residuals=residuals, iterations=len(residuals)
            )

        run()  # compile (or load from cache) and warm up
        return Prepared(run, _grad_to_host)

    def iteration_floor(self, problem: Problem, device: str) -> Callable[[], Any]:
        _start()
        _check_device(device)
        from .arrays import Arrays
        from .kernels_cells import hidden_projection, iteration_floor

        a = Arrays(problem)
        hidden_projection(a.x_aug, a.w_aug, a.gi, a.hbuf)
        hp = np.ascontiguousarray(np.broadcast_to(a.s0, (a.T, a.B, a.S)).reshape(a.N, a.S))
        out = np.empty_like(hp)

        def floor() -> np.ndarray:
            iteration_floor(a.cell, a.G, a.gi, hp, a.whhT, a.bhh, a.gh, a.hbuf, out)
            return out

        floor()
        return floor

    def info(self) -> dict[str, str]:
        import numba
        import scipy

        _start()
        from .kernels_cells import max_abs_diff

        max_abs_diff(np.zeros((1, 1)), np.zeros((1, 1)), 1)  # the threading layer starts on first use
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
