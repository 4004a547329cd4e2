"""ELK's damped step in JAX: the composition of affine steps (also Newton's linear scan), a
batched pivoting solve with its own adjoint, and the Kalman filter and Rauch-Tung-Striebel
smoother as associative scans (the parallel elements of Särkkä & García-Fernández), elementwise
for the diagonal transition.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .maths import _mm, _mv


def _compose_full(earlier, later):
    """``(A1, b1) then (A2, b2)`` = ``(A2 A1, A2 b1 + b2)``; ``A (..., S, S)``, ``b (..., S)``."""
    (A1, b1), (A2, b2) = earlier, later
    return _mm(A2, A1), _mv(A2, b1) + b2


def _compose_diag(earlier, later):
    """As :func:`_compose_full` for diagonal ``A (..., S)``: elementwise."""
    (a1, b1), (a2, b2) = earlier, later
    return a2 * a1, a2 * b1 + b2


_COMPOSE = {"full": _compose_full, "diagonal": _compose_diag}


# ELK's damped step: a Kalman filter and RTS smoother as associative scans.
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
