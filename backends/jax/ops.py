"""The JAX primitives the shared solver algorithms (:mod:`backends.shared`) run over:
:data:`OPS`, with :data:`backends.jax.maths.xp` (``jax.numpy`` at full precision), a batched
pivoting solve with its own adjoint (:func:`_solve`) and ``lax.associative_scan``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from backends.shared import Ops
from backends.shared.structured import gates_summed

from .maths import _mm, xp


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


def _scan(op, elems, reverse: bool) -> tuple:
    return lax.associative_scan(op, tuple(elems), reverse=reverse)


OPS = Ops(
    xp=xp,
    solve=_solve,
    scan=_scan,
    eye=lambda n, like: jnp.eye(n, dtype=like.dtype),
    set_first=lambda a, first: a.at[0].set(first),
    gate_product=gates_summed,
)
"""What the shared algorithms run on in every JAX program."""
