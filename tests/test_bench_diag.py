"""The dense vs diagonal cells suite (benchmarks/bench_diag.py), driven directly (without asv)
on the NumPy target of the quick grid: setup (prepare + correctness gate), the timed call, and
n/a on a backend whose recurrences lack "diagonal"."""

import pytest

import fpbench

bench_diag = pytest.importorskip("benchmarks.bench_diag")
common = pytest.importorskip("benchmarks.common")
grids = pytest.importorskip("benchmarks.grids")


def test_grid_pairs_each_diagonal_cell_with_its_dense_cell():
    for grid in grids.GRIDS.values():
        diagonal = [c for c in grid.diag_cells if c in grids.DIAGONAL_PAIRS]
        assert diagonal, grid.name
        for cell in diagonal:
            assert fpbench.CELLS[cell].recurrence == "diagonal"
            assert grids.DIAGONAL_PAIRS[cell] in grid.diag_cells, (grid.name, cell)
    assert "DiagNewton" in grids.GRIDS["main"].suites


@pytest.mark.parametrize("cell", ["gru", "gru_diag"])
@pytest.mark.parametrize("solver", ["sequential", "newton"])
def test_suite_runs_gated_on_numpy(cell, solver):
    suite = bench_diag.DiagNewton()
    params = ("numpy:cpu", cell, solver, min(bench_diag.GRID.diag_hidden_sizes))
    suite.setup(*params)
    suite.time_solve(*params)
    assert suite.spec.cell == cell and suite.spec.seq_len == bench_diag.GRID.diag_seq_len
    assert suite.spec.batch == bench_diag.GRID.diag_batch
    assert suite.solver.iterative == (solver == "newton") and (solver == "sequential" or suite.solver.tol)
    assert common._verdicts[(suite.target, suite.spec, suite.solver)] == "vs exact"


def test_diagonal_cell_is_na_where_the_backend_lacks_the_recurrence(monkeypatch):
    """n/a (``NotImplementedError`` in setup) with the backend's reason, for any backend whose
    ``recurrences`` lack "diagonal"; its dense cells still run."""
    numpy_backend = fpbench.get_backend("numpy")
    monkeypatch.setattr(type(numpy_backend), "recurrences", ("dense",))
    monkeypatch.setattr(common, "_prepared", {})  # not a solve prepared before
    h = max(bench_diag.GRID.diag_hidden_sizes)
    with pytest.raises(NotImplementedError, match="does not support cell 'gru_diag'"):
        bench_diag.DiagNewton().setup("numpy:cpu", "gru_diag", "newton", h)
    bench_diag.DiagNewton().setup("numpy:cpu", "gru", "newton", h)
