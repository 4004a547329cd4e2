"""Solver configurations: traits, fields, and rebuilding a solver from its name."""

import dataclasses
from typing import ClassVar

import pytest

import fpbench
from fpbench.solvers import SOLVERS

CONFIGS = [
    fpbench.Sequential(),
    fpbench.Native(),
    fpbench.Jacobi(7, tol=1e-3),
    fpbench.Newton(5, backward="unrolled"),
    fpbench.QuasiNewton(9),
    fpbench.ELK(11, tol=1e-4, damping=0.25, backward="unrolled"),
    fpbench.QuasiELK(13, damping=2.0),
    fpbench.Chunked(3, tol=1e-5, chunks=8, overlap=64, backward="unrolled"),
]


@pytest.mark.parametrize("solver", CONFIGS, ids=str)
def test_make_solver_keeps_every_field(solver):
    rebuilt = fpbench.make_solver(solver.name, **solver.fields())
    assert rebuilt == solver and type(rebuilt) is type(solver)


@pytest.mark.parametrize(
    ("solver", "transition", "damping", "exact"),
    [
        (fpbench.Jacobi(3), "none", 0.0, True),
        (fpbench.Newton(3), "full", 0.0, True),
        (fpbench.QuasiNewton(3), "diagonal", 0.0, True),
        (fpbench.ELK(3, damping=0.5), "full", 0.5, False),
        (fpbench.QuasiELK(3, damping=0.5), "diagonal", 0.5, False),
        (fpbench.ELK(3, damping=0.0), "full", 0.0, True),
        (fpbench.Chunked(3, chunks=4), "window", 0.0, True),
    ],
    ids=str,
)
def test_traits(solver, transition, damping, exact):
    assert (solver.transition, solver.damping, solver.exact_after_seq_len) == (transition, damping, exact)


def test_elk_is_not_a_newton():
    """A damped solver must never pass for its undamped parent (it would run undamped)."""
    assert not isinstance(fpbench.ELK(3), fpbench.Newton)
    assert not isinstance(fpbench.QuasiELK(3), fpbench.QuasiNewton)


@pytest.mark.parametrize("damping", [-0.1, float("nan"), float("inf"), "0.1", True])
@pytest.mark.parametrize("cls", [fpbench.ELK, fpbench.QuasiELK], ids=lambda c: c.name)
def test_bad_damping(cls, damping):
    with pytest.raises(ValueError, match=r"damping must be a finite number >= 0"):
        cls(3, damping=damping)


def test_bad_backward_and_unknown_field():
    with pytest.raises(ValueError, match=r"backward must be one of \['implicit', 'unrolled'\]"):
        fpbench.Jacobi(3, backward="adjoint")
    with pytest.raises(ValueError, match=r"solver 'jacobi' has no field\(s\) \['damping'\]"):
        fpbench.make_solver("jacobi", 3, damping=0.1)


def test_every_registered_solver_declares_its_traits():
    for name, cls in SOLVERS.items():
        assert cls.name == name
        if cls.iterative:
            assert cls.transition in ("none", "full", "diagonal", "window")


def test_solver_kinds_are_declared():
    kinds = {name: cls.kind for name, cls in fpbench.solvers.SOLVERS.items()}
    assert kinds["sequential"] == "sequential" and kinds["native"] == "native"
    assert {k for n, k in kinds.items() if n not in ("sequential", "native")} == {"iterative"}
    assert fpbench.Sequential().baseline and fpbench.Native().baseline
    assert not fpbench.Jacobi(2).baseline and fpbench.Jacobi(2).iterative


def test_trait_combinations_are_checked_when_defined_and_constructed():
    @dataclasses.dataclass(frozen=True)
    class DampedJacobi(fpbench.solvers.Damped):
        name: ClassVar[str] = "damped_jacobi"
        transition: ClassVar[str] = "none"

    with pytest.raises(ValueError, match="transition 'none' has no damped step"):
        DampedJacobi(4, damping=0.5)
    assert DampedJacobi(4, damping=0.0).damping == 0.0  # undamped is Jacobi itself
    with pytest.raises(TypeError, match="kind must be one of"):

        class Odd(fpbench.Solver):
            kind: ClassVar[str] = "parallel"

    with pytest.raises(TypeError, match="transition must be one of"):

        class Typo(fpbench.Iterative):
            transition: ClassVar[str] = "diag"

    with pytest.raises(TypeError, match="transition must be one of"):

        class SequentialNewton(fpbench.Sequential):
            transition: ClassVar[str] = "full"

    with pytest.raises(TypeError, match="abstract"):
        fpbench.solvers.Damped(4)
