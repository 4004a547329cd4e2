"""The sharded solve (fpbench.sharding): sharded equals unsharded, in both engines; faults end
the run with an error in bounded time; bad input gets a clear error.

JAX runs in a subprocess, because its host device count (``XLA_FLAGS``) is fixed when JAX
starts; torch runs its ranks with ``gloo`` on the loopback address, several solves per start
of the ranks (their start-up is most of the cost).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fpbench
from fpbench.grad import full_cotangent
from fpbench.sharding import ShardFailure, ShardPlan, grad_sharded, solve_sharded
from fpbench.solvers import iteration_cap
from fpbench.testing import assert_close

ROOT = Path(__file__).resolve().parents[1]

SOLVERS = {
    "jacobi": fpbench.Jacobi(5),
    "newton": fpbench.Newton(4),
    "quasi_newton": fpbench.QuasiNewton(8, tol=1e-6),
    "chunked": fpbench.Chunked(8, chunks=8, overlap=3),
    "chunked_tol": fpbench.Chunked(8, tol=1e-5, chunks=4, overlap=1),
}


GRAD_SOLVERS = {
    "newton": fpbench.Newton(16, tol=1e-8),
    "chunked": fpbench.Chunked(2, chunks=4, overlap=6),  # overlap > T / 4: a two-hop halo
}
"""The solvers of the sharded gradient tests (implicit backward)."""

CASES = [("gru", "float64", name, shards) for name in SOLVERS for shards in (2, 4)] + [
    ("lstm", "float32", name, 2) for name in ("newton", "chunked_tol")
]
"""The JAX cases: (cell, dtype, solver, shards)."""


def problem_of(cell="gru", dtype="float64", T=16):
    spec = fpbench.RNNSpec(
        cell=cell, input_size=3, hidden_size=4, seq_len=T, batch=2, dtype=dtype, contraction=0.8, seed=1
    )
    return fpbench.make_problem(spec)


def full(result):
    """``(T, B, S)``: h, and c for lstm."""
    if result.cell_states is None:
        return result.states
    return np.concatenate([result.states, result.cell_states], -1)


def assert_same_solve(name, states, residuals, iterations, ref, dtype):
    """Sharded equals unsharded: the states, the iterations and the residual trace."""
    assert iterations == ref.iterations, f"{name}: {iterations} iterations, unsharded {ref.iterations}"
    assert_close(f"{name} states", states, full(ref), dtype)
    assert_close(f"{name} residuals", np.asarray(residuals), np.asarray(ref.residuals), dtype)


JAX_CHILD = """
import json, sys
import numpy as np
import fpbench
from fpbench.sharding import grad_sharded, solve_sharded
from tests.test_shard import CASES, GRAD_SOLVERS, SOLVERS, problem_of, full
out = []
for cell, dtype, name, shards in CASES:
    r = solve_sharded(problem_of(cell, dtype), SOLVERS[name], "jax", shards=shards)
    out.append(dict(cell=cell, dtype=dtype, solver=name, shards=shards, device=r.device,
                    states=full(r).tolist(), residuals=r.residuals, iterations=r.iterations))
grads = []
for name, solver in GRAD_SOLVERS.items():
    for shards in (2, 4):
        r = grad_sharded(problem_of("gru", "float64"), solver, "jax", shards=shards)
        grads.append({k: v.tolist() for k, v in r.arrays().items()}
                     | dict(solver=name, shards=shards, backward=r.backward.residuals))
print(json.dumps(dict(solves=out, grads=grads)))
"""


def assert_same_grad(name, arrays, backward_residuals, ref, dtype):
    """A sharded gradient equals the single-device one: every array, and the residuals of
    the backward iterations (Chunked's adjoint; none for Newton's reverse scan)."""
    for k, expected in ref.arrays().items():
        assert_close(f"{name} d{k}", np.asarray(arrays[k]), expected, dtype)
    assert len(backward_residuals) == len(ref.backward.residuals)
    assert_close(
        f"{name} backward residuals",
        np.asarray(backward_residuals),
        np.asarray(ref.backward.residuals),
        dtype,
    )


def test_jax_sharded_equals_unsharded():
    """Each solver on 2 and 4 XLA host devices equals the single-device JAX solve, and so
    does Newton's implicit gradient."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run(
        [sys.executable, "-c", JAX_CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = found["solves"]
    assert len(rows) == len(CASES)
    for row in rows:
        ref = fpbench.solve(problem_of(row["cell"], row["dtype"]), SOLVERS[row["solver"]], "jax")
        name = f"jax {row['cell']} {row['solver']} shards={row['shards']}"
        assert row["device"] == f"cpu x{row['shards']}"
        states = np.array(row["states"])
        assert_same_solve(name, states, row["residuals"], row["iterations"], ref, row["dtype"])
    assert len(found["grads"]) == 2 * len(GRAD_SOLVERS)
    for arrays in found["grads"]:
        ref = fpbench.grad(problem_of("gru", "float64"), GRAD_SOLVERS[arrays["solver"]], "jax")
        name = f"jax {arrays['solver']} grad shards={arrays['shards']}"
        assert_same_grad(name, arrays, arrays["backward"], ref, "float64")


def test_torch_sharded_equals_unsharded():
    """Each solver on 2 gloo ranks equals the single-process torch solve (one start-up)."""
    from backends.torch.distributed import launch

    cases = [
        (cell, dtype, name) for cell, dtype in (("gru", "float64"), ("lstm", "float32")) for name in SOLVERS
    ]
    jobs = []
    for cell, dtype, name in cases:
        problem, solver = problem_of(cell, dtype), SOLVERS[name]
        jobs.append((problem, solver, ShardPlan.of(16, solver, 2), iteration_cap(solver, 16), None))
    grad_problem = problem_of("lstm", "float32")
    cotangent = full_cotangent(grad_problem, None)
    grad_jobs = [
        (grad_problem, s, ShardPlan.of(16, s, 2), iteration_cap(s, 16), cotangent)
        for s in GRAD_SOLVERS.values()
    ]
    results = launch([*jobs, *grad_jobs], "cpu", 2, 60.0)
    for (cell, dtype, name), job, out in zip(cases, jobs, results, strict=False):
        ref = fpbench.solve(job[0], job[1], "torch")
        residuals = out["residuals"]
        assert_same_solve(f"torch {cell} {name}", out["states"], residuals, len(residuals), ref, dtype)
    H = grad_problem.spec.hidden_size
    for (name, solver), out in zip(GRAD_SOLVERS.items(), results[len(jobs) :], strict=True):
        ref = fpbench.grad(grad_problem, solver, "torch")
        arrays = {k.removeprefix("params."): v for k, v in out.items()}
        arrays |= {"x": out["dx"], "h0": out["s0"][:, :H], "c0": out["s0"][:, H:]}
        assert_same_grad(f"torch lstm {name} grad", arrays, out["backward_residuals"], ref, "float32")


def test_torch_solve_sharded_returns_a_result():
    """The public entry point, through torch: a checked Result with the shards in its device."""
    problem = problem_of("elman", "float64", T=8)
    r = solve_sharded(problem, fpbench.Newton(8), "torch", shards=2)
    ref = fpbench.solve(problem, fpbench.Newton(8), "torch")
    assert r.device == "cpu x2" and r.converged and not r.diverged
    assert_same_solve("torch elman newton", full(r), r.residuals, r.iterations, ref, "float64")


@pytest.mark.parametrize("fault", ["exit", "hang"])
def test_a_dead_or_hung_rank_ends_the_run(fault):
    """A rank that dies, or hangs before its first exchange, fails the whole run within the
    communication timeout (plus start-up), never a hang."""
    from backends.torch.distributed import launch

    problem, solver = problem_of(T=8), fpbench.Jacobi(4)
    job = (problem, solver, ShardPlan.of(8, solver, 2), 4, None)
    t0 = time.perf_counter()
    with pytest.raises(ShardFailure, match=r"rank \d of 2 (died|failed)"):
        launch([job], "cpu", 2, timeout=3.0, fault=(1, fault))
    assert time.perf_counter() - t0 < 90


@pytest.mark.parametrize(
    ("shards", "solver", "T", "error", "match"),
    [
        (17, fpbench.Jacobi(2), 16, ValueError, "more than the 16 steps"),
        (3, fpbench.Jacobi(2), 16, ValueError, "must divide the sequence length T=16"),
        (0, fpbench.Jacobi(2), 16, ValueError, "shards must be an integer >= 1"),
        (4, fpbench.Chunked(2, chunks=2), 16, ValueError, "a whole number per shard"),
        (2, fpbench.Chunked(2, chunks=3), 16, ValueError, "equal chunks"),
        (2, fpbench.ELK(2), 16, fpbench.UnsupportedError, "no sharded form"),
        (2, fpbench.Sequential(), 16, fpbench.UnsupportedError, "no sharded form"),
    ],
)
def test_bad_input_names_the_limit(shards, solver, T, error, match):
    with pytest.raises(error, match=match):
        solve_sharded(problem_of(T=T), solver, "jax", shards=shards)


@pytest.mark.parametrize(
    "solver",
    [
        fpbench.Jacobi(4),
        fpbench.QuasiNewton(4),
        fpbench.Newton(4, backward="unrolled"),
        fpbench.Chunked(4, chunks=4, backward="unrolled"),
    ],
)
def test_a_gradient_without_a_sharded_form(solver):
    with pytest.raises(fpbench.UnsupportedError, match="has no sharded gradient"):
        grad_sharded(problem_of(), solver, "jax", shards=2)


def test_a_backend_without_a_sharded_form():
    with pytest.raises(fpbench.UnsupportedError, match="backend 'numba' has no sharded form"):
        solve_sharded(problem_of(), fpbench.Jacobi(2), "numba", shards=2)


def test_more_shards_than_jax_devices():
    """In a process whose JAX has fewer host devices than shards, the error says how to get them."""
    jax = pytest.importorskip("jax")

    have = len(jax.devices("cpu"))
    T = 2 * (have + 1)
    with pytest.raises(fpbench.BackendUnavailableError, match="xla_force_host_platform_device_count"):
        solve_sharded(problem_of(T=T), fpbench.Jacobi(2), "jax", shards=have + 1)


def test_scaling_table_speedup_and_efficiency():
    """The report's scaling numbers: strong efficiency t(1) / (N t(N)), weak t(1) / t(N)."""
    import pandas as pd

    from fpbench.report.shard_section import scaling_table

    rows = [
        dict(
            group=g, metric="track_solve_seconds", status="ok", machine="m", target="jax:cpu", solver="newton"
        )
        | dict(shards=n, seq_len=T, value=v)
        for g, n, T, v in [
            ("ShardStrong", 1, 64, 4.0),
            ("ShardStrong", 2, 64, 2.5),
            ("ShardStrong", 4, 64, 2.0),
            ("ShardWeak", 1, 16, 1.0),
            ("ShardWeak", 2, 32, 1.25),
        ]
    ]
    rows.append(rows[-1] | dict(shards=4, seq_len=64, status="failed", value=float("nan")))
    table = scaling_table(pd.DataFrame(rows)).set_index(["group", "shards"])
    assert table.loc[("ShardStrong", 2), "ideal"] == 2.0
    assert table.loc[("ShardStrong", 4), "efficiency"] == 0.5
    assert table.loc[("ShardWeak", 2), "efficiency"] == 0.8
    assert ("ShardWeak", 4) not in table.index  # a failed gate gives no number
    assert scaling_table(pd.DataFrame(rows).drop(columns="shards")).empty
    # the figure draws (it called a colour helper the report no longer has)
    from fpbench.report.shard_section import scaling_figure

    fig = scaling_figure(scaling_table(pd.DataFrame(rows)), "scaling")
    assert fig is not None and len(fig.axes) >= 2


def test_scaling_suites_problem_is_what_they_build():
    """The report's problem of a scaling row (``suite_problem``) is the one the suite solves,
    every swept N splits every T and Chunked configuration of the grid, and the scaling
    suites stay out of the main job."""
    from benchmarks import bench_shard
    from fpbench import grids, shard_grids, suite_problems

    current = grids.grid_name()
    for name, sg in shard_grids.SHARD_GRIDS.items():
        for shards in sg.shards:
            params = {"solver": sg.solvers[0], "shards": shards}
            strong = suite_problems.suite_problem(name, "ShardStrong", params)
            weak = suite_problems.suite_problem(name, "ShardWeak", params)
            assert (strong["seq_len"], weak["seq_len"]) == (sg.strong_seq_len, sg.weak_steps * shards)
            assert (weak["cell"], weak["hidden_size"], weak["batch"]) == (sg.cell, sg.hidden_size, sg.batch)
            if name == current:
                assert bench_shard.ShardStrong().seq_len(shards) == strong["seq_len"]
                assert bench_shard.ShardWeak().seq_len(shards) == weak["seq_len"]
            for solver in sg.solvers:
                base, fields = grids.solver_fields(solver)
                for T in (strong["seq_len"], weak["seq_len"]):
                    ShardPlan.of(T, fpbench.make_solver(base, max_iters=T, **fields), shards)
    assert grids.GRIDS["shard"].suites == ("ShardStrong", "ShardWeak")
    assert not {"ShardStrong", "ShardWeak"} & set(grids.GRIDS["main"].suites)
