"""The README's "Adding a cell" and "Adding a solver" hold: a toy cell written only against
the cell interface, and a toy solver declared only by its traits, run through the reference
and every backend that can take them (the others refuse with ``UnsupportedError``), with
nothing added anywhere but their own definitions and their one registry entry each."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

import fpbench
from fpbench.cells import Cell, sigmoid
from fpbench.solvers import SOLVERS, Damped
from fpbench.testing import assert_close, assert_grad_close


class MinimalGated(Cell):
    """A minimal gated cell: one gate ``f`` that both resets the candidate's recurrent input
    and mixes it in: ``n = tanh(gi_n + f * gh_n)``, ``h' = (1 - f) h + f n`` (gate blocks
    f, n). No ``torch.nn`` module has this layout."""

    name = "toy_mgu"
    gates = 2

    @staticmethod
    def _gates(xp, s, gi, gh):
        H = s.shape[-1]
        f = sigmoid(xp, gi[..., :H] + gh[..., :H])
        hn = gh[..., H:]
        n = xp.tanh(gi[..., H:] + f * hn)
        return f, n, hn

    def activate(self, xp, s, gi, gh):
        f, n, _ = self._gates(xp, s, gi, gh)
        return (1.0 - f) * s + f * n

    def linearise(self, xp, s, gi, gh):
        f, n, hn = self._gates(xp, s, gi, gh)
        df = f * (1.0 - f)
        dn = f * (1.0 - n * n)  # d h' / d (n's preactivation)
        parts = [df * ((n - s) + dn * hn), dn * f]  # d h' / d gh_f, d h' / d gh_n
        c = xp.stack([p[..., None, :] for p in parts], -3)
        return (1.0 - f) * s + f * n, c, (1.0 - f)[..., None, None, :]

    def vjp_preact(self, xp, s, gi, gh, g):
        f, n, hn = self._gates(xp, s, gi, gh)
        dn_pre = g * f * (1.0 - n * n)
        df_pre = (g * (n - s) + dn_pre * hn) * f * (1.0 - f)
        dgi = xp.concatenate([df_pre, dn_pre], -1)
        dgh = xp.concatenate([df_pre, dn_pre * f], -1)
        return g * (1.0 - f), dgi, dgh


@dataclasses.dataclass(frozen=True)
class HeavyQuasiELK(Damped):
    """A toy solver with existing traits only: quasi-ELK's diagonal transition with a heavy
    default damping."""

    name: ClassVar[str] = "heavy_quasi_elk"
    transition: ClassVar[str] = "diagonal"
    damping: float = 2.0


@pytest.fixture
def toy_cell(monkeypatch):
    monkeypatch.setitem(fpbench.CELLS, MinimalGated.name, MinimalGated())
    return MinimalGated.name


@pytest.fixture
def toy_solver(monkeypatch):
    monkeypatch.setitem(SOLVERS, HeavyQuasiELK.name, HeavyQuasiELK)
    return HeavyQuasiELK.name


def _problem(cell: str) -> fpbench.Problem:
    spec = fpbench.RNNSpec(
        cell=cell, input_size=3, hidden_size=4, seq_len=12, batch=2, dtype="float64", contraction=0.8, seed=3
    )
    return fpbench.make_problem(spec)


def test_toy_cell_maths_is_consistent(toy_cell):
    """``linearise`` is the derivative of ``activate`` (central differences) and
    ``vjp_preact`` its transpose."""
    p = _problem(toy_cell)
    cell, params = p.spec.model, p.params
    rng = np.random.default_rng(0)
    s = rng.uniform(-0.7, 0.7, size=(2, 4))
    gi = rng.standard_normal((2, 8))
    J = cell.jacobian(np, params, s, gi)
    eps, numeric = 1e-6, np.empty_like(J)
    for j in range(4):
        e = np.zeros(4)
        e[j] = eps
        numeric[..., j] = (cell.step(np, params, s + e, gi) - cell.step(np, params, s - e, gi)) / (2 * eps)
    np.testing.assert_allclose(J, numeric, atol=1e-8)
    g = rng.standard_normal((2, 4))
    gh = fpbench.cells.hidden_preactivation(params, s, np)
    ds, _, dgh = cell.vjp_preact(np, s, gi, gh, g)
    np.testing.assert_allclose(ds + dgh @ params["weight_hh"], np.einsum("bi,bij->bj", g, J), atol=1e-12)


SOLVES = [
    fpbench.Sequential(),
    fpbench.Jacobi(12),
    fpbench.Newton(12),
    fpbench.QuasiNewton(12),
    fpbench.ELK(200, tol=1e-12, damping=0.1),
    fpbench.Chunked(3, chunks=3, overlap=2),
    fpbench.Native(),
]


def _try(call):
    try:
        return call()
    except fpbench.UnsupportedError as e:
        return e


def test_toy_cell_runs_everywhere_it_can(toy_cell, target):
    """Every backend either matches the exact states or refuses the combination clearly:
    torch's ``Native`` needs a ``torch.nn`` module (its ``Chunked`` loops the cell without
    one), and Numba a row function."""
    p = _problem(toy_cell)
    exact = fpbench.reference_states(p)
    refused = []
    for solver in SOLVES:
        result = _try(lambda solver=solver: fpbench.solve(p, solver, backend=target))
        if isinstance(result, fpbench.UnsupportedError):
            refused.append(solver.name)
            assert toy_cell in str(result) or solver.name in str(result), result
            continue
        assert result.converged, (target, solver)
        assert_close(f"{target} {solver}", result.states, exact, "float64")
    grad_result = _try(lambda: fpbench.grad(p, fpbench.Newton(12), backend=target))
    if isinstance(grad_result, fpbench.UnsupportedError):
        refused.append("grad")
    else:
        expected = fpbench.grad(p, fpbench.Sequential(), backend="numpy").arrays()
        assert_grad_close(f"{target} grad", grad_result.arrays(), expected, "float64")
    backend = target.split(":")[0]
    assert refused == {
        "torch": ["native"],
        "jax": [],
        "numba": [s.name for s in SOLVES] + ["grad"],
    }.get(backend, refused)


def test_toy_cell_in_the_reference(toy_cell):
    p = _problem(toy_cell)
    exact = fpbench.reference_states(p)
    for solver in SOLVES[:-1]:  # (Native is a framework's own RNN: not the reference's)
        result = fpbench.solve(p, solver, backend="numpy")
        assert result.converged and np.allclose(result.states, exact, atol=1e-12), solver
    g = fpbench.grad(p, fpbench.Jacobi(12), backend="numpy").arrays()
    assert_grad_close("numpy implicit", g, fpbench.grad(p, fpbench.Sequential()).arrays(), "float64")


def test_toy_solver_is_built_and_run_by_its_traits(toy_solver, target):
    """Registered under its own name, it runs wherever its traits (``diagonal``, damped) run,
    as exactly the solver with the same traits: no backend looks at its name or class."""
    solver = fpbench.make_solver(toy_solver, max_iters=300, tol=1e-10)
    assert solver == HeavyQuasiELK(300, tol=1e-10) and solver.damping == 2.0
    twin = fpbench.QuasiELK(300, tol=1e-10, damping=2.0)
    p = _problem("gru")
    for backend in ("numpy", target):
        ours, theirs = fpbench.solve(p, solver, backend=backend), fpbench.solve(p, twin, backend=backend)
        np.testing.assert_array_equal(ours.states, theirs.states)
        assert ours.residuals == theirs.residuals and ours.iterations < 300
        g_ours, g_twin = (fpbench.grad(p, s, backend=backend) for s in (solver, twin))
        for name, value in g_ours.arrays().items():
            np.testing.assert_array_equal(value, g_twin.arrays()[name])
    np.testing.assert_allclose(ours.states, fpbench.reference_states(p), atol=1e-8)
