"""The JAX backend class (``"jax"``, devices ``"cpu"`` and ``"gpu"``), and the choice of each
solver's forward and gradient program by its traits (:func:`_program`, :func:`_grad_program`).

Every solver is one jitted XLA program, compiled ahead of time in ``prepare``
(``jax.jit(f).lower(*args).compile()``, :func:`backends.jax.runtime._compile`) and run once
on the real data, so ``run()`` is a single call of the compiled executable followed by
``block_until_ready``. The input projection ``gi = x W_ih^T + b_ih`` is computed once per
solve inside that program, before any loop. The cell maths is not written here: every
program evaluates the shared cells of :mod:`fpbench.cells` and the shared algorithms of
:mod:`backends.shared` in :data:`backends.jax.maths.xp`,
so every cell of :data:`fpbench.CELLS` runs here with no table of its own. The state is
``s`` of size ``S = parts * H`` (``[h, c]`` for lstm) and programs return the full states
``(T, B, S)``. Solvers are chosen by their traits: ``kind`` (``"sequential"`` /
``"native"`` / ``"iterative"``), then ``transition`` and ``damping``. Gradient programs take
the parameters in torch layout, so autodiff returns them in that layout.

float64 without global x64: JAX computes in float32 unless ``jax_enable_x64`` is on.
``prepare`` transfers, traces, compiles and warms every program inside the thread-local
context manager ``jax.enable_x64(spec.dtype == "float64")`` (a ``jax.config`` state
object usable as a context manager in jax 0.10), which restores the caller's setting on
exit. A compiled executable is fixed to the dtypes it was compiled for, so ``run()`` and
``to_host`` work outside the context and a float64 solve never changes what a later
float32 solve (or the caller's own JAX code) computes in. float32 programs are compiled
with x64 off even if the caller enabled it, so they are identical either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import numpy as np

from fpbench.backend import Backend, GradHost, GradOutput, Prepared, UnsupportedError
from fpbench.cells import Cell
from fpbench.memory import jacobian_items, unrolled_items
from fpbench.solvers import TRANSITIONS, Chunked, Jacobi, Solver, iteration_cap
from fpbench.spec import Problem, RNNSpec

from . import chunked
from .forward import _fixed_point, _native, _sequential, residual_slots
from .grad import UNROLLED_LINEARISED_SCALE, _grad_autodiff, _grad_implicit, _grad_unrolled, unrolled_chunks
from .maths import _cell_of, _layouts, _mm, xp
from .runtime import _CACHE_DIR, _compile, _device, _runtime_scalars, _start

_BACKWARD_METHODS = {
    "none": "implicit: jacobi on the adjoint",
    "full": "implicit: reverse scan",
    "diagonal": "implicit: diagonal-preconditioned adjoint iterations",
}


def _chunked_traits(cell: Cell, solver: Solver, seq_len: int, unrolled: bool = False) -> tuple:
    """The static arguments of a Chunked program (:mod:`backends.jax.chunked`): the cell,
    the chunk layout, whether a second iteration can run, whether a ``tol`` stops reruns
    early, and the residual slots (``unrolled``: the cap, the length of its scan)."""
    assert isinstance(solver, Chunked)  # (its transition, "window", says so)
    cap = iteration_cap(solver, seq_len)
    length = cap if unrolled else residual_slots(cap)
    return cell, solver.layout(seq_len), cap > 1, solver.tol is not None, length


def _grad_program(cell: Cell, solver: Solver, seq_len: int) -> tuple[Callable, str]:
    """The gradient program of ``solver`` and the name of its backward, by its traits:
    ``(x, s0, params[, tol, damping], g) -> GradOutput``."""
    if solver.kind == "sequential":
        return partial(_grad_autodiff, cell, partial(_sequential, cell)), "bptt"
    if solver.kind == "native":
        return partial(_grad_autodiff, cell, partial(_native, cell)), "autograd"
    if solver.iterative and solver.transition == "window":
        if solver.backward == "unrolled":
            return partial(chunked.grad_unrolled, *_chunked_traits(cell, solver, seq_len, True)), "unrolled"
        return partial(
            chunked.grad_implicit, *_chunked_traits(cell, solver, seq_len)
        ), "implicit: chunked adjoint"
    if solver.iterative and solver.transition in TRANSITIONS:
        traits = (cell, solver.transition, solver.damping > 0)
        cap = iteration_cap(solver, seq_len)
        if solver.backward == "unrolled":
            return partial(_grad_unrolled, *traits, cap), "unrolled"
        return partial(_grad_implicit, *traits, residual_slots(cap)), _BACKWARD_METHODS[solver.transition]
    raise UnsupportedError(f"the jax backend has no backward pass for solver {solver.name!r}")


def _program(cell: Cell, solver: Solver, seq_len: int) -> Callable:
    """The program of ``solver``, chosen by its traits: ``(x, s0, w[, tol, damping]) -> out``."""
    if solver.kind == "sequential":
        return partial(_sequential, cell)
    if solver.kind == "native":
        return partial(_native, cell)
    if solver.iterative and solver.transition == "window":
        return partial(chunked.fixed_point, *_chunked_traits(cell, solver, seq_len))
    if solver.iterative and solver.transition in TRANSITIONS:
        # damping > 0 solves each step by the Kalman smoother; its value is an argument.
        slots = residual_slots(iteration_cap(solver, seq_len))
        return partial(_fixed_point, cell, solver.transition, solver.damping > 0, slots)
    raise UnsupportedError(f"the jax backend does not implement solver {solver.name!r}")


class JaxBackend(Backend):
    """Every solver as one ahead-of-time compiled XLA program (see the module docstring)."""

    name = "jax"
    recurrences = ("dense", "diagonal")

    def backward_kept(self, spec: RNNSpec, solver: Solver) -> tuple[int, int]:
        """A sequential solver's ``lax.scan`` keeps one pass of residuals (no per-step
        graph). XLA's implicit backward holds more than the common working set: the
        reverse ``associative_scan`` over the transposed Jacobians (``"full"``) about
        ``32 S^2`` items a row (``S^2``: :func:`~fpbench.memory.jacobian_items`, ``S P`` for a
        diagonal cell), the adjoint iterations two passes of the cell's work. An
        unrolled backward keeps its checkpointed scan's chunk inputs plus one chunk
        (:func:`unrolled_chunks`), each with what autodiff records, for the linearising
        solvers :data:`UNROLLED_LINEARISED_SCALE` times torch's record."""
        one_pass = unrolled_items(spec, Jacobi(1))
        if not solver.iterative:
            return 1, one_pass
        if solver.backward != "unrolled":
            S = spec.state_size
            return (1, 32 * jacobian_items(spec) + 16 * S) if solver.transition == "full" else (2, one_pass)
        cap, items = super().backward_kept(spec, solver)
        scale = UNROLLED_LINEARISED_SCALE if solver.transition in ("full", "diagonal") else 1
        return sum(unrolled_chunks(cap)), scale * items

    def devices(self) -> list[str]:
        _start()
        found = ["cpu"]
        try:
            if jax.devices("gpu"):
                found.append("gpu")
        except RuntimeError:  # no CUDA/ROCm plugin or no device
            pass
        return found

    def prepare(self, problem: Problem, solver: Solver, device: str) -> Prepared:
        spec = problem.spec
        cell = _cell_of(spec.cell)
        fn = _program(cell, solver, spec.seq_len)
        dev = _device(device)
        with jax.enable_x64(spec.dtype == "float64"):
            args = jax.device_put((problem.x, problem.s0, _layouts(np, problem.params, cell)), dev)
            if solver.iterative:
                args = (*args, *_runtime_scalars(solver, spec, dev))
            run = _compile(fn, args, spec.dtype)

        def to_host(out) -> tuple[np.ndarray, np.ndarray]:
            states = np.asarray(out[0], dtype=spec.dtype)
            if len(out) == 1:
                return states, np.empty(0)
            return states, np.asarray(out[1])[: int(out[2])]

        return Prepared(run, to_host)

    def prepare_grad(self, problem: Problem, solver: Solver, device: str, cotangent: np.ndarray) -> Prepared:
        spec = problem.spec
        fn, method = _grad_program(_cell_of(spec.cell), solver, spec.seq_len)
        dev = _device(device)
        with jax.enable_x64(spec.dtype == "float64"):
            args = jax.device_put((problem.x, problem.s0, dict(problem.params)), dev)
            if solver.iterative:
                args = (*args, *_runtime_scalars(solver, spec, dev))
            args = (*args, jax.device_put(np.asarray(cotangent, spec.dtype), dev))
            run = _compile(fn, args, spec.dtype)

        def to_host(out: GradOutput) -> GradHost:
            return out.to_host(np.asarray, method)

        return Prepared(run, to_host)

    def iteration_floor(self, problem: Problem, device: str) -> Callable[[], Any]:
        spec = problem.spec
        cell = _cell_of(spec.cell)
        T, B, S = spec.seq_len, spec.batch, spec.state_size
        p = problem.params
        gi = cell.input_projection(np, p, problem.x).reshape(T * B, -1)
        s = np.broadcast_to(problem.s0, (T, B, S)).reshape(T * B, S)
        if cell.recurrence == "diagonal":  # no product: the cell's elementwise work only

            def floor(s, gi, w):
                return cell.activate(xp, s, gi, w)

            args = (s, gi, p["weight_hh"])
        else:
            w_t = np.ascontiguousarray(p["weight_hh"].T)

            def floor(s, gi, w_t, b):  # (T*B, H) x (H, gH) + bias, then the cell's elementwise work
                return cell.activate(xp, s, gi, _mm(s[:, : w_t.shape[0]], w_t) + b)

            args = (s, gi, w_t, p["bias_hh"])
        with jax.enable_x64(spec.dtype == "float64"):
            return _compile(floor, jax.device_put(args, _device(device)), spec.dtype)

    def info(self) -> dict[str, str]:
        n, applied, flags = _start()
        threads = str(n) if applied else f"{n} (not applied: JAX started first)"
        return {
            "jax": jax.__version__,
            "jax_threads": threads,
            "PJRT_NPROC": os.environ.get("PJRT_NPROC", "") or (str(n) if applied else ""),
            "XLA_FLAGS": flags,
            "jax_compilation_cache": _CACHE_DIR,
            "jax_devices": ", ".join(str(d) for d in jax.devices()),
        }
