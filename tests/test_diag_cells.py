"""ParaRNN's diagonal cells (``gru_diag``, ``lstm_cifg_diag``) on the NumPy reference: their
Jacobians against torch autograd, every solver against the sequential states, the reference
gradients against finite differences, the generated problem's contraction, and the clean
refusal of the backends that do not run them yet. (The step itself is checked against a
direct transcription of the equations in ``test_reference.test_sequential_equals_straight_loop``.)"""

import numpy as np
import pytest

import fpbench
from fpbench import cells, reference

DIAG = [name for name, cell in fpbench.CELLS.items() if cell.recurrence == "diagonal"]


def problem_of(cell, T=9, B=2, H=4, I=3, rho=0.9, seed=0):
    sizes = dict(input_size=I, hidden_size=H, seq_len=T, batch=B)
    return fpbench.make_problem(
        fpbench.RNNSpec(cell=cell, dtype="float64", contraction=rho, seed=seed, **sizes)
    )


def test_the_diagonal_cells_are_registered():
    assert DIAG == ["gru_diag", "lstm_cifg_diag"]
    assert [fpbench.CELLS[c].parts for c in DIAG] == [1, 2]
    assert all(fpbench.CELLS[c].torch_module is None for c in DIAG)


@pytest.mark.parametrize("cell", DIAG)
def test_contraction_scales_each_recurrent_vector(cell):
    p = problem_of(cell, rho=0.7)
    model = p.spec.model
    assert p.weight_hh.shape == ((model.gates + model.peepholes) * 4,)
    for a in model.blocks(p.params):
        assert np.max(np.abs(a)) == pytest.approx(0.7)


@pytest.mark.parametrize("cell", DIAG)
def test_jacobians_match_torch_autograd_and_are_per_unit(cell):
    torch = pytest.importorskip("torch")
    p = problem_of(cell, B=3)
    model, H = p.spec.model, p.spec.hidden_size
    params = {k: np.array(v) for k, v in p.params.items()}
    gi = model.input_projection(np, params, p.x[0])
    s = np.random.default_rng(1).uniform(-0.8, 0.8, (3, p.spec.state_size))
    tparams = {k: torch.from_numpy(v) for k, v in params.items()}
    for b in range(3):
        want = torch.autograd.functional.jacobian(
            lambda v, b=b: model.step(torch, tparams, v, torch.from_numpy(gi[b])), torch.from_numpy(s[b])
        ).numpy()
        np.testing.assert_allclose(model.jacobian(np, params, s[b], gi[b]), want, rtol=0, atol=1e-13)
        units = model.unit_jacobian(np, params, s[b], gi[b])
        assert units.shape == (H, model.parts, model.parts)
        blocks = want.reshape(model.parts, H, model.parts, H)  # [p, i, q, j]
        for i in range(H):
            np.testing.assert_allclose(units[i], blocks[:, i, :, i], rtol=0, atol=1e-13)
        off = blocks * (1 - np.eye(H))[None, :, None, :]  # every entry between different units
        assert not off.any()
        np.testing.assert_allclose(
            model.jacobian_diag(np, params, s[b], gi[b]), np.diagonal(want), atol=1e-13
        )


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_unit_jacobian_and_the_dense_helpers_refuse_the_wrong_kind(cell):
    p = problem_of(cell)
    with pytest.raises(TypeError, match="diagonal cells"):
        p.spec.model.unit_jacobian(np, p.params, p.s0, p.x[0] @ p.weight_ih.T)
    diag = problem_of(cell + ("_diag" if cell == "gru" else "_cifg_diag"))
    with pytest.raises(ValueError, match=r"Cell\.input_projection"):
        cells.input_projection(diag.params, diag.x)


SOLVERS = {
    "jacobi": fpbench.Jacobi(9),
    "newton": fpbench.Newton(9),
    "quasi_newton": fpbench.QuasiNewton(9),
    "elk": fpbench.ELK(400, tol=1e-13, damping=0.1),
    "quasi_elk": fpbench.QuasiELK(400, tol=1e-13, damping=0.1),
    "chunked": fpbench.Chunked(3, chunks=3, overlap=1),
}


@pytest.mark.parametrize("solver_id", SOLVERS)
@pytest.mark.parametrize("cell", DIAG)
def test_every_reference_solver_reaches_the_sequential_states(cell, solver_id):
    p = problem_of(cell, rho=1.1)
    result = fpbench.solve(p, SOLVERS[solver_id])
    assert result.converged
    np.testing.assert_allclose(result.states, fpbench.reference_states(p), rtol=0, atol=1e-11)
    if p.spec.model.has_cell_state:
        np.testing.assert_allclose(result.cell_states, reference.sequential(p)[..., 4:], rtol=0, atol=1e-11)


@pytest.mark.parametrize("cell", DIAG)
def test_newton_is_exact_in_one_iteration_per_step_and_quasi_newton_too_for_gru_diag(cell):
    """Newton's linearisation is exact for the first unsolved step, so after k iterations at
    least k steps are exact; for gru_diag the Jacobian is diagonal, so QuasiNewton = Newton."""
    p = problem_of(cell)
    newton = fpbench.solve(p, fpbench.Newton(3))
    quasi = fpbench.solve(p, fpbench.QuasiNewton(3))
    exact = fpbench.reference_states(p)
    np.testing.assert_allclose(newton.states[:3], exact[:3], rtol=0, atol=1e-13)
    if cell == "gru_diag":
        np.testing.assert_allclose(newton.states, quasi.states, rtol=0, atol=1e-13)


GRAD_SOLVERS = {
    "sequential": fpbench.Sequential(),
    "jacobi-implicit": fpbench.Jacobi(9),
    "jacobi-unrolled": fpbench.Jacobi(9, backward="unrolled"),
    "newton-implicit": fpbench.Newton(9),
    "quasi_newton-implicit": fpbench.QuasiNewton(9),
    "chunked-implicit": fpbench.Chunked(3, chunks=3, overlap=1),
    "chunked-unrolled": fpbench.Chunked(3, chunks=3, overlap=1, backward="unrolled"),
}


@pytest.mark.parametrize("solver_id", GRAD_SOLVERS)
@pytest.mark.parametrize("cell", DIAG)
def test_reference_gradients_match_finite_differences(cell, solver_id):
    """At an exact budget every backward is the exact gradient: central differences of the
    sequential loss ``sum(g * h)`` along random directions in every input."""
    p = problem_of(cell, T=9, seed=2)
    g = fpbench.grad(p, GRAD_SOLVERS[solver_id])
    ct = fpbench.default_cotangent(p.spec)
    arrays = {"x": p.x, "h0": p.h0, **p.params, **({"c0": p.c0} if p.c0 is not None else {})}
    rng = np.random.default_rng(5)
    for _ in range(2):
        direction = {k: rng.standard_normal(v.shape) for k, v in arrays.items()}

        def loss(sign, direction=direction):
            moved = {k: v + sign * 1e-6 * direction[k] for k, v in arrays.items()}
            params = {k: moved[k] for k in p.params}
            q = fpbench.Problem(p.spec, moved["x"], moved["h0"], params, moved.get("c0"))
            return float(np.sum(ct * fpbench.reference_states(q)))

        fd = (loss(1.0) - loss(-1.0)) / 2e-6
        got = sum(float(np.sum(g.arrays()[k] * d)) for k, d in direction.items())
        assert got == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("cell", DIAG)
def test_a_backend_without_the_diagonal_recurrence_refuses_the_cells_by_name(cell):
    """:attr:`fpbench.Backend.recurrences` is enforced for every backend (torch, JAX and
    Numba run the diagonal cells; one that lists only ``"dense"`` refuses them)."""
    from fpbench.reference_backend import NumpyBackend

    class DenseOnly(NumpyBackend):
        recurrences = ("dense",)

    p = problem_of(cell)
    with pytest.raises(fpbench.UnsupportedError, match=f"does not support cell '{cell}' yet"):
        DenseOnly().prepare(p, fpbench.Jacobi(3), "cpu")


@pytest.mark.parametrize("cell", DIAG)
def test_torch_native_is_not_applicable_to_the_diagonal_cells(cell):
    """torch's Native is its ``torch.nn`` module, and none has these cells' layout: a clear
    n/a, forward and gradient (every other torch solver runs them)."""
    pytest.importorskip("torch")
    p = problem_of(cell)
    match = f"Native is not applicable to cell '{cell}' on torch"
    with pytest.raises(fpbench.UnsupportedError, match=match):
        fpbench.solve(p, fpbench.Native(), backend="torch")
    with pytest.raises(fpbench.UnsupportedError, match=match):
        fpbench.grad(p, fpbench.Native(), backend="torch")


@pytest.mark.parametrize("cell", DIAG)
def test_the_sharded_solve_refuses_the_diagonal_cells_by_name(cell):
    from fpbench.sharding import check_sharded

    with pytest.raises(fpbench.UnsupportedError, match=f"no form for cell '{cell}'"):
        check_sharded(problem_of(cell), fpbench.Jacobi(3), "jax", 2)


def test_memory_estimate_counts_per_unit_jacobian_blocks():
    """Newton on a diagonal cell holds (S, P) blocks a row, not S x S: the estimate says so."""
    from fpbench.memory import jacobian_items

    sizes = dict(input_size=4, hidden_size=256, seq_len=64, batch=2)
    dense, diag = (fpbench.RNNSpec(cell=c, **sizes) for c in ("lstm", "lstm_cifg_diag"))
    assert jacobian_items(dense) == 512 * 512 and jacobian_items(diag) == 512 * 2
    newton = fpbench.Newton(4)
    assert fpbench.estimate_memory(diag, newton) < fpbench.estimate_memory(dense, newton) / 50
