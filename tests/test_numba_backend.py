"""Numba-specific checks: the chunked parallel scan for any chunk count, info(), and the
hand-written backward pass against the reference backward."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fpbench
from fpbench.reference import fixed_point, linear_recurrence

pytestmark = pytest.mark.backend("numba")

pytest.importorskip("numba")
pytest.importorskip("scipy")
K = pytest.importorskip("backends.numba.kernels_cells")
KS = pytest.importorskip("backends.numba.kernels_scan")
DENSE = [name for name, cell in fpbench.CELLS.items() if cell.recurrence == "dense"]
DIAG = [name for name, cell in fpbench.CELLS.items() if cell.recurrence == "diagonal"]


@pytest.mark.parametrize("chunks", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("full", [True, False], ids=["full", "diagonal"])
def test_chunked_scan_matches_sequential_recurrence(full, chunks):
    """More chunks than steps, and chunk counts this machine's threads never reach."""
    T, B, H = 33, 2, 5
    rng = np.random.default_rng(0)
    A = rng.uniform(-0.6, 0.6, size=(T, B, H, H) if full else (T, B, H))
    b, h0 = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    expected = linear_recurrence(A, b, h0)
    s = np.zeros((T + 1, B, H))
    s[0] = h0
    # the kernel takes transposed Jacobians, weight as in the backend, and destroys A, b
    At = np.ascontiguousarray(np.swapaxes(A, -1, -2)) if full else A.copy()
    KS.linear_scan(At, b.copy(), s, float(H + 1) if full else 1.0, chunks)
    np.testing.assert_allclose(s[1:], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunks", [1, 3, 40])
def test_chunked_scan_on_per_unit_blocks_matches_the_block_diagonal_recurrence(chunks):
    """A diagonal cell's transitions, ``(T, B, H, P, P)`` blocks (each transposed), against
    the recurrence with the full block-diagonal ``S x S`` matrices they stand for."""
    T, B, H, P = 29, 2, 4, 2
    rng = np.random.default_rng(1)
    blocks = rng.uniform(-0.6, 0.6, size=(T, B, H, P, P))  # [.., j, p, q] = dF_{pH+j}/ds_{qH+j}
    full = np.zeros((T, B, P * H, P * H))
    for p in range(P):
        for q in range(P):
            full[..., p * H + np.arange(H), q * H + np.arange(H)] = blocks[..., p, q]
    b, s0 = rng.standard_normal((T, B, P * H)), rng.standard_normal((B, P * H))
    s = np.zeros((T + 1, B, P * H))
    s[0] = s0
    At = np.ascontiguousarray(np.swapaxes(blocks, -1, -2))
    KS.linear_scan(At, b.copy(), s, float(P + 1), chunks)
    np.testing.assert_allclose(s[1:], linear_recurrence(full, b, s0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", [fpbench.Newton(3), fpbench.ELK(3, damping=0.3)], ids=["newton", "elk"])
def test_newton_and_elk_on_a_diagonal_cell_allocate_no_state_by_state_matrices(solver):
    """lstm_cifg_diag's Newton and ELK hold per-unit ``P x P`` blocks: what ``prepare``
    allocates stays far below one ``S x S`` matrix a row, and the states are the
    reference's."""
    import tracemalloc

    spec = fpbench.RNNSpec(
        cell="lstm_cifg_diag", seq_len=4, batch=2, hidden_size=256, input_size=3, dtype="float64"
    )
    problem = fpbench.make_problem(spec)
    fpbench.solve(problem, solver, backend="numba")  # compiled (or loaded) before measuring
    tracemalloc.start()
    try:
        prepared = fpbench.get_backend("numba").prepare(problem, solver, "cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    S, N = spec.state_size, spec.seq_len * spec.batch
    assert peak < N * S * S * 8 / 4, peak  # (a quarter of one (N, S, S) float64 buffer)
    states = prepared.to_host(prepared.run())[0][..., : spec.hidden_size]
    np.testing.assert_allclose(states, fpbench.solve(problem, solver).states, rtol=0, atol=1e-10)


def test_info_reports_threads():
    info = fpbench.get_backend("numba").info()
    assert int(info["numba_threads"]) >= 1
    assert info["numba_threading_layer"] in {"tbb", "omp", "workqueue"}


GRAD_SOLVERS = {
    "sequential": fpbench.Sequential(),
    "jacobi-k3": fpbench.Jacobi(max_iters=3),
    "jacobi-tol": fpbench.Jacobi(max_iters=200, tol=1e-5),
    "newton-tol": fpbench.Newton(max_iters=50, tol=1e-5),
    "quasi_newton-k2": fpbench.QuasiNewton(max_iters=2),
    "quasi_newton-tol": fpbench.QuasiNewton(max_iters=200, tol=1e-5),
    "elk-tol": fpbench.ELK(max_iters=300, tol=1e-5, damping=0.3),
    "quasi_elk-tol": fpbench.QuasiELK(max_iters=300, tol=1e-5, damping=0.3),
}
GRAD_RTOL = {"float32": 1e-4, "float64": 1e-10}  # rel_rms of every gradient


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("solver_id", GRAD_SOLVERS)
@pytest.mark.parametrize("cell", list(fpbench.CELLS))
def test_grad_matches_reference(cell, solver_id, dtype):
    """The hand-written backward (BPTT, reverse scan, adjoint iterations) against the
    float64 reference backward of the same solver: same method, same iteration count."""
    from fpbench.testing import errors

    spec = fpbench.RNNSpec(
        cell=cell, seq_len=33, batch=2, hidden_size=16, input_size=4, contraction=0.5, dtype=dtype
    )
    problem = fpbench.make_problem(spec)
    solver = GRAD_SOLVERS[solver_id]
    got = fpbench.grad(problem, solver, backend="numba")
    ref = fpbench.grad(problem, solver, backend="numpy")
    assert not got.diverged and got.backward.converged == ref.backward.converged
    slack = 0 if dtype == "float64" else 2
    assert abs(got.backward.iterations - ref.backward.iterations) <= slack
    assert got.backward.method.startswith("implicit" if solver.iterative else "bptt")
    for name, expected in ref.arrays().items():
        actual = got.arrays()[name]
        assert actual.dtype == np.dtype(dtype) and actual.shape == expected.shape
        err = errors(actual, expected)["rel_rms"]
        assert err <= GRAD_RTOL[dtype], f"{name}: rel_rms {err:.3g}"


UNROLLED_LINEARISED = {
    "newton-k2": fpbench.Newton(2, backward="unrolled"),
    "newton-tol": fpbench.Newton(40, tol=1e-7, backward="unrolled"),
    "quasi_newton-k3": fpbench.QuasiNewton(3, backward="unrolled"),
    "elk-k3": fpbench.ELK(3, damping=0.3, backward="unrolled"),
    "quasi_elk-k4": fpbench.QuasiELK(4, damping=2.0, backward="unrolled"),
}


@pytest.mark.parametrize("solver_id", list(UNROLLED_LINEARISED))
@pytest.mark.parametrize("cell", DENSE)  # (torch has no diagonal cells: the test below)
def test_grad_unrolled_newton_type_is_autodiffs_gradient(cell, solver_id):
    """Numba's hand-written unrolled backward of the linearising solvers (second derivatives
    by complex step) against torch's autograd through the same iterations, in float64, on a
    problem the iterations do not solve (so unrolled and implicit gradients differ)."""
    pytest.importorskip("torch")
    spec = fpbench.RNNSpec(
        cell=cell, seq_len=23, batch=2, hidden_size=5, input_size=3, contraction=1.2, seed=11, dtype="float64"
    )
    problem = fpbench.make_problem(spec)
    solver = UNROLLED_LINEARISED[solver_id]
    got = fpbench.grad(problem, solver, backend="numba")
    expected = fpbench.grad(problem, solver, backend="torch")
    assert got.forward.iterations == expected.forward.iterations
    assert got.backward.method.startswith("unrolled")
    for name, value in expected.arrays().items():
        np.testing.assert_allclose(got.arrays()[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
    if solver.tol is None:
        implicit = fpbench.grad(problem, fpbench.make_solver(solver.name, solver.max_iters), backend="numba")
        assert not np.allclose(implicit.arrays()["weight_hh"], expected.arrays()["weight_hh"], rtol=1e-3)


@pytest.mark.parametrize("solver_id", [k for k, v in UNROLLED_LINEARISED.items() if v.tol is None])
@pytest.mark.parametrize("cell", DIAG)
def test_grad_unrolled_newton_type_on_diagonal_cells_is_the_iterations_gradient(cell, solver_id):
    """The diagonal cells (per-unit Jacobian blocks, vector recurrent weights, peepholes),
    which torch does not run: the unrolled backward against central differences of the
    reference's same iterations, in every input, on a problem they do not solve (where the
    unrolled and implicit gradients differ)."""
    from test_grad import assert_matches_fd

    spec = fpbench.RNNSpec(
        cell=cell, seq_len=23, batch=2, hidden_size=5, input_size=3, contraction=1.2, seed=11, dtype="float64"
    )
    p = fpbench.make_problem(spec)
    solver = UNROLLED_LINEARISED[solver_id]
    got = fpbench.grad(p, solver, backend="numba")
    assert got.forward.iterations == solver.max_iters and got.backward.method.startswith("unrolled")
    assert_matches_fd(p, lambda q: fixed_point(q, solver)[0], got, n=2)
    implicit = fpbench.grad(p, fpbench.make_solver(solver.name, solver.max_iters), backend="numba")
    assert not np.allclose(implicit.arrays()["weight_hh"], got.arrays()["weight_hh"], rtol=1e-3)


@settings(max_examples=20, deadline=None)
@given(
    cell=st.sampled_from([c for c in fpbench.testing.cells_on("numba") if c in DENSE]),
    solver_name=st.sampled_from(["newton", "quasi_newton", "elk", "quasi_elk"]),
    T=st.integers(1, 12),
    B=st.integers(1, 3),
    H=st.integers(1, 6),
    I=st.integers(1, 4),
    rho=st.floats(0.0, 1.5),
    damping=st.floats(0.01, 5.0),
    seed=st.integers(0, 2**31),
    k=st.integers(1, 6),
)
def test_grad_unrolled_newton_type_holds_for_random_problems(
    cell, solver_name, T, B, H, I, rho, damping, seed, k
):
    """The same against torch's autograd on problems, budgets and dampings nobody picked."""
    pytest.importorskip("torch")
    sizes = dict(seq_len=T, batch=B, hidden_size=H, input_size=I)
    problem = fpbench.make_problem(
        fpbench.RNNSpec(cell=cell, contraction=rho, seed=seed, dtype="float64", **sizes)
    )
    fields = {"damping": damping} if "elk" in solver_name else {}
    solver = fpbench.make_solver(solver_name, k, backward="unrolled", **fields)
    got = fpbench.grad(problem, solver, backend="numba")
    expected = fpbench.grad(problem, solver, backend="torch")
    for name, value in expected.arrays().items():
        np.testing.assert_allclose(got.arrays()[name], value, rtol=1e-8, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("cell", list(fpbench.CELLS))
def test_complex_step_tangents_match_central_differences(cell):
    """The cells' coefficient derivatives, and the step's, along a direction (complex step)
    against central differences of the real coefficients and steps."""
    KG = pytest.importorskip("backends.numba.grad_kernels")
    rng = np.random.default_rng(3)
    H, N = 4, 6
    model = fpbench.CELLS[cell]
    G, P = model.gates, model.parts
    cell = K.CELL_IDS[cell]
    gi, gh, ugi, ugh = (rng.standard_normal((N, G * H)) for _ in range(4))
    s, us = rng.standard_normal((N, P * H)), rng.standard_normal((N, P * H))
    bhh = rng.standard_normal((G + model.peepholes) * H)  # (a diagonal cell's weight_hh)
    shapes = ((N, G, P, H), (N, P, P, H), (N, G, P, H))

    shapes = (*shapes, (N, P * H))  # and the step itself, F

    def coeffs(sign: float):
        out = tuple(np.empty(shape) for shape in shapes)
        e = sign * 1e-6
        KG.coefficients(cell, gi + e * ugi, gh + e * ugh, bhh, s + e * us, *out, 1)
        return out

    tangents = tuple(np.empty(shape) for shape in shapes)
    KG.coefficient_tangents(cell, gi, gh, bhh, s, ugi, ugh, us, *tangents, 2)
    for t, p, m in zip(tangents, coeffs(1.0), coeffs(-1.0), strict=True):
        np.testing.assert_allclose(t, (p - m) / 2e-6, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cell", list(fpbench.CELLS))
def test_grad_unrolled_jacobi_is_the_truncated_models_gradient(cell):
    """Unrolled Jacobi on Numba against the reference's backpropagation through the sweeps,
    on a problem where k = 4 sweeps are far from converged (so the truncation matters)."""
    spec = fpbench.RNNSpec(
        cell=cell, seq_len=40, batch=3, hidden_size=6, input_size=3, contraction=1.1, seed=7, dtype="float64"
    )
    problem = fpbench.make_problem(spec)
    solver = fpbench.Jacobi(4, backward="unrolled")
    got = fpbench.grad(problem, solver, backend="numba")
    ref = fpbench.grad(problem, solver, backend="numpy")
    implicit = fpbench.grad(problem, fpbench.Jacobi(4), backend="numpy")
    assert got.backward.method.startswith("unrolled")
    for name, expected in ref.arrays().items():
        np.testing.assert_allclose(got.arrays()[name], expected, rtol=1e-9, atol=1e-12, err_msg=name)
    assert not np.allclose(implicit.arrays()["weight_hh"], ref.arrays()["weight_hh"], rtol=1e-3)


# -- Chunked (transition "window"): the grouped-chunk kernel ---------------------------------


def _chunked_problem(cell, T=37, B=2, H=6, dtype="float64", rho=0.8):
    spec = fpbench.RNNSpec(
        cell=cell, seq_len=T, batch=B, hidden_size=H, input_size=3, contraction=rho, seed=5, dtype=dtype
    )
    return fpbench.make_problem(spec)


@pytest.mark.parametrize("cell", list(fpbench.CELLS))
def test_chunked_one_chunk_is_sequential_bit_for_bit(cell):
    """chunks=1 runs the Sequential kernel's step on the one chunk: the same bits."""
    problem = _chunked_problem(cell, dtype="float32")
    seq = fpbench.solve(problem, fpbench.Sequential(), backend="numba")
    one = fpbench.solve(problem, fpbench.Chunked(5, chunks=1, overlap=3), backend="numba")
    assert one.iterations == 1 and one.converged
    np.testing.assert_array_equal(one.states, seq.states)
    if fpbench.CELLS[cell].has_cell_state:
        np.testing.assert_array_equal(one.cell_states, seq.cell_states)


@pytest.mark.parametrize(
    "solver",
    [
        fpbench.Chunked(2, chunks=7, overlap=2),  # T = 37: uneven last chunk, more chunks than threads
        fpbench.Chunked(3, chunks=50, overlap=1),  # more chunks than steps: one step each
        fpbench.Chunked(40, tol=1e-4, chunks=9, overlap=0),  # reruns stop at the tol
        fpbench.Chunked(1, chunks=3, overlap=100),  # overlap past the start: every chunk exact
    ],
    ids=str,
)
def test_chunked_matches_reference_and_ignores_thread_count(solver):
    """States and every residual as the reference (the same iterations), and the same bits
    whatever the thread count (a chunk's steps do not depend on which group it is in)."""
    import numba

    from fpbench.reference import fixed_point

    problem = _chunked_problem("gru")
    ref_states, ref_res = fixed_point(problem, solver)
    before = numba.get_num_threads()
    try:
        runs = []
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS, 3}):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            runs.append(fpbench.solve(problem, solver, backend="numba"))
    finally:
        numba.set_num_threads(before)
    got = runs[0]
    assert got.chunks == solver.layout(problem.spec.seq_len).chunks
    np.testing.assert_allclose(got.states, ref_states[..., : problem.spec.hidden_size], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.residuals, ref_res, rtol=1e-9, atol=1e-14)
    for other in runs[1:]:
        np.testing.assert_array_equal(other.states, got.states)
        np.testing.assert_array_equal(other.residuals, got.residuals)


@pytest.mark.parametrize("backward", ["implicit", "unrolled"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_chunked_exact_budget_gradient_is_bptt(cell, backward):
    """With as many iterations as chunks both backward modes give BPTT's gradient (the
    adjoint's chunked iterations are exact too); with one iteration on a problem that
    forgets slowly the unrolled gradient is the overlap-truncated model's, not BPTT's."""
    problem = _chunked_problem(cell, rho=1.1)
    bptt = fpbench.grad(problem, fpbench.Sequential(), backend="numba")
    exact = fpbench.grad(problem, fpbench.Chunked(5, chunks=5, overlap=1, backward=backward), backend="numba")
    assert exact.backward.method.startswith(backward)
    for name, value in bptt.arrays().items():
        np.testing.assert_allclose(exact.arrays()[name], value, rtol=1e-9, atol=1e-11, err_msg=name)
    one = fpbench.grad(problem, fpbench.Chunked(1, chunks=5, overlap=1, backward=backward), backend="numba")
    ref = fpbench.grad(problem, fpbench.Chunked(1, chunks=5, overlap=1, backward=backward), backend="numpy")
    np.testing.assert_allclose(one.arrays()["weight_hh"], ref.arrays()["weight_hh"], rtol=1e-9, atol=1e-11)
    assert not np.allclose(one.arrays()["weight_hh"], bptt.arrays()["weight_hh"], rtol=1e-3)


FORK_CHILD = """
import os, sys
import numpy as np
import fpbench
sys.path.insert(0, {root!r})
from benchmarks import common
common._warm_numba()  # asv's fork server: compiles and runs the grid's kernels, then forks
from numba.np.ufunc import parallel
layer = parallel._threading_layer if parallel._is_initialized else "none"  # what started here
problem = fpbench.make_problem(fpbench.RNNSpec(cell="gru", input_size=2, hidden_size=3, seq_len=40, batch=2))
solver = fpbench.Newton(max_iters=40, tol=1e-6)
pid = os.fork()
if pid == 0:
    got = fpbench.solve(problem, solver, backend="numba")
    ok = np.abs(got.states - fpbench.reference_states(problem)).max() < 1e-4
    os._exit(0 if ok else 3)
print(layer, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.parametrize(
    ("layer", "warmed"), [("workqueue", True), (None, False)], ids=["workqueue", "default"]
)
def test_kernels_warmed_before_a_fork_run_in_the_child(layer, warmed):
    """asv's fork server warms the grid's Numba kernels once (``benchmarks/common.py``:
    ``_warm_numba``) and forks a process per combination. On a fork-safe threading layer
    (``workqueue``) the warmed kernels run in the child; on Numba's default choice (GNU
    OpenMP's ``omp`` here, which aborts a child forked after its threads started) the
    warm-up must start nothing, and the child still runs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env["FPBENCH_GRID"] = "quick"
    if layer:
        env["NUMBA_THREADING_LAYER"] = layer
    out = subprocess.run(
        [sys.executable, "-c", FORK_CHILD.format(root=root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    started, status = out.stdout.split()
    assert status == "0", out.stderr[-2000:]  # the child's solve ran and matched the reference
    assert (started != "none") == warmed, started
