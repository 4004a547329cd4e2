"""The JAX runtime: XLA's thread settings and clients (set on first use, never on import),
the persistent compilation cache, and this process's compiled programs (:func:`_compile`).

- Threads: XLA's CPU client sizes its intra-op thread pool from the environment variable
  ``PJRT_NPROC`` when it is created, and ``--xla_cpu_multi_thread_eigen`` in ``XLA_FLAGS``
  lets matmuls use that pool. (``intra_op_parallelism_threads`` is *not* an ``XLA_FLAGS``
  flag: XLA ignores it there.) Importing this module changes neither: the backend's first
  use (``devices()``, ``prepare``, ``info()``; :func:`_start`) sets both from
  ``FPBENCH_THREADS`` (default ``os.cpu_count()``) unless the user already set them, creates
  JAX's clients, and restores the environment. They only take effect if JAX's CPU client
  was not created yet, which ``info()`` reports.
- Persistent compilation cache: asv runs each benchmark parameter set in a new process,
  so unless the caller configured a cache, this module points JAX's persistent cache at
  ``FPBENCH_JAX_CACHE`` (default ``~/.cache/fpbench/jax``; ``off`` disables it) and caches
  every program however fast it compiled. These are process-wide JAX settings.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import jax  # importing JAX creates no client; the first device query does (_start)
import numpy as np

from fpbench.backend import BackendUnavailableError, requested_threads
from fpbench.solvers import Solver, iteration_cap
from fpbench.spec import RNNSpec


def _configure_xla_env(threads: int) -> bool:
    """Set ``PJRT_NPROC`` and ``XLA_FLAGS`` for ``threads`` unless the user set them.

    Returns whether they can still take effect (JAX's CPU client not created yet).
    """
    os.environ.setdefault("PJRT_NPROC", str(threads))
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        eigen = "true" if threads > 1 else "false"
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen={eigen}".strip()
    if "jax" not in sys.modules:
        return True
    from jax._src import xla_bridge  # only reached when the caller imported JAX first

    return not xla_bridge.backends_are_initialized()


_started: tuple[int, bool, str] | None = None


def _start() -> tuple[int, bool, str]:
    """Create JAX's clients with fpbench's thread settings, once per process (every method
    of :class:`JaxBackend` calls it first): ``PJRT_NPROC`` and ``XLA_FLAGS`` are set for
    ``FPBENCH_THREADS`` (:func:`_configure_xla_env`) while the clients are created, then the
    caller's environment is restored. Returns ``(threads, whether they took effect, the
    XLA_FLAGS used)``; they do not take effect when the caller's own JAX code created the
    clients first."""
    global _started
    if _started is None:
        threads = requested_threads()
        saved = {k: os.environ.get(k) for k in ("PJRT_NPROC", "XLA_FLAGS")}
        try:
            applied = _configure_xla_env(threads)
            flags = os.environ.get("XLA_FLAGS", "")
            jax.devices()  # creates the clients, which read the environment now
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        _started = threads, applied, flags
    return _started


def _enable_persistent_cache() -> str:
    """Point JAX's persistent compilation cache at fpbench's folder (see module docstring)."""
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return str(configured)
    path = os.environ.get("FPBENCH_JAX_CACHE", str(Path.home() / ".cache" / "fpbench" / "jax"))
    if path.strip().lower() in ("", "0", "off", "none", "false"):
        return "off"
    jax.config.update("jax_compilation_cache_dir", path)
    # The default (1 s) would skip most of these CPU compiles, which take 0.1-1 s each
    # but add up to the cold start of every asv process.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


_CACHE_DIR = _enable_persistent_cache()


def _device(device: str) -> jax.Device:
    _start()
    try:
        return jax.devices(device)[0]
    except RuntimeError as e:
        raise BackendUnavailableError(f"JAX has no {device!r} device here: {e}") from e


EXECUTABLES_KEPT = 32
"""How many compiled programs :data:`_EXECUTABLES` keeps. Every XLA CPU executable holds
dozens to hundreds of memory mappings of its JIT-compiled code; kept without bound (a test
session, or a long interactive session over many problem sizes), they reach the kernel's
``vm.max_map_count`` (65,530 by default) and XLA aborts the process in its next compile."""

_EXECUTABLES: OrderedDict[Any, Any] = OrderedDict()
"""The :data:`EXECUTABLES_KEPT` most recently used compiled programs of this process by
:func:`_program_key`: a problem with the same shapes and a solver with the same traits (new
parameter values, as in every training step) reuses its executable instead of compiling
again."""


def _program_key(fn: Callable, args: tuple) -> Any:
    """A hashable key of a program (a ``partial`` of a module-level function and its static
    arguments) and the shapes, dtypes and devices of its arguments; None if there is none."""
    if not isinstance(fn, partial):
        return None
    leaves, tree = jax.tree_util.tree_flatten(args)
    key = (fn.func, fn.args, tuple(sorted(fn.keywords.items())), tree)
    key += tuple((leaf.shape, str(leaf.dtype), frozenset(leaf.devices())) for leaf in leaves)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _compile(fn: Callable, args: tuple, dtype: str) -> Callable[[], Any]:
    """Compile ``fn`` for ``args`` (already on the device), or reuse this process's executable
    of the same program and shapes, and warm it; returns the zero-arg synchronised run. Must
    be called inside the x64 context of ``dtype``."""
    key = _program_key(fn, args)
    compiled = _EXECUTABLES.get(key) if key is not None else None
    if compiled is None:
        compiled = jax.jit(fn).lower(*args).compile()
        if key is not None:
            _EXECUTABLES[key] = compiled
            while len(_EXECUTABLES) > EXECUTABLES_KEPT:
                _EXECUTABLES.popitem(last=False)
    else:
        _EXECUTABLES.move_to_end(key)

    def run():
        return jax.block_until_ready(compiled(*args))

    run()
    return run


def _runtime_scalars(solver: Solver, spec: RNNSpec, dev: jax.Device) -> tuple[jax.Array, ...]:
    """An iterative program's runtime arguments ``(tol, damping, cap)`` on ``dev``: arguments,
    not constants, so one program serves every value. ``tol=None`` is -1, which no residual
    reaches (the loop runs ``cap`` iterations, or stops at a NaN)."""
    tol = -1.0 if solver.tol is None else solver.tol
    cap = np.asarray(iteration_cap(solver, spec.seq_len), np.int32)
    return tuple(
        jax.device_put((np.asarray(tol, spec.dtype), np.asarray(solver.damping, spec.dtype), cap), dev)
    )
