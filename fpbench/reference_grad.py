"""The NumPy float64 reference backward pass: the oracle every backend's gradient is tested
against (``fpbench.grad(..., backend="numpy")``).

Notation. The forward computes ``s_t = f(s_{t-1}, x_t)`` for t = 1..T (stored 0-based as
``states[0..T-1]``), from the preactivations ``gi_t = W_ih x_t + b_ih`` and
``gh_t = W_hh h_{t-1} + b_hh``. The loss is ``L = sum_t g_t . s_t`` for the (full-state)
cotangent ``g``. With the Jacobians ``J_t = df/ds (s_{t-1}, x_t)``, the adjoint
``lambda_t = dL/ds_t`` is the solution of the *linear, backwards-in-time* recurrence

    lambda_T = g_T,    lambda_t = g_t + J_{t+1}^T lambda_{t+1}.

Given the adjoint at every t, everything else is one batched VJP over all t at once
(:func:`param_products`): with ``(ds, dgi_t, dgh_t) = cell.vjp_preact(s_{t-1}, gi_t, gh_t,
lambda_t)``,

    dW_ih = sum_t dgi_t^T x_t,   db_ih = sum_t dgi_t,   dx_t = dgi_t W_ih,
    dW_hh = sum_t dgh_t^T h_{t-1},   db_hh = sum_t dgh_t,   ds_0 = J_1^T lambda_1,

and ``J_t^T v = ds + [dgh W_hh, 0]`` (the direct dependence plus the path through ``gh``).
A diagonal cell (:attr:`fpbench.Cell.recurrence`) folds ``b_hh`` into ``gi`` and its
``dgh`` is the per-row gradient of the vector ``weight_hh``: ``dW_hh = sum_t dgh_t``,
``db_hh = sum_t dgi_t`` and ``J_t^T v = ds`` (:meth:`fpbench.Cell.vjp`,
:meth:`fpbench.Cell.recurrent_grads` hold both cases).

Per solver (:func:`backward`; the names are :attr:`fpbench.backend.GradHost.backward_method`):

- ``Sequential``: ``"bptt"`` — the adjoint recurrence run backwards, one step at a time.
- iterative, ``backward="implicit"``: the same adjoint at the *returned* states (the
  implicit-function-theorem gradient of the fixed point they approximate):
  - ``transition == "full"`` (Newton, ELK): ``"implicit: exact reverse solve"`` — the
    linear recurrence solved exactly backwards (backends use a reverse parallel scan);
  - ``transition == "none"`` (Jacobi): ``"implicit: jacobi on the adjoint"`` —
    ``Lambda <- G + shift(J^T Lambda)`` for all t at once, from ``Lambda = 0``;
  - ``transition == "diagonal"`` (QuasiNewton, QuasiELK): ``"implicit: diagonal-preconditioned
    adjoint iterations"`` — each iteration solves ``lambda_t = g_t + D_{t+1} lambda_t+1 +
    (J_{t+1} - D_{t+1})^T lambda_{t+1}^old`` exactly (``D`` the diagonal of ``J``: an
    elementwise reverse scan).
  Both adjoint iterations start from zero, stop like the forward (after the first
  iteration whose residual ``max |Lambda_new - Lambda_old|`` is ``<= tol``), and run at most
  ``min(max_iters, T)`` iterations: after k iterations ``lambda_t`` is exact for
  ``t > T - k``, so ``T`` iterations give the exact adjoint. Their residuals are reported.
  Using the diagonal alone without iterating would be a wrong gradient; it never happens.
- iterative, ``backward="unrolled"``: the exact gradient of the iterations that ran.
  ``Jacobi``: ``"unrolled"`` — backpropagation through the k sweeps ``H <- F(H)`` (the
  gradient of the k-truncated model). Newton, quasi-Newton and (quasi-)ELK unrolled would
  need the second derivatives of the cell (the Jacobian is differentiated through): the
  reference raises :class:`fpbench.UnsupportedError` for them; the torch and JAX backends
  get them from autodiff, and the tests check those against finite differences of the
  reference forward.
- ``Chunked`` (``transition == "window"``): implicit is ``"implicit: chunked adjoint"``,
  the adjoint recurrence solved by Chunked's own iterations run backwards in time (the
  overlap lies to the right; reruns restart from the right neighbour), exact after as many
  iterations as chunks; unrolled is ``"unrolled"``, BPTT through every run's window (after
  one iteration: the gradient of the overlap-truncated model).
- ``Native``: unsupported (it is a framework's own autograd).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .backend import GradHost, Prepared, UnsupportedError
from .cells import Cell
from .reference import Run, _setup, chunked, fixed_point, iterate, linear_recurrence, sequential, shifted
from .solvers import Chunked, Iterative, Solver
from .spec import Problem


class _Model:
    """The float64 problem and the VJPs every backward is built from."""

    def __init__(self, problem: Problem):
        self.problem = problem.astype("float64")
        self.cell: Cell
        self.cell, self.params, self.s0, self.gi = _setup(problem)
        self.x = self.problem.x
        self.H = self.problem.spec.hidden_size

    def vjp(self, prev: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The VJP of the steps ``f(prev_t, x_t)`` (all t at once) for the cotangent ``lam``
        on their outputs: ``(J_t^T lam_t (T, B, S), dgi (T, B, gH), dgh (T, B, gH))``;
        ``prev`` and ``lam`` may also be single steps ``(B, S)`` with ``gi`` given as ``t``."""
        return self._vjp(prev, self.gi, lam)

    def vjp_step(self, t: int, prev: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """``J_t^T lam`` for step t (0-based) with previous state ``prev (B, S)``."""
        return self._vjp(prev, self.gi[t], lam)[0]

    def _vjp(self, prev, gi, lam):
        return self.cell.vjp(np, self.params, prev, gi, lam)

    def recurrent_grads(
        self, prev: np.ndarray, dgi: np.ndarray, dgh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(dW_hh, db_hh)`` of one VJP at previous states ``prev (..., S)``, summed."""
        return self.cell.recurrent_grads(prev[..., : self.H], dgi, dgh)

    def jacobian_diag(self, prev: np.ndarray) -> np.ndarray:
        """``diag(J_t)`` at the previous states ``prev (T, B, S)``: ``(T, B, S)``."""
        return self.cell.jacobian_diag(np, self.params, prev, self.gi)


def param_products(m: _Model, states: np.ndarray, lam: np.ndarray):
    """Everything from the adjoint ``lam (T, B, S)`` at the forward ``states (T, B, S)``:
    ``(params, dx (T, B, I), ds0 (B, S))`` by one batched VJP over all t (module docstring)."""
    prev = shifted(states, m.s0)
    dprev, dgi, dgh = m.vjp(prev, lam)
    dW_hh, db_hh = m.recurrent_grads(prev, dgi, dgh)
    params, dx = _input_side(m, dgi, dW_hh, db_hh)
    return params, dx, dprev[0]


def adjoint_sequential(m: _Model, states: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The exact adjoint ``lambda (T, B, S)`` at ``states`` by the reverse recurrence,
    one step at a time (BPTT; the exact reverse solve of the implicit backward)."""
    lam = np.empty_like(g)
    lam[-1] = g[-1]
    for t in range(g.shape[0] - 2, -1, -1):
        lam[t] = g[t] + m.vjp_step(t + 1, states[t], lam[t + 1])
    return lam


def _later(v: np.ndarray) -> np.ndarray:
    """``out_t = v_{t+1}`` (0 at the last step): what step t+1 sends back to step t."""
    out = np.zeros_like(v)
    out[:-1] = v[1:]
    return out


def adjoint_iterations(m: _Model, states: np.ndarray, g: np.ndarray, solver: Iterative):
    """The adjoint at ``states`` by iterations from zero (module docstring): Jacobi on the
    adjoint (``transition == "none"``) or diagonal-preconditioned (``"diagonal"``).
    Returns ``(lambda (T, B, S), residuals)``."""
    T = g.shape[0]
    prev = shifted(states, m.s0)
    budget = dataclasses.replace(solver, max_iters=min(solver.max_iters, T))  # its tol, <= T iterations

    if solver.transition == "none":

        def update(lam):
            return g + _later(m.vjp(prev, lam)[0])

    else:
        d_next = _later(m.jacobian_diag(prev))  # D_{t+1}: the diagonal of J_{t+1}

        def update(lam):
            # lambda_t = g_t + D_{t+1} lambda_{t+1} + [(J_{t+1} - D_{t+1})^T lambda^old_{t+1}]
            b = g + _later(m.vjp(prev, lam)[0]) - d_next * _later(lam)
            return linear_recurrence(d_next[::-1], b[::-1], np.zeros_like(g[0]))[::-1]

    with np.errstate(over="ignore", invalid="ignore"):
        return iterate(update, np.zeros_like(g), budget)


def unrolled_jacobi(m: _Model, g: np.ndarray, solver: Iterative):
    """Jacobi forward, keeping every iterate, and backpropagation through its sweeps.
    Returns ``(states, residuals, params, dx, ds0)``."""
    iterates = []

    def sweep(H):
        iterates.append(H)
        return m.cell.step(np, m.params, shifted(H, m.s0), m.gi)

    S = m.s0.shape[-1]
    with np.errstate(over="ignore", invalid="ignore"):
        states, residuals = iterate(sweep, np.zeros((*m.gi.shape[:2], S)), solver)
        # backwards through the sweeps: G is dL/d(output of the sweep)
        G = g
        dgi_sum = np.zeros_like(m.gi)
        dW_hh = np.zeros_like(m.params["weight_hh"])
        db_hh = np.zeros_like(m.params["bias_hh"])
        ds0 = np.zeros_like(m.s0)
        for H in reversed(iterates):
            prev = shifted(H, m.s0)
            dprev, dgi, dgh = m.vjp(prev, G)
            dgi_sum += dgi
            dW, db = m.recurrent_grads(prev, dgi, dgh)
            dW_hh += dW
            db_hh += db
            ds0 += dprev[0]
            G = _later(dprev)  # dL/dH of the sweep's input (the first iterate is the constant 0)
    return (states, residuals, *_input_side(m, dgi_sum, dW_hh, db_hh), ds0)


def _input_side(m: _Model, dgi_sum: np.ndarray, dW_hh: np.ndarray, db_hh: np.ndarray):
    """``(params, dx)`` from the summed input-preactivation gradients ``dgi_sum (T, B, gH)``
    and the recurrent parameters' sums."""
    params = {
        "weight_ih": np.einsum("tbg,tbi->gi", dgi_sum, m.x),
        "weight_hh": dW_hh,
        "bias_ih": dgi_sum.sum((0, 1)),
        "bias_hh": db_hh,
    }
    return params, dgi_sum @ m.params["weight_ih"]


def adjoint_chunked(m: _Model, states: np.ndarray, g: np.ndarray, solver: Chunked):
    """The adjoint at ``states`` by :class:`~fpbench.solvers.Chunked`'s iterations on the
    reverse recurrence: the chunk layout of the time-reversed sequence, so every window's
    overlap lies to its right (later in time) and reruns restart from the right neighbour.
    Returns ``(lambda (T, B, S), residuals)``."""
    T = g.shape[0]

    def step(tau: int, lam: np.ndarray) -> np.ndarray:  # tau counts steps from the end
        t = T - 1 - tau
        return g[t] if tau == 0 else g[t] + m.vjp_step(t + 1, states[t], lam)

    with np.errstate(over="ignore", invalid="ignore"):
        lam, residuals = chunked(step, np.zeros_like(g[0]), T, solver)
    return lam[::-1], residuals


def unrolled_chunked(m: _Model, g: np.ndarray, solver: Chunked):
    """Chunked forward, recording every run, and backpropagation through the runs, last
    iteration first: each run's window is differentiated by BPTT from its written steps to
    its start state, which sends its cotangent to ``s0`` or to the old iterate. Returns
    ``(states, residuals, params, dx, ds0)``."""
    record: list[tuple[np.ndarray, list[Run]]] = []
    T = m.gi.shape[0]

    def step(t: int, s: np.ndarray) -> np.ndarray:
        return m.cell.step(np, m.params, s, m.gi[t])

    dgi_sum = np.zeros_like(m.gi)
    dW_hh = np.zeros_like(m.params["weight_hh"])
    db_hh = np.zeros_like(m.params["bias_hh"])
    ds0 = np.zeros_like(m.s0)
    with np.errstate(over="ignore", invalid="ignore"):
        states, residuals = chunked(step, m.s0, T, solver, record)
        G = np.array(g)  # dL/d(the iterate after the iteration being differentiated)
        for old, runs in reversed(record):
            G_old = G.copy()  # steps no run wrote pass their cotangent through to the old iterate
            for _, stop, written, _ in runs:
                G_old[written:stop] = 0.0
            for first, stop, written, source in runs:
                u = m.s0 if source == "s0" else np.zeros_like(m.s0) if source is None else old[source]
                prevs = []
                for t in range(first, stop):
                    prevs.append(u)
                    u = step(t, u)
                mu = np.zeros_like(u)
                for t in range(stop - 1, first - 1, -1):
                    if t >= written:
                        mu = mu + G[t]
                    mu, dgi, dgh = m._vjp(prevs[t - first], m.gi[t], mu)
                    dgi_sum[t] += dgi
                    dW, db = m.recurrent_grads(prevs[t - first], dgi, dgh)
                    dW_hh += dW
                    db_hh += db
                if source == "s0":
                    ds0 += mu
                elif source is not None:
                    G_old[source] += mu
            G = G_old
    return (states, residuals, *_input_side(m, dgi_sum, dW_hh, db_hh), ds0)


def check_supported(solver: Solver) -> None:
    """Raise :class:`fpbench.UnsupportedError` where the reference has no backward pass."""
    if not (solver.kind == "sequential" or solver.iterative):
        raise UnsupportedError(f"the numpy reference has no backward pass for solver {solver.name!r}")
    if solver.iterative and solver.backward == "unrolled" and solver.transition in ("full", "diagonal"):
        raise UnsupportedError(
            f"the numpy reference has no unrolled backward for {solver} (it needs the cell's "
            "second derivatives): use the torch or JAX backend, whose autodiff provides it, or Numba "
            "(by complex step; the only one for the diagonal cells)"
        )


def backward(problem: Problem, solver: Solver, cotangent: np.ndarray) -> GradHost:
    """Forward and backward in float64 for ``cotangent (T, B, S)`` (module docstring)."""
    m = _Model(problem)
    g = np.asarray(cotangent, dtype=np.float64)
    if solver.kind == "sequential":
        states = sequential(problem)
        lam = adjoint_sequential(m, states, g)
        return GradHost(states, np.empty(0), *param_products(m, states, lam), backward_method="bptt")
    check_supported(solver)
    if solver.backward == "unrolled":
        unrolled = unrolled_chunked if solver.transition == "window" else unrolled_jacobi
        states, residuals, params, dx, ds0 = unrolled(m, g, solver)
        return GradHost(states, residuals, params, dx, ds0, backward_method="unrolled")
    states, residuals = fixed_point(problem, solver)
    with np.errstate(over="ignore", invalid="ignore"):
        if solver.transition == "window":
            lam, res_b = adjoint_chunked(m, states, g, solver)
            method = "implicit: chunked adjoint"
        elif solver.transition == "full":
            lam, res_b = adjoint_sequential(m, states, g), np.empty(0)
            method = "implicit: exact reverse solve"
        else:
            lam, res_b = adjoint_iterations(m, states, g, solver)
            method = (
                "implicit: jacobi on the adjoint"
                if solver.transition == "none"
                else "implicit: diagonal-preconditioned adjoint iterations"
            )
        params, dx, ds0 = param_products(m, states, lam)
    return GradHost(states, residuals, params, dx, ds0, backward_residuals=res_b, backward_method=method)


def prepare_grad(problem: Problem, solver: Solver, cotangent: np.ndarray) -> Prepared:
    """:meth:`fpbench.Backend.prepare_grad` of the numpy reference."""
    check_supported(solver)
    return Prepared(lambda: backward(problem, solver, cotangent), lambda out: out)
