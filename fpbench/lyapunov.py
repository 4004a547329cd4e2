"""The largest Lyapunov exponent of a problem's dynamics: is it predictable at all?

Fixed-point (parallel-in-time) solvers work when the RNN forgets: a perturbation of
``h_{t-1}`` shrinks through ``h_t = f(h_{t-1}, x_t)``. Gonzalez et al. (2025,
"Predictability enables parallelization") measure this with the largest Lyapunov
exponent ``lambda`` of the trajectory: a perturbation grows (or shrinks) like
``exp(lambda * t)``. With ``lambda < 0`` the dynamics contract, Jacobi and Newton converge in
few iterations and float32 stays close to the float64 states; with ``lambda > 0`` the
problem is chaotic: rounding errors (float32, or a different but equally correct order of
operations) grow until the states of two correct solvers disagree by O(1), however
``converged`` a solve is, and Newton needs up to T iterations.

:func:`lyapunov` estimates ``lambda`` along the exact (NumPy float64) trajectory: a unit
tangent vector per sequence is pushed through the cell Jacobians ``J_t = df/ds`` at
``(s_{t-1}, x_t)`` (the full state: ``(h, c)`` for ``lstm``) and renormalised every step
(the one-vector case of the QR method);
the exponent is the mean of ``log ||J_t v||`` over the T steps and the B sequences.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import cells
from .reference import sequential, shifted
from .spec import Problem

CHUNK_BYTES = 2**20
"""Jacobians are formed for about this many bytes of time steps at once (a few steps at a
time stay in cache)."""


def _jacobians(cell: str, params: Mapping[str, np.ndarray], s: np.ndarray, gi: np.ndarray) -> np.ndarray:
    """``df/ds`` at previous states ``s (..., S)`` and input projections ``gi (..., gH)``:
    ``(..., S, S)``. The one place this module touches the cell maths."""
    return cells.CELLS[cell].jacobian(np, params, s, gi)


def lyapunov(problem: Problem, steps: int | None = None, seed: int = 0) -> float:
    """Estimate the largest Lyapunov exponent of ``problem``'s dynamics, per time step.

    Computed in float64 from the exact trajectory (:func:`fpbench.reference_states`),
    for the spec's own inputs: the average over the T steps and the B sequences of the
    log growth of a renormalised tangent vector under the cell Jacobians. Negative: the
    dynamics contract (for an Elman cell of contraction rho, at most ``log(rho)``);
    positive: chaotic, so float32 states cannot match the float64 ones over long
    sequences, and the fixed-point solvers need many iterations. The initial transient
    (the vector aligning with the most expanding direction) is included, so short
    sequences give a rough value. Cost: one ``(B, H, H)`` Jacobian per step, so ``steps``
    bounds it for long sequences.

    Args:
        problem: the problem.
        steps: average over the first ``steps`` time steps only (default: all T).
        seed: seed of the random unit vector each sequence starts from.
    Returns:
        The exponent in nats per time step: ``-inf`` when a Jacobian annihilates the
        vector of a sequence (an Elman cell of contraction 0 has ``J_t = 0``: every
        perturbation is forgotten in one step), never NaN for a finite trajectory.
    """
    if not isinstance(problem, Problem):
        raise TypeError(
            f"problem must be an fpbench.Problem (from make_problem), got {type(problem).__name__}"
        )
    p = problem.astype("float64")
    B, S = p.spec.batch, p.spec.state_size
    T = p.spec.seq_len if steps is None else steps
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or not 1 <= T <= p.spec.seq_len:
        raise ValueError(f"steps must be None or an integer in [1, T={p.spec.seq_len}], got {steps!r}")
    states = sequential(p)
    prev = shifted(states, p.s0)[:T]
    gi = p.spec.model.input_projection(np, p.params, p.x[:T])
    v = np.random.default_rng(seed).standard_normal((B, S))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    total = np.zeros(B)
    chunk = max(1, CHUNK_BYTES // (8 * B * S * S))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for t0 in range(0, T, chunk):
            J = _jacobians(p.spec.cell, p.params, prev[t0 : t0 + chunk], gi[t0 : t0 + chunk])
            for Jt in J:  # (B, H, H)
                v = np.einsum("bij,bj->bi", Jt, v)
                norm = np.linalg.norm(v, axis=-1)
                total += np.log(norm)  # -inf once a Jacobian annihilates the vector
                v /= np.where(norm > 0, norm, 1.0)[:, None]  # a zero vector stays zero (no NaN)
    return float(np.mean(total) / T)


def verdict(lam: float) -> str:
    """What the exponent ``lam`` of :func:`lyapunov` says about a problem, in words:
    ``"contractive"`` for ``lam < 0`` (including ``-inf``: the dynamics forget the state
    at once, as an Elman cell of contraction 0 does), ``"chaotic"`` only for ``lam > 0``,
    ``"neutral"`` for 0 and ``"undefined"`` for NaN (a trajectory that is not finite)."""
    if lam < 0:
        return "contractive"
    if lam > 0:
        return "chaotic"
    return "neutral" if lam == 0 else "undefined"
