"""JAX-specific behaviour: x64 handling without global state, thread settings, the floor."""

import re
from contextlib import contextmanager
from functools import partial

import numpy as np
import pytest
from problems import spec

import fpbench
from fpbench import cells, reference
from fpbench.testing import assert_close

pytestmark = pytest.mark.backend("jax")

jax = pytest.importorskip("jax")
backend_module = pytest.importorskip("backends.jax.backend")
from backends.jax import ops, runtime  # noqa: E402  (after the skip: JAX is installed)
from backends.jax.grad import UNROLLED_CHECKPOINT_ABOVE, unrolled_chunks  # noqa: E402
from backends.shared import linear  # noqa: E402
from backends.shared.iteration import max_change  # noqa: E402


@pytest.fixture
def backend():
    return fpbench.get_backend("jax")


def test_float64_prepared_then_run_outside_the_x64_context(backend):
    problem = fpbench.make_problem(spec("T33-B2-H16-I4-rho0.5", "gru", "float64"))
    solver = fpbench.Newton(max_iters=3)
    prepared = backend.prepare(problem, solver, "cpu")
    # prepare leaves the caller's JAX in float32 mode...
    assert not jax.config.jax_enable_x64
    assert jax.numpy.zeros(1).dtype == np.float32
    # ...and the compiled float64 program still computes in float64 outside the context.
    out = prepared.run()
    assert out[0].dtype == np.float64
    states, residuals = prepared.to_host(out)
    expected, expected_res = reference.fixed_point(problem, solver)
    assert states.dtype == np.float64 and len(residuals) == 3
    assert_close("float64 run outside x64", states, expected, "float64")
    np.testing.assert_allclose(residuals, expected_res, rtol=1e-9)


def test_float32_ignores_a_caller_x64_setting(backend):
    problem = fpbench.make_problem(spec("T7-B3-H5-I2", "elman", "float32"))
    solver = fpbench.Jacobi(max_iters=4)
    plain = backend.prepare(problem, solver, "cpu")
    with jax.enable_x64(True):
        under_x64 = backend.prepare(problem, solver, "cpu")
    a, b = plain.to_host(plain.run()), under_x64.to_host(under_x64.run())
    assert a[0].dtype == b[0].dtype == np.float32
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_info_reports_threads_flags_and_cache(backend):
    info = backend.info()
    assert info["jax"] == jax.__version__
    assert info["jax_threads"].split()[0] == str(runtime._start()[0])
    assert "xla_cpu_multi_thread_eigen" in info["XLA_FLAGS"]
    assert info["PJRT_NPROC"] and info["jax_compilation_cache"]


@pytest.mark.parametrize("cell", list(fpbench.CELLS))
def test_iteration_floor_computes_one_cell_step_per_row(backend, cell):
    problem = fpbench.make_problem(spec("T7-B3-H5-I2", cell, "float64"))
    s = problem.spec
    out = np.asarray(backend.iteration_floor(problem, "cpu")())
    gi = cells.CELLS[cell].input_projection(np, problem.params, problem.x)
    h = np.broadcast_to(problem.s0, (s.seq_len, s.batch, s.state_size))
    expected = cells.CELLS[cell].step(np, problem.params, h, gi).reshape(-1, s.state_size)
    assert_close("floor", out, expected, "float64")


@pytest.mark.parametrize("damping", [0.0, 0.05, 1.0, 20.0])
@pytest.mark.parametrize("full", [True, False], ids=["full", "diagonal"])
def test_parallel_kalman_smoother_matches_the_sequential_reference(full, damping):
    """The associative-scan filter and smoother solve ELK's damped step exactly (damping 0:
    the plain linear recurrence), for transitions that are neither small nor symmetric."""
    rng = np.random.default_rng(1)
    T, B, S = 37, 3, 6
    A = rng.normal(scale=0.6, size=(T, B, S, S) if full else (T, B, S))
    b, y, s0 = rng.normal(size=(T, B, S)), rng.normal(size=(T, B, S)), rng.normal(size=(B, S))
    expected = reference.kalman_smoother(A, b, y, s0, damping)
    # the backend's form: the known s0 folded into the first step (A_1 = 0, b_1 = A_1 s0 + b_1)
    b_dev = b.copy()
    b_dev[0] = (A[0] @ s0[..., None])[..., 0] + b[0] if full else A[0] * s0 + b[0]
    A_dev = A.copy()
    A_dev[0] = 0.0
    with jax.enable_x64(True):
        smoother = jax.jit(partial(linear.kalman_smoother, ops.OPS), static_argnums=0)
        got = smoother(full, A_dev, b_dev, y, damping)
        got = np.asarray(got)
    # 1e-7: these transitions grow the filter's covariances by orders of magnitude over T, so
    # the smoother's gains are ill-conditioned solves; float64 rounding differs by ~1e-8
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-7)
    if damping == 0.0:
        np.testing.assert_allclose(got, reference.linear_recurrence(A, b, s0), rtol=1e-7, atol=1e-7)


def test_same_program_and_shapes_reuse_the_executable():
    """A second problem of the same shapes (new values: a training step) compiles nothing
    new and still computes with its own values."""
    solver = fpbench.Newton(max_iters=8, tol=1e-9)
    a = fpbench.make_problem(
        fpbench.RNNSpec(cell="gru", input_size=3, hidden_size=5, seq_len=8, batch=2, seed=1)
    )
    b = fpbench.make_problem(
        fpbench.RNNSpec(cell="gru", input_size=3, hidden_size=5, seq_len=8, batch=2, seed=2)
    )
    fpbench.solve(a, solver, backend="jax")
    compiled = len(runtime._EXECUTABLES)
    got = fpbench.solve(b, solver, backend="jax")
    assert len(runtime._EXECUTABLES) == compiled
    assert_close("reused executable", got.states, fpbench.reference_states(b), "float32")


@pytest.mark.parametrize(
    "make",
    [
        lambda k: fpbench.Jacobi(k),
        lambda k: fpbench.Newton(k, tol=1e-9),
        lambda k: fpbench.QuasiNewton(k, backward="implicit"),
        lambda k: fpbench.Chunked(k, chunks=20, overlap=1),
    ],
    ids=["jacobi", "newton-tol", "quasi_newton", "chunked"],
)
def test_budgets_share_one_program_and_each_runs_its_own(make):
    """The iteration cap is a runtime argument (the residual buffer is rounded up to
    ``RESIDUAL_SLOTS``), so budgets 2, 5 and 16 run one compiled program (a budget sweep's
    processes share one persistent-cache entry), each exactly its own number of
    iterations, forward and gradient alike."""
    problem = fpbench.make_problem(
        fpbench.RNNSpec(cell="elman", input_size=3, hidden_size=4, seq_len=40, batch=2, dtype="float64")
    )
    backend = fpbench.get_backend("jax")
    ct = fpbench.default_cotangent(problem.spec)
    for k in (2, 5, 16):
        solver = make(k)
        if k == 5:
            compiled = len(runtime._EXECUTABLES)
        got = fpbench.solve(problem, solver, backend="jax")
        ref_states, ref_res = reference.fixed_point(problem, solver)
        assert got.iterations == len(ref_res) and len(ref_res) <= k
        np.testing.assert_allclose(got.residuals, ref_res, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(got.states, ref_states[..., :4], rtol=0, atol=1e-12)
        prepared = backend.prepare_grad(problem, solver, "cpu", ct)
        host = prepared.to_host(prepared.run())
        assert len(host.residuals) == got.iterations
    assert len(runtime._EXECUTABLES) == compiled  # budgets 5 and 16 compiled nothing new


def test_kept_executables_are_bounded_and_most_recent_first(monkeypatch):
    """Every kept XLA executable holds memory mappings of its compiled code: kept without
    bound, a test session reached the kernel's ``vm.max_map_count`` and XLA aborted the
    process. The backend keeps the most recently used ``EXECUTABLES_KEPT`` only."""
    monkeypatch.setattr(runtime, "EXECUTABLES_KEPT", 2)
    solver = fpbench.Jacobi(3)
    problems = [
        fpbench.make_problem(fpbench.RNNSpec(input_size=2, hidden_size=3, seq_len=t, batch=1))
        for t in (5, 6, 7)
    ]
    for p in problems:
        fpbench.solve(p, solver, backend="jax")
    assert len(runtime._EXECUTABLES) == 2
    kept = list(runtime._EXECUTABLES.values())
    fpbench.solve(problems[1], solver, backend="jax")  # a hit: reused, and now the most recent
    assert list(runtime._EXECUTABLES.values()) == [kept[1], kept[0]]


def test_small_solves_match_numpy_and_pivot():
    """``_solve`` (Gauss-Jordan in plain XLA operations) against NumPy, on a batch whose
    first matrix has a zero leading entry (it needs a row swap)."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 5, 5)) + 5 * np.eye(5)
    A[0, 0, 0] = 0.0
    R = rng.normal(size=(3, 5, 4))
    with jax.enable_x64(True):
        got = np.asarray(ops._solve(jax.numpy.asarray(A), jax.numpy.asarray(R)))
    np.testing.assert_allclose(got, np.linalg.solve(A, R), rtol=1e-10, atol=1e-12)


@contextmanager
def _compiled_texts():
    """The StableHLO text of every program the backend compiles inside the block (a list,
    filled as they compile)."""
    texts = []
    real = backend_module._compile

    def spy(fn, args, dtype):
        texts.append(jax.jit(fn).lower(*args).as_text())
        return real(fn, args, dtype)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backend_module, "_compile", spy)
        yield texts


@pytest.mark.parametrize("backward", ["forward-only", "implicit", "unrolled"])
def test_damped_programs_have_no_lapack_custom_calls(backward):
    """jaxlib's CPU LAPACK calls wait on XLA's intra-op pool from a thread of that pool; inside
    the ELK scans that deadlocked a test session. ELK's programs, forward and backward, must
    hold no custom call (the old ones held LU factorisations and solves)."""
    problem = fpbench.make_problem(
        fpbench.RNNSpec(cell="lstm", input_size=2, hidden_size=3, seq_len=6, batch=2)
    )
    solver = fpbench.ELK(3, damping=0.3, **({} if backward == "forward-only" else {"backward": backward}))
    with _compiled_texts() as texts:
        if backward == "forward-only":
            fpbench.solve(problem, solver, backend="jax")
        else:
            fpbench.grad(problem, solver, backend="jax")
    assert texts and not any("custom_call" in t for t in texts)


def test_unrolled_chunks_cover_the_cap():
    assert unrolled_chunks(1) == (1, 1)
    assert unrolled_chunks(UNROLLED_CHECKPOINT_ABOVE) == (1, 64)
    for cap in (65, 70, 100, 2048, 4099):
        chunks, length = unrolled_chunks(cap)
        assert chunks * length >= cap > (chunks - 1) * length and length * length >= cap
        assert chunks + length <= 2 * np.sqrt(cap) + 2


@pytest.mark.parametrize("solver_id", ["to-tol", "fixed-70"])
def test_checkpointed_unrolled_gradient_matches_the_reference(solver_id):
    """Above 64 iterations the unrolled backward runs over checkpointed chunks; its gradient
    is still the exact gradient of the iterations that ran (the NumPy reference's), both when
    the forward stops early in the first chunk and when all 70 run (the last chunk is partial)."""
    problem = fpbench.make_problem(
        fpbench.RNNSpec(
            cell="gru", input_size=3, hidden_size=4, seq_len=100, batch=2, contraction=0.6, dtype="float64"
        )
    )
    solver = {
        "to-tol": fpbench.Jacobi(100, tol=1e-8, backward="unrolled"),
        "fixed-70": fpbench.Jacobi(70, backward="unrolled"),
    }[solver_id]
    assert unrolled_chunks(fpbench.iteration_cap(solver, 100))[0] > 1
    got = fpbench.grad(problem, solver, backend="jax")
    ref = fpbench.grad(problem, solver)
    assert got.forward.iterations == ref.forward.iterations
    np.testing.assert_allclose(got.forward.residuals, ref.forward.residuals, rtol=1e-9, atol=1e-14)
    for name, value in ref.arrays().items():
        np.testing.assert_allclose(got.arrays()[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


def test_unrolled_backward_to_tolerance_does_not_keep_every_capped_iteration():
    """A scan keeps its body's intermediates for its whole length, run or skipped: unrolled
    Jacobi to tolerance at T = 512 once asked for ~cap x T x B x S items (20x slower than
    torch at T = 2048): XLA's own memory plan held ~11 states per capped iteration (93 MB
    here). Checkpointed, it holds less than one (6 MB)."""
    T, B, H = 512, 2, 4
    problem = fpbench.make_problem(
        fpbench.RNNSpec(
            cell="gru", input_size=3, hidden_size=H, seq_len=T, batch=B, contraction=0.6, dtype="float32"
        )
    )
    solver = fpbench.Jacobi(T, tol=1e-4, backward="unrolled")
    plans = []
    real = backend_module._compile

    def spy(fn, args, dtype):
        plans.append(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)
        return real(fn, args, dtype)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backend_module, "_compile", spy)
        fpbench.grad(problem, solver, backend="jax")
    one_state_per_iteration = T * (T * B * H * 4)
    assert plans and max(plans) < one_state_per_iteration, (plans, one_state_per_iteration)


def test_solve_gradient_is_the_solve_adjoint():
    """``X = A^-1 R``, ``L = sum(W * X)``: ``dL/dR = A^-T W`` and ``dL/dA = -A^-T W X^T``."""
    rng = np.random.default_rng(3)
    n, r = 5, 2
    A = np.eye(n) * 3 + rng.normal(size=(4, n, n))
    R, W = rng.normal(size=(4, n, r)), rng.normal(size=(4, n, r))
    with jax.enable_x64(True):
        dA, dR = jax.grad(lambda A, R: (W * ops._solve(A, R)).sum(), argnums=(0, 1))(A, R)
    X = np.linalg.solve(A, R)
    R_bar = np.linalg.solve(np.swapaxes(A, -1, -2), W)
    np.testing.assert_allclose(dR, R_bar, rtol=1e-10)
    np.testing.assert_allclose(dA, -R_bar @ np.swapaxes(X, -1, -2), rtol=1e-10)


def test_solve_backward_keeps_no_elimination_steps():
    """Autodiff through the Gauss-Jordan loop kept all n of its n x (n + r) matrices per
    solve (~8 S^3 items per row and iteration of ELK's unrolled backward, 84 s a run at
    T = 2048); the solve's adjoint keeps A and X."""
    n, r, batch = 16, 1, 256
    A = jax.numpy.eye(n, dtype="float32") + 0.01 * jax.numpy.ones((batch, n, n), "float32")
    R = jax.numpy.ones((batch, n, r), "float32")
    grad = jax.jit(jax.grad(lambda A, R: ops._solve(A, R).sum(), argnums=(0, 1)))
    temp = grad.lower(A, R).compile().memory_analysis().temp_size_in_bytes
    one_elimination = batch * n * (n + r) * 4
    assert temp < n // 2 * one_elimination, (temp, one_elimination)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_change_is_exact_and_reports_a_nan_anywhere(dtype):
    """``max_change`` in JAX at a solve's size (where XLA's CPU ``max`` reduction drops NaNs): the
    exact ``max |new - old|``, NaN for a NaN at any position of ``new``, non-finite for an
    infinity, from a finite ``old`` (every solver loop's invariant)."""
    rng = np.random.default_rng(0)
    new = rng.standard_normal((512, 8, 64)).astype(dtype)
    old = rng.standard_normal(new.shape).astype(dtype)
    with jax.enable_x64(dtype == "float64"):
        change = jax.jit(partial(max_change, jax.numpy))
        assert change(new, old) == np.max(np.abs(new - old))
        for pos in [(0, 0, 0), (40, 1, 0), (300, 5, 17), (511, 7, 63)]:
            bad = new.copy()
            bad[pos] = np.nan
            assert np.isnan(change(bad, old)), pos
            bad[pos] = -np.inf
            assert not np.isfinite(change(bad, old)), pos


# -- Chunked: the windows folded into the batch (backends/jax/chunked.py) -------------------


@pytest.mark.parametrize(
    ("T", "chunks", "overlap", "max_iters", "tol"),
    [
        (10, 4, 0, 2, None),
        (10, 6, 2, 5, None),
        (7, 100, 1, 3, None),
        (23, 5, 3, 50, 1e-6),
        (23, 7, 9, 7, None),
    ],
    ids=["T10-P4-short-last", "T10-P6-fewer-chunks", "P-over-T", "T23-P5-tol", "overlap-reaches-s0"],
)
def test_chunked_layouts_match_the_reference(T, chunks, overlap, max_iters, tol):
    """The fold with padding (the last chunk shorter, windows clipped at T - 1), fewer effective
    chunks than asked, P > T, and overlaps that reach step 0 from several chunks: the states and
    every residual as the reference's, forward and through the implicit adjoint."""
    problem = fpbench.make_problem(
        fpbench.RNNSpec(cell="lstm", input_size=2, hidden_size=3, seq_len=T, batch=2, dtype="float64")
    )
    solver = fpbench.Chunked(max_iters, tol=tol, chunks=chunks, overlap=overlap)
    got, ref = fpbench.grad(problem, solver, backend="jax"), fpbench.grad(problem, solver)
    assert got.backward.method == ref.backward.method == "implicit: chunked adjoint"
    for name, g, r in [("forward", got.forward, ref.forward), ("backward", got.backward, ref.backward)]:
        assert g.iterations == r.iterations, name
        np.testing.assert_allclose(g.residuals, r.residuals, rtol=1e-9, atol=1e-15, err_msg=name)
    np.testing.assert_allclose(got.states, ref.states, rtol=0, atol=1e-12)
    for name, value in ref.arrays().items():
        np.testing.assert_allclose(got.arrays()[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cell", list(fpbench.CELLS))
def test_one_chunk_is_the_native_scan(cell):
    """chunks=1: one window from s0 over the whole sequence by Native's step: the same
    operations, so the same bits."""
    problem = fpbench.make_problem(spec("T33-B2-H16-I4-rho0.5", cell, "float32"))
    got = fpbench.solve(problem, fpbench.Chunked(5, chunks=1, overlap=4), backend="jax")
    seq = fpbench.solve(problem, fpbench.Native(), backend="jax")
    assert got.iterations == 1 and got.converged
    np.testing.assert_array_equal(got.states, seq.states)


def test_chunked_tol_stops_reruns_early_and_one_program_serves_every_tol():
    """A loose tol stops reruns after a few steps (later steps keep their old values, so the
    states differ from the full reruns' as the reference's do), and tol is a runtime argument:
    a second tol compiles nothing new."""
    problem = fpbench.make_problem(
        fpbench.RNNSpec(cell="gru", input_size=3, hidden_size=4, seq_len=60, batch=2, dtype="float64")
    )
    loose, tight = (fpbench.Chunked(4, tol=t, chunks=4, overlap=1) for t in (1e-2, 1e-12))
    got = fpbench.solve(problem, loose, backend="jax")
    compiled = len(runtime._EXECUTABLES)
    full = fpbench.solve(problem, tight, backend="jax")
    assert len(runtime._EXECUTABLES) == compiled
    ref_states, ref_res = reference.fixed_point(problem, loose)
    np.testing.assert_allclose(got.residuals, ref_res, rtol=1e-9)
    np.testing.assert_allclose(got.states, ref_states[..., :4], rtol=0, atol=1e-12)
    assert np.abs(got.states - full.states).max() > 1e-6  # the mask kept old values somewhere


def test_chunked_unrolled_over_checkpointed_iterations_matches_the_reference():
    """80 chunks: a cap above 64, so the unrolled backward runs over checkpointed chunks of
    iterations (:func:`backends.jax.grad._unrolled_iterate`), stopping early at tol."""
    problem = fpbench.make_problem(
        fpbench.RNNSpec(
            cell="elman", input_size=2, hidden_size=3, seq_len=80, batch=2, contraction=0.6, dtype="float64"
        )
    )
    solver = fpbench.Chunked(100, tol=1e-9, chunks=80, overlap=1, backward="unrolled")
    assert unrolled_chunks(fpbench.iteration_cap(solver, 80))[0] > 1
    got, ref = fpbench.grad(problem, solver, backend="jax"), fpbench.grad(problem, solver)
    assert got.forward.iterations == ref.forward.iterations < 80
    np.testing.assert_allclose(got.forward.residuals, ref.forward.residuals, rtol=1e-9, atol=1e-15)
    for name, value in ref.arrays().items():
        np.testing.assert_allclose(got.arrays()[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cell", ["gru_diag", "lstm_cifg_diag", "lstm"])
def test_newton_on_a_diagonal_cell_forms_no_state_by_state_matrix(cell):
    """Newton and ELK on a diagonal cell, forward and both backwards, compile to programs
    with no ``S x S`` array (its per-unit ``P x P`` blocks instead); the dense lstm of the
    same size, the control, has them."""
    problem = fpbench.make_problem(
        fpbench.RNNSpec(cell=cell, input_size=3, hidden_size=5, seq_len=6, batch=2, dtype="float64")
    )
    S = problem.spec.state_size
    with _compiled_texts() as texts:
        fpbench.solve(problem, fpbench.Newton(2), backend="jax")
        fpbench.solve(problem, fpbench.ELK(2), backend="jax")
        fpbench.grad(problem, fpbench.Newton(2), backend="jax")
        fpbench.grad(problem, fpbench.Newton(2, backward="unrolled"), backend="jax")
    square = re.compile(rf"[<x]{S}x{S}xf64>")  # a tensor type whose last two axes are S x S
    assert [bool(square.search(t)) for t in texts] == [cell == "lstm"] * 4
