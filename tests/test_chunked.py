"""Chunked (overlapping windows): the spec, on the NumPy float64 reference.

Every backend is held to this reference by the shared cross-backend tests
(``test_backends.py``, ``test_grad.py``); here the reference itself is checked against
brute force and against the properties the solver promises.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fpbench
from fpbench.reference import fixed_point, sequential

CELLS = list(fpbench.CELLS)


def problem_of(cell, T=23, B=2, H=5, I=3, rho=0.8, seed=0):
    return fpbench.make_problem(
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


def full_states(result):
    """``(T, B, S)``: h, and c for lstm (the fixed point is over the pair)."""
    if result.cell_states is None:
        return result.states
    return np.concatenate([result.states, result.cell_states], axis=-1)


def brute_force_first_iteration(problem, chunks, overlap):
    """Every chunk run by the plain recurrence on a copy of the problem cut to its window:
    from ``s0`` where the window starts at step 0, from the zero state otherwise."""
    T = problem.spec.seq_len
    lay = fpbench.Chunked(1, chunks=chunks, overlap=overlap).layout(T)
    out = np.empty_like(sequential(problem))
    for a, s, e in zip(lay.warm_starts, lay.starts, lay.ends, strict=True):
        sub_spec = dataclasses.replace(problem.spec, seq_len=e - a)
        zero = None if a == 0 else np.zeros_like
        sub = fpbench.Problem(
            sub_spec,
            problem.x[a:e],
            problem.h0 if zero is None else zero(problem.h0),
            problem.params,
            None if problem.c0 is None else problem.c0 if zero is None else zero(problem.c0),
        )
        out[s:e] = sequential(sub)[s - a :]
    return out


# -- the layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("T", "P", "overlap", "length", "chunks", "window"),
    [
        (10, 4, 0, 3, 4, 3),
        (10, 6, 2, 2, 5, 4),
        (7, 100, 1, 1, 7, 2),
        (5, 1, 9, 5, 1, 5),
        (4096, 8, 64, 512, 8, 576),
    ],
    ids=["T10-P4", "T10-P6-fewer", "P-over-T", "one-chunk", "T4096-P8-o64"],
)
def test_layout(T, P, overlap, length, chunks, window):
    lay = fpbench.Chunked(1, chunks=P, overlap=overlap).layout(T)
    assert (lay.length, lay.chunks, lay.window) == (length, chunks, window)
    assert lay.starts[0] == 0 and lay.ends[-1] == T
    assert all(e == s2 for e, s2 in zip(lay.ends, lay.starts[1:], strict=False)), "chunks tile the sequence"
    assert all(e - s == length for s, e in zip(lay.starts[:-1], lay.ends[:-1], strict=True))
    for warm in (True, False):
        first = 0 if warm else min(1, lay.chunks - 1)
        steps, pos, chunk = lay.gather_index(first, warm)
        t = np.arange(lay.starts[first], T)
        assert (steps[pos, chunk] == t).all(), "unfolding reads back the step each state belongs to"
        assert steps.shape[1] == lay.chunks - first and steps.max() <= T - 1


def test_result_reports_the_effective_chunks():
    p = problem_of("elman", T=10)
    assert fpbench.solve(p, fpbench.Chunked(3, chunks=6)).chunks == 5
    assert fpbench.solve(p, fpbench.Chunked(3, chunks=99)).chunks == 10
    assert fpbench.solve(p, fpbench.Jacobi(3)).chunks is None


# -- the semantics -------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("chunks", "overlap"), [(3, 0), (4, 2), (5, 30), (23, 1), (40, 0)])
def test_budget_of_chunks_is_exact(cell, chunks, overlap):
    p = problem_of(cell)
    solver = fpbench.Chunked(10**6, chunks=chunks, overlap=overlap)
    r = fpbench.solve(p, solver)
    assert r.iterations == solver.exact_after(23) == min(chunks, 23) and r.converged
    np.testing.assert_allclose(full_states(r), sequential(p), rtol=0, atol=1e-13)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("chunks", "overlap"), [(3, 0), (4, 2), (6, 5), (2, 30)])
def test_first_iteration_is_the_brute_force_windowed_run(cell, chunks, overlap):
    p = problem_of(cell)
    r = fpbench.solve(p, fpbench.Chunked(1, chunks=chunks, overlap=overlap))
    np.testing.assert_allclose(
        full_states(r), brute_force_first_iteration(p, chunks, overlap), rtol=0, atol=1e-14
    )
    assert r.residuals == [pytest.approx(np.abs(full_states(r)).max(), abs=0)], "measured against zero"


@pytest.mark.parametrize("cell", CELLS)
def test_i_iterations_make_chunks_1_to_i_exact(cell):
    p = problem_of(cell, T=30, rho=1.0)
    exact = sequential(p)
    lay = fpbench.Chunked(1, chunks=5).layout(30)
    for i in range(1, 5):
        got = full_states(fpbench.solve(p, fpbench.Chunked(i, chunks=5)))
        end = lay.ends[i - 1]
        np.testing.assert_allclose(got[:end], exact[:end], rtol=0, atol=1e-13)
        assert np.abs(got[end:] - exact[end:]).max() > 1e-9, "later chunks are not exact yet"


@pytest.mark.parametrize("cell", CELLS)
def test_one_chunk_is_sequential(cell):
    p = problem_of(cell)
    r = fpbench.solve(p, fpbench.Chunked(5, chunks=1, overlap=3))
    assert r.iterations == 1 and r.converged
    np.testing.assert_array_equal(full_states(r), sequential(p))


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("overlap", [0, 2, 8, 24])
def test_first_iteration_within_the_lipschitz_bound(rho, overlap):
    """After iteration 1 every state ran at least overlap + 1 steps from a zero state, so for
    a contractive Elman cell its error is at most ``L^(overlap + 1) max_t |h_t|``."""
    p = problem_of("elman", T=120, B=3, H=16, I=4, rho=rho, seed=3)
    exact = fpbench.reference_states(p)
    L = np.linalg.norm(p.weight_hh, ord=2)
    states = fpbench.solve(p, fpbench.Chunked(1, chunks=6, overlap=overlap)).states
    err = np.linalg.norm(states - exact, axis=-1).max()
    bound = L ** (overlap + 1) * np.linalg.norm(exact, axis=-1).max()
    assert err <= bound * (1 + 1e-9), (err, bound)


def test_residuals_and_stopping_at_tol():
    """Later residuals are max |new - old| over the steps that ran; the solve stops after
    the first one <= tol, so a tol far below the truncation error runs to exactness."""
    p = problem_of("gru", T=40, rho=0.5)
    exact = sequential(p)
    r1 = fpbench.solve(p, fpbench.Chunked(1, chunks=4, overlap=3))
    r2 = fpbench.solve(p, fpbench.Chunked(2, chunks=4, overlap=3))
    assert r2.residuals[0] == r1.residuals[0]
    assert r2.residuals[1] == pytest.approx(np.abs(full_states(r2) - full_states(r1)).max(), rel=1e-12)
    loose_tol = 0.99 * r1.residuals[0]  # iteration 1's residual (against zero) is max |h|
    loose = fpbench.solve(p, fpbench.Chunked(50, tol=loose_tol, chunks=4, overlap=3))
    assert loose.iterations == 2 and loose.converged, "iteration 1 passes only a tol >= max|h|"
    tight = fpbench.solve(p, fpbench.Chunked(50, tol=1e-12, chunks=4, overlap=3))
    assert tight.converged and tight.iterations == 4, "a tol below rounding runs every chunk: exact"
    np.testing.assert_allclose(full_states(tight), exact, rtol=0, atol=1e-11)


def test_a_rerun_stops_where_the_states_stop_moving():
    """With a tol, a chunk's rerun writes up to the first step that moved by <= tol and the
    steps after it keep the previous iterate's values."""
    p = problem_of("elman", T=40, rho=0.3)
    tol = 1e-6
    first = full_states(fpbench.solve(p, fpbench.Chunked(1, chunks=2, overlap=0)))
    second = full_states(fpbench.solve(p, fpbench.Chunked(2, tol=tol, chunks=2, overlap=0)))
    moved = np.abs(second[20:] - first[20:]).max(axis=(1, 2))
    rerun = np.abs(sequential(p)[20:] - first[20:]).max(axis=(1, 2))
    stop = int(np.argmax(rerun <= tol))
    assert 0 < stop < 19, "the test needs a stop inside the chunk"
    np.testing.assert_allclose(moved[: stop + 1], rerun[: stop + 1], rtol=1e-9, atol=0)
    assert (moved[stop + 1 :] == 0).all()


# -- the backward pass ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_implicit_gradient_with_a_budget_of_chunks_is_exact(cell):
    p = problem_of(cell)
    exact = fpbench.grad(p, fpbench.Sequential())
    g = fpbench.grad(p, fpbench.Chunked(4, chunks=4, overlap=2))
    assert g.backward.method == "implicit: chunked adjoint" and g.backward.converged
    assert g.backward.iterations == 4
    fpbench.testing.assert_grad_close("chunked implicit", g.arrays(), exact.arrays(), "float64")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("k", "chunks", "overlap"), [(1, 3, 2), (2, 4, 1), (3, 5, 0)])
def test_unrolled_gradient_matches_finite_differences(cell, k, chunks, overlap):
    from test_grad import assert_matches_fd

    p = problem_of(cell, T=17, H=4)
    solver = fpbench.Chunked(k, chunks=chunks, overlap=overlap, backward="unrolled")
    g = fpbench.grad(p, solver)
    assert g.backward.method == "unrolled"
    assert_matches_fd(p, lambda q: fixed_point(q, solver)[0], g)


@pytest.mark.parametrize("cell", CELLS)
def test_one_iteration_unrolled_is_the_brute_force_windowed_gradient(cell):
    """After one iteration the unrolled gradient is that of the independent windows: the
    gradient of the brute-force windowed run, by finite differences."""
    from test_grad import assert_matches_fd

    p = problem_of(cell, T=15, H=3)
    g = fpbench.grad(p, fpbench.Chunked(1, chunks=3, overlap=2, backward="unrolled"))
    assert_matches_fd(p, lambda q: brute_force_first_iteration(q, 3, 2), g)


# -- errors and properties -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(chunks=0), r"Chunked.chunks must be an integer >= 1, got 0"),
        (dict(chunks=2.5), r"Chunked.chunks must be an integer >= 1"),
        (dict(chunks=True), r"Chunked.chunks must be an integer >= 1"),
        (dict(overlap=-1), r"Chunked.overlap must be an integer >= 0, got -1"),
        (dict(overlap="3"), r"Chunked.overlap must be an integer >= 0"),
    ],
    ids=["chunks-0", "chunks-float", "chunks-bool", "overlap-negative", "overlap-str"],
)
def test_bad_fields_are_clear_errors(fields, match):
    with pytest.raises(ValueError, match=match):
        fpbench.Chunked(3, **fields)


def test_make_solver_round_trip_and_numpy_scalars():
    s = fpbench.Chunked(np.int64(4), tol=1e-5, chunks=np.int32(8), overlap=np.int64(16), backward="unrolled")
    assert type(s.chunks) is int and type(s.overlap) is int
    assert fpbench.make_solver("chunked", **s.fields()) == s
    assert str(s) == "chunked(max_iters=4, tol=1e-05, backward=unrolled, chunks=8, overlap=16)"


@settings(max_examples=30, deadline=None)
@given(
    cell=st.sampled_from(CELLS),
    T=st.integers(1, 30),
    chunks=st.integers(1, 40),
    overlap=st.integers(0, 40),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
)
def test_properties_on_random_problems(cell, T, chunks, overlap, k, seed):
    """Chunks 1..k exact after k iterations; everything exact after all chunks."""
    p = problem_of(cell, T=T, H=3, I=2, rho=1.0, seed=seed)
    exact = sequential(p)
    solver = fpbench.Chunked(k, chunks=chunks, overlap=overlap)
    lay = solver.layout(T)
    got = full_states(fpbench.solve(p, solver))
    end = lay.ends[min(k, lay.chunks) - 1]
    np.testing.assert_allclose(got[:end], exact[:end], rtol=0, atol=1e-12)
    full = full_states(fpbench.solve(p, fpbench.Chunked(T, chunks=chunks, overlap=overlap)))
    np.testing.assert_allclose(full, exact, rtol=0, atol=1e-12)
