"""The lazy backend registry and :func:`solve`.

Backends are named by ``"module:Class"`` strings and imported on first use, so a
missing framework makes its backend unavailable (with the reason), never an
ImportError at ``import fpbench``. Targets are written ``"backend:device"``
(``"torch:cuda"``); the environment variable ``FPBENCH_BACKENDS`` (comma-separated
targets or bare backend names) restricts what tests and benchmarks cover.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .backend import Backend, BackendUnavailableError, Prepared
from .memory import check_memory
from .result import Result, make_result
from .solvers import Solver
from .spec import Problem

BACKENDS: dict[str, str] = {
    "numpy": "fpbench.reference_backend:NumpyBackend",
    "torch": "backends.torch:TorchBackend",
    "jax": "backends.jax:JaxBackend",
    "numba": "backends.numba:NumbaBackend",
}
"""Backend name -> ``"module:Class"``. Adding a backend is one line here."""

ALL_DEVICES: dict[str, tuple[str, ...]] = {
    "numpy": ("cpu",),
    "torch": ("cpu", "cuda"),
    "jax": ("cpu", "gpu"),
    "numba": ("cpu",),
}
"""Every device each backend can target on some machine (benchmark parameters)."""

_instances: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The backend instance called ``name``.

    Raises:
        BackendUnavailableError: unknown name, or its framework cannot be imported.
    """
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; known backends: {sorted(BACKENDS)}")
    if name not in _instances:
        module, cls = BACKENDS[name].split(":")
        try:
            _instances[name] = getattr(importlib.import_module(module), cls)()
        except ImportError as e:
            raise BackendUnavailableError(f"backend {name!r} is unavailable: {e}") from e
    return _instances[name]


def backend_status() -> dict[str, list[str] | str]:
    """Every known backend -> its devices here, or the reason it is unavailable."""
    status: dict[str, list[str] | str] = {}
    for name in BACKENDS:
        try:
            status[name] = get_backend(name).devices()
        except BackendUnavailableError as e:
            status[name] = str(e)
    return status


def available_backends() -> dict[str, list[str]]:
    """Available backends and their devices, e.g. ``{"numpy": ["cpu"], "torch": ["cpu"]}``."""
    return {k: v for k, v in backend_status().items() if isinstance(v, list)}


def parse_target(target: str, device: str | None = None) -> tuple[str, str]:
    """Split ``"torch:cuda"`` into ``("torch", "cuda")``; a bare name takes ``device``
    (default ``"cpu"``)."""
    name, _, tag = target.partition(":")
    if tag and device is not None and tag != device:
        raise ValueError(f"backend {target!r} names device {tag!r} but device={device!r} was given")
    return name, tag or device or "cpu"


def resolve(backend: str, device: str | None = None) -> tuple[Backend, str]:
    """The backend instance and a device that is present on this machine.

    Raises:
        BackendUnavailableError: unknown or unavailable backend, a device name the backend
            does not know (the message lists its device names), or a device absent on this
            machine (the message lists what is available).
    """
    name, dev = parse_target(backend, device)
    known = ALL_DEVICES.get(name)
    if known is not None and dev not in known:  # a typo, whether or not the backend is installed
        raise BackendUnavailableError(
            f"unknown device {dev!r} for backend {name!r}; use one of {list(known)} "
            f"(device names are case-sensitive)"
        )
    impl = get_backend(name)
    devices = impl.devices()
    if dev not in devices:
        raise BackendUnavailableError(
            f"device {dev!r} is not available for backend {name!r} on this machine; "
            f"available: {devices} (all backends: {available_backends()})"
        )
    return impl, dev


def selected_targets(selection: str | None = None) -> list[str]:
    """All ``backend:device`` targets, restricted by ``selection`` (a comma-separated list
    of backends and targets, e.g. ``"torch:cpu,numba"``; default ``$FPBENCH_BACKENDS``)
    when it is non-empty.

    Lists every device a backend can have (present or not): callers skip the absent
    ones, so a missing GPU shows as a skip, not as nothing.

    Raises:
        ValueError: a name in ``selection`` is neither a backend nor a target (names are
            case-sensitive); the message lists the valid ones. A typo thus fails a test run
            or a sweep instead of selecting nothing.
    """
    source = "selection"
    if selection is None:
        selection, source = os.environ.get("FPBENCH_BACKENDS", ""), "FPBENCH_BACKENDS"
    targets = [f"{b}:{d}" for b, devs in ALL_DEVICES.items() for d in devs]
    wanted = [w.strip() for w in selection.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in targets and w not in ALL_DEVICES]
    if unknown:
        raise ValueError(
            f"{source}={selection!r}: unknown backend or target {', '.join(map(repr, unknown))}; "
            f"valid backends: {', '.join(ALL_DEVICES)}; valid targets: {', '.join(targets)}"
        )
    if not wanted:
        return targets
    return [t for t in targets if t in wanted or t.split(":")[0] in wanted]


def solve(problem: Problem, solver: Solver, backend: str = "numpy", device: str | None = None) -> Result:
    """Solve ``problem`` with ``solver`` on ``backend`` (``"torch"`` or ``"torch:cuda"``).

    Returns:
        A :class:`Result` with ``states (T, B, H)`` in the spec's dtype.
    Raises:
        TypeError: ``problem`` / ``solver`` are not fpbench objects, or ``backend`` /
            ``device`` are not strings.
        BackendUnavailableError: unknown or unavailable backend or device.
        UnsupportedError: the backend does not implement this solver.
        InsufficientMemoryError: on a CPU device, :func:`fpbench.estimate_memory` of the
            solve exceeds the available memory (checked before anything is allocated).
    """
    return timed_solve(problem, solver, backend, device)[0]


def timed_solve(
    problem: Problem, solver: Solver, backend: str = "numpy", device: str | None = None, repeats: int = 1
) -> tuple[Result, float, list[float]]:
    """:func:`solve`, also returning the seconds spent preparing (transfer + compile)
    and the seconds of each of ``repeats`` runs of the prepared solve."""
    impl, dev = checked_target(problem, solver, backend, device, repeats)
    prepared, out, prepare_s, run_s = run_timed(lambda: impl.prepare(problem, solver, dev), repeats)
    states, residuals = prepared.to_host(out)
    return make_result(states, residuals, solver, problem, impl.name, dev), prepare_s, run_s


def checked_target(
    problem: Problem, solver: Solver, backend: str, device: str | None, repeats: int, grad: bool = False
) -> tuple[Backend, str]:
    """The checks every solve-like call (:func:`timed_solve`, :func:`fpbench.timed_grad`)
    makes before preparing anything: argument types, ``repeats``, the backend and device,
    and on a CPU device the memory estimate (of the gradient, forward and backward, when
    ``grad``). Returns the backend instance and device.

    Raises:
        TypeError, ValueError, BackendUnavailableError, InsufficientMemoryError,
        UnsupportedError: the backend does not implement the problem's cell.
    """
    if not isinstance(problem, Problem):
        raise TypeError(
            f"problem must be an fpbench.Problem (from make_problem), got {type(problem).__name__}"
        )
    if not isinstance(solver, Solver) or type(solver) is Solver:
        raise TypeError(f"solver must be an fpbench solver such as fpbench.Jacobi(...), got {solver!r}")
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string such as 'torch' or 'torch:cuda', got {backend!r}")
    if device is not None and not isinstance(device, str):
        raise TypeError(f"device must be None or a string such as 'cpu' or 'cuda', got {device!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    impl, dev = resolve(backend, device)
    impl.check_cell(problem)  # also for the sharded runs, which call no Backend method
    if dev == "cpu":  # the host's memory; on a GPU the framework reports its own OOM
        check_memory(problem, solver, impl.compute_dtype, f"{impl.name}:{dev}", grad, impl.name)
    return impl, dev


def run_timed(prepare: Callable[[], Prepared], repeats: int) -> tuple[Prepared, Any, float, list[float]]:
    """``prepare()`` then ``repeats`` runs of the prepared call: ``(prepared, the last run's
    output, seconds preparing, seconds of each run)``."""
    t0 = time.perf_counter()
    prepared = prepare()
    prepare_s = time.perf_counter() - t0
    run_s = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = prepared.run()
        run_s.append(time.perf_counter() - t0)
    return prepared, out, prepare_s, run_s
