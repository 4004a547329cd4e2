"""The NumPy float64 reference: the oracle's own correctness and the solver properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from problems import PROBLEMS, spec

import fpbench
from fpbench.cells import CELLS as CELL_MODELS
from fpbench.reference import sequential
from fpbench.testing import assert_close

CELLS = list(fpbench.CELLS)
TORCH_CELLS = [c for c in CELLS if CELL_MODELS[c].torch_module]
"""The cells with a ``torch.nn`` module (the external oracle); the diagonal ones have none."""
ITERATIVE = [fpbench.Jacobi, fpbench.Newton, fpbench.QuasiNewton]


def straight_loop(problem: fpbench.Problem) -> np.ndarray:
    """An independent transcription of the torch formulas (and of issue 24's equations for
    the diagonal cells), one step at a time."""
    p = problem.astype("float64")
    Wi, Wh, bi, bh = (p.params[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    H = p.h0.shape[1]
    h, c, out = p.h0, p.c0, []
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    for x in p.x:
        if p.spec.cell == "elman":
            h = np.tanh(x @ Wi.T + bi + h @ Wh.T + bh)
        elif p.spec.cell == "lstm":
            a = x @ Wi.T + bi + h @ Wh.T + bh
            i, f, g, o = sig(a[:, :H]), sig(a[:, H : 2 * H]), np.tanh(a[:, 2 * H : 3 * H]), sig(a[:, 3 * H :])
            c = f * c + i * g
            h = o * np.tanh(c)
        elif p.spec.cell == "gru_diag":  # weight_hh = [a_r, a_z, a_n]; b = b_ih + b_hh
            a, b = x @ Wi.T + bi + bh, [Wh[k * H : (k + 1) * H] for k in range(3)]
            r = sig(b[0] * h + a[:, :H])
            z = sig(b[1] * h + a[:, H : 2 * H])
            n = np.tanh(b[2] * (r * h) + a[:, 2 * H :])
            h = z * n + (1 - z) * h
        elif p.spec.cell == "lstm_cifg_diag":  # weight_hh = [a_f, a_g, a_o, p_f, p_o]
            a, (a_f, a_g, a_o, p_f, p_o) = x @ Wi.T + bi + bh, (Wh[k * H : (k + 1) * H] for k in range(5))
            f = sig(a_f * h + a[:, :H] + p_f * c)
            g = np.tanh(a_g * h + a[:, H : 2 * H])
            c = f * c + (1 - f) * g
            o = sig(a_o * h + a[:, 2 * H :] + p_o * c)
            h = o * np.tanh(c)
        else:
            gi, gh = x @ Wi.T + bi, h @ Wh.T + bh
            r = sig(gi[:, :H] + gh[:, :H])
            z = sig(gi[:, H : 2 * H] + gh[:, H : 2 * H])
            n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
            h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out)


@pytest.mark.parametrize("problem_id", PROBLEMS)
@pytest.mark.parametrize("cell", CELLS)
def test_sequential_equals_straight_loop(cell, problem_id):
    p = fpbench.make_problem(spec(problem_id, cell))
    np.testing.assert_allclose(fpbench.reference_states(p), straight_loop(p), rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_reference_equals_torch_module(cell, dtype):
    torch = pytest.importorskip("torch")
    p = fpbench.make_problem(spec("T64-B4-H8-I3-rho1.0", cell, dtype))
    module = getattr(torch.nn, CELL_MODELS[cell].torch_module)(p.spec.input_size, p.spec.hidden_size)
    module = module.to(getattr(torch, dtype))
    with torch.no_grad():
        for name, value in p.params.items():
            getattr(module, f"{name}_l0").copy_(torch.tensor(value))
        h0 = torch.tensor(p.h0)[None]
        out, last = module(torch.tensor(p.x), h0 if p.c0 is None else (h0, torch.tensor(p.c0)[None]))
    result = fpbench.solve(p, fpbench.Sequential())
    assert result.states.dtype == np.dtype(dtype)
    assert_close(f"torch.nn {cell}", out.numpy(), fpbench.reference_states(p), dtype)
    if fpbench.CELLS[cell].has_cell_state:  # torch returns the last cell state only
        assert_close("torch.nn lstm c_T", last[1][0].numpy(), result.cell_states[-1], dtype)


@pytest.mark.parametrize("cell", CELLS)
def test_jacobian_matches_finite_differences(cell):
    p = fpbench.make_problem(spec("T7-B3-H5-I2", cell))
    model = CELL_MODELS[cell]
    gi = model.input_projection(np, p.params, p.x)[1:]
    h = sequential(p)[:-1]  # the full state (h, c for lstm)
    J = model.jacobian(np, p.params, h, gi)
    eps, eye = 1e-6, np.eye(h.shape[-1])
    fd = np.stack(
        [
            (model.step(np, p.params, h + eps * e, gi) - model.step(np, p.params, h - eps * e, gi))
            / (2 * eps)
            for e in eye
        ],
        axis=-1,
    )
    np.testing.assert_allclose(J, fd, atol=1e-8)
    diag = model.jacobian_diag(np, p.params, h, gi)
    np.testing.assert_array_equal(diag, np.diagonal(J, axis1=-2, axis2=-1))


@pytest.mark.parametrize("problem_id", PROBLEMS)
@pytest.mark.parametrize("solver_cls", ITERATIVE, ids=lambda c: c.name)
@pytest.mark.parametrize("cell", CELLS)
def test_budget_T_is_exact(cell, solver_cls, problem_id):
    p = fpbench.make_problem(spec(problem_id, cell))
    result = fpbench.solve(p, solver_cls(max_iters=p.spec.seq_len))
    assert result.converged and not result.diverged
    assert result.iterations == p.spec.seq_len == len(result.residuals)
    np.testing.assert_allclose(result.states, fpbench.reference_states(p), rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5, 17])
@pytest.mark.parametrize("cell", CELLS)
def test_jacobi_k_equals_truncated_model(cell, k):
    p = fpbench.make_problem(spec("T33-B2-H16-I4-rho0.5", cell))
    result = fpbench.solve(p, fpbench.Jacobi(max_iters=k))
    assert result.iterations == k
    np.testing.assert_allclose(result.states, fpbench.truncated_states(p, k), rtol=0, atol=1e-13)
    # states t <= k are exact (every iterative solver guarantees this)
    exact = fpbench.reference_states(p)
    for solver_cls in ITERATIVE:
        states = fpbench.solve(p, solver_cls(max_iters=k)).states
        np.testing.assert_allclose(states[:k], exact[:k], rtol=0, atol=1e-12)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_jacobi_error_within_lipschitz_bound(rho):
    p = fpbench.make_problem(
        fpbench.RNNSpec(
            cell="elman",
            input_size=4,
            hidden_size=16,
            seq_len=80,
            batch=3,
            dtype="float64",
            contraction=rho,
            seed=3,
        )
    )
    exact = fpbench.reference_states(p)
    L = np.linalg.norm(p.weight_hh, ord=2)
    assert L == pytest.approx(rho)
    for k in [1, 2, 4, 8, 16, 32]:
        states = fpbench.solve(p, fpbench.Jacobi(max_iters=k)).states
        err = np.linalg.norm(states - exact, axis=-1).max()  # per (t, b) 2-norm
        bound = L**k * np.linalg.norm(exact[: -k or None], axis=-1).max()
        assert err <= bound * (1 + 1e-9), (k, err, bound)


# Newton's iterations to reach tol=1e-10 (quadratic convergence; far fewer than T=200).
NEWTON_ITERS = {("elman", 0.5): 4, ("elman", 0.9): 5, ("gru", 0.5): 5, ("gru", 0.9): 5}


@pytest.mark.parametrize(("cell", "rho"), NEWTON_ITERS, ids=[f"{c}-rho{r}" for c, r in NEWTON_ITERS])
def test_newton_converges_in_few_iterations(cell, rho):
    p = fpbench.make_problem(
        fpbench.RNNSpec(
            cell=cell,
            input_size=4,
            hidden_size=8,
            seq_len=200,
            batch=2,
            dtype="float64",
            contraction=rho,
            seed=1,
        )
    )
    result = fpbench.solve(p, fpbench.Newton(max_iters=200, tol=1e-10))
    assert result.converged
    assert result.iterations <= NEWTON_ITERS[cell, rho]
    assert result.residuals[-1] <= 1e-10
    np.testing.assert_allclose(result.states, fpbench.reference_states(p), atol=1e-10)


def test_tol_stops_early_and_none_runs_full_budget():
    p = fpbench.make_problem(spec("T100-B1-H24-I8-rho0.95", "gru"))
    early = fpbench.solve(p, fpbench.Jacobi(max_iters=100, tol=1e-6))
    assert early.converged and early.iterations < 100
    assert early.residuals[-1] <= 1e-6 < early.residuals[-2]
    full = fpbench.solve(p, fpbench.Jacobi(max_iters=10))
    assert full.iterations == 10 and not full.converged


def test_deterministic_in_seed():
    a, b = (fpbench.make_problem(spec("T7-B3-H5-I2", "gru", seed=5)) for _ in range(2))
    c = fpbench.make_problem(spec("T7-B3-H5-I2", "gru", seed=6))
    for name in ("x", "h0"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.x, c.x)
    np.testing.assert_array_equal(fpbench.reference_states(a), fpbench.reference_states(b))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_problem_dtype_and_layout(dtype):
    p = fpbench.make_problem(spec("T7-B3-H5-I2", "gru", dtype))
    assert p.x.shape == (7, 3, 2) and p.h0.shape == (3, 5)
    assert p.weight_ih.shape == (15, 2) and p.weight_hh.shape == (15, 5)
    assert p.bias_ih.shape == p.bias_hh.shape == (15,)
    assert all(a.dtype == np.dtype(dtype) for a in (p.x, p.h0, *p.params.values()))


def test_nonfinite_input_is_reported_as_diverged():
    good = fpbench.make_problem(spec("T7-B3-H5-I2", "elman"))
    x = good.x.copy()
    x[3, 0, 0] = np.nan
    bad = fpbench.Problem(good.spec, x, good.h0, good.params)
    for solver in [fpbench.Sequential(), fpbench.Jacobi(7, tol=1e-8), fpbench.Newton(7)]:
        with pytest.warns(fpbench.DivergenceWarning):
            result = fpbench.solve(bad, solver)
        assert result.diverged and not result.converged


@settings(max_examples=30, deadline=None)
@given(
    cell=st.sampled_from(CELLS),
    T=st.integers(1, 24),
    B=st.integers(1, 3),
    H=st.integers(1, 9),
    I=st.integers(1, 4),
    rho=st.floats(0.0, 1.5),
    seed=st.integers(0, 2**31),
    k=st.integers(1, 30),
)
def test_properties_hold_for_random_problems(cell, T, B, H, I, rho, seed, k):
    p = fpbench.make_problem(
        fpbench.RNNSpec(
            cell=cell,
            input_size=I,
            hidden_size=H,
            seq_len=T,
            batch=B,
            dtype="float64",
            contraction=rho,
            seed=seed,
        )
    )
    exact = fpbench.reference_states(p)
    jac = fpbench.solve(p, fpbench.Jacobi(max_iters=k))
    np.testing.assert_allclose(jac.states, fpbench.truncated_states(p, k), rtol=0, atol=1e-12)
    for solver_cls in ITERATIVE:
        result = fpbench.solve(p, solver_cls(max_iters=max(T, k)))
        assert result.converged
        np.testing.assert_allclose(result.states, exact, rtol=0, atol=1e-9)
