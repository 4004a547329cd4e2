"""The shared table of small test problems (ids are the pytest ids)."""

import pytest

from fpbench import RNNSpec

PROBLEMS: dict[str, dict] = {
    "T1-B1-H1-I1": dict(seq_len=1, batch=1, hidden_size=1, input_size=1),
    "T7-B3-H5-I2": dict(seq_len=7, batch=3, hidden_size=5, input_size=2),
    "T33-B2-H16-I4-rho0.5": dict(seq_len=33, batch=2, hidden_size=16, input_size=4, contraction=0.5),
    "T64-B4-H8-I3-rho1.0": dict(seq_len=64, batch=4, hidden_size=8, input_size=3, contraction=1.0),
    "T100-B1-H24-I8-rho0.95": dict(seq_len=100, batch=1, hidden_size=24, input_size=8, contraction=0.95),
}


def spec(problem_id: str, cell: str, dtype: str = "float64", seed: int = 0) -> RNNSpec:
    """The spec of a table entry for ``cell`` and ``dtype``."""
    return RNNSpec(cell=cell, dtype=dtype, seed=seed, **PROBLEMS[problem_id])


def case(cell: str, dtype: str, solver_id: str, problem_id: str):
    """One ``(cell, dtype, solver_id, problem_id)`` case of a cross-backend matrix, with its id."""
    return pytest.param(cell, dtype, solver_id, problem_id, id=f"{cell}-{dtype}-{solver_id}-{problem_id}")


def one_in_three(cell_index: int, solver_index: int) -> bool:
    """The cross-backend matrices' rotation of what adds no code path (float32, a larger
    problem): true on one dense cell in three for each solver, shifted by the solver's index,
    so that every solver meets it on some cell and every cell on some solvers."""
    return (cell_index + solver_index) % 3 == 0
