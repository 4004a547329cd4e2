"""What is specific to the torch backend: the parallel scans (the in-place fast paths
against the shared algorithms), the device-side convergence check, the float32 precision
guard, the thread setting and Chunked's folded windows."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from problems import spec

import fpbench
from fpbench.testing import assert_close, assert_grad_close

pytestmark = pytest.mark.backend("torch")

torch = pytest.importorskip("torch")
backend, kalman, kernels, ops, scan = (
    pytest.importorskip(f"backends.torch.{m}") for m in ("backend", "kalman", "kernels", "ops", "scan")
)
REPO = Path(__file__).resolve().parent.parent
TINY = fpbench.RNNSpec(cell="elman", seq_len=4, batch=1, input_size=2, hidden_size=2)


@pytest.mark.parametrize("full", [True, False], ids=["full", "diagonal"])
@pytest.mark.parametrize("N", [1, 2, 3, 6, 7, 13, 64])
def test_scan_matches_sequential_recurrence(N, full):
    """Every length, odd ones included: s_k = A_k s_{k-1} + b_k from s_{-1} = 0."""
    rng = np.random.default_rng(N)
    H = 4
    A = rng.uniform(-0.6, 0.6, size=(N, H, H) if full else (N, H))
    b = rng.standard_normal((N, H))
    expected = fpbench.reference.linear_recurrence(A[:, None], b[:, None], np.zeros((1, H)))[:, 0]
    scanner = scan._Scan(N, H, full, torch.float64, torch.device("cpu"))
    got = torch.tensor(b)
    scanner(torch.tensor(A), got)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "solver",
    [fpbench.Jacobi(200, tol=1e-5), fpbench.QuasiNewton(200, tol=1e-5), fpbench.Newton(50, tol=1e-9)],
    ids=str,
)
@pytest.mark.parametrize("cell", ["elman", "gru"])
def test_check_interval_changes_nothing(cell, solver):
    """The CUDA strategy (read the device-side flag every few iterations, freeze the
    converged state in between) gives exactly the iterations and states of checking
    every iteration; run on CPU so that it is tested everywhere."""
    problem = fpbench.make_problem(spec("T33-B2-H16-I4-rho0.5", cell, "float64"))
    outs = []
    for every in (1, 8):
        prepared = backend.TorchBackend(check_every=every).prepare(problem, solver, "cpu")
        outs.append(prepared.to_host(prepared.run()))
    n = len(outs[0][1])
    assert n % 8 and n < solver.max_iters  # converged inside a block: frozen iterations ran
    np.testing.assert_array_equal(outs[1][1], outs[0][1])
    np.testing.assert_array_equal(outs[1][0], outs[0][0])


def test_check_interval_stops_on_nonfinite():
    good = fpbench.make_problem(spec("T7-B3-H5-I2", "gru", "float32"))
    x = good.x.copy()
    x[2, 1, 0] = np.nan
    bad = fpbench.Problem(good.spec, x, good.h0, good.params)
    prepared = backend.TorchBackend(check_every=8).prepare(bad, fpbench.Jacobi(50, tol=1e-6), "cpu")
    _, residuals = prepared.to_host(prepared.run())
    assert len(residuals) == 1 and np.isnan(residuals[0])


def test_float32_precision_guard_restores_caller_settings():
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        with backend._ieee_fp32():
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.backends.cudnn.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_threads_come_from_fpbench_threads():
    """Applied when a solve is prepared; a query (devices, available_backends, info) leaves
    the caller's thread count alone."""
    code = (
        "import torch, fpbench; torch.set_num_threads(2); b = fpbench.get_backend('torch'); "
        "fpbench.available_backends(); b.devices(); b.info(); print(torch.get_num_threads()); "
        "p = fpbench.make_problem(fpbench.RNNSpec(cell='elman', seq_len=4, batch=1, input_size=2, "
        "hidden_size=2)); fpbench.solve(p, fpbench.Sequential(), 'torch'); "
        "print(torch.get_num_threads(), b.info()['torch_threads'])"
    )
    env = {**os.environ, "FPBENCH_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "1", "1"]


def test_bad_fpbench_threads_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backend, "_threads", None)  # as if first used now
    monkeypatch.setenv("FPBENCH_THREADS", "zero")
    with pytest.raises(ValueError, match="FPBENCH_THREADS must be a positive integer"):
        backend.TorchBackend().prepare(fpbench.make_problem(TINY), fpbench.Sequential(), "cpu")


@pytest.mark.parametrize("damping", [0.0, 0.05, 1.0, 30.0])
@pytest.mark.parametrize("full", [True, False], ids=["full", "diagonal"])
@pytest.mark.parametrize("T", [1, 2, 7, 16])
def test_parallel_kalman_smoother_matches_sequential(T, full, damping):
    """ELK's damped step by the parallel filter/smoother equals the float64 reference's
    sequential Kalman filter + RTS smoother; damping = 0 is the plain linear recurrence."""
    rng = np.random.default_rng(T)
    B, S = 3, 4
    A = rng.uniform(-0.5, 0.5, size=(T, B, S, S) if full else (T, B, S))
    b, y = rng.standard_normal((T, B, S)), rng.standard_normal((T, B, S))
    s0 = rng.standard_normal((B, S))
    expected = fpbench.reference.kalman_smoother(A, b, y, s0, damping)
    if damping == 0:
        np.testing.assert_allclose(expected, fpbench.reference.linear_recurrence(A, b, s0), atol=1e-12)
    # the backend's layout: batch-major, the known s0 folded into the first step
    A_bm, b_bm = np.swapaxes(A, 0, 1).copy(), np.swapaxes(b, 0, 1).copy()
    b_bm[:, 0] = fpbench.reference._apply(A[0], s0) + b[0]
    A_bm[:, 0] = 0.0
    scanner = scan._Scan(B * T, S, full, torch.float64, torch.device("cpu"))
    got = kalman._kalman_smoother(
        torch.tensor(A_bm), torch.tensor(b_bm), torch.tensor(np.swapaxes(y, 0, 1)), damping, full, scanner
    )
    np.testing.assert_allclose(got.transpose(0, 1).numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("T", [1, 2, 5, 8, 13])
def test_associative_scan_is_an_inclusive_prefix(T, reverse):
    """Any length, with a non-commutative operator (2x2 products, later on the left), over
    axis 0 of time-major tensors; reversed, from the end."""
    rng = np.random.default_rng(T)
    M = torch.tensor(rng.standard_normal((T, 2, 2, 2)))
    (got,) = ops.OPS.scan(lambda a, b: [b[0] @ a[0]], [M], reverse)
    order = range(T - 1, -1, -1) if reverse else range(T)
    expected, acc = M.clone(), None
    for t in order:
        acc = M[t] if acc is None else M[t] @ acc
        expected[t] = acc
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12)


@pytest.mark.parametrize("full", [True, False], ids=["full", "diagonal"])
@pytest.mark.parametrize("T", [1, 6, 11])
def test_in_place_fast_paths_are_the_shared_algorithms(T, full):
    """The in-place :class:`_Scan` and ``_kalman_smoother`` (the forward's fast paths) give
    the shared layer's ``linear_recurrence`` and ``kalman_smoother`` run with torch's OPS."""
    from backends.shared import linear

    rng = np.random.default_rng(T)
    B, S = 2, 3
    A = torch.tensor(rng.uniform(-0.6, 0.6, size=(T, B, S, S) if full else (T, B, S)))
    A[0] = 0.0
    b, y = (torch.tensor(rng.standard_normal((T, B, S))) for _ in range(2))

    def batch_major(a: torch.Tensor) -> torch.Tensor:  # a copy: the fast paths overwrite it
        return a.transpose(0, 1).contiguous().clone()

    scanner = scan._Scan(B * T, S, full, torch.float64, torch.device("cpu"))
    got = batch_major(b)
    scanner(batch_major(A).view(B * T, *A.shape[2:]), got.view(B * T, S))
    want = linear.linear_recurrence(ops.OPS, full, A, b)
    np.testing.assert_allclose(got.transpose(0, 1).numpy(), want.numpy(), rtol=1e-12, atol=1e-12)
    got = kalman._kalman_smoother(batch_major(A), batch_major(b), batch_major(y), 0.7, full, scanner)
    want = linear.kalman_smoother(ops.OPS, full, A, b, y, 0.7)
    np.testing.assert_allclose(got.transpose(0, 1).numpy(), want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_native_lstm_recovers_the_cell_states(dtype):
    """torch.nn.LSTM returns only the last c; the backend recovers every c_t."""
    problem = fpbench.make_problem(spec("T64-B4-H8-I3-rho1.0", "lstm", dtype))
    got = fpbench.solve(problem, fpbench.Native(), backend="torch")
    expected = fpbench.reference.sequential(problem)[..., problem.spec.hidden_size :]
    assert_close("native lstm c", got.cell_states, expected, dtype)


def test_cell_without_an_entry_runs_the_shared_maths(monkeypatch):
    """CELL_KERNELS holds only hand-tuned overrides: without gru's, every solver (and the
    floor) runs the shared cell maths and still matches the reference."""
    monkeypatch.delitem(kernels.CELL_KERNELS, "gru")
    assert kernels._kernels_for("gru") is kernels._Kernels
    problem = fpbench.make_problem(spec("T7-B3-H5-I2", "gru", "float64"))
    exact = fpbench.reference_states(problem)
    for solver in (fpbench.Native(), fpbench.Sequential(), fpbench.Jacobi(7), fpbench.Newton(7)):
        assert_close(
            f"shared maths {solver}", fpbench.solve(problem, solver, "torch").states, exact, "float64"
        )
    backend.TorchBackend().iteration_floor(problem, "cpu")()


@pytest.mark.parametrize("cell", list(kernels.CELL_KERNELS))
def test_cell_kernels_match_the_shared_cell_maths(cell):
    """The table's (possibly hand-tuned) apply and linearise equal fpbench.cells'."""
    problem = fpbench.make_problem(spec("T7-B3-H5-I2", cell, "float64"))
    s, H, rows = problem.spec, problem.spec.hidden_size, 7 * 3
    kern = kernels.CELL_KERNELS[cell](problem, torch.device("cpu"), rows, rows)
    x = torch.tensor(problem.x).view(rows, -1)
    states = torch.tensor(np.random.default_rng(1).uniform(-1, 1, size=(rows, s.state_size)))
    params = {k: torch.tensor(v) for k, v in problem.params.items()}
    gi = x @ params["weight_ih"].T + params["bias_ih"]
    gh = states[:, :H] @ params["weight_hh"].T + params["bias_hh"]
    f, c, d = s.model.linearise(torch, states, gi, gh)
    out = torch.empty(rows, s.state_size, dtype=torch.float64)
    kern.project(x)
    kern.apply(states, out, slice(None))
    torch.testing.assert_close(out, f, rtol=1e-12, atol=1e-12)
    kern.project_linearise(x)
    U = torch.empty(rows, s.gates * H, dtype=torch.float64)
    got = kern.linearise(states, U)
    if got[2] is None:  # a hand-tuned entry's "d is zero"
        assert not d.any()
        got = (*got[:2], torch.zeros_like(d))
    for g, want in zip(got, (f, c, d), strict=True):
        torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)


# -- Chunked: the folded windows through torch.nn (backends.torch.chunked) ---------------------


def _small(cell: str, T: int) -> fpbench.Problem:
    spec_ = fpbench.RNNSpec(
        cell=cell, dtype="float64", seq_len=T, batch=2, hidden_size=4, input_size=3, seed=T
    )
    return fpbench.make_problem(spec_)


@pytest.mark.parametrize(
    ("T", "chunks", "overlap"),
    [(1, 3, 2), (5, 8, 1), (10, 3, 0), (10, 4, 7), (11, 4, 2), (13, 5, 30)],
    ids=lambda v: str(v),
)
@pytest.mark.parametrize("cell", list(fpbench.CELLS))
def test_chunked_fold_matches_reference(cell, T, chunks, overlap):
    """The fold with padding (T not divisible by the chunks, more chunks than steps, an
    overlap longer than a chunk or the sequence), every budget, with and without tol:
    the reference's states, iteration counts and residuals."""
    problem = _small(cell, T)
    for solver in (
        *(fpbench.Chunked(k, chunks=chunks, overlap=overlap) for k in range(1, chunks + 1)),
        fpbench.Chunked(50, tol=1e-4, chunks=chunks, overlap=overlap),
    ):
        got = fpbench.solve(problem, solver, backend="torch")
        ref = fpbench.solve(problem, solver, backend="numpy")
        assert got.iterations == ref.iterations, solver
        if ref.residuals[-1] != 0.0:  # (a rerun that changes nothing is 0 only to rounding here)
            assert got.converged == ref.converged, solver
        np.testing.assert_allclose(got.residuals, ref.residuals, rtol=1e-9, atol=1e-12)
        assert_close(f"chunked {solver}", got.states, ref.states, "float64")
        if fpbench.CELLS[cell].has_cell_state:
            assert_close(f"chunked {solver} c", got.cell_states, ref.cell_states, "float64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", list(fpbench.CELLS))
def test_chunked_one_chunk_is_sequential(cell, dtype):
    """chunks = 1: one window, the whole sequence from s0, so the exact states in one
    iteration (to rounding: the nn module against the backend's own sequential loop)."""
    problem = fpbench.make_problem(spec("T64-B4-H8-I3-rho1.0", cell, dtype))
    got = fpbench.solve(problem, fpbench.Chunked(5, chunks=1, overlap=3), backend="torch")
    seq = fpbench.solve(problem, fpbench.Sequential(), backend="torch")
    assert got.iterations == 1 and got.converged
    assert_close("chunks=1 vs sequential", got.states, seq.states, dtype)
    if fpbench.CELLS[cell].has_cell_state:
        assert_close("chunks=1 vs sequential c", got.cell_states, seq.cell_states, dtype)


@pytest.mark.parametrize("backward", ["implicit", "unrolled"])
@pytest.mark.parametrize("cell", list(fpbench.CELLS))
def test_chunked_exact_budget_gradient_is_bptt(cell, backward):
    """A budget of as many iterations as chunks makes both backwards the exact gradient:
    the chunked adjoint is exact after that many iterations too, and the unrolled
    iterations (the nn module's windows, lstm's c recovered differentiably) compose to the
    recurrence itself."""
    problem = fpbench.make_problem(spec("T33-B2-H16-I4-rho0.5", cell, "float64"))
    solver = fpbench.Chunked(5, chunks=5, overlap=2, backward=backward)
    got = fpbench.grad(problem, solver, backend="torch")
    bptt = fpbench.grad(problem, fpbench.Sequential(), backend="numpy")
    assert got.forward.iterations == 5 and got.forward.converged
    assert len(got.backward.residuals) == (5 if backward == "implicit" else 0)
    np.testing.assert_allclose(got.states, bptt.states, rtol=0, atol=1e-12)
    assert_grad_close(f"chunked {backward} vs bptt", got.arrays(), bptt.arrays(), "float64")


@pytest.mark.parametrize("cell", ["gru_diag", "lstm_cifg_diag", "lstm"])
def test_newton_on_a_diagonal_cell_forms_no_state_by_state_matrix(cell):
    """Newton and ELK on a diagonal cell, forward and both backwards, create no tensor whose
    last two axes are ``S x S`` (every operation's outputs, recorded below autograd); the
    dense lstm of the same size, the control, does."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Shapes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[tuple[int, ...]] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.seen.update(tuple(t.shape[-2:]) for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            return out

    problem = fpbench.make_problem(
        fpbench.RNNSpec(cell=cell, input_size=3, hidden_size=5, seq_len=6, batch=2, dtype="float64")
    )
    S = problem.spec.state_size
    found = []
    for run in (
        lambda: fpbench.solve(problem, fpbench.Newton(2), backend="torch"),
        lambda: fpbench.solve(problem, fpbench.ELK(2), backend="torch"),
        lambda: fpbench.grad(problem, fpbench.Newton(2), backend="torch"),
        lambda: fpbench.grad(problem, fpbench.Newton(2, backward="unrolled"), backend="torch"),
    ):
        with Shapes() as shapes:
            run()
        found.append((S, S) in shapes.seen)
    assert found == [cell == "lstm"] * 4
