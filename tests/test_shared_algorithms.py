"""The shared solver algorithms (``backends/shared``) run over NumPy primitives, against the
float64 reference's own sequential versions: scans, Kalman smoother, every iterative
solver's iteration, the adjoint and the parameter gradients."""

from __future__ import annotations

import numpy as np
import pytest

import fpbench
from backends.shared import Ops, Recurrent, adjoint, iteration, linear
from fpbench import reference


def _scan(op, elems, reverse=False):
    """A sequential inclusive scan over axis 0: the obvious oracle of a parallel one."""
    elems = [np.flip(e, 0) if reverse else e for e in elems]
    acc = [e[0] for e in elems]
    outs = [[a] for a in acc]
    for t in range(1, elems[0].shape[0]):
        acc = op(acc, [e[t] for e in elems])
        for o, a in zip(outs, acc, strict=True):
            o.append(a)
    out = [np.stack(o) for o in outs]
    return tuple(np.flip(o, 0) if reverse else o for o in out)


CELLS = list(fpbench.CELLS)
"""The cells the shared layer runs: all of them, dense and diagonal."""

NUMPY = Ops(xp=np, solve=np.linalg.solve, scan=_scan, eye=lambda n, like: np.eye(n, dtype=like.dtype))


@pytest.fixture(params=["full", "diagonal"])
def transition(request):
    return request.param


def _linear_system(full: bool, T: int = 9, B: int = 2, S: int = 3):
    rng = np.random.default_rng(0)
    A = 0.5 * rng.standard_normal((T, B, S, S) if full else (T, B, S))
    return A, rng.standard_normal((T, B, S)), rng.standard_normal((T, B, S))


def test_linear_recurrence_forward_and_reverse(transition):
    full = transition == "full"
    A, b, _ = _linear_system(full)
    zero = np.zeros_like(b[0])
    got = linear.linear_recurrence(NUMPY, full, A, b)
    np.testing.assert_allclose(got, reference.linear_recurrence(A, b, zero), atol=1e-12)
    rev = linear.linear_recurrence(NUMPY, full, A, b, reverse=True)
    # s_t = A_t s_{t+1} + b_t: the forward recurrence on the time-reversed sequences, with
    # A shifted so that A_t multiplies s_{t+1}
    A_rev = np.concatenate([np.zeros_like(A[:1]), np.flip(A, 0)[1:]])
    want = np.flip(reference.linear_recurrence(A_rev, np.flip(b, 0), zero), 0)
    np.testing.assert_allclose(rev, want, atol=1e-12)


@pytest.mark.parametrize("damping", [0.0, 0.3, 2.0], ids=lambda d: f"damping={d}")
def test_kalman_smoother_is_the_reference(transition, damping):
    full = transition == "full"
    A, b, y = _linear_system(full)
    A[0] = 0.0  # s_0 is known: folded into b_0
    got = linear.kalman_smoother(NUMPY, full, A, b, y, damping)
    want = reference.kalman_smoother(A, b, y, np.zeros_like(b[0]), damping)
    np.testing.assert_allclose(got, want, atol=1e-10)


def _problem(cell: str) -> fpbench.Problem:
    spec = fpbench.RNNSpec(cell=cell, input_size=3, hidden_size=4, seq_len=11, batch=2, dtype="float64")
    return fpbench.make_problem(spec)


def _parts(problem: fpbench.Problem):
    p = problem.params
    model = problem.spec.model
    rec = Recurrent.of(np, p["weight_hh"], p["bias_hh"], model.gates)
    return model, rec, model.input_projection(np, p, problem.x)


SOLVERS = [
    fpbench.Jacobi(max_iters=3),
    fpbench.Newton(max_iters=3),
    fpbench.QuasiNewton(max_iters=3),
    fpbench.ELK(max_iters=3, damping=0.4),
    fpbench.QuasiELK(max_iters=3, damping=0.4),
]


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.name)
@pytest.mark.parametrize("cell", CELLS)
def test_every_iteration_is_the_reference(cell, solver):
    problem = _problem(cell)
    model, rec, gi = _parts(problem)
    step = iteration.update(
        NUMPY, model, solver.transition, bool(solver.damping), gi, problem.s0, rec, solver.damping
    )
    S = np.zeros(gi.shape[:2] + problem.s0.shape[-1:])
    residuals = []
    for _ in range(solver.max_iters):
        S, r = step(S)
        residuals.append(r)
    want, want_res = reference.fixed_point(problem, solver)
    np.testing.assert_allclose(S, want, atol=1e-10)
    np.testing.assert_allclose(residuals, want_res, atol=1e-10)


def test_stopping_rule():
    r = np.array([0.5, 1e-7, np.nan, np.inf])
    assert iteration.stopped(np, r, 1e-6).tolist() == [False, True, True, True]
    assert iteration.stopped(np, r, None).tolist() == [False, False, True, True]
    assert np.isnan(iteration.max_change(np, np.array([1.0, np.nan]), np.zeros(2)))


@pytest.mark.parametrize("transition", ["full", "none", "diagonal"])
@pytest.mark.parametrize("cell", CELLS)
def test_adjoint_and_parameter_gradients_are_the_exact_gradient(cell, transition):
    problem = _problem(cell)
    model, rec, gi = _parts(problem)
    exact = fpbench.grad(problem, fpbench.Sequential())
    g = fpbench.default_cotangent(problem.spec)
    T, S, H = problem.spec.seq_len, problem.spec.state_size, problem.spec.hidden_size
    g = np.concatenate([g, np.zeros((*g.shape[:-1], S - g.shape[-1]))], -1)  # no loss on c
    Sp = iteration.shifted(np, reference.sequential(problem), problem.s0)
    gh = adjoint.hidden_preactivations(np, Sp, rec)
    if transition == "full":
        lam = adjoint.full_adjoint(NUMPY, model, Sp, gi, gh, rec, g)
    else:
        step = adjoint.adjoint_update(NUMPY, model, transition, Sp, gi, gh, rec, g)
        lam = np.zeros_like(g)
        for _ in range(T):  # T iterations give the exact adjoint
            lam, _ = step(lam)
    w_ih = problem.params["weight_ih"]
    dparams, dx, ds0 = adjoint.param_products(np, model, Sp, problem.x, gi, gh, lam, rec, w_ih)
    for name, value in dparams.items():
        np.testing.assert_allclose(value, exact.params[name], atol=1e-9, err_msg=name)
    np.testing.assert_allclose(dx, exact.x, atol=1e-9)
    np.testing.assert_allclose(ds0[..., :H], exact.h0, atol=1e-9)
    if exact.c0 is not None:
        np.testing.assert_allclose(ds0[..., H:], exact.c0, atol=1e-9)


def test_the_two_forms_of_the_gate_product_agree():
    from backends.shared import structured

    rng = np.random.default_rng(1)
    c, blocks = rng.standard_normal((5, 3, 2, 4)), rng.standard_normal((3, 4, 4))
    np.testing.assert_allclose(
        structured.gates_summed(np, c, blocks), structured.gates_einsum(np, c, blocks), atol=1e-12
    )


@pytest.mark.parametrize("cell", [name for name, c in fpbench.CELLS.items() if c.recurrence == "diagonal"])
def test_newton_on_a_diagonal_cell_builds_per_unit_blocks_never_s_by_s(cell):
    """Newton's transitions (forward and adjoint) of a diagonal cell are its per-unit ``P x P``
    blocks on unit-major states (the diagonal itself for ``P = 1``), equal to
    :meth:`fpbench.Cell.unit_jacobian`: no ``S x S`` array is built."""
    problem = _problem(cell)
    model, rec, gi = _parts(problem)
    T, B, H, P = 11, 2, 4, model.parts
    Sp = iteration.shifted(np, reference.sequential(problem), problem.s0)
    (A, full, units), b = iteration.linearised(NUMPY, model, "full", Sp, gi, rec)
    U = model.unit_jacobian(np, problem.params, Sp, gi)
    if P == 1:
        assert (A.shape, full, units, b.shape) == ((T, B, H), False, 0, (T, B, H))
        np.testing.assert_allclose(A, U[..., 0, 0], atol=1e-14)
    else:
        assert (A.shape, full, units, b.shape) == ((T, B, H, P, P), True, P, (T, B, H, P))
        np.testing.assert_allclose(A, U, atol=1e-14)
    gh = adjoint.hidden_preactivations(np, Sp, rec)
    At, _, _ = adjoint.next_jacobians_t(NUMPY, model, Sp, gi, gh, rec)
    assert At.shape == A.shape
