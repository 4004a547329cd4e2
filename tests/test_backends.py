"""Every backend:device against the NumPy float64 reference.

The ``target`` fixture (conftest.py) runs each test on every backend and device that
``FPBENCH_BACKENDS`` selects, skipping cleanly where a framework or device is absent.
"""

import numpy as np
import pytest
from problems import PROBLEMS, spec

import fpbench
from fpbench.testing import assert_close

CELLS = ["elman", "gru"]
DTYPES = ["float32", "float64"]
SOLVERS = {
    "sequential": fpbench.Sequential(),
    "jacobi-k3": fpbench.Jacobi(max_iters=3),
    "jacobi-tol": fpbench.Jacobi(max_iters=200, tol=1e-5),
    "newton-k2": fpbench.Newton(max_iters=2),
    "newton-tol": fpbench.Newton(max_iters=50, tol=1e-5),
    "quasi_newton-k3": fpbench.QuasiNewton(max_iters=3),
    "quasi_newton-tol": fpbench.QuasiNewton(max_iters=200, tol=1e-5),
}


def solve_both(target, problem, solver):
    return fpbench.solve(problem, solver, backend=target), fpbench.solve(problem, solver, backend="numpy")


@pytest.mark.parametrize("problem_id", PROBLEMS)
@pytest.mark.parametrize("solver_id", SOLVERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_matches_reference(target, cell, dtype, solver_id, problem_id):
    problem = fpbench.make_problem(spec(problem_id, cell, dtype))
    solver = SOLVERS[solver_id]
    got, ref = solve_both(target, problem, solver)
    assert got.states.dtype == np.dtype(dtype) and got.states.shape == ref.states.shape
    assert not got.diverged and got.converged == ref.converged
    if solver.iterative and solver.tol is None:
        assert got.iterations == ref.iterations == fpbench.iteration_cap(solver, problem.spec.seq_len)
    else:  # to tolerance: float32 may take an iteration more or less than float64
        assert abs(got.iterations - ref.iterations) <= (0 if dtype == "float64" else 2)
    assert len(got.residuals) == got.iterations
    assert_close(f"{target} {cell} {solver}", got.states, ref.states, dtype)
    if solver.iterative and solver.tol is not None:  # to tolerance means near the exact states
        np.testing.assert_allclose(
            got.states, fpbench.reference_states(problem), rtol=0, atol=50 * solver.tol
        )


@pytest.mark.parametrize(
    "solver_cls", [fpbench.Jacobi, fpbench.Newton, fpbench.QuasiNewton], ids=lambda c: c.name
)
@pytest.mark.parametrize("cell", CELLS)
def test_budget_T_is_exact(target, cell, solver_cls):
    problem = fpbench.make_problem(spec("T33-B2-H16-I4-rho0.5", cell, "float64"))
    result = fpbench.solve(problem, solver_cls(max_iters=problem.spec.seq_len), backend=target)
    assert result.converged and result.iterations == problem.spec.seq_len
    assert_close("budget T", result.states, fpbench.reference_states(problem), "float64")


@pytest.mark.parametrize("k", [1, 4, 9])
@pytest.mark.parametrize("cell", CELLS)
def test_jacobi_k_is_truncated_model(target, cell, k):
    problem = fpbench.make_problem(spec("T33-B2-H16-I4-rho0.5", cell, "float64"))
    result = fpbench.solve(problem, fpbench.Jacobi(max_iters=k), backend=target)
    assert result.iterations == k
    assert_close(f"Jacobi({k})", result.states, fpbench.truncated_states(problem, k), "float64")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_native_baseline_matches_reference(target, cell, dtype):
    problem = fpbench.make_problem(spec("T64-B4-H8-I3-rho1.0", cell, dtype))
    try:
        result = fpbench.solve(problem, fpbench.Native(), backend=target)
    except fpbench.UnsupportedError as e:
        pytest.skip(f"{target} has no native baseline: {e}")
    assert result.iterations == 0 and result.converged
    assert_close(f"{target} native {cell}", result.states, fpbench.reference_states(problem), dtype)


@pytest.mark.parametrize(
    "solver",
    [fpbench.Sequential(), fpbench.Jacobi(7, tol=1e-6), fpbench.Newton(7), fpbench.QuasiNewton(7)],
    ids=str,
)
def test_nonfinite_is_reported_as_diverged(target, solver):
    good = fpbench.make_problem(spec("T7-B3-H5-I2", "gru", "float32"))
    x = good.x.copy()
    x[2, 1, 0] = np.nan  # (an inf input would only saturate the gates)
    bad = fpbench.Problem(good.spec, x, good.h0, good.params)
    with pytest.warns(fpbench.DivergenceWarning):
        result = fpbench.solve(bad, solver, backend=target)
    assert result.diverged and not result.converged


def test_float32_caller_state_is_untouched_by_float64(target):
    """A float64 solve must not change what a later float32 solve computes in."""
    p64 = fpbench.make_problem(spec("T7-B3-H5-I2", "elman", "float64"))
    p32 = fpbench.make_problem(spec("T7-B3-H5-I2", "elman", "float32"))
    before = fpbench.solve(p32, fpbench.Jacobi(4), backend=target).states
    fpbench.solve(p64, fpbench.Jacobi(4), backend=target)
    after = fpbench.solve(p32, fpbench.Jacobi(4), backend=target).states
    assert before.dtype == after.dtype == np.float32
    np.testing.assert_array_equal(before, after)
