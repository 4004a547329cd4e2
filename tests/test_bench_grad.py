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


def test_unrolled_memory_estimate_counts_the_iterations_kept(monkeypatch):
    """Unrolled quasi-Newton at GRU T=2048, B=8, H=8 keeping all 2048 iterations needs ~31 GB
    (JAX asked XLA for that in the main sweep, on a 24 GiB machine): n/a. JAX's checkpointed
    backward keeps ~91 of them and fits; so does a budget of 8."""
    from benchmarks import bench_grad, costs

    monkeypatch.setattr(costs, "host_memory", lambda: 24 * 2**30)
    spec = fpbench.RNNSpec(cell="gru", input_size=32, hidden_size=8, seq_len=2048, batch=8)
    every = fpbench.QuasiNewton(2048, backward="unrolled")
    with pytest.raises(NotImplementedError, match="keeps 2048 iterations"):
        bench_grad.check_fits_grad("torch:cpu", spec, every)
    pytest.importorskip("jax")
    assert bench_grad.iterations_kept("jax:cpu", spec, every) == 46 + 45
    bench_grad.check_fits_grad("jax:cpu", spec, every)
    bench_grad.check_fits_grad("torch:cpu", spec, fpbench.QuasiNewton(8, backward="unrolled"))


def test_unrolled_memory_estimate_to_tolerance_counts_the_iterations_that_run():
    """torch and Numba keep the iterations that ran: to tolerance, a forward solve counts them."""
    from benchmarks import bench_grad

    spec = fpbench.RNNSpec(cell="gru", input_size=4, hidden_size=4, seq_len=256, batch=2, contraction=0.5)
    solver = fpbench.Jacobi(256, tol=1e-4, backward="unrolled")
    kept = bench_grad.iterations_kept("numpy:cpu", spec, solver)
    assert kept == fpbench.solve(fpbench.make_problem(spec), solver).iterations < 64


def test_gradient_suites_run_only_the_grids_unrolled_solvers(monkeypatch):
    """``main`` runs the truncated models (Jacobi, Chunked) unrolled; Newton unrolled is n/a
    there, in the time suites and in ``GradAccuracy``."""
    import dataclasses

    from benchmarks import bench_grad
    from fpbench.grad_grids import GRAD_GRIDS

    assert GRAD_GRIDS["main"].unrolled == ("jacobi", "chunked")
    monkeypatch.setattr(bench_grad, "GG", dataclasses.replace(bench_grad.GG, unrolled=("jacobi",)))
    T = bench_grad.GG.seq_lens[0]
    with pytest.raises(NotImplementedError, match="runs only jacobi unrolled"):
        bench_grad.GradSeqLen().setup("numpy:cpu", "gru", "newton", "unrolled", T)
    bench_grad.GradSeqLen().setup("numpy:cpu", "gru", "jacobi", "unrolled", T)
    gg = bench_grad.GG
    cell, k, rho = gg.accuracy_cells[0], gg.accuracy_budgets[0], gg.contractions[0]
    with pytest.raises(NotImplementedError, match="runs only jacobi unrolled"):
        bench_grad.GradAccuracy().setup("numpy:cpu", cell, "newton", "unrolled", k, rho)
    bench_grad.GradAccuracy().setup("numpy:cpu", cell, "newton", "implicit", k, rho)
