"""The NumPy float64 reference as a backend (``"numpy"``): :mod:`fpbench.reference` for the
forward solves and :mod:`fpbench.reference_grad` for the gradients, behind the backend
contract of :mod:`fpbench.backend`."""

from __future__ import annotations

import numpy as np

from .backend import Backend, Prepared, UnsupportedError
from .reference import fixed_point, sequential
from .reference_grad import prepare_grad
from .solvers import Solver, iteration_cap
from .spec import Problem, RNNSpec


class NumpyBackend(Backend):
    """The reference as a backend (``"numpy"``, device ``"cpu"``), always float64."""

    name = "numpy"
    compute_dtype = "float64"
    recurrences = ("dense", "diagonal")

    def backward_kept(self, spec: RNNSpec, solver: Solver) -> tuple[int, int]:
        """The unrolled backward (:func:`~fpbench.reference_grad.unrolled_jacobi`,
        ``unrolled_chunked``) keeps every iterate (``S`` items a row) and recomputes the rest;
        the others keep nothing beyond the common working set."""
        unrolled = solver.iterative and solver.backward == "unrolled"
        return (iteration_cap(solver, spec.seq_len), spec.state_size) if unrolled else (0, 0)

    def devices(self) -> list[str]:
        return ["cpu"]

    def prepare(self, problem: Problem, solver: Solver, device: str) -> Prepared:
        if solver.kind == "sequential":
            return Prepared(lambda: (sequential(problem), np.empty(0)), tuple)
        if solver.iterative:
            return Prepared(lambda: fixed_point(problem, solver), tuple)
        raise UnsupportedError(f"the numpy reference does not implement solver {solver.name!r}")

    def prepare_grad(self, problem: Problem, solver: Solver, device: str, cotangent: np.ndarray) -> Prepared:
        return prepare_grad(problem, solver, cotangent)

    def info(self) -> dict[str, str]:
        return {"numpy": np.__version__}
