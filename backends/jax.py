"""The JAX backend (``"jax"``, devices ``"cpu"`` and ``"gpu"``).

Every solver is one jitted XLA program, compiled ahead of time in ``prepare``
(``jax.jit(f).lower(*args).compile()``) and run once on the real data, so ``run()`` is a
single call of the compiled executable followed by ``block_until_ready``. The input
projection ``gi = x W_ih^T + b_ih`` is computed once per solve inside that program,
before any loop.

The cell maths is not written here: every program evaluates the shared cells of
:mod:`fpbench.cells` (``activate``, ``linearise``, ``step``) in :data:`xp`, ``jax.numpy``
whose ``matmul`` runs at ``Precision.HIGHEST``, so every cell of :data:`fpbench.CELLS` runs
here with no table of its own. The state is
``s`` of size ``S = parts * H`` (``[h, c]`` for lstm) and programs return the full states
``(T, B, S)``. Solvers are chosen by their traits (``_program``): ``kind``
(``"sequential"`` / ``"native"`` / ``"iterative"``), then ``transition`` and ``damping``.

- Iterative solvers: a ``lax.while_loop`` whose carry is
  ``(S, k, residuals[slots], done)``, so tolerance and divergence checks never leave
  the device; ``to_host`` keeps ``residuals[:k]``. The loop runs at most ``cap`` times,
  ``fpbench.solvers.iteration_cap`` (at most T unless damped), so an unreachable
  ``max_iters`` never sizes an array. ``tol``, ``damping`` and ``cap`` are runtime
  arguments, and the residual buffer has :func:`residual_slots` entries (``cap`` rounded up
  to a multiple of :data:`RESIDUAL_SLOTS`), so one compiled program serves every value,
  and every budget up to 64 iterations (a budget sweep, or a budget and its ``tol`` run on a
  short sequence) shares one program and one entry of the persistent cache. The residual
  is NaN if any difference is NaN (XLA's CPU ``max`` reduction drops NaNs and can return
  -inf: :func:`_max_change`).
  - ``transition == "none"`` (Jacobi): one ``(T*B, H) x (H, gH)`` product plus fused
    elementwise work per iteration.
  - ``"full"`` / ``"diagonal"`` (Newton / QuasiNewton): ``cell.linearise`` gives ``f`` and
    the structured Jacobian ``(c, d)``; the full ``(T, B, S, S)`` Jacobian or its diagonal
    ``(T, B, S)`` is assembled from it (the diagonal elementwise, never from the matrix),
    ``b_t = f - A_t s_{t-1}`` uses the products the step already computed, and the linear
    recurrence ``s_t = A_t s_{t-1} + b_t`` is one ``lax.associative_scan``.
  - ``damping > 0`` (ELK / QuasiELK): the same linearisation, then the damped
    least-squares step solved exactly by a Kalman filter and a Rauch-Tung-Striebel
    smoother, each one ``lax.associative_scan`` (the parallel filter and smoother elements
    of Särkkä & García-Fernández; derivation above :func:`_kalman_smoother`); elementwise
    for the diagonal transition. ``damping == 0`` runs Newton's (QuasiNewton's) program.
- ``transition == "window"`` (Chunked): :mod:`backends._jax_chunked`. The windows of all
  chunks are folded into the batch, ``(window, chunks * B, .)`` by the layout's static
  ``gather_index``, and run by one ``lax.scan`` of Sequential's step; iteration 1 over the
  warm windows, later ones rerun every chunk but the first from the old iterate (fixed
  shapes), a ``tol`` applied afterwards as a per-chunk mask; the same ``while_loop`` and
  residuals as above, at most ``min(max_iters, chunks)`` iterations. Static: the cell, the
  layout, the residual slots, whether a second iteration can run and whether there is a
  ``tol``.
- Sequential: ``lax.scan`` over the precomputed ``gi``. Native: ``lax.scan`` of the plain
  ``cell.step`` computing ``W_ih x_t`` inside each step, as a user writes an RNN in JAX (the
  ``jax.lax.scan`` baseline of docs/design.md, "Baselines").

Gradients (``prepare_grad``, :mod:`fpbench.grad`), one AOT-compiled program each, taking the
parameters in torch layout so autodiff returns them in that layout:

- Sequential (``"bptt"``) and Native (``"autograd"``): ``jax.vjp`` through their ``lax.scan``.
- ``backward="unrolled"``: ``jax.vjp`` through the iterations that ran, written as a
  ``lax.scan`` over the iteration cap whose body is skipped (``lax.cond``) once the forward
  stopped (a ``while_loop`` is not reverse-differentiable; :func:`_unrolled_iterate`, which
  Chunked's unrolled backward uses too). A scan stores its body's intermediates for every
  step of its length, run or skipped, so above 64 iterations the scan is over checkpointed
  chunks of ``ceil(sqrt(cap))`` iterations (:func:`unrolled_chunks`): about
  ``2 sqrt(cap)`` iterations' worth instead of ``cap``.
- ``backward="implicit"``: the forward ``while_loop``, then the adjoint
  ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` at the returned states: a reverse
  ``associative_scan`` over the transposed full Jacobians for ``transition == "full"``
  (Newton, ELK; exact, no iterations), adjoint iterations to ``tol`` (at most
  ``min(max_iters, T)``, residuals reported) for ``"none"`` (Jacobi on the adjoint) and
  ``"diagonal"`` (each iteration an elementwise reverse scan with the diagonal, the rest of
  ``J^T`` lagged), and Chunked's own iterations on the time-reversed adjoint recurrence for
  ``"window"`` (``"implicit: chunked adjoint"``, :mod:`backends._jax_chunked`; residuals
  reported); then every parameter gradient as one batched ``cell.vjp_preact`` over all t
  and contractions over (t, b).

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
  flag: XLA ignores it there.) Importing this module changes neither: the backend's first
  use (``devices()``, ``prepare``, ``info()``; :func:`_start`) sets both from
  ``FPBENCH_THREADS`` (default ``os.cpu_count()``) unless the user already set them, creates
  JAX's clients, and restores the environment. They only take effect if JAX's CPU client
  was not created yet, which ``info()`` reports.
- Float32 matmul precision: every product passes ``precision=lax.Precision.HIGHEST``, so
  on GPU float32 is true float32, never TF32/bf16 passes (on CPU it changes nothing). This
  is per operation; the global ``jax_default_matmul_precision`` is left alone.
- Persistent compilation cache: asv runs each benchmark parameter set in a new process,
  so unless the caller configured a cache, this module points JAX's persistent cache at
  ``FPBENCH_JAX_CACHE`` (default ``~/.cache/fpbench/jax``; ``off`` disables it) and caches
  every program however fast it compiled. These are process-wide JAX settings.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from fpbench.backend import (
    Backend,
    BackendUnavailableError,
    GradHost,
    GradOutput,
    Prepared,
    UnsupportedError,
    requested_threads,
)
from fpbench.cells import CELLS, Cell, input_projection
from fpbench.memory import unrolled_items
from fpbench.solvers import TRANSITIONS, Chunked, Jacobi, Solver, iteration_cap
from fpbench.spec import Problem, RNNSpec


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


import jax  # noqa: E402  (importing JAX creates no client; the first device query does)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

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


_HIGHEST = lax.Precision.HIGHEST

if not getattr(GradOutput, "_fpbench_jax_pytree", False):  # the gradient programs return it
    jax.tree_util.register_dataclass(
        GradOutput,
        data_fields=[f.name for f in dataclasses.fields(GradOutput) if f.name != "backward_method"],
        meta_fields=["backward_method"],
    )
    GradOutput._fpbench_jax_pytree = True  # type: ignore[attr-defined]


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


# --- the cell maths: fpbench.cells, in jax.numpy with full-precision products ------------


class _FullPrecisionNumpy:
    """``jax.numpy`` with ``matmul`` at ``Precision.HIGHEST``: the array namespace the shared
    cells (:mod:`fpbench.cells`) are evaluated in, so on GPU float32 is true float32."""

    def __getattr__(self, name: str) -> Any:
        return getattr(jnp, name)

    @staticmethod
    def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.matmul(a, b, precision=_HIGHEST)


xp = _FullPrecisionNumpy()
_mm = xp.matmul


def _cell_of(name: str) -> Cell:
    """The shared cell itself (:data:`fpbench.CELLS`), evaluated in :data:`xp`: every cell runs."""
    try:
        return CELLS[name]
    except KeyError:
        raise UnsupportedError(f"the jax backend has no cell {name!r}") from None


# The structured Jacobian (fpbench.cells): J[p, q] = sum_g diag(c[g, p]) W_g [q == 0] +
# diag(d[p, q]), with c (..., g, P, H), d (..., P, P, H). Generic in the cell.


def _structured_apply(c: jax.Array, d: jax.Array, wh: jax.Array, s: jax.Array) -> jax.Array:
    """``J s`` without forming ``J``: ``wh (..., gH)`` holds ``W_g h`` of every gate (the
    product the step computed anyway), ``s (..., P*H)`` the state. Returns ``(..., P*H)``."""
    g, P, H = c.shape[-3:]
    # Sums written out over the (few) gates and parts: XLA's CPU fusion of a reshape and
    # a reduction over the gate axis is much slower (reports/ holds the speed ratios).
    parts = [
        sum(c[..., k, p, :] * wh[..., k * H : (k + 1) * H] for k in range(g))
        + sum(d[..., p, q, :] * s[..., q * H : (q + 1) * H] for q in range(P))
        for p in range(P)
    ]
    return parts[0] if P == 1 else jnp.concatenate(parts, -1)


def _full_jacobian(c: jax.Array, d: jax.Array, blocks: jax.Array) -> jax.Array:
    """``J (..., P*H, P*H)`` from the structured form; ``blocks (g, H, H)`` are the ``W_g``."""
    g, P, H = c.shape[-3:]
    gate = sum(c[..., k, :, :, None] * blocks[k] for k in range(g))  # (..., P, H, H)
    diag = d[..., None] * jnp.eye(H, dtype=d.dtype)  # (..., P, Q, H, H)
    J = jnp.concatenate([diag[..., :1, :, :] + gate[..., None, :, :], diag[..., 1:, :, :]], -3)
    return jnp.swapaxes(J, -3, -2).reshape(*J.shape[:-4], P * H, P * H)


def _diag_jacobian(c: jax.Array, d: jax.Array, w_diag: jax.Array) -> jax.Array:
    """``diag(J) (..., P*H)`` from the structured form, elementwise; ``w_diag (g, H)`` are
    the diagonals of the ``W_g``. Only the ``h`` part (``p = q = 0``) sees the gates."""
    g, P, _ = c.shape[-3:]
    h_part = d[..., 0, 0, :] + sum(c[..., k, 0, :] * w_diag[k] for k in range(g))
    return jnp.concatenate([h_part] + [d[..., p, p, :] for p in range(1, P)], -1)


# --- solvers: pure functions of device arrays, jitted in prepare ---------------------------


def _input_projection(x: jax.Array, w: dict[str, jax.Array]) -> jax.Array:
    """``gi = x W_ih^T + b_ih``: ``x (T, B, I)`` -> ``(T, B, gH)``, once per solve."""
    return _mm(x, w["w_ih_t"]) + w["b_ih"]


def _hidden_product(s: jax.Array, w: dict[str, jax.Array]) -> jax.Array:
    """``W_hh h`` (no bias) of the ``h`` part of states ``s (..., S)``: ``(..., gH)``."""
    return _mm(s[..., : w["w_hh_t"].shape[0]], w["w_hh_t"])


def _shifted(S: jax.Array, s0: jax.Array) -> jax.Array:
    """``(s0, S_1, ..., S_{T-1})``: the previous state of every step."""
    return jnp.concatenate([s0[None], S[:-1]])


def _sequential(cell: Cell, x, s0, w):
    """Sequential: ``lax.scan`` over the precomputed ``gi``. Returns ``(states (T, B, S),)``."""

    def step(s, gi_t):
        s = cell.activate(xp, s, gi_t, _hidden_product(s, w) + w["b_hh"])
        return s, s

    return (lax.scan(step, s0, _input_projection(x, w))[1],)


def _native_step(cell: Cell, params: dict[str, jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The plain step ``(s (N, S), x_t (N, I)) -> s' (N, S)``: ``cell.step`` with torch-layout
    ``params``, ``W_ih x_t`` computed inside it. Native's scan body, and Chunked's on every
    window."""

    def step(s, x_t):
        return cell.step(xp, params, s, input_projection(params, x_t, xp))

    return step


def _native(cell: Cell, x, s0, w):
    """Native: the plain ``lax.scan`` RNN of :func:`_native_step`, as a user writes an RNN in
    JAX. Returns ``(states (T, B, S),)``."""
    step = _native_step(cell, w["torch"])

    def body(s, x_t):
        s = step(s, x_t)
        return s, s

    return (lax.scan(body, s0, x)[1],)


RESIDUAL_SLOTS = 64
"""Residual buffers are sized in multiples of this (:func:`residual_slots`)."""


def residual_slots(cap: int) -> int:
    """The residual buffer's length for an iteration cap: ``cap`` rounded up to a multiple of
    :data:`RESIDUAL_SLOTS` (a static shape; the cap itself is a runtime argument)."""
    return max(1, -(-cap // RESIDUAL_SLOTS)) * RESIDUAL_SLOTS


def _iterate(update: Callable[[Any], tuple[Any, jax.Array]], state: Any, slots: int, tol: jax.Array, cap):
    """``state, r <- update(state)`` until ``cap`` iterations (a runtime scalar, at most
    ``slots``), a residual ``r <= tol`` or a non-finite ``r``, all on device (``state`` is
    any pytree of arrays).

    Returns ``(state, residuals (slots,), k)``: ``residuals[:k]`` are the residuals of the
    ``k`` iterations that ran.
    """

    def cond(carry):
        _, k, _, done = carry
        return (k < cap) & ~done

    def body(carry):
        state, k, res, _ = carry
        state, r = update(state)
        return state, k + 1, res.at[k].set(r), ~jnp.isfinite(r) | (r <= tol)

    init = (state, jnp.int32(0), jnp.zeros(slots, tol.dtype), jnp.bool_(False))
    state, k, res, _ = lax.while_loop(cond, body, init)
    return state, res, k


def _max_change(new: jax.Array, old: jax.Array) -> jax.Array:
    """``max |new - old|``, NaN when ``new`` holds a NaN, for a finite ``old``.

    XLA's CPU ``max`` reduction drops NaNs (an all-NaN difference gives ``-inf``), so a
    diverged solve would look converged; NumPy and torch give NaN. ``old`` is always finite
    here: every :func:`_iterate` loop starts from zeros and stops at the first non-finite
    residual. So ``|new - old|`` holds a NaN exactly when ``new`` does, and the NaN test is
    the sum of ``new``, which is also NaN when ``new`` holds infinities of both signs (a
    diverged solve either way). Written so, XLA fuses the difference into the ``max``
    reduction and reads ``new`` once more for the sum; a NaN test on ``|new - old|`` itself
    would write that array out and read it twice.
    """
    return jnp.where(jnp.isnan(jnp.sum(new)), jnp.nan, jnp.max(jnp.abs(new - old)))


def _update(cell: Cell, transition: str, damped: bool, gi, s0, w, damping) -> Callable:
    """One iteration ``S -> (S_new, residual)`` of the iterative solver with these traits:
    ``transition`` ``"none"`` (Jacobi), ``"full"`` (Newton) or ``"diagonal"`` (quasi-Newton);
    ``damped``: solve each linearised step by the Kalman smoother with the runtime
    ``damping`` (ELK, quasi-ELK)."""

    def jacobi(S):
        Sp = _shifted(S, s0)
        S_new = cell.activate(xp, Sp, gi, _hidden_product(Sp, w) + w["b_hh"])
        return S_new, _max_change(S_new, S)

    def newton(S):
        # Linearise at S: s_t = A_t s_{t-1} + b_t with b_t = f(S_{t-1}) - A_t S_{t-1}. For
        # t = 1, s_0 is known, so b_1 = f(s_0) exactly and A_1 never enters the states.
        Sp = _shifted(S, s0)
        wh = _hidden_product(Sp, w)
        f, c, d = cell.linearise(xp, Sp, gi, wh + w["b_hh"])
        if transition == "full":
            A = _full_jacobian(c, d, w["blocks"])
            b = f - _structured_apply(c, d, wh, Sp)
        else:
            A = _diag_jacobian(c, d, w["diag"])
            b = f - A * Sp
        b = b.at[0].set(f[0])
        if damped:
            S_new = _kalman_smoother(transition == "full", A.at[0].set(0.0), b, S, damping)
        else:
            S_new = lax.associative_scan(_COMPOSE[transition], (A, b))[1]
        return S_new, _max_change(S_new, S)

    return jacobi if transition == "none" else newton


def _fixed_point(cell: Cell, transition: str, damped: bool, slots: int, x, s0, w, tol, damping, cap):
    """Any iterative solver from ``S = 0``, by its traits (:func:`_update`). Returns
    ``(states (T, B, S), residuals (slots,), k)``; ``cap`` is the solver's
    ``iteration_cap`` (a runtime scalar), ``slots`` its :func:`residual_slots`."""
    gi = _input_projection(x, w)
    update = _update(cell, transition, damped, gi, s0, w, damping)
    return _iterate(update, jnp.zeros(gi.shape[:2] + s0.shape[-1:], gi.dtype), slots, tol, cap)


def _mv(A: jax.Array, v: jax.Array) -> jax.Array:
    """``A v`` for ``A (..., n, m)``, ``v (..., m)``."""
    return _mm(A, v[..., None])[..., 0]


def _compose_full(earlier, later):
    """``(A1, b1) then (A2, b2)`` = ``(A2 A1, A2 b1 + b2)``; ``A (..., S, S)``, ``b (..., S)``."""
    (A1, b1), (A2, b2) = earlier, later
    return _mm(A2, A1), _mv(A2, b1) + b2


def _compose_diag(earlier, later):
    """As :func:`_compose_full` for diagonal ``A (..., S)``: elementwise."""
    (a1, b1), (a2, b2) = earlier, later
    return a2 * a1, a2 * b1 + b2


_COMPOSE = {"full": _compose_full, "diagonal": _compose_diag}


# --- ELK's damped step: a Kalman filter and RTS smoother as associative scans --------------
#
# The damped step minimises sum_t |s_t - A_t s_{t-1} - b_t|^2 + damping sum_t |s_t - y_t|^2
# (y = the current iterate, s_0 known): the smoothed means of the linear-Gaussian model
# s_t = A_t s_{t-1} + b_t + N(0, I), y_t = s_t + N(0, I / damping). With observation noise
# a multiple of I, the Kalman gain of a single step is kappa I, kappa = damping / (1 + damping).
#
# Filter (Sarkka & Garcia-Fernandez 2021, parallel form): element t is the conditional
# p(s_t | s_{t-1}, y_t) = N(E s_{t-1} + e, C) together with the likelihood of y_t as a function
# of s_{t-1}, in information form (eta, J):
#     E = (1 - kappa) A_t,  e = b_t + kappa (y_t - b_t),  C = (1 - kappa) I,
#     eta = kappa A_t^T (y_t - b_t),  J = kappa A_t^T A_t;
# the first element takes A_1 = 0 (s_0 is known), so it is the filtered N(e, C) itself.
# Two consecutive elements (1 earlier, 2 later) combine with M = I + C1 J2 as
#     E = E2 M^-1 E1,  e = E2 M^-1 (e1 + C1 eta2) + e2,  C = E2 M^-1 C1 E2^T + C2,
#     eta = E1^T M^-T (eta2 - J2 e1) + eta1,  J = E1^T M^-T J2 E1 + J1,
# and the prefix up to t has (e, C) = the filtered mean and covariance (m_t, P_t).
# Smoother (Rauch-Tung-Striebel): m^s_t = G_t m^s_{t+1} + (m_t - G_t (A_{t+1} m_t + b_{t+1})),
# G_t = P_t A_{t+1}^T (A_{t+1} P_t A_{t+1}^T + I)^-1, m^s_T = m_T: an affine recurrence
# backwards in time, solved by the same composition as Newton's scan, reversed.
# With damping = 0 (kappa = 0) the filter is Newton's recurrence and G_t multiplies zero.


@jax.custom_vjp
def _solve(A: jax.Array, R: jax.Array) -> jax.Array:
    """``A^-1 R`` for batched ``A (..., n, n)``, ``R (..., n, r)``: Gauss-Jordan elimination with
    partial pivoting in plain XLA operations (a loop of ``n`` eliminations).

    Its reverse-mode derivative is the solve's own adjoint (:func:`_solve_bwd`), not autodiff
    through the loop, which would keep all ``n`` intermediate ``n x (n + r)`` matrices of
    every call (of the order of ``S^3`` items per row and iteration in ELK's unrolled backward).

    Not ``jnp.linalg.solve`` / ``lu_factor``: on the CPU those are LAPACK custom calls that
    jaxlib spreads over XLA's intra-op thread pool and waits for *on* a thread of that pool;
    inside a larger program (the associative scans here) every pool thread can end up
    waiting so, and the process deadlocks at 0% CPU (seen in this repository's test suite).
    """
    n = A.shape[-1]
    rows = jnp.arange(n)[:, None]

    def eliminate(k, M):
        col = lax.dynamic_index_in_dim(M, k, axis=-1, keepdims=False)  # (..., n)
        p = jnp.argmax(jnp.where(rows[:, 0] >= k, jnp.abs(col), -1.0), axis=-1)  # pivot row
        row_k = lax.dynamic_index_in_dim(M, k, axis=-2, keepdims=True)
        row_p = jnp.take_along_axis(M, p[..., None, None], axis=-2)
        M = jnp.where(rows == k, row_p, jnp.where(rows == p[..., None, None], row_k, M))  # swap k, p
        pivot_row = row_p / lax.dynamic_index_in_dim(row_p, k, axis=-1, keepdims=True)
        col = lax.dynamic_index_in_dim(M, k, axis=-1, keepdims=True)  # (..., n, 1)
        return M - (col - (rows == k).astype(M.dtype)) * pivot_row

    M = lax.fori_loop(0, n, eliminate, jnp.concatenate([A, R], -1))
    return M[..., n:]


def _solve_fwd(A: jax.Array, R: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    X = _solve(A, R)
    return X, (A, X)


def _solve_bwd(res: tuple[jax.Array, jax.Array], X_bar: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``X = A^-1 R``: ``R_bar = A^-T X_bar`` and ``A_bar = -R_bar X^T``."""
    A, X = res
    R_bar = _solve(jnp.swapaxes(A, -1, -2), X_bar)
    return -_mm(R_bar, jnp.swapaxes(X, -1, -2)), R_bar


_solve.defvjp(_solve_fwd, _solve_bwd)


def _filter_full(earlier, later):
    """Combine two filter elements ``(E, e, C, eta, J)`` with full ``(..., S, S)`` matrices."""
    E1, e1, C1, eta1, J1 = earlier
    E2, e2, C2, eta2, J2 = later
    S = E1.shape[-1]
    M = jnp.eye(S, dtype=E1.dtype) + _mm(C1, J2)
    X = _solve(M, jnp.concatenate([E1, C1, (e1 + _mv(C1, eta2))[..., None]], -1))
    Y = _solve(jnp.swapaxes(M, -1, -2), jnp.concatenate([_mm(J2, E1), (eta2 - _mv(J2, e1))[..., None]], -1))
    E1t = jnp.swapaxes(E1, -1, -2)
    return (
        _mm(E2, X[..., :S]),
        _mv(E2, X[..., 2 * S]) + e2,
        _mm(_mm(E2, X[..., S : 2 * S]), jnp.swapaxes(E2, -1, -2)) + C2,
        _mv(E1t, Y[..., S]) + eta1,
        _mm(E1t, Y[..., :S]) + J1,
    )


def _filter_diag(earlier, later):
    """As :func:`_filter_full` for diagonal (elementwise) elements ``(..., S)``."""
    E1, e1, C1, eta1, J1 = earlier
    E2, e2, C2, eta2, J2 = later
    inv = 1.0 / (1.0 + C1 * J2)
    return (
        E2 * inv * E1,
        E2 * inv * (e1 + C1 * eta2) + e2,
        E2 * inv * C1 * E2 + C2,
        E1 * inv * (eta2 - J2 * e1) + eta1,
        E1 * inv * J2 * E1 + J1,
    )


def _kalman_smoother(full: bool, A: jax.Array, b: jax.Array, y: jax.Array, damping: jax.Array) -> jax.Array:
    """The damped step (see above): ``A (T, B, S, S)`` full or ``(T, B, S)`` diagonal with
    ``A[0] = 0``, ``b, y (T, B, S)`` with ``b[0] = f(s_0)``; ``damping`` a runtime scalar.
    Returns the smoothed means ``(T, B, S)``."""
    kappa = damping / (1.0 + damping)
    r = y - b
    if full:
        At = jnp.swapaxes(A, -1, -2)
        eye = jnp.eye(A.shape[-1], dtype=A.dtype)
        elems = (
            (1.0 - kappa) * A,
            b + kappa * r,
            jnp.broadcast_to((1.0 - kappa) * eye, A.shape),
            kappa * _mv(At, r),
            kappa * _mm(At, A),
        )
        _, m, P, _, _ = lax.associative_scan(_filter_full, elems)
        F, Pt = A[1:], P[:-1]
        FP = _mm(F, jnp.swapaxes(Pt, -1, -2))  # F P^T, P symmetric up to rounding
        pred_cov = _mm(FP, jnp.swapaxes(F, -1, -2)) + eye
        G = jnp.swapaxes(_solve(pred_cov, FP), -1, -2)  # P F^T (F P F^T + I)^-1
        g = m[:-1] - _mv(G, _mv(F, m[:-1]) + b[1:])
        compose = _compose_full
    else:
        C = jnp.broadcast_to(1.0 - kappa, A.shape)
        elems = ((1.0 - kappa) * A, b + kappa * r, C, kappa * A * r, kappa * A * A)
        _, m, P, _, _ = lax.associative_scan(_filter_diag, elems)
        F, Pt = A[1:], P[:-1]
        G = Pt * F / (F * F * Pt + 1.0)
        g = m[:-1] - G * (F * m[:-1] + b[1:])
        compose = _compose_diag
    G = jnp.concatenate([G, jnp.zeros((1, *G.shape[1:]), G.dtype)])  # m^s_T = m_T (G is empty at T = 1)
    g = jnp.concatenate([g, m[-1:]])
    return lax.associative_scan(compose, (G, g), reverse=True)[1]


# --- gradients: the backward pass of every solver (fpbench.grad) --------------------------
#
# Gradient programs take the parameters in torch layout and derive the layouts above inside
# the program (a few transposes), so that autodiff gives dL/dparams in torch layout. They
# return (states, residuals, k, dparams, dx, ds0, backward residuals, backward k).


def _layouts(params: dict[str, jax.Array]) -> dict[str, Any]:
    """:func:`_weights`' layouts from torch-layout ``params``, inside a program."""
    W = params["weight_hh"]
    H = W.shape[-1]
    blocks = W.reshape(-1, H, H)
    return {
        "torch": params,
        "w_ih_t": params["weight_ih"].T,
        "w_hh_t": W.T,
        "b_ih": params["bias_ih"],
        "b_hh": params["bias_hh"],
        "blocks": blocks,
        "diag": jnp.diagonal(blocks, axis1=1, axis2=2),
    }


def _later(v: jax.Array) -> jax.Array:
    """``out_t = v_{t+1}`` (0 at the last step): what step t+1 sends back to step t."""
    return jnp.concatenate([v[1:], jnp.zeros_like(v[:1])])


def _vjp_steps(cell: Cell, Sp, gi, lam, w, gh=None):
    """The VJP of every step ``f(Sp_t, x_t)`` at once for cotangents ``lam (T, B, S)``:
    ``(J_t^T lam_t (T, B, S), dgi (T, B, gH), dgh (T, B, gH))``. ``gh``: the steps' hidden
    preactivations ``W_hh h_{t-1} + b_hh (T, B, gH)`` where already computed."""
    if gh is None:
        gh = _hidden_product(Sp, w) + w["b_hh"]
    ds, dgi, dgh = cell.vjp_preact(xp, Sp, gi, gh, lam)
    H = w["w_hh_t"].shape[0]
    return ds.at[..., :H].add(_mm(dgh, w["torch"]["weight_hh"])), dgi, dgh


def _param_products(cell: Cell, S, s0, x, gi, lam, w):
    """``(dparams, dx, ds0)`` from the adjoint ``lam`` at the states ``S``: one batched VJP
    of every step and contractions over (t, b)."""
    Sp = _shifted(S, s0)
    dprev, dgi, dgh = _vjp_steps(cell, Sp, gi, lam, w)
    H = w["w_hh_t"].shape[0]
    params = {
        "weight_ih": jnp.einsum("tbg,tbi->gi", dgi, x, precision=_HIGHEST),
        "weight_hh": jnp.einsum("tbg,tbh->gh", dgh, Sp[..., :H], precision=_HIGHEST),
        "bias_ih": dgi.sum((0, 1)),
        "bias_hh": dgh.sum((0, 1)),
    }
    return params, _mm(dgi, w["torch"]["weight_ih"]), dprev[0]


def _no_iterations(dtype) -> tuple[jax.Array, jax.Array]:
    return jnp.zeros(1, dtype), jnp.int32(0)


def _grad_autodiff(forward: Callable, x, s0, params, g):
    """``jax.vjp`` of ``forward(x, s0, w) -> states`` (Native, Sequential: BPTT)."""
    S, vjp = jax.vjp(lambda x, s0, p: forward(x, s0, _layouts(p))[0], x, s0, params)
    dx, ds0, dparams = vjp(g)
    return GradOutput(S, *_no_iterations(S.dtype), dparams, dx, ds0, *_no_iterations(S.dtype))


UNROLLED_LINEARISED_SCALE = 8
"""How many times torch's record (:func:`fpbench.memory.unrolled_items`) an unrolled
Newton-type iteration keeps under XLA (the residuals of every level of its associative
scans): the memory estimate's factor, from the resident memory of unrolled Newton."""

UNROLLED_CHECKPOINT_ABOVE = 64
"""An unrolled backward with an iteration cap above this checkpoints (:func:`unrolled_chunks`)."""


def unrolled_chunks(cap: int) -> tuple[int, int]:
    """``(chunks, length)`` of the unrolled backward's checkpointed scan for an iteration cap.

    Up to :data:`UNROLLED_CHECKPOINT_ABOVE` iterations, one chunk of ``cap``: every
    iteration's intermediates are kept. Above, ``ceil(cap / L)`` chunks of ``L = ceil(sqrt(cap))``
    iterations: the forward keeps each chunk's input state, and the backward recomputes one
    chunk at a time, so it holds about ``chunks + L`` iterations' worth instead of ``cap``
    (a scan's stored intermediates are sized by its length, not by the iterations that ran).
    """
    if cap <= UNROLLED_CHECKPOINT_ABOVE:
        return 1, cap
    length = math.isqrt(cap - 1) + 1
    return -(-cap // length), length


def _unrolled_iterate(update: Callable[[Any], tuple[Any, jax.Array]], state: Any, cap: int, tol: jax.Array):
    """:func:`_iterate` written so that reverse-mode autodiff goes through it: a ``lax.scan``
    over ``cap`` iterations (static: the scan's length, and what it keeps for the backward,
    depend on it) whose body skips (``lax.cond``) once the iteration stopped; above
    :data:`UNROLLED_CHECKPOINT_ABOVE` iterations, a scan of checkpointed chunks of it
    (:func:`unrolled_chunks`) whose chunks after the stop are skipped whole. ``state`` is any
    pytree of arrays. Returns ``(state, residuals (cap,), k)`` as :func:`_iterate`."""
    chunks, length = unrolled_chunks(cap)

    def body(carry, _):
        state, i, done = carry
        skip = done | (i >= cap)
        state, r = lax.cond(skip, lambda state: (state, jnp.zeros((), tol.dtype)), update, state)
        return (state, i + 1, skip | ~jnp.isfinite(r) | (r <= tol)), (r, ~skip)

    def chunk(carry):
        return lax.scan(body, carry, None, length=length)

    init = (state, jnp.int32(0), jnp.bool_(False))
    if chunks == 1:
        (state, _, _), (res, ran) = chunk(init)
    else:
        kept = jax.checkpoint(chunk)

        def skipped(carry):
            return carry, (jnp.zeros(length, tol.dtype), jnp.zeros(length, bool))

        def outer(carry, _):
            return lax.cond(carry[2] | (carry[1] >= cap), skipped, kept, carry)

        (state, _, _), (res, ran) = lax.scan(outer, init, None, length=chunks)
        res, ran = res.reshape(-1)[:cap], ran.reshape(-1)[:cap]
    return state, res, ran.sum(dtype=jnp.int32)


def _grad_unrolled(cell: Cell, transition: str, damped: bool, cap: int, x, s0, params, tol, damping, _cap, g):
    """``jax.vjp`` through the iterations that ran (:func:`_unrolled_iterate`; the cap is
    static here, so the runtime ``_cap`` every iterative program takes is unused)."""

    def forward(x, s0, params):
        w = _layouts(params)
        gi = _input_projection(x, w)
        update = _update(cell, transition, damped, gi, s0, w, damping)
        S0 = jnp.zeros(gi.shape[:2] + s0.shape[-1:], gi.dtype)
        S, res, k = _unrolled_iterate(update, S0, cap, tol)
        return S, (res, k)

    S, vjp, (res, k) = jax.vjp(forward, x, s0, params, has_aux=True)
    dx, ds0, dparams = vjp(g)
    return GradOutput(S, res, k, dparams, dx, ds0, *_no_iterations(S.dtype))


def _grad_implicit(
    cell: Cell, transition: str, damped: bool, slots: int, x, s0, params, tol, damping, cap, g
):
    """The forward solve, then the adjoint ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` at its
    states: a reverse ``associative_scan`` over the transposed Jacobians (``"full"``),
    Jacobi on the adjoint (``"none"``) or diagonal-preconditioned adjoint iterations
    (``"diagonal"``: each iteration an elementwise reverse scan), the iterations to ``tol``
    and at most ``min(max_iters, T)`` times (T iterations give the exact adjoint)."""
    w = _layouts(params)
    S, res, k = _fixed_point(cell, transition, damped, slots, x, s0, w, tol, damping, cap)
    gi = _input_projection(x, w)
    Sp = _shifted(S, s0)
    if transition == "full":
        wh = _hidden_product(Sp, w)
        _, c, d = cell.linearise(xp, Sp, gi, wh + w["b_hh"])
        At = _later(jnp.swapaxes(_full_jacobian(c, d, w["blocks"]), -1, -2))  # J_{t+1}^T
        lam = lax.associative_scan(_compose_full, (At, g), reverse=True)[1]
        res_b, k_b = _no_iterations(S.dtype)
    else:
        if transition == "none":

            def update(lam):
                new = g + _later(_vjp_steps(cell, Sp, gi, lam, w)[0])
                return new, _max_change(new, lam)

        else:
            wh = _hidden_product(Sp, w)
            _, c, d = cell.linearise(xp, Sp, gi, wh + w["b_hh"])
            diag = _diag_jacobian(c, d, w["diag"])
            d_next = _later(diag)  # D_{t+1}

            def update(lam):
                # lam_t = g_t + D_{t+1} lam_{t+1} + (J_{t+1} - D_{t+1})^T lam_{t+1}^old
                b = g + _later(_vjp_steps(cell, Sp, gi, lam, w)[0] - diag * lam)
                new = lax.associative_scan(_compose_diag, (d_next, b), reverse=True)[1]
                return new, _max_change(new, lam)

        lam, res_b, k_b = _iterate(update, jnp.zeros_like(g), slots, tol, jnp.minimum(cap, g.shape[0]))
    dparams, dx, ds0 = _param_products(cell, S, s0, x, gi, lam, w)
    return GradOutput(S, res, k, dparams, dx, ds0, res_b, k_b)


_BACKWARD_METHODS = {
    "none": "implicit: jacobi on the adjoint",
    "full": "implicit: reverse scan",
    "diagonal": "implicit: diagonal-preconditioned adjoint iterations",
}


def _chunked_traits(cell: Cell, solver: Solver, seq_len: int, unrolled: bool = False) -> tuple:
    """The static arguments of a Chunked program (:mod:`backends._jax_chunked`): the cell,
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
        return partial(_grad_autodiff, partial(_sequential, cell)), "bptt"
    if solver.kind == "native":
        return partial(_grad_autodiff, partial(_native, cell)), "autograd"
    if solver.iterative and solver.transition == "window":
        from . import _jax_chunked as chunked

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


# --- the backend ---------------------------------------------------------------------------


def _device(device: str) -> jax.Device:
    _start()
    try:
        return jax.devices(device)[0]
    except RuntimeError as e:
        raise BackendUnavailableError(f"JAX has no {device!r} device here: {e}") from e


def _weights(problem: Problem) -> dict[str, Any]:
    """The parameters in the layouts the programs use (host arrays, spec dtype)."""
    p, H = problem.params, problem.spec.hidden_size
    blocks = p["weight_hh"].reshape(-1, H, H)  # the gate blocks W_g
    return {
        "torch": dict(p),  # torch names and layout, for the native baseline
        "w_ih_t": np.ascontiguousarray(p["weight_ih"].T),  # (I, gH): products are x @ W^T
        "w_hh_t": np.ascontiguousarray(p["weight_hh"].T),  # (H, gH)
        "b_ih": p["bias_ih"],
        "b_hh": p["bias_hh"],
        "blocks": np.ascontiguousarray(blocks),  # (g, H, H)
        "diag": np.ascontiguousarray(np.diagonal(blocks, axis1=1, axis2=2)),  # (g, H)
    }


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


def _program(cell: Cell, solver: Solver, seq_len: int) -> Callable:
    """The program of ``solver``, chosen by its traits: ``(x, s0, w[, tol, damping]) -> out``."""
    if solver.kind == "sequential":
        return partial(_sequential, cell)
    if solver.kind == "native":
        return partial(_native, cell)
    if solver.iterative and solver.transition == "window":
        from . import _jax_chunked as chunked

        return partial(chunked.fixed_point, *_chunked_traits(cell, solver, seq_len))
    if solver.iterative and solver.transition in TRANSITIONS:
        # damping > 0 solves each step by the Kalman smoother; its value is an argument.
        slots = residual_slots(iteration_cap(solver, seq_len))
        return partial(_fixed_point, cell, solver.transition, solver.damping > 0, slots)
    raise UnsupportedError(f"the jax backend does not implement solver {solver.name!r}")


class JaxBackend(Backend):
    """Every solver as one ahead-of-time compiled XLA program (see the module docstring)."""

    name = "jax"

    def backward_kept(self, spec: RNNSpec, solver: Solver) -> tuple[int, int]:
        """A sequential solver's ``lax.scan`` keeps one pass of residuals (no per-step
        graph). XLA's implicit backward holds more than the common working set: the
        reverse ``associative_scan`` over the transposed Jacobians (``"full"``) about
        ``32 S^2`` items a row, the adjoint iterations two passes of the cell's work. An
        unrolled backward keeps its checkpointed scan's chunk inputs plus one chunk
        (:func:`unrolled_chunks`), each with what autodiff records, for the linearising
        solvers :data:`UNROLLED_LINEARISED_SCALE` times torch's record."""
        one_pass = unrolled_items(spec, Jacobi(1))
        if not solver.iterative:
            return 1, one_pass
        if solver.backward != "unrolled":
            S = spec.state_size
            return (1, 32 * S * S + 16 * S) if solver.transition == "full" else (2, one_pass)
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
        fn = _program(_cell_of(spec.cell), solver, spec.seq_len)
        dev = _device(device)
        with jax.enable_x64(spec.dtype == "float64"):
            args = jax.device_put((problem.x, problem.s0, _weights(problem)), dev)
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
        gi = (problem.x @ p["weight_ih"].T + p["bias_ih"]).reshape(T * B, -1)
        s = np.broadcast_to(problem.s0, (T, B, S)).reshape(T * B, S)
        w_t = np.ascontiguousarray(p["weight_hh"].T)

        def floor(s, gi, w_t, b):  # (T*B, H) x (H, gH) + bias, then the cell's elementwise work
            return cell.activate(xp, s, gi, _mm(s[:, : w_t.shape[0]], w_t) + b)

        with jax.enable_x64(spec.dtype == "float64"):
            args = jax.device_put((s, gi, w_t, p["bias_hh"]), _device(device))
            return _compile(floor, args, spec.dtype)

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
