"""The gradient asv suites (benchmarks/bench_grad.py), driven directly (without asv) on the
NumPy target of the quick grid: setup (prepare + correctness gate), the timed call, the
tracks, and n/a for what does not apply."""

import dataclasses

import numpy as np
import pytest

import fpbench

bench_grad = pytest.importorskip("benchmarks.bench_grad")
grids = pytest.importorskip("benchmarks.grids")
GG = bench_grad.GG


@pytest.mark.parametrize(
    ("solver", "backward", "max_iters"),
    [
        ("sequential", "implicit", grids.TOL),
        ("jacobi", "implicit", grids.TOL),
        ("jacobi", "unrolled", 2),
        ("newton", "implicit", 2),
        ("quasi_newton", "implicit", grids.TOL),
    ],
)
def test_budget_suite_runs_on_numpy(solver, backward, max_iters):
    suite = bench_grad.GradBudget()
    params = ("numpy:cpu", "gru", solver, backward, max_iters)
    suite.setup(*params)
    suite.time_grad(*params)
    assert bench_grad._verdicts[(suite.target, suite.spec, suite.solver)]


@pytest.mark.parametrize(
    ("solver", "backward", "max_iters", "why"),
    [
        ("native", "implicit", grids.TOL, "no backward pass for solver 'native'"),
        ("sequential", "unrolled", grids.TOL, "one exact backward"),
        ("sequential", "implicit", 2, "does not iterate"),
        ("newton", "unrolled", 2, "no unrolled backward"),
    ],
)
def test_budget_suite_na(solver, backward, max_iters, why):
    with pytest.raises(NotImplementedError, match=why):
        bench_grad.GradBudget().setup("numpy:cpu", "gru", solver, backward, max_iters)


def test_accuracy_tracks_error_falling_with_budget():
    errs = []
    for k in (2, grids.TOL):
        suite = bench_grad.GradAccuracy()
        params = ("numpy:cpu", "elman", "jacobi", "unrolled", k, 0.5)
        suite.setup(*params)
        errs.append(suite.track_grad_rel_error(*params))
        assert suite.track_forward_iterations(*params) >= 1
    assert errs[1] < 1e-4 < errs[0]


def test_gate_rejects_a_wrong_gradient():
    spec = bench_grad.common.spec("gru", 16, 4)
    good = fpbench.grad(bench_grad.common.problem(spec), fpbench.Sequential(), cotangent=None)
    bad = dataclasses.replace(good, x=good.x + np.float32(1.0))
    bench_grad.verify_grad("fake", spec, fpbench.Sequential(), good)
    with pytest.raises(AssertionError, match="correctness gate failed"):
        bench_grad.verify_grad("fake", spec, fpbench.Sequential(), bad)


def test_gate_checks_unrolled_newton_by_finite_differences():
    """No reference backward for unrolled Newton: the gate differentiates the reference
    forward numerically (here a stand-in 'backend' that is the exact gradient: wrong for
    Newton(2) on T=16, so the gate must fail it)."""
    spec = bench_grad.common.spec("elman", 16, 4)
    solver = fpbench.Newton(2, backward="unrolled")
    exact = fpbench.grad(bench_grad.common.problem(spec), fpbench.Sequential())
    forward = dataclasses.replace(exact.forward, residuals=[1.0, 0.5], iterations=2)
    fake = dataclasses.replace(exact, forward=forward)
    with pytest.raises(AssertionError, match="finite differences"):
        bench_grad.verify_grad("fake:cpu", spec, solver, fake)


def test_unrolled_quasi_newton_that_ran_out_of_memory_is_na(monkeypatch):
    """JAX's unrolled quasi-Newton at GRU T=2048, B=8, H=8 to tolerance asked XLA for 31 GB on
    a 24 GiB machine (a failed benchmark in the main sweep): the estimate must mark it n/a."""
    from benchmarks import bench_grad, common

    monkeypatch.setattr(common, "_host_memory", lambda: 24 * 2**30)
    spec = fpbench.RNNSpec(cell="gru", input_size=32, hidden_size=8, seq_len=2048, batch=8)
    solver = fpbench.QuasiNewton(2048, tol=1e-4, backward="unrolled")
    with pytest.raises(NotImplementedError, match="unrolled backward needs"):
        bench_grad.check_fits_grad("jax:cpu", spec, solver)
    bench_grad.check_fits_grad("jax:cpu", spec, fpbench.QuasiNewton(8, backward="unrolled"))  # 8 fit
