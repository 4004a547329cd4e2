"""The backend class :class:`TorchBackend` (``prepare``, ``prepare_grad``, the iteration
floor, ``info``, ``devices``) and what every timed call shares: the thread setting, the IEEE
float32 guard, the device synchronisation and the copy to the host.

Native. ``getattr(torch.nn, cell.torch_module)`` (``RNN``, ``GRU``, ``LSTM``; oneDNN on CPU,
cuDNN on CUDA) is timed alone. ``torch.nn.LSTM`` returns every ``h_t`` but only the last
``c``; ``to_host`` (outside the timed call) recovers the c sequence exactly and in parallel
in time (:class:`.kernels._LSTM`).

Chunked (``transition == "window"``; :mod:`.chunked`, imported on first
use). Each iteration folds its windows into the batch (``x[steps]`` viewed ``(W, n*B, I)``
by ``ChunkLayout.gather_index``) and runs them all at once through the same ``torch.nn``
module as Native, from per-window start states (``s0`` or zero in iteration 1, the old
iterate's state before the chunk in reruns; lstm's c sequence recovered as Native's), then
unfolds the outputs; iteration ``i >= 2`` reruns only chunks ``p >= max(1, i - 1)``, and a
``tol`` is applied after the run as a per-chunk mask (the new values up to the first step
that moved by ``<= tol``). The host reads each iteration's residual (at most ``chunks``
iterations, each a whole sequential window run) to stop.

Precision. float32 means IEEE float32: inside every timed call (and the iteration floor)
``torch.set_float32_matmul_precision("highest")`` and ``torch.backends.cudnn.allow_tf32 =
False`` turn TF32 off for cuBLAS and cuDNN (the cuDNN RNN defaults to TF32), and the
caller's settings are restored on exit, so fpbench leaves no global state behind.

Threads. ``torch.set_num_threads(FPBENCH_THREADS or os.cpu_count())`` is applied once,
when the backend first prepares a solve, a gradient or the iteration floor (never by a
query: ``devices()`` and ``info()`` leave the caller's setting alone), and reported by
:meth:`TorchBackend.info`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from fpbench.backend import (
    Backend,
    BackendUnavailableError,
    GradHost,
    GradOutput,
    Prepared,
    UnsupportedError,
    requested_threads,
)
from fpbench.solvers import Solver
from fpbench.spec import PARAM_NAMES, Problem

from .forward import TRANSITIONS
from .grad import _BACKWARD_METHODS, _grad_bptt, _grad_native, _grad_unrolled, _GradModel, _ImplicitGrad
from .kernels import _kernels_for, _nn_module
from .shared_solve import solve_job

CHECK_EVERY: dict[str, int] = {"cpu": 1, "cuda": 8}
"""Device type -> iterations between host reads of the convergence flag (with a tol);
full transitions (Newton, ELK) always check every iteration."""

_threads: int | None = None  # the thread count applied, once per process


def _apply_threads() -> int:
    """Apply ``FPBENCH_THREADS`` (default ``os.cpu_count()``) to torch, once per process."""
    global _threads
    if _threads is None:
        n = requested_threads()
        torch.set_num_threads(n)
        _threads = n
    return _threads


@contextmanager
def _ieee_fp32() -> Iterator[None]:
    """float32 matmuls and cuDNN RNNs without TF32 inside; the caller's settings after."""
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _host(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy (never a view of a buffer the next run overwrites)."""
    return t.to("cpu", copy=True).numpy()


class TorchBackend(Backend):
    """PyTorch implementation of every solver for every cell (``cpu``, ``cuda``).

    Args:
        check_every: iterations between host reads of the convergence flag when a
            ``tol`` is set; default :data:`CHECK_EVERY` for the device type (1 for
            full transitions: Newton, ELK). The states and iteration counts do not
            depend on it.
    """

    name = "torch"
    recurrences = ("dense", "diagonal")

    def __init__(self, check_every: int | None = None) -> None:
        if check_every is not None and (isinstance(check_every, bool) or check_every < 1):
            raise ValueError(f"check_every must be a positive integer or None, got {check_every!r}")
        self.check_every = check_every

    def devices(self) -> list[str]:
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    def _device(self, device: str) -> torch.device:
        """The device of a solve about to be prepared (which applies the thread count)."""
        _apply_threads()
        available = self.devices()
        if device not in available:
            raise BackendUnavailableError(
                f"device {device!r} is not available for backend 'torch'; available: {available}"
            )
        return torch.device(device)

    def prepare(self, problem: Problem, solver: Solver, device: str) -> Prepared:
        dev = self._device(device)
        _kernels_for(problem.spec.cell)  # an unknown cell fails here, before any work
        if solver.kind == "native":
            run, to_host = self._native(problem, dev)
        elif solver.kind == "sequential" or (solver.iterative and solver.transition in TRANSITIONS):
            full = solver.transition == "full"
            every = self.check_every or (1 if full else CHECK_EVERY.get(dev.type, 8))
            with torch.inference_mode():
                job = solve_job(problem, solver, dev, every)
            run, to_host = (
                self._timed(job.iterate if solver.iterative else job.sequential, dev),
                self._to_host,
            )
        elif solver.iterative and solver.transition == "window":
            from .chunked import ChunkedSolve

            with torch.inference_mode():
                job = ChunkedSolve(problem, solver, dev)
            run, to_host = self._timed(job, dev), self._to_host
        else:
            raise UnsupportedError(f"backend 'torch' does not implement solver {solver.name!r}")
        run()  # warm-up: kernel loading, cuBLAS/cuDNN handles and plans, allocator pools
        return Prepared(run, to_host)

    @staticmethod
    def _timed(solve: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
        """``solve`` under inference mode and IEEE float32, returning once the device is done."""

        def run() -> Any:
            with torch.inference_mode(), _ieee_fp32():
                out = solve()
                _synchronize(device)
            return out

        return run

    def _native(self, problem: Problem, device: torch.device) -> tuple[Callable[[], Any], Callable]:
        """``torch.nn.<cell.torch_module>`` timed alone; ``to_host`` completes the states."""
        s = problem.spec
        kern_cls = _kernels_for(s.cell)
        module = _nn_module(problem, device).eval().requires_grad_(False)
        rows = s.seq_len * s.batch
        x = torch.tensor(problem.x, device=device)
        s0 = torch.tensor(problem.s0, device=device)
        hx = kern_cls.native_hx(s0, s.hidden_size)
        kern = kern_cls(problem, device, rows, rows)

        def to_host(out: tuple) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode(), _ieee_fp32():
                states = kern.native_states(out[0], x.view(rows, -1), s0)
            return _host(states), np.empty(0)

        return self._timed(lambda: (module(x, hx)[0], 0), device), to_host

    @staticmethod
    def _to_host(out: tuple) -> tuple[np.ndarray, np.ndarray]:
        if len(out) == 2:  # Sequential: no iterations
            return _host(out[0]), np.empty(0)
        states, res, n = out
        return _host(states), _host(res[: int(n)])

    def prepare_grad(self, problem: Problem, solver: Solver, device: str, cotangent: np.ndarray) -> Prepared:
        """The forward solve and its backward pass (:mod:`fpbench.grad`), by the solver's
        traits: BPTT (``"bptt"``, autograd through a sequential loop of the shared cell
        step), Native (``"autograd"`` through ``torch.nn``), unrolled (``"unrolled"``,
        autograd through the iterations) and implicit (:class:`_ImplicitGrad`)."""
        dev = self._device(device)
        spec = problem.spec
        kern_cls = _kernels_for(spec.cell)  # an unknown cell fails here, before any work
        method = ""
        if solver.kind == "sequential":
            m = _GradModel(problem, dev, cotangent)
            fn, method = _grad_bptt(m), "bptt"
        elif solver.kind == "native":
            m = _GradModel(problem, dev, cotangent)
            fn, method = _grad_native(problem, m, dev), "autograd"
        elif solver.iterative and solver.transition in TRANSITIONS:
            if solver.backward == "unrolled":
                m = _GradModel(problem, dev, cotangent)
                fn, method = _grad_unrolled(m, solver), "unrolled"
            else:
                full = solver.transition == "full"
                every = self.check_every or (1 if full else CHECK_EVERY.get(dev.type, 8))
                fn = _ImplicitGrad(problem, solver, dev, cotangent, every)
                m, method = fn.m, _BACKWARD_METHODS[solver.transition]
        elif solver.iterative and solver.transition == "window":
            from .chunked import ChunkedImplicitGrad, chunked_unrolled

            if solver.backward == "unrolled":
                m = _GradModel(problem, dev, cotangent)
                fn, method = chunked_unrolled(problem, solver, m), "unrolled"
            else:
                fn = ChunkedImplicitGrad(problem, solver, dev, cotangent)
                m, method = fn.m, "implicit: chunked adjoint"
        else:
            raise UnsupportedError(f"backend 'torch' has no backward pass for solver {solver.name!r}")
        implicit = solver.iterative and solver.backward == "implicit"
        rows = spec.seq_len * spec.batch

        def run() -> Any:
            with _ieee_fp32():
                if implicit:
                    with torch.inference_mode():
                        out = fn()
                else:
                    out = fn()
                _synchronize(dev)
            return out

        def to_host(out: GradOutput) -> GradHost:
            if solver.kind == "native":
                with torch.inference_mode(), _ieee_fp32():
                    kern = kern_cls(problem, dev, rows, rows)
                    S = kern.native_states(out.states, m.x.detach().reshape(rows, -1), m.s0.detach())
                out = dataclasses.replace(out, states=S)
            return out.to_host(_host, method)

        run()  # warm-up
        return Prepared(run, to_host)

    def iteration_floor(self, problem: Problem, device: str) -> Callable[[], Any]:
        """One ``addmm`` of ``(T*B, H) x (H, gH)`` with bias plus the cell's elementwise
        maths, written plainly (allocating, as ordinary torch code is); a diagonal cell's
        elementwise maths only (its recurrence has no product)."""
        dev = self._device(device)
        s = problem.spec
        kern_cls = _kernels_for(s.cell)
        with torch.inference_mode():
            params = {k: torch.tensor(problem.params[k], device=dev) for k in PARAM_NAMES}
            w_hh, b_hh = params["weight_hh"], params["bias_hh"]
            x = torch.tensor(problem.x, device=dev).view(-1, s.input_size)
            gi = s.model.input_projection(torch, params, x)
            states = torch.tensor(problem.s0, device=dev).repeat(s.seq_len, 1)  # (T*B, S) states
            h = states[:, : s.hidden_size]

        if s.model.recurrence == "diagonal":  # no product: the cell's elementwise work only

            def step() -> torch.Tensor:
                return kern_cls.floor_step(s.model, states, gi, w_hh)

        else:

            def step() -> torch.Tensor:
                return kern_cls.floor_step(s.model, states, gi, torch.addmm(b_hh, h, w_hh.t()))

        floor = self._timed(step, dev)
        floor()
        return floor

    def info(self) -> dict[str, str]:
        info = {
            "torch": torch.__version__,
            "torch_threads": str(
                _threads
                or f"{torch.get_num_threads()} (fpbench applies "
                f"{requested_threads()} when it first prepares a solve)"
            ),
            "torch_interop_threads": str(torch.get_num_interop_threads()),
        }
        if torch.cuda.is_available():
            info["cuda"] = str(torch.version.cuda)
            info["cudnn"] = str(torch.backends.cudnn.version())
            info["cuda_device"] = torch.cuda.get_device_name()
        return info
