"""The JAX backend (``"jax"``, devices ``"cpu"`` and ``"gpu"``).

Every solver is one jitted XLA program, compiled ahead of time in ``prepare``
(``jax.jit(f).lower(*args).compile()``) and run once on the real data, so ``run()`` is a
single call of the compiled executable followed by ``block_until_ready``. The input
projection ``gi = x W_ih^T + b_ih`` is computed once per solve inside that program,
before any loop.

- Jacobi / Newton / QuasiNewton: a ``lax.while_loop`` whose carry is
  ``(H, k, residuals[cap], done)``, so tolerance and divergence checks never leave
  the device; ``to_host`` keeps ``residuals[:k]``. ``cap`` is
  ``fpbench.solvers.iteration_cap`` (at most T), so an unreachable ``max_iters`` never
  sizes an array. The residual is NaN if any difference is NaN (XLA's CPU ``max``
  reduction drops NaNs and can return -inf: :func:`_max_change`). A Jacobi iteration is one
  ``(T*B, H) x (H, gH)`` product plus fused elementwise work. Newton solves the linear
  recurrence ``h_t = A_t h_{t-1} + b_t`` with ``lax.associative_scan`` over full
  ``(T, B, H, H)`` matrices; QuasiNewton with diagonal ``(T, B, H)`` ones.
- Sequential: ``lax.scan`` over the precomputed ``gi``. Native: ``lax.scan`` of the plain
  cell computing ``W_ih x_t`` inside each step, as a user writes an RNN in JAX (the
  ``jax.lax.scan`` baseline of DESIGN §4).

Process-wide settings, and how float64 avoids them:

- float64 without global x64: JAX computes in float32 unless ``jax_enable_x64`` is on.
  ``prepare`` transfers, traces, compiles and warms every program inside the thread-local
  context manager ``jax.enable_x64(spec.dtype == "float64")`` (a ``jax.config`` state
  object usable as a context manager in jax 0.10), which restores the caller's setting on
  exit. A compiled executable is fixed to the dtypes it was compiled for, so ``run()`` and
  ``to_host`` work outside the context and a float64 solve never changes what a later
  float32 solve (or the caller's own JAX code) computes in. float32 programs are compiled
  with x64 off even if the caller enabled it, so they are identical either way.
- Threads: XLA's CPU client sizes its intra-op thread pool from the environment variable
  ``PJRT_NPROC`` when it is created, and ``--xla_cpu_multi_thread_eigen`` in ``XLA_FLAGS``
  lets matmuls use that pool. (``intra_op_parallelism_threads`` is *not* an ``XLA_FLAGS``
  flag: XLA ignores it there.) Before importing JAX, this module sets both from
  ``FPBENCH_THREADS`` (default ``os.cpu_count()``) unless the user already set them; they
  only take effect if JAX's CPU client was not created yet, which ``info()`` reports.
- Float32 matmul precision: every product passes ``precision=lax.Precision.HIGHEST``, so
  on GPU float32 is true float32, never TF32/bf16 passes (on CPU it changes nothing). This
  is per operation; the global ``jax_default_matmul_precision`` is left alone.
- Persistent compilation cache: asv runs each benchmark parameter set in a new process,
  so unless the caller configured a cache, this module points JAX's persistent cache at
  ``FPBENCH_JAX_CACHE`` (default ``~/.cache/fpbench/jax``; ``off`` disables it) and caches
  every program however fast it compiled. These are process-wide JAX settings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from fpbench.backend import (
    Backend,
    BackendUnavailableError,
    Prepared,
    UnsupportedError,
    requested_threads,
)
from fpbench.solvers import Iterative, Jacobi, Native, Newton, QuasiNewton, Sequential, Solver, iteration_cap
from fpbench.spec import Problem


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


# XLA reads these when its CPU client is created, so set them before JAX can create it.
_THREADS = requested_threads()
_THREADS_APPLIED = _configure_xla_env(_THREADS)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

_HIGHEST = lax.Precision.HIGHEST


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


# --- the cell maths (fpbench/cells.py in jnp; leading dimensions broadcast) ---------------


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` in full precision of the operands' dtype (no TF32/bf16 on GPU)."""
    return jnp.matmul(a, b, precision=_HIGHEST)


def _gru_parts(h: jax.Array, gi: jax.Array, gh: jax.Array):
    """GRU gates ``r, z, n`` and ``hn = W_hn h + b_hn`` from ``h (..., H)``, ``gi, gh (..., 3H)``."""
    H = h.shape[-1]
    r = jax.nn.sigmoid(gi[..., :H] + gh[..., :H])
    z = jax.nn.sigmoid(gi[..., H : 2 * H] + gh[..., H : 2 * H])
    hn = gh[..., 2 * H :]
    n = jnp.tanh(gi[..., 2 * H :] + r * hn)
    return r, z, n, hn


def _cell(cell: str, h: jax.Array, gi: jax.Array, gh: jax.Array) -> jax.Array:
    """``f(h, x)`` from ``h (..., H)``, ``gi = W_ih x + b_ih`` and ``gh = W_hh h + b_hh`` ``(..., gH)``."""
    if cell == "elman":
        return jnp.tanh(gi + gh)
    _, z, n, _ = _gru_parts(h, gi, gh)
    return (1.0 - z) * n + z * h


def _jacobian(cell: str, w: dict[str, jax.Array], h, gi, gh, fh) -> jax.Array:
    """``df/dh``: ``(..., H, H)``, row i = output i; ``fh = f(h)`` is reused for elman."""
    W = w["w_hh"]
    if cell == "elman":
        return (1.0 - fh**2)[..., :, None] * W
    H = h.shape[-1]
    Wr, Wz, Wn = W[:H], W[H : 2 * H], W[2 * H :]
    r, z, n, hn = _gru_parts(h, gi, gh)
    dr = (r * (1.0 - r))[..., :, None] * Wr
    dz = (z * (1.0 - z))[..., :, None] * Wz
    dn = (1.0 - n**2)[..., :, None] * (hn[..., :, None] * dr + r[..., :, None] * Wn)
    eye = jnp.eye(H, dtype=h.dtype)
    return (1.0 - z)[..., :, None] * dn + (h - n)[..., :, None] * dz + z[..., :, None] * eye


def _jacobian_diag(cell: str, w: dict[str, jax.Array], h, gi, gh, fh) -> jax.Array:
    """The diagonal of ``df/dh``: ``(..., H)``, without forming the matrix."""
    d = w["w_hh_diag"]  # (g, H): the diagonal of each gate block of W_hh
    if cell == "elman":
        return (1.0 - fh**2) * d[0]
    r, z, n, hn = _gru_parts(h, gi, gh)
    dr = r * (1.0 - r) * d[0]
    dz = z * (1.0 - z) * d[1]
    dn = (1.0 - n**2) * (hn * dr + r * d[2])
    return (1.0 - z) * dn + (h - n) * dz + z


# --- solvers: pure functions of device arrays, jitted in prepare ---------------------------


def _input_projection(x: jax.Array, w: dict[str, jax.Array]) -> jax.Array:
    """``gi = x W_ih^T + b_ih``: ``x (T, B, I)`` -> ``(T, B, gH)``, once per solve."""
    return _mm(x, w["w_ih_t"]) + w["b_ih"]


def _shifted(H: jax.Array, h0: jax.Array) -> jax.Array:
    """``(h0, H_1, ..., H_{T-1})``: the previous state of every step."""
    return jnp.concatenate([h0[None], H[:-1]])


def _sequential(cell: str, x, h0, w):
    """Sequential: ``lax.scan`` over the precomputed ``gi``. Returns ``(states (T, B, H),)``."""

    def step(h, gi_t):
        h = _cell(cell, h, gi_t, _mm(h, w["w_hh_t"]) + w["b_hh"])
        return h, h

    return (lax.scan(step, h0, _input_projection(x, w))[1],)


def _native(cell: str, x, h0, w):
    """Native: the plain ``lax.scan`` RNN with torch-layout weights, ``W_ih x_t`` per step."""

    def step(h, x_t):
        gi = x_t @ w["w_ih"].T + w["b_ih"]
        gh = h @ w["w_hh"].T + w["b_hh"]
        h = _cell(cell, h, gi, gh)
        return h, h

    return (lax.scan(step, h0, x)[1],)


def _iterate(update: Callable[[Any], tuple[Any, jax.Array]], state: Any, max_iters: int, tol: jax.Array):
    """``state, r <- update(state)`` until ``max_iters``, a residual ``r <= tol`` or a
    non-finite ``r``, all on device (``state`` is any pytree of arrays).

    Returns ``(state, residuals (max_iters,), k)``: ``residuals[:k]`` are the residuals
    of the ``k`` iterations that ran.
    """

    def cond(carry):
        _, k, _, done = carry
        return (k < max_iters) & ~done

    def body(carry):
        state, k, res, _ = carry
        state, r = update(state)
        return state, k + 1, res.at[k].set(r), ~jnp.isfinite(r) | (r <= tol)

    init = (state, jnp.int32(0), jnp.zeros(max_iters, tol.dtype), jnp.bool_(False))
    state, k, res, _ = lax.while_loop(cond, body, init)
    return state, res, k


def _max_change(new: jax.Array, old: jax.Array) -> jax.Array:
    """``max |new - old|``, NaN when any entry is NaN (as NumPy and torch give). XLA's CPU
    ``max`` reduction drops NaNs, so an all-NaN (or partly NaN) difference would give
    ``-inf`` or a finite value and a diverged solve would look converged."""
    d = jnp.abs(new - old)
    nan = jnp.isnan(d)
    return jnp.where(jnp.any(nan), jnp.nan, jnp.max(jnp.where(nan, 0, d)))


def _fixed_point(cell: str, kind: str, max_iters: int, x, h0, w, tol):
    """Jacobi (``kind="jacobi"``), Newton (``"newton"``) or QuasiNewton (``"quasi_newton"``)
    from ``H = 0``: returns ``(states (T, B, H), residuals (max_iters,), k)``; ``max_iters``
    is the solver's ``iteration_cap``."""
    gi = _input_projection(x, w)

    def step_all(Hp):
        """``f`` at every step from the previous states ``Hp (T, B, H)``: ``gh`` and ``F(H)``."""
        gh = _mm(Hp, w["w_hh_t"]) + w["b_hh"]
        return gh, _cell(cell, Hp, gi, gh)

    def jacobi(H):
        H_new = step_all(_shifted(H, h0))[1]
        return H_new, _max_change(H_new, H)

    def newton(H):
        # Linearise at H: h_t = A_t h_{t-1} + b_t with b_t = f(H_{t-1}) - A_t H_{t-1}. For
        # t = 1, h_0 is known, so b_1 = f(h_0) exactly and A_1 never enters the states.
        Hp = _shifted(H, h0)
        gh, fh = step_all(Hp)
        if kind == "newton":
            A = _jacobian(cell, w, Hp, gi, gh, fh)
            b = fh - _mm(A, Hp[..., None])[..., 0]
            compose = _compose_full
        else:
            A = _jacobian_diag(cell, w, Hp, gi, gh, fh)
            b = fh - A * Hp
            compose = _compose_diag
        H_new = lax.associative_scan(compose, (A, b.at[0].set(fh[0])))[1]
        return H_new, _max_change(H_new, H)

    update = jacobi if kind == "jacobi" else newton
    return _iterate(update, jnp.zeros_like(gi[..., : h0.shape[-1]]), max_iters, tol)


def _compose_full(earlier, later):
    """``(A1, b1) then (A2, b2)`` = ``(A2 A1, A2 b1 + b2)``; ``A (..., H, H)``, ``b (..., H)``."""
    (A1, b1), (A2, b2) = earlier, later
    return _mm(A2, A1), _mm(A2, b1[..., None])[..., 0] + b2


def _compose_diag(earlier, later):
    """As :func:`_compose_full` for diagonal ``A (..., H)``: elementwise."""
    (a1, b1), (a2, b2) = earlier, later
    return a2 * a1, a2 * b1 + b2


# --- the backend ---------------------------------------------------------------------------


def _device(device: str) -> jax.Device:
    try:
        return jax.devices(device)[0]
    except RuntimeError as e:
        raise BackendUnavailableError(f"JAX has no {device!r} device here: {e}") from e


def _weights(problem: Problem) -> dict[str, np.ndarray]:
    """The parameters in the layouts the programs use (host arrays, spec dtype)."""
    p, H = problem.params, problem.spec.hidden_size
    w_hh = p["weight_hh"]
    return {
        "w_ih": p["weight_ih"],
        "w_hh": w_hh,
        "w_ih_t": np.ascontiguousarray(p["weight_ih"].T),  # (I, gH): products are x @ W^T
        "w_hh_t": np.ascontiguousarray(w_hh.T),  # (H, gH)
        "w_hh_diag": np.stack([np.diagonal(b) for b in np.split(w_hh, w_hh.shape[0] // H)]),
        "b_ih": p["bias_ih"],
        "b_hh": p["bias_hh"],
    }


def _compile(fn: Callable, args: tuple, dtype: str) -> Callable[[], Any]:
    """Compile ``fn`` for ``args`` (already on the device) and warm it; returns the zero-arg
    synchronised run. Must be called inside the x64 context of ``dtype``."""
    compiled = jax.jit(fn).lower(*args).compile()

    def run():
        return jax.block_until_ready(compiled(*args))

    run()
    return run


class JaxBackend(Backend):
    """Every solver as one ahead-of-time compiled XLA program (see the module docstring)."""

    name = "jax"

    def devices(self) -> list[str]:
        found = ["cpu"]
        try:
            if jax.devices("gpu"):
                found.append("gpu")
        except RuntimeError:  # no CUDA/ROCm plugin or no device
            pass
        return found

    def prepare(self, problem: Problem, solver: Solver, device: str) -> Prepared:
        spec = problem.spec
        if isinstance(solver, Sequential):
            fn = partial(_sequential, spec.cell)
        elif isinstance(solver, Native):
            fn = partial(_native, spec.cell)
        elif isinstance(solver, (Jacobi, Newton, QuasiNewton)):
            fn = partial(_fixed_point, spec.cell, solver.name, iteration_cap(solver, spec.seq_len))
        else:
            raise UnsupportedError(f"the jax backend does not implement solver {solver.name!r}")
        dev = _device(device)
        with jax.enable_x64(spec.dtype == "float64"):
            args = jax.device_put((problem.x, problem.h0, _weights(problem)), dev)
            if isinstance(solver, Iterative):
                # tol is an argument, not a constant, so one program serves every tolerance;
                # -1 is never reached by a residual: tol=None runs max_iters (or to NaN).
                tol = -1.0 if solver.tol is None else solver.tol
                args = (*args, jax.device_put(np.asarray(tol, spec.dtype), dev))
            run = _compile(fn, args, spec.dtype)

        def to_host(out) -> tuple[np.ndarray, np.ndarray]:
            states = np.asarray(out[0], dtype=spec.dtype)
            if len(out) == 1:
                return states, np.empty(0)
            return states, np.asarray(out[1])[: int(out[2])]

        return Prepared(run, to_host)

    def iteration_floor(self, problem: Problem, device: str) -> Callable[[], Any]:
        spec = problem.spec
        T, B, H = spec.seq_len, spec.batch, spec.hidden_size
        p = problem.params
        gi = (problem.x @ p["weight_ih"].T + p["bias_ih"]).reshape(T * B, -1)
        h = np.broadcast_to(problem.h0, (T, B, H)).reshape(T * B, H)
        w_t = np.ascontiguousarray(p["weight_hh"].T)

        def floor(h, gi, w_t, b):  # (T*B, H) x (H, gH) + bias, then the cell's elementwise work
            return _cell(spec.cell, h, gi, jnp.matmul(h, w_t, precision=_HIGHEST) + b)

        with jax.enable_x64(spec.dtype == "float64"):
            args = jax.device_put((h, gi, w_t, p["bias_hh"]), _device(device))
            return _compile(floor, args, spec.dtype)

    def info(self) -> dict[str, str]:
        threads = str(_THREADS) if _THREADS_APPLIED else f"{_THREADS} (not applied: JAX started first)"
        return {
            "jax": jax.__version__,
            "jax_threads": threads,
            "PJRT_NPROC": os.environ.get("PJRT_NPROC", ""),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "jax_compilation_cache": _CACHE_DIR,
            "jax_devices": ", ".join(str(d) for d in jax.devices()),
        }
