"""Every backend:device against the NumPy float64 reference.

The ``target`` fixture (conftest.py) runs each test on every backend and device that
``FPBENCH_BACKENDS`` selects, skipping cleanly where a framework or device is absent.
"""

import numpy as np
import pytest
from problems import PROBLEMS, case, one_in_three, spec

import fpbench
from fpbench.testing import assert_close

CELLS = list(fpbench.CELLS)
DTYPES = ["float32", "float64"]
SOLVERS = {
    "sequential": fpbench.Sequential(),
    "jacobi-k3": fpbench.Jacobi(max_iters=3),
    "jacobi-tol": fpbench.Jacobi(max_iters=200, tol=1e-5),
    "newton-k2": fpbench.Newton(max_iters=2),
    "newton-tol": fpbench.Newton(max_iters=50, tol=1e-5),
    "quasi_newton-k3": fpbench.QuasiNewton(max_iters=3),
    "quasi_newton-tol": fpbench.QuasiNewton(max_iters=200, tol=1e-5),
    "elk-k3": fpbench.ELK(max_iters=3, damping=0.3),
    # Budget 64 for the damped solvers to tolerance (they take at most 29 iterations here): JAX
    # sizes a program's residual buffer by the cap in multiples of 64, so -k3 and -tol share one
    # compiled program.
    "elk-tol": fpbench.ELK(max_iters=64, tol=1e-6, damping=0.05),
    "quasi_elk-k3": fpbench.QuasiELK(max_iters=3, damping=0.3),
    "quasi_elk-tol": fpbench.QuasiELK(max_iters=64, tol=1e-6, damping=0.05),
    "chunked-p4-o2-k1": fpbench.Chunked(1, chunks=4, overlap=2),
    "chunked-p3-o0-k2": fpbench.Chunked(2, chunks=3),
    "chunked-p5-o3-tol": fpbench.Chunked(50, tol=1e-5, chunks=5, overlap=3),
}
DAMPED = {k: v for k, v in SOLVERS.items() if v.damping}
DIAGONAL_PROBLEM = "T7-B3-H5-I2"
"""The diagonal cells' one problem, in float64: every solver's code path on them, without
another copy of the whole matrix (float32 and the shapes add no code path)."""
FLOAT32_PROBLEM = "T64-B4-H8-I3-rho1.0"
"""float32 adds rounding, not a code path: one problem, the marginally stable one (rho = 1),
where rounding matters most."""


def solve_both(target, problem, solver):
    return fpbench.solve(problem, solver, backend=target), fpbench.solve(problem, solver, backend="numpy")


def problems_for(cell_index: int, solver_id: str, solver_index: int) -> list[str]:
    """The float64 problems of one (cell, solver): the damped solvers' two; for the others
    (Chunked included: its windows depend on T, not on the cell), the T = 1 edge case and two
    of the other four, rotated over cells and solvers so that every solver meets every
    problem on some cell and every cell every problem on some solver."""
    if solver_id in DAMPED:
        return ["T7-B3-H5-I2", "T33-B2-H16-I4-rho0.5"]
    ids = list(PROBLEMS)
    turn = cell_index + solver_index
    return [ids[0], *(ids[1 + (turn + j) % 4] for j in (0, 2))]


def cases():
    """(cell, dtype, solver, problem) ids: float64 on the problems of :func:`problems_for`,
    float32 on :data:`FLOAT32_PROBLEM` where :func:`problems.one_in_three`; a diagonal cell on
    :data:`DIAGONAL_PROBLEM` only."""
    for i, cell in enumerate(CELLS):
        diagonal = fpbench.CELLS[cell].recurrence == "diagonal"
        for j, solver_id in enumerate(SOLVERS):
            if diagonal:
                chosen = [("float64", DIAGONAL_PROBLEM)]
            else:
                chosen = [("float64", p) for p in problems_for(i, solver_id, j)]
                if one_in_three(i, j):  # float32 adds rounding, not a code path
                    chosen.append(("float32", FLOAT32_PROBLEM))
            for dtype, problem_id in chosen:
                yield case(cell, dtype, solver_id, problem_id)


def test_every_solver_and_cell_meets_every_problem():
    """The rotations of :func:`problems_for` and :func:`problems.one_in_three` lose no (solver,
    problem), (cell, problem), (solver, float32) or (cell, float32) pair that the whole
    product had (of the dense cells; every diagonal one meets every solver)."""
    dense = [c for c in CELLS if fpbench.CELLS[c].recurrence == "dense"]
    every = [c.values for c in cases()]
    assert {(c, s) for c, _, s, _ in every} == {(c, s) for c in CELLS for s in SOLVERS}
    seen = {(c, s, p) for c, d, s, p in every if d == "float64" and c in dense}
    for solver_id in SOLVERS:
        wanted = set(problems_for(0, solver_id, 0)) if solver_id in DAMPED else set(PROBLEMS)
        assert {p for _, s, p in seen if s == solver_id} == wanted, solver_id
    for cell in dense:
        assert {p for c, _, p in seen if c == cell} == set(PROBLEMS), cell
    float32 = {(c, s) for c, d, s, _ in every if d == "float32"}
    assert {s for _, s in float32} == set(SOLVERS) and {c for c, _ in float32} == set(dense)


@pytest.mark.parametrize(("cell", "dtype", "solver_id", "problem_id"), list(cases()))
def test_matches_reference(target, cell, dtype, solver_id, problem_id):
    problem = fpbench.make_problem(spec(problem_id, cell, dtype))
    solver = SOLVERS[solver_id]
    got, ref = solve_both(target, problem, solver)
    if fpbench.CELLS[cell].has_cell_state:  # the fixed point is over (h, c): both are checked
        assert got.cell_states.shape == ref.cell_states.shape == got.states.shape
        assert_close(f"{target} {cell} {solver} c", got.cell_states, ref.cell_states, dtype)
    else:
        assert got.cell_states is None
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
    "make",
    [fpbench.Jacobi, fpbench.Newton, fpbench.QuasiNewton, lambda k: fpbench.Chunked(k, chunks=6, overlap=1)],
    ids=["jacobi", "newton", "quasi_newton", "chunked"],
)
@pytest.mark.parametrize("cell", CELLS)
def test_exact_budget_is_exact(target, cell, make):
    """A budget of T (Chunked: of its chunks) gives the exact states and says converged."""
    problem = fpbench.make_problem(spec("T33-B2-H16-I4-rho0.5", cell, "float64"))
    solver = make(problem.spec.seq_len)
    result = fpbench.solve(problem, solver, backend=target)
    assert result.converged and result.iterations == solver.exact_after(problem.spec.seq_len)
    assert_close("exact budget", result.states, fpbench.reference_states(problem), "float64")


@pytest.mark.parametrize(
    ("damped", "undamped"),
    [(fpbench.ELK, fpbench.Newton), (fpbench.QuasiELK, fpbench.QuasiNewton)],
    ids=["elk", "quasi_elk"],
)
@pytest.mark.parametrize("cell", CELLS)
def test_undamped_elk_is_newton(target, cell, damped, undamped):
    """damping = 0 gives exactly Newton's (quasi-Newton's) iterates."""
    problem = fpbench.make_problem(spec("T33-B2-H16-I4-rho0.5", cell, "float64"))
    elk = fpbench.solve(problem, damped(max_iters=3, damping=0.0), backend=target)
    newton = fpbench.solve(problem, undamped(max_iters=3), backend=target)
    assert_close("ELK(damping=0) vs Newton", elk.states, newton.states, "float64")
    np.testing.assert_allclose(elk.residuals, newton.residuals, rtol=1e-9)


@pytest.mark.parametrize("solver", DAMPED.values(), ids=DAMPED)
def test_damped_converges_to_exact(target, solver):
    """A damped iteration converges linearly, so its error is a few times its last residual."""
    problem = fpbench.make_problem(spec("T33-B2-H16-I4-rho0.5", "gru", "float64"))
    result = fpbench.solve(problem, type(solver)(max_iters=1000, tol=1e-12, damping=0.05), backend=target)
    assert result.converged and not result.diverged
    np.testing.assert_allclose(result.states, fpbench.reference_states(problem), rtol=0, atol=1e-9)


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
    [
        fpbench.Sequential(),
        fpbench.Jacobi(7, tol=1e-6),
        fpbench.Newton(7),
        fpbench.QuasiNewton(7),
        fpbench.ELK(7),
        fpbench.QuasiELK(7),
        fpbench.Chunked(7, chunks=2, overlap=1),
    ],
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
