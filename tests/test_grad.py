"""Gradients (``fpbench.grad``): the NumPy float64 reference against torch.autograd through
``torch.nn.RNN/GRU/LSTM``, against central finite differences and against the brute-force
k-truncated model; then every backend against the reference.
"""

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from problems import PROBLEMS, case, one_in_three, spec

import fpbench
from fpbench.reference import fixed_point, sequential, truncated
from fpbench.testing import assert_grad_close, grad_errors

CELLS = list(fpbench.CELLS)
TORCH_CELLS = [c for c in CELLS if fpbench.CELLS[c].torch_module]
"""The cells with a ``torch.nn`` module (the external oracle); the diagonal ones have none."""


def problem_of(problem_id, cell, dtype="float64", seed=0):
    return fpbench.make_problem(spec(problem_id, cell, dtype, seed))


def exact(problem, cotangent=None):
    return fpbench.grad(problem, fpbench.Sequential(), cotangent=cotangent)


# -- finite differences ------------------------------------------------------------------------


def inputs_of(problem):
    """Every differentiable input by the name ``GradResult.arrays()`` uses (float64)."""
    out = {**problem.params, "x": problem.x, "h0": problem.h0}
    if problem.c0 is not None:
        out["c0"] = problem.c0
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def with_inputs(problem, arrays):
    p = problem.astype("float64")
    params = {k: arrays[k] for k in p.params}
    return fpbench.Problem(p.spec, arrays["x"], arrays["h0"], params, arrays.get("c0"))


def fd_directional(problem, forward, cotangent, direction, eps=1e-6):
    """Central difference of ``L = sum(cotangent * h)`` along ``direction`` (a dict of arrays),
    with ``forward(problem) -> states (T, B, S)`` in float64."""
    H = problem.spec.hidden_size
    base = inputs_of(problem)
    ct = np.asarray(cotangent, dtype=np.float64)

    def loss(sign):
        p = with_inputs(problem, {k: v + sign * eps * direction[k] for k, v in base.items()})
        return float(np.sum(ct * forward(p)[..., :H]))

    return (loss(1) - loss(-1)) / (2 * eps)


def random_directions(problem, n, seed=1):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(v.shape) for k, v in inputs_of(problem).items()} for _ in range(n)]


def dot(grads, direction):
    return sum(float(np.sum(np.asarray(grads[k], np.float64) * direction[k])) for k in direction)


def assert_matches_fd(problem, forward, g, n=3, rtol=1e-6):
    ct = fpbench.default_cotangent(problem.spec)
    for d in random_directions(problem, n):
        fd = fd_directional(problem, forward, ct, d)
        an = dot(g.arrays(), d)
        assert abs(an - fd) <= rtol * max(1.0, abs(fd)), (an, fd)


# -- the reference against torch.autograd ------------------------------------------------------


def torch_module_grad(problem, cotangent):
    """``L = sum(cotangent * out)`` through ``torch.nn.RNN/GRU/LSTM`` in float64, by autograd."""
    torch = pytest.importorskip("torch")
    s = problem.spec
    module = getattr(torch.nn, s.model.torch_module)(s.input_size, s.hidden_size).double()
    with torch.no_grad():
        for k, v in problem.params.items():
            getattr(module, f"{k}_l0").copy_(torch.tensor(np.asarray(v, np.float64)))
    leaf = {k: torch.tensor(v, requires_grad=True) for k, v in inputs_of(problem).items()}
    h0 = leaf["h0"][None]
    state = (h0, leaf["c0"][None]) if s.model.has_cell_state else h0
    out, _ = module(leaf["x"], state)
    (out * torch.from_numpy(np.asarray(cotangent, np.float64))).sum().backward()
    grads = {k: getattr(module, f"{k}_l0").grad.numpy() for k in problem.params}
    grads.update({k: leaf[k].grad.numpy() for k in ("x", "h0", "c0") if k in leaf})
    return out.detach().numpy(), grads


@pytest.mark.parametrize("problem_id", list(PROBLEMS))
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_bptt_matches_torch_autograd(cell, problem_id):
    problem = problem_of(problem_id, cell)
    g = exact(problem)
    states, expected = torch_module_grad(problem, fpbench.default_cotangent(problem.spec))
    np.testing.assert_allclose(g.states, states, rtol=0, atol=1e-12)
    assert g.backward.method == "bptt" and g.backward.converged and g.backward.iterations == 0
    assert_grad_close(f"bptt {cell}", g.arrays(), expected, "float64")


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_bptt_matches_finite_differences(cell, seed):
    problem = problem_of("T7-B3-H5-I2", cell, seed=seed)
    assert_matches_fd(problem, sequential, exact(problem))


# -- unrolled: the gradient of the iterations that ran -----------------------------------------


def torch_truncated_grad(problem, k, cotangent):
    """Autograd through the brute-force k-truncated model (``fpbench.reference.truncated``'s
    loops, in torch float64 through the cell classes)."""
    torch = pytest.importorskip("torch")
    cell = problem.spec.model
    H = problem.spec.hidden_size
    leaf = {k_: torch.tensor(v, requires_grad=True) for k_, v in inputs_of(problem).items()}
    params = {k_: leaf[k_] for k_ in problem.params}
    s0 = leaf["h0"] if "c0" not in leaf else torch.cat([leaf["h0"], leaf["c0"]], -1)
    gi = cell.input_projection(torch, params, leaf["x"])
    T = gi.shape[0]
    outs = []
    for t in range(T):
        start = t - k + 1
        s = s0 if start <= 0 else torch.zeros_like(s0)
        for j in range(max(start, 0), t + 1):
            s = cell.step(torch, params, s, gi[j])
        outs.append(s[..., :H])
    (torch.stack(outs) * torch.from_numpy(np.asarray(cotangent, np.float64))).sum().backward()
    return {k_: v.grad.numpy() for k_, v in leaf.items()}


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("cell", CELLS)
def test_unrolled_jacobi_is_truncated_model_gradient(cell, k):
    problem = problem_of("T33-B2-H16-I4-rho0.5", cell)
    g = fpbench.grad(problem, fpbench.Jacobi(k, backward="unrolled"))
    assert g.forward.iterations == k and g.backward.method == "unrolled"
    np.testing.assert_allclose(g.states, fpbench.truncated_states(problem, k), rtol=0, atol=1e-12)
    expected = torch_truncated_grad(problem, k, fpbench.default_cotangent(problem.spec))
    assert_grad_close(f"Jacobi({k}) unrolled {cell}", g.arrays(), expected, "float64")


@pytest.mark.parametrize("cell", CELLS)
def test_unrolled_jacobi_matches_finite_differences_of_truncated(cell):
    problem = problem_of("T7-B3-H5-I2", cell)
    g = fpbench.grad(problem, fpbench.Jacobi(3, backward="unrolled"))
    assert_matches_fd(problem, lambda p: truncated(p, 3), g)


@pytest.mark.parametrize("backward", ["implicit", "unrolled"])
@pytest.mark.parametrize("cell", CELLS)
def test_jacobi_budget_T_gives_the_exact_gradient(cell, backward):
    problem = problem_of("T33-B2-H16-I4-rho0.5", cell)
    g = fpbench.grad(problem, fpbench.Jacobi(problem.spec.seq_len, backward=backward))
    assert g.forward.converged and g.backward.converged
    assert_grad_close(f"Jacobi(T) {backward}", g.arrays(), exact(problem).arrays(), "float64")


def test_truncated_gradient_error_falls_with_k():
    """Contractive Elman (rho = 0.5): the k-truncated gradient's error decays (like rho^k)."""
    problem = problem_of("T100-B1-H24-I8-rho0.95", "elman")
    problem = fpbench.make_problem(dataclasses.replace(problem.spec, contraction=0.5))
    ref = exact(problem).arrays()
    ks = [1, 2, 4, 8, 16, 32]
    err = []
    for k in ks:
        e = grad_errors(fpbench.grad(problem, fpbench.Jacobi(k, backward="unrolled")).arrays(), ref)
        err.append(max(e.values()))
    assert all(b < a for a, b in itertools.pairwise(err)), err
    assert err[-1] < 1e-6 * err[0]
    assert err[3] <= 10 * 0.5**8, err  # within a modest constant of rho^k


# -- implicit: the adjoint at the returned states ----------------------------------------------

TOL_SOLVERS = {
    "jacobi": fpbench.Jacobi(200, tol=1e-11),
    "newton": fpbench.Newton(50, tol=1e-11),
    "quasi_newton": fpbench.QuasiNewton(200, tol=1e-11),
    "elk": fpbench.ELK(500, tol=1e-11, damping=0.2),
    "quasi_elk": fpbench.QuasiELK(500, tol=1e-11, damping=0.2),
}
METHODS = {
    "none": "implicit: jacobi on the adjoint",
    "full": "implicit: exact reverse solve",
    "diagonal": "implicit: diagonal-preconditioned adjoint iterations",
}


@pytest.mark.parametrize("solver", TOL_SOLVERS.values(), ids=TOL_SOLVERS)
@pytest.mark.parametrize("cell", CELLS)
def test_implicit_at_tolerance_is_the_exact_gradient(cell, solver):
    problem = problem_of("T33-B2-H16-I4-rho0.5", cell)
    g = fpbench.grad(problem, solver)
    assert g.forward.converged and g.backward.converged and not g.diverged
    assert g.backward.method == METHODS[solver.transition]
    if solver.transition == "full":
        assert g.backward.iterations == 0
    else:
        assert 1 <= g.backward.iterations <= problem.spec.seq_len
        assert len(g.backward.residuals) == g.backward.iterations
        assert g.backward.residuals[-1] <= solver.tol or g.backward.iterations == problem.spec.seq_len
    err = grad_errors(g.arrays(), exact(problem).arrays())
    assert max(err.values()) < 1e-8, err


def test_implicit_with_a_short_budget_reports_an_unconverged_adjoint():
    problem = problem_of("T33-B2-H16-I4-rho0.5", "gru")
    g = fpbench.grad(problem, fpbench.Jacobi(3))
    assert g.forward.iterations == g.backward.iterations == 3
    assert not g.forward.converged and not g.backward.converged


# -- the API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_result_shapes_dtypes_and_default_cotangent(cell):
    problem = problem_of("T7-B3-H5-I2", cell, "float32")
    g = fpbench.grad(problem, fpbench.Newton(7))
    s = problem.spec
    assert g.states.shape == (*g.x.shape[:2], s.hidden_size) and g.x.shape == problem.x.shape
    assert g.h0.shape == (s.batch, s.hidden_size)
    assert (g.c0 is not None) == (g.cell_states is not None) == fpbench.CELLS[cell].has_cell_state
    for k, v in g.params.items():
        assert v.shape == problem.params[k].shape and v.dtype == np.float32
    assert g.x.dtype == g.h0.dtype == g.states.dtype == np.float32
    ct = fpbench.default_cotangent(s)
    assert ct.dtype == np.float32 and ct.shape == g.states.shape
    np.testing.assert_array_equal(ct, fpbench.default_cotangent(s))
    assert not np.array_equal(ct, fpbench.default_cotangent(dataclasses.replace(s, seed=1)))
    again = fpbench.grad(problem, fpbench.Newton(7), cotangent=ct)
    np.testing.assert_array_equal(again.x, g.x)
    assert g.loss == pytest.approx(float(np.sum(ct.astype(np.float64) * g.states)), abs=1e-4)


def test_gradient_is_linear_in_the_cotangent():
    problem = problem_of("T7-B3-H5-I2", "gru")
    ct = fpbench.default_cotangent(problem.spec)
    a = fpbench.grad(problem, fpbench.Sequential(), cotangent=ct).arrays()
    b = fpbench.grad(problem, fpbench.Sequential(), cotangent=-2.5 * ct).arrays()
    for k in a:
        np.testing.assert_allclose(b[k], -2.5 * a[k], rtol=1e-12, atol=1e-14)


def test_timed_grad_returns_seconds():
    problem = problem_of("T7-B3-H5-I2", "elman")
    g, prepare_s, run_s = fpbench.timed_grad(problem, fpbench.Jacobi(3), repeats=2)
    assert prepare_s >= 0 and len(run_s) == 2 and all(t > 0 for t in run_s)
    assert g.backend == "numpy" and g.device == "cpu" and g.solver == "jacobi(max_iters=3)"


BAD_COTANGENTS = {
    "shape": (lambda c: c[:, :, :-1], r"cotangent has shape \(7, 3, 4\).*\(7, 3, 5\) \(T, B, H\)"),
    "full-state-lstm-shape": (lambda c: np.concatenate([c, c], -1), r"cotangent has shape \(7, 3, 10\)"),
    "dtype": (lambda c: c.astype(np.float32), "cotangent has dtype float32, but the spec's dtype is float64"),
    "nan": (lambda c: np.where(np.arange(c.size).reshape(c.shape) == 4, np.nan, c), "cotangent contains NaN"),
    "inf": (lambda c: np.full_like(c, np.inf), "cotangent contains NaN or Inf"),
    "list": (lambda c: c.tolist(), "cotangent must be a NumPy array of shape"),
}


@pytest.mark.parametrize(("make", "match"), BAD_COTANGENTS.values(), ids=BAD_COTANGENTS)
def test_bad_cotangent_is_a_clear_error(make, match):
    problem = problem_of("T7-B3-H5-I2", "lstm")
    with pytest.raises(ValueError, match=match):
        fpbench.grad(problem, fpbench.Sequential(), cotangent=make(fpbench.default_cotangent(problem.spec)))


def test_bad_backward_mode_and_unsupported_combinations():
    with pytest.raises(ValueError, match=r"Jacobi.backward must be one of \['implicit', 'unrolled'\]"):
        fpbench.Jacobi(3, backward="adjoint")
    assert fpbench.make_solver("newton", 3, backward="unrolled").backward == "unrolled"
    problem = problem_of("T7-B3-H5-I2", "gru")
    with pytest.raises(fpbench.UnsupportedError, match="no backward pass for solver 'native'"):
        fpbench.grad(problem, fpbench.Native())
    with pytest.raises(fpbench.UnsupportedError, match="no unrolled backward for newton"):
        fpbench.grad(problem, fpbench.Newton(3, backward="unrolled"))
    with pytest.raises(TypeError, match=r"problem must be an fpbench\.Problem"):
        fpbench.grad("problem", fpbench.Sequential())
    with pytest.raises(fpbench.BackendUnavailableError, match="unknown backend 'nope'"):
        fpbench.grad(problem, fpbench.Sequential(), backend="nope")


def test_nonfinite_forward_is_reported_as_diverged():
    good = problem_of("T7-B3-H5-I2", "gru")
    x = good.x.copy()
    x[2, 1, 0] = np.nan
    bad = fpbench.Problem(good.spec, x, good.h0, good.params)
    with pytest.warns(fpbench.DivergenceWarning, match="gradient diverged"):
        g = fpbench.grad(bad, fpbench.Jacobi(7, tol=1e-6))
    assert g.diverged and g.forward.diverged and g.backward.diverged
    assert not g.forward.converged and not g.backward.converged


# -- every backend against the reference -------------------------------------------------------

GRAD_SOLVERS = {
    "sequential": fpbench.Sequential(),
    "native": fpbench.Native(),
    "jacobi-k3": fpbench.Jacobi(3),
    "jacobi-tol": fpbench.Jacobi(200, tol=1e-5),
    "newton-k2": fpbench.Newton(2),
    "newton-tol": fpbench.Newton(50, tol=1e-5),
    "quasi_newton-k3": fpbench.QuasiNewton(3),
    "quasi_newton-tol": fpbench.QuasiNewton(200, tol=1e-5),
    "elk-k3": fpbench.ELK(3, damping=0.3),
    "quasi_elk-k3": fpbench.QuasiELK(3, damping=0.3),
    "jacobi-k3-unrolled": fpbench.Jacobi(3, backward="unrolled"),
    "jacobi-tol-unrolled": fpbench.Jacobi(200, tol=1e-5, backward="unrolled"),
    "newton-k2-unrolled": fpbench.Newton(2, backward="unrolled"),
    "quasi_newton-k3-unrolled": fpbench.QuasiNewton(3, backward="unrolled"),
    "elk-k3-unrolled": fpbench.ELK(3, damping=0.3, backward="unrolled"),
    "quasi_elk-k3-unrolled": fpbench.QuasiELK(3, damping=0.3, backward="unrolled"),
    "chunked-p3-o2-k1": fpbench.Chunked(1, chunks=3, overlap=2),
    "chunked-p4-o1-k2": fpbench.Chunked(2, chunks=4, overlap=1),
    "chunked-p3-o1-tol": fpbench.Chunked(20, tol=1e-6, chunks=3, overlap=1),
    "chunked-p3-o2-k1-unrolled": fpbench.Chunked(1, chunks=3, overlap=2, backward="unrolled"),
    "chunked-p4-o1-k2-unrolled": fpbench.Chunked(2, chunks=4, overlap=1, backward="unrolled"),
    "chunked-p3-o1-tol-unrolled": fpbench.Chunked(20, tol=1e-6, chunks=3, overlap=1, backward="unrolled"),
}
GRAD_PROBLEMS = ["T7-B3-H5-I2", "T33-B2-H16-I4-rho0.5"]


def _grad_or_skip(problem, solver, target):
    try:
        return fpbench.grad(problem, solver, backend=target)
    except fpbench.UnsupportedError as e:
        pytest.skip(f"{target}: {e}")


FLOAT32_GRAD_SOLVERS = list(
    {(s.name, getattr(s, "backward", "")): k for k, s in GRAD_SOLVERS.items()}.values()
)
"""float32 adds rounding, not a code path: the last-listed solver of each kind and backward
mode (the one to tolerance where there is one), each on one dense cell (:func:`_grad_cases`)."""


def _grad_cases():
    """A dense cell: float64 on the first problem, and on the second where
    :func:`problems.one_in_three` (the solvers' code, Chunked's windows included, does not
    depend on the cell); float32 on the first problem for :data:`FLOAT32_GRAD_SOLVERS`,
    each on one dense cell in three. A diagonal cell: every solver in float64 on the first
    problem only (float32 and the second problem add no code path)."""
    first, second = GRAD_PROBLEMS
    for i, cell in enumerate(CELLS):
        chosen = [("float64", s, first) for s in GRAD_SOLVERS]
        if fpbench.CELLS[cell].recurrence == "dense":
            chosen += [("float64", s, second) for j, s in enumerate(GRAD_SOLVERS) if one_in_three(i, j)]
            chosen += [
                ("float32", s, first) for j, s in enumerate(FLOAT32_GRAD_SOLVERS) if one_in_three(i, j)
            ]
        for dtype, solver_id, problem_id in chosen:
            yield case(cell, dtype, solver_id, problem_id)


def test_every_grad_solver_and_cell_meets_both_problems():
    """The rotation of :func:`problems.one_in_three` loses no (solver, problem) or (cell, problem)
    pair of the dense cells' float64 cases, no (cell, solver) pair at all, and no float32
    solver or dense cell."""
    cases = [c.values for c in _grad_cases()]
    assert {(c, s) for c, _, s, _ in cases} == {(c, s) for c in CELLS for s in GRAD_SOLVERS}
    dense = [c for c in CELLS if fpbench.CELLS[c].recurrence == "dense"]
    seen = {(c, s, p) for c, d, s, p in cases if d == "float64" and c in dense}
    for solver_id in GRAD_SOLVERS:
        assert {p for _, s, p in seen if s == solver_id} == set(GRAD_PROBLEMS), solver_id
    for cell in dense:
        assert {p for c, _, p in seen if c == cell} == set(GRAD_PROBLEMS), cell
    float32 = {(c, s) for c, d, s, _ in cases if d == "float32"}
    assert {s for _, s in float32} == set(FLOAT32_GRAD_SOLVERS) and {c for c, _ in float32} == set(dense)


@pytest.mark.parametrize(("cell", "dtype", "solver_id", "problem_id"), list(_grad_cases()))
def test_grad_matches_reference(target, cell, dtype, solver_id, problem_id):
    """Every backend's gradient against the NumPy float64 reference; where the reference has
    no backward (unrolled Newton/quasi-Newton/ELK), against central finite differences of
    the reference forward along random directions."""
    problem = problem_of(problem_id, cell, dtype)
    solver = GRAD_SOLVERS[solver_id]
    got = _grad_or_skip(problem, solver, target)
    assert not got.diverged and got.states.dtype == np.dtype(dtype)
    assert got.x.dtype == np.dtype(dtype) and all(v.dtype == np.dtype(dtype) for v in got.params.values())
    ref_solver = fpbench.Sequential() if solver.name == "native" else solver
    try:
        ref = fpbench.grad(problem, ref_solver)
    except fpbench.UnsupportedError:  # unrolled Newton-type: finite differences of the forward
        assert solver.tol is None
        ct = fpbench.default_cotangent(problem.spec)
        for d in random_directions(problem, 3):
            fd = fd_directional(problem, lambda p: fixed_point(p, solver)[0], ct, d)
            an = dot(got.arrays(), d)
            rtol = 1e-6 if dtype == "float64" else 2e-3
            assert abs(an - fd) <= rtol * max(1.0, abs(fd)), (an, fd)
        assert got.forward.iterations == solver.max_iters
        return
    assert got.backward.method, "backends name what ran backwards"
    if solver.iterative and solver.tol is None:
        assert got.forward.iterations == ref.forward.iterations == solver.max_iters
    else:
        assert abs(got.forward.iterations - ref.forward.iterations) <= (0 if dtype == "float64" else 2)
    assert got.backward.converged == ref.backward.converged
    np.testing.assert_allclose(got.states, ref.states, rtol=0, atol=1e-9 if dtype == "float64" else 1e-3)
    assert_grad_close(f"{target} {cell} {solver}", got.arrays(), ref.arrays(), dtype)


# -- properties over random problems (cells, sizes, seeds nobody picked) -----------------------


@settings(max_examples=25, deadline=None)
@given(
    cell=st.sampled_from(TORCH_CELLS),
    T=st.integers(1, 16),
    B=st.integers(1, 3),
    H=st.integers(1, 7),
    I=st.integers(1, 4),
    rho=st.floats(0.0, 1.3),
    seed=st.integers(0, 2**31),
    k=st.integers(1, 20),
)
def test_gradient_properties_hold_for_random_problems(cell, T, B, H, I, rho, seed, k):
    """BPTT = torch.autograd through torch.nn; Jacobi(k) unrolled = autograd through the
    k-truncated model; budget T (both modes) = BPTT; implicit Newton with budget T = BPTT."""
    sizes = dict(input_size=I, hidden_size=H, seq_len=T, batch=B)
    spec = fpbench.RNNSpec(cell=cell, dtype="float64", contraction=rho, seed=seed, **sizes)
    problem = fpbench.make_problem(spec)
    ct = fpbench.default_cotangent(spec)
    bptt = exact(problem)
    _, expected = torch_module_grad(problem, ct)
    assert_grad_close("bptt vs torch.nn", bptt.arrays(), expected, "float64")
    kk = min(k, T)
    unrolled = fpbench.grad(problem, fpbench.Jacobi(kk, backward="unrolled"))
    assert_grad_close("unrolled", unrolled.arrays(), torch_truncated_grad(problem, kk, ct), "float64")
    for solver in (
        fpbench.Jacobi(T, backward="unrolled"),
        fpbench.Jacobi(T),
        fpbench.QuasiNewton(T),
        fpbench.Newton(T),
    ):
        g = fpbench.grad(problem, solver)
        assert g.backward.converged
        err = grad_errors(g.arrays(), bptt.arrays())
        assert max(err.values()) < 1e-8, (solver, err)


def test_a_gradient_too_large_for_memory_is_refused(monkeypatch):
    monkeypatch.setattr(fpbench.memory, "available_memory", lambda: 1024)
    problem = problem_of("T7-B3-H5-I2", "gru")
    with pytest.raises(fpbench.InsufficientMemoryError, match="numpy:cpu"):
        fpbench.grad(problem, fpbench.Newton(3))
