"""The NumPy float64 reference: the oracle every backend is tested against.

Clear before fast: straight time loops where the maths is a time loop, and the same
iteration structure as docs/design.md describes. Whatever the spec's dtype, it computes in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .solvers import Chunked, Iterative, iteration_cap, stopped
from .spec import Problem


def _setup(problem: Problem):
    """``(cell, params, s0 (B, S), gi (T, B, gH))`` of ``problem`` in float64."""
    p = problem.astype("float64")
    return p.spec.model, p.params, p.s0, p.spec.model.input_projection(np, p.params, p.x)


def sequential(problem: Problem) -> np.ndarray:
    """Exact states by the recurrence ``s_t = f(s_{t-1}, x_t)``: ``(T, B, S)`` float64
    (``S = H``; ``2H`` for ``lstm``, whose state is ``[h, c]``)."""
    cell, params, s, gi = _setup(problem)
    out = np.empty(gi.shape[:2] + s.shape[-1:])
    for t in range(gi.shape[0]):
        s = out[t] = cell.step(np, params, s, gi[t])
    return out


def truncated(problem: Problem, k: int) -> np.ndarray:
    """The k-truncated model (Miller & Hardt): state t is the RNN run for k steps from a
    zero state at t - k (from ``s0`` where t <= k). Brute force, ``O(T k)`` steps.
    Returns ``(T, B, S)`` float64.

    ``k`` is an integer >= 0: ``k = 0`` is the model that has seen no input, all zeros (the
    iterate every iterative solver starts from, what Jacobi holds after 0 iterations), and
    every ``k >= T`` gives the exact states.

    Raises:
        ValueError: ``k`` is not an integer >= 0 (a negative k has no meaning).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an integer >= 0 (the number of steps each state sees), got {k!r}")
    cell, params, s0, gi = _setup(problem)
    T = gi.shape[0]
    out = np.empty(gi.shape[:2] + s0.shape[-1:])
    for t in range(T):
        start = t - k + 1  # first input applied; state before it is zero (or s0 at 0)
        s = s0 if start <= 0 else np.zeros_like(s0)
        for j in range(max(start, 0), t + 1):
            s = cell.step(np, params, s, gi[j])
        out[t] = s
    return out


def exact_states(problem: Problem) -> np.ndarray:
    """The exact states ``h_t``, as ``Result.states`` holds them: ``(T, B, H)`` float64."""
    return sequential(problem)[..., : problem.spec.hidden_size]


def truncated_states(problem: Problem, k: int) -> np.ndarray:
    """The k-truncated model's ``h_t``, as ``Result.states`` holds them: ``(T, B, H)`` float64
    (:func:`truncated`: ``k`` an integer >= 0, ``k = 0`` all zeros; ValueError otherwise)."""
    return truncated(problem, k)[..., : problem.spec.hidden_size]


RESIDUAL_BLOCK_ELEMENTS = 1 << 21
"""Float64 elements per temporary of :func:`fixed_point_residual` (16 MiB): it works on
blocks of whole time steps, so its extra memory is bounded whatever T is."""


def fixed_point_residual(problem: Problem, states: np.ndarray) -> float:
    """The fixed-point residual ``max |F(S) - S|`` of full states ``S``, in float64: ``F``
    is one Jacobi sweep of the cell over the whole sequence, ``F(S)_t = f(S_{t-1}, x_t)``
    for t = 1..T with ``S_0 = s0``. It is 0 exactly at the fixed point (the sequential
    states) and measures how far the states are from satisfying the recurrence, unlike an
    iteration's step ``max |H_new - H_old|``, which a damped solver keeps small far from
    the fixed point.

    Vectorised over time: one cell evaluation per block of whole steps
    (:data:`RESIDUAL_BLOCK_ELEMENTS`), no loop over single steps; each block is flattened
    to ``(steps * B, features)`` rows so that its matrix products are single 2-D BLAS
    calls (a stacked 3-D ``matmul`` runs many small ones).

    Args:
        problem: the problem the states solve.
        states: ``(T, B, S)`` full states (``S = H``; ``2H`` for ``lstm``: ``[h, c]``), any
            float dtype (evaluated as float64, so float32 states show their rounding).
    Returns:
        The largest ``|F(S) - S|`` over all steps, sequences and features; NaN or +inf when
        the states are not finite.
    """
    spec = problem.spec
    cell = spec.model
    params = {k: np.asarray(v, dtype=np.float64) for k, v in problem.params.items()}
    T, B, I, n = spec.seq_len, spec.batch, spec.input_size, spec.state_size
    per_step = B * max(n, spec.gates * spec.hidden_size, I)
    block = max(1, RESIDUAL_BLOCK_ELEMENTS // per_step)
    prev = np.asarray(problem.s0, dtype=np.float64)
    worst = []
    with np.errstate(over="ignore", invalid="ignore"):
        for a in range(0, T, block):
            S = np.asarray(states[a : a + block], dtype=np.float64)
            x = np.asarray(problem.x[a : a + block], dtype=np.float64).reshape(-1, I)
            before = np.concatenate([prev[None], S[:-1]]).reshape(-1, n)
            F = cell.step(np, params, before, cell.input_projection(np, params, x))
            worst.append(np.max(np.abs(F - S.reshape(-1, n))))
            prev = S[-1]
    return float(np.max(worst))


def shifted(H: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """``(H_0, ..., H_{T-1})`` with ``H_0 = h0``: the previous state of every step."""
    return np.concatenate([h0[None], H[:-1]])


def _apply(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``A v`` for full ``A (..., S, S)`` or diagonal ``A (..., S)`` transitions."""
    return A * v if A.ndim == v.ndim else np.einsum("...ij,...j->...i", A, v)


def linear_recurrence(A: np.ndarray, b: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """Solve ``h_t = A_t h_{t-1} + b_t`` sequentially.

    Args:
        A: ``(T, B, S, S)`` full, or ``(T, B, S)`` diagonal transition matrices (or with
            more leading axes: the per-unit blocks ``(T, B, H, P, P)`` of a diagonal cell
            act on unit-major vectors ``(T, B, H, P)``, :func:`to_units`).
        b: ``(T, B, S)`` offsets.
        h0: ``(B, S)`` initial state.
    Returns:
        ``(T, B, S)`` states.
    """
    out = np.empty_like(b)
    h = h0
    for t in range(b.shape[0]):
        h = out[t] = _apply(A[t], h) + b[t]
    return out


def kalman_smoother(
    A: np.ndarray, b: np.ndarray, y: np.ndarray, h0: np.ndarray, damping: float
) -> np.ndarray:
    """The minimiser of ``sum_t |h_t - A_t h_{t-1} - b_t|^2 + damping sum_t |h_t - y_t|^2``
    over ``h_1..h_T`` (``h_0`` given): ELK's damped Newton step, by a Kalman filter and a
    Rauch-Tung-Striebel smoother run sequentially (dynamics noise ``I``, observations
    ``y_t`` with noise ``I / damping``). ``damping = 0`` gives :func:`linear_recurrence`.

    Args:
        A: ``(T, B, S, S)`` full or ``(T, B, S)`` diagonal transitions (or with more leading
            axes, as :func:`linear_recurrence`: per-unit ``(T, B, H, P, P)`` blocks).
        b, y: ``(T, B, S)`` offsets and observations (the current iterate).
        h0: ``(B, S)`` known initial state.
    Returns:
        ``(T, B, S)`` smoothed means.
    """
    T, S = b.shape[0], b.shape[-1]
    full = A.ndim == b.ndim + 1
    eye = np.eye(S)
    m, P = h0, (np.zeros((*h0.shape, S)) if full else np.zeros_like(h0))
    means, covs, pred_means, pred_covs = [], [], [], []
    for t in range(T):  # filter
        mp = _apply(A[t], m) + b[t]
        if full:
            Pp = A[t] @ P @ np.swapaxes(A[t], -1, -2) + eye
            K = damping * np.linalg.solve(eye + damping * Pp, Pp)  # P (P + I/damping)^-1, symmetric
            m = mp + np.einsum("...ij,...j->...i", K, y[t] - mp)
            P = Pp - K @ Pp
        else:
            Pp = A[t] * A[t] * P + 1.0
            K = damping * Pp / (1.0 + damping * Pp)
            m = mp + K * (y[t] - mp)
            P = (1.0 - K) * Pp
        means.append(m)
        covs.append(P)
        pred_means.append(mp)
        pred_covs.append(Pp)
    out = np.empty_like(b)
    out[-1] = ms = means[-1]
    for t in range(T - 2, -1, -1):  # smoother: G_t = P_t A_{t+1}^T (P^-_{t+1})^-1
        if full:
            G = np.swapaxes(np.linalg.solve(pred_covs[t + 1], A[t + 1] @ covs[t]), -1, -2)
            ms = means[t] + np.einsum("...ij,...j->...i", G, ms - pred_means[t + 1])
        else:
            ms = means[t] + covs[t] * A[t + 1] / pred_covs[t + 1] * (ms - pred_means[t + 1])
        out[t] = ms
    return out


def _identity(v: np.ndarray) -> np.ndarray:
    return v


def to_units(v: np.ndarray, parts: int) -> np.ndarray:
    """A state ``(..., P H)`` (parts stacked) in unit-major layout ``(..., H, P)``, the layout
    a diagonal cell's per-unit Jacobian blocks (:meth:`fpbench.Cell.unit_jacobian`) act on."""
    return np.swapaxes(v.reshape(*v.shape[:-1], parts, -1), -1, -2)


def from_units(v: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_units`: ``(..., H, P)`` -> ``(..., P H)``."""
    return np.swapaxes(v, -1, -2).reshape(*v.shape[:-2], -1)


def iterate(update: Callable[[np.ndarray], np.ndarray], H: np.ndarray, solver: Iterative):
    """Run ``H <- update(H)`` under the budget and tolerance of ``solver``, at most
    :func:`~fpbench.solvers.iteration_cap` times.

    Returns the final iterate and the residual ``max |H_new - H_old|`` of every
    iteration that ran. Stops early on a non-finite residual (diverged).
    """
    residuals = []
    for _ in range(iteration_cap(solver, H.shape[0])):
        H_new = update(H)
        r = float(np.max(np.abs(H_new - H)))
        residuals.append(r)
        H = H_new
        if stopped(np, r, solver.tol):
            break
    return H, np.array(residuals)


Run = tuple[int, int, int, "int | str | None"]
"""One chunk's run within a :func:`chunked` iteration: ``(first, stop, written, source)``:
it computed steps ``first .. stop - 1`` and wrote ``written .. stop - 1`` into the iterate;
its start state was ``"s0"``, the zero state (None), or the old iterate at step ``source``."""


def chunked(
    step: Callable[[int, np.ndarray], np.ndarray],
    s0: np.ndarray,
    seq_len: int,
    solver: Chunked,
    record: list[tuple[np.ndarray, list[Run]]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:class:`~fpbench.solvers.Chunked`'s iterations on any recurrence
    ``u_t = step(t, u_{t-1})``, t = 0..T-1 from ``u_{-1} = s0``, literally as its docstring
    states (every chunk but the first rerun in every iteration after the first).

    Args:
        step: the recurrence, ``(t, u (B, S)) -> u (B, S)``.
        s0: ``(B, S)`` the state before step 0.
        seq_len: T.
        solver: the chunk layout, budget and tol.
        record: if given, every iteration appends ``(old iterate, its runs)`` (:data:`Run`),
            what the unrolled backward differentiates.
    Returns:
        ``(states (T, B, S), residuals)``, as :func:`iterate`.
    """
    lay = solver.layout(seq_len)
    done = []  # iterations run so far (the first one warms up from zero)

    def update(U: np.ndarray) -> np.ndarray:
        warm = not done
        done.append(True)
        new, runs = U.copy(), []
        for p in range(0 if warm else 1, lay.chunks):
            s, e = lay.starts[p], lay.ends[p]
            a = lay.warm_starts[p] if warm else s
            source = ("s0" if a == 0 else None) if warm else s - 1
            u = U[s - 1] if not warm else s0 if a == 0 else np.zeros_like(s0)
            for t in range(a, e):
                u = step(t, u)
                if t < s:
                    continue
                moved = np.max(np.abs(u - U[t]))
                new[t] = u
                if not warm and solver.tol is not None and moved <= solver.tol:
                    break
            runs.append((a, t + 1, s, source))
        if record is not None:
            record.append((U, runs))
        return new

    return iterate(update, np.zeros((seq_len, *s0.shape)), solver)


def fixed_point(problem: Problem, solver: Iterative) -> tuple[np.ndarray, np.ndarray]:
    """Any iterative solver in float64, by its traits: ``(states (T, B, S), residuals)``.

    ``transition == "none"``: Jacobi, ``H <- F(H)``. Otherwise linearise at the iterate,
    ``h_t = A_t h_{t-1} + b_t`` with ``A_t`` the Jacobian (``"full"``) or its diagonal
    (``"diagonal"``) at ``H_{t-1}`` and ``b_t = f(H_{t-1}) - A_t H_{t-1}``, and solve it:
    exactly (Newton) or, with damping, by the Kalman smoother (ELK). ``"window"``: the
    recurrence on :class:`~fpbench.solvers.Chunked`'s windows (:func:`chunked`).

    For a diagonal cell the full Jacobian is its per-unit blocks
    (:meth:`~fpbench.Cell.unit_jacobian`), and the linear recurrence is solved on unit-major
    states (:func:`to_units`): no ``S x S`` matrix is formed.
    """
    cell, params, s0, gi = _setup(problem)
    if solver.transition == "window":
        with np.errstate(over="ignore", invalid="ignore"):
            return chunked(lambda t, s: cell.step(np, params, s, gi[t]), s0, gi.shape[0], solver)

    def jacobi(H):
        return cell.step(np, params, shifted(H, s0), gi)

    units = solver.transition == "full" and cell.recurrence == "diagonal"
    if units:
        jac, into, back = cell.unit_jacobian, (lambda v: to_units(v, cell.parts)), from_units
    else:
        jac = cell.jacobian if solver.transition == "full" else cell.jacobian_diag
        into = back = _identity

    def newton(H):
        Hp = shifted(H, s0)
        fH = cell.step(np, params, Hp, gi)
        A = jac(np, params, Hp, gi)
        b = into(fH) - _apply(A, into(Hp))
        if solver.damping:
            return back(kalman_smoother(A, b, into(H), into(s0), solver.damping))
        return back(linear_recurrence(A, b, into(s0)))

    update = jacobi if solver.transition == "none" else newton
    with np.errstate(over="ignore", invalid="ignore"):
        return iterate(update, np.zeros(gi.shape[:2] + s0.shape[-1:]), solver)
