"""The backend contract every framework module implements, and its errors.

A backend turns ``(problem, solver, device)`` into a :class:`Prepared` solve: data
already moved to the device, JIT compilation already done. ``Prepared.run()`` is the
zero-argument callable benchmarks time: it runs the whole solve on the device and
returns only when the device is done. ``Prepared.to_host`` turns what ``run`` returned
into host NumPy arrays, outside any timed region: ``(states, residuals)`` for a solve, a
:class:`GradHost` for a gradient. A backend's gradient program returns a
:class:`GradOutput` (its own arrays), which :meth:`GradOutput.to_host` turns into the
:class:`GradHost`.
"""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .memory import autodiff_kept
from .solvers import Solver
from .spec import Problem, RNNSpec

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "OPENBLAS_THREAD_TIMEOUT",
    "XLA_FLAGS",
    "FPBENCH_THREADS",
)
"""Environment variables that set how the frameworks use threads (``fpbench info`` shows
them; ``fpbench sweep`` records them)."""


THREADS_PER_CORE_LIMIT = 4
"""``FPBENCH_THREADS`` may be at most this many times ``os.cpu_count()``: more threads than
that only oversubscribe the cores, and a huge count makes XLA abort the process while
creating its thread pool."""


def requested_threads() -> int:
    """The thread count every backend applies: ``FPBENCH_THREADS``, default ``os.cpu_count()``.

    Raises:
        ValueError: ``FPBENCH_THREADS`` is set but not a positive integer, or above
            :data:`THREADS_PER_CORE_LIMIT` x ``os.cpu_count()``.
    """
    raw = os.environ.get("FPBENCH_THREADS", "").strip()
    cores = os.cpu_count() or 1
    if raw and (not (raw.isascii() and raw.isdigit()) or int(raw) < 1):
        raise ValueError(f"FPBENCH_THREADS must be a positive integer, got {raw!r}")
    limit = THREADS_PER_CORE_LIMIT * cores
    if raw and int(raw) > limit:
        raise ValueError(
            f"FPBENCH_THREADS={raw} is too large: at most {limit} "
            f"({THREADS_PER_CORE_LIMIT} x the {cores} CPU cores of this machine)"
        )
    return int(raw) if raw else cores


CELL_CHECKED: tuple[str, ...] = ("prepare", "prepare_grad", "iteration_floor")
"""The :class:`Backend` methods, each taking the problem first, that refuse a cell the
backend does not implement (:meth:`Backend.check_cell`)."""


def _cell_checked(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method(self, problem, ...)`` that first calls ``self.check_cell(problem)`` (a
    ``problem`` that is not a :class:`Problem` is left to the method's own checks)."""

    @functools.wraps(method)
    def checked(self: Backend, problem: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(problem, Problem):
            self.check_cell(problem)
        return method(self, problem, *args, **kwargs)

    return checked


class BackendUnavailableError(LookupError):
    """An unknown backend, a backend whose framework is missing, or an absent device."""


class UnsupportedError(NotImplementedError):
    """A backend does not implement this (solver, cell, dtype, device) combination."""


@dataclass(frozen=True)
class Prepared:
    """A ready-to-run solve.

    Attributes:
        run: zero-argument callable; runs the solve on device-resident data and
            synchronises before returning an opaque, backend-native value.
        to_host: maps that value to host NumPy arrays: for a solve (:meth:`Backend.prepare`)
            ``(states (T, B, S), residuals (n_iters,))``: the full states (``S = H``; ``2H``
            for ``lstm``, ``[h, c]``), and exactly one residual per iteration that ran; for a
            gradient (:meth:`Backend.prepare_grad`) a :class:`GradHost`.
    """

    run: Callable[[], Any]
    to_host: Callable[[Any], tuple[np.ndarray, np.ndarray] | GradHost]


@dataclass(frozen=True)
class GradHost:
    """What a backend's prepared gradient returns to the host (NumPy arrays).

    Attributes:
        states: ``(T, B, S)`` full forward states (``[h, c]`` for ``lstm``).
        residuals: forward residuals, one per iteration that ran (empty for sequential).
        params: ``dL/dparam`` for ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``.
        x: ``(T, B, I)`` ``dL/dx``.
        s0: ``(B, S)`` ``dL/ds0`` (``[dL/dh0, dL/dc0]`` for ``lstm``).
        backward_residuals: residuals of the backward iterations (empty where the backward
            is a direct solve: BPTT, autograd, a reverse scan).
        backward_method: what ran backwards: the reference's names are ``"bptt"``,
            ``"unrolled"``, ``"implicit: exact reverse solve"``, ``"implicit: jacobi on the
            adjoint"``, ``"implicit: diagonal-preconditioned adjoint iterations"``; backends
            name their own (``"autograd"``, ``"implicit: reverse scan"``, ...).
    """

    states: np.ndarray
    residuals: np.ndarray
    params: dict[str, np.ndarray]
    x: np.ndarray
    s0: np.ndarray
    backward_residuals: np.ndarray = field(default_factory=lambda: np.empty(0))
    backward_method: str = ""


@dataclass(frozen=True)
class GradOutput:
    """What a backend's gradient program returns, in the backend's own arrays (device
    tensors, JAX arrays or NumPy), before :meth:`to_host`.

    Attributes:
        states: ``(T, B, S)`` full forward states.
        residuals: the forward residual buffer; its first ``iterations`` entries are real.
        iterations: forward iterations that ran (an int, or a device scalar).
        params: ``dL/dparam`` by name (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``).
        x: ``(T, B, I)`` ``dL/dx``.
        s0: ``(B, S)`` ``dL/ds0``.
        backward_residuals: the backward residual buffer; its first ``backward_iterations``
            entries are real.
        backward_iterations: backward iterations that ran (0 for a direct backward).
        backward_method: the backward's name where the program knows it only when it runs
            (else :meth:`to_host` is given it).
    """

    states: Any
    residuals: Any
    iterations: Any
    params: dict[str, Any]
    x: Any
    s0: Any
    backward_residuals: Any
    backward_iterations: Any
    backward_method: str = ""

    def to_host(self, host: Callable[[Any], np.ndarray], method: str = "") -> GradHost:
        """The host copy: ``host(array)`` makes a NumPy copy of one of this backend's arrays;
        ``method`` names the backward (default: :attr:`backward_method`)."""
        return GradHost(
            states=host(self.states),
            residuals=host(self.residuals)[: int(self.iterations)],
            params={name: host(v) for name, v in self.params.items()},
            x=host(self.x),
            s0=host(self.s0),
            backward_residuals=host(self.backward_residuals)[: int(self.backward_iterations)],
            backward_method=method or self.backward_method,
        )


class Backend(ABC):
    """A framework implementation of every solver for every cell.

    Subclasses import their framework lazily (inside methods), so that
    ``import fpbench`` needs NumPy only.
    """

    name: ClassVar[str]
    compute_dtype: ClassVar[str | None] = None
    """The dtype this backend computes in whatever the spec's (None: the spec's dtype);
    used by the memory estimate."""
    recurrences: ClassVar[tuple[str, ...]] = ("dense",)
    """The cell recurrences (:attr:`fpbench.Cell.recurrence`) this backend implements: a
    backend that runs the diagonal cells says ``("dense", "diagonal")``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every :data:`CELL_CHECKED` method a backend defines first checks the problem's
        cell (:meth:`check_cell`): the one place a backend's cell support is enforced,
        whoever calls it (the registry, training, benchmarks, tests)."""
        super().__init_subclass__(**kwargs)
        for method in CELL_CHECKED:
            if method in cls.__dict__:
                setattr(cls, method, _cell_checked(cls.__dict__[method]))

    def check_cell(self, problem: Problem) -> None:
        """Raise :class:`UnsupportedError` when this backend does not implement the cell of
        ``problem`` (its recurrence is not in :attr:`recurrences`)."""
        cell = problem.spec.model
        if cell.recurrence not in self.recurrences:
            raise UnsupportedError(
                f"backend {self.name!r} does not support cell {cell.name!r} yet: its "
                f"{cell.recurrence} recurrence is not implemented in this backend (the numpy "
                "reference runs it)"
            )

    def backward_kept(self, spec: RNNSpec, solver: Solver) -> tuple[int, int]:
        """What the backward pass of ``solver`` keeps of the forward, for the memory
        estimate (:func:`fpbench.estimate_grad_memory`): ``(passes kept at once, items per
        row of each)``, e.g. the iterations of an unrolled backward. The default is what
        autodiff recording every operation keeps (torch,
        :func:`fpbench.memory.autodiff_kept`)."""
        return autodiff_kept(spec, solver)

    @abstractmethod
    def devices(self) -> list[str]:
        """Devices usable on this machine, e.g. ``["cpu", "cuda"]``.

        Raises:
            BackendUnavailableError: the framework is not installed; the message says why.
        """

    @abstractmethod
    def prepare(self, problem: Problem, solver: Solver, device: str) -> Prepared:
        """Move ``problem`` to ``device``, compile, and return the prepared solve.

        Raises:
            UnsupportedError: this backend does not implement the combination.
        """

    def prepare_grad(self, problem: Problem, solver: Solver, device: str, cotangent: np.ndarray) -> Prepared:
        """Like :meth:`prepare`, for the forward solve *and* its backward pass (the VJP of
        ``L = sum(cotangent * states)``); see :mod:`fpbench.grad` for the semantics of each
        solver and backward mode. ``run()`` computes both on device-resident data and
        synchronises; ``to_host(out)`` returns a :class:`GradHost`.

        Args:
            cotangent: ``(T, B, S)`` in the spec's dtype, on the *full* state (``S = H``;
                ``2H`` for ``lstm``, whose c part :func:`fpbench.grad` sets to zero).
        Raises:
            UnsupportedError: this backend has no backward pass for the combination.
        """
        raise UnsupportedError(f"backend {self.name!r} has no backward pass")

    def iteration_floor(self, problem: Problem, device: str) -> Callable[[], Any]:
        """The floor one Jacobi iteration is measured against: a prepared, synchronised
        callable doing one batched ``(T*B, H) x (H, gH)`` product plus the cell's
        elementwise work, written in this framework alone (no fpbench machinery).

        Raises:
            UnsupportedError: the backend offers no floor.
        """
        raise UnsupportedError(f"backend {self.name!r} has no iteration floor")

    def info(self) -> dict[str, str]:
        """Versions and thread settings, for ``fpbench info`` and benchmark records."""
        return {}
