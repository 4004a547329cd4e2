"""Every row of the report's table is a whole measurement (issue 21, item 4): its problem
(cell, T, H, B, I, dtype, rho), solver and budget, whether a suite swept them or held them
fixed; and the T, H and budget sweeps the main grid measures reach the report's data layer."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("asv")

from fpbench import grad_grids, grids, train_grids  # noqa: E402
from fpbench.report import analysis  # noqa: E402
from fpbench.report.build import build_report  # noqa: E402
from fpbench.report.load import load_results  # noqa: E402

FIXTURE = Path(__file__).parent / "data" / "asv_results"
PROBLEM = ("cell", "seq_len", "hidden_size", "batch", "input_size", "dtype", "contraction", "solver")


def _add(data: dict, bench: dict, key: str, names: list[str], values: list[list], results: list) -> None:
    """One benchmark's results in asv's format (parameter values as their repr)."""
    params = [[repr(v) for v in vals] for vals in values]
    n = math.prod(len(v) for v in values)
    assert len(results) == n
    stats = [[None] * n] * 4 + [[1] * n] * 2  # ci_99_a, ci_99_b, q_25, q_75, number, repeat
    data["results"][key] = [results, params, "v", 0, 1.0, *stats, None, None]
    btype = key.rpartition(".")[2].split("_")[0]
    unit = {"time": "seconds", "track": "loss"}[btype]
    bench[key] = dict(code="", name=key, param_names=names, params=params, type=btype, unit=unit)


@pytest.fixture
def main_results(tmp_path) -> Path:
    """The fixture's run, recorded under the main grid, with a gradient, a training, a
    budget and a product suite's results as the main grid's suites name their parameters."""
    shutil.copytree(FIXTURE / "fixture-a", tmp_path / "run")
    bench = json.loads((FIXTURE / "benchmarks.json").read_text())
    (path,) = [p for p in (tmp_path / "run").glob("*.json") if p.name != "machine.json"]
    data = json.loads(path.read_text())
    data["env_vars"] = {"FPBENCH_GRID": "main"}
    data["results"] = {}
    nan = float("nan")
    add = {
        "bench_grad.GradSeqLen.time_grad": (
            dict(target=["jax:cpu"], cell=["gru"], solver=["jacobi", "chunked_p8_o64"]),
            dict(backward=["implicit", "unrolled"], seq_len=[2048]),
            [0.01, nan, 0.02, 0.03],
        ),
        "bench_train.TrainLoss.track_train_loss": (
            dict(target=["jax:cpu"], method=["sequential", "jacobi_unrolled", "chunked_p8_o64"]),
            dict(budget=[4, "tol"], contraction=[0.9]),
            [nan, 0.1, 0.2, 0.3, 0.4, 0.5],
        ),
        "bench_solve.Budget.time_solve": (
            dict(target=["jax:cpu"], cell=["elman"], solver=["sequential", "jacobi", "chunked_p8_o64"]),
            dict(max_iters=[1, 16, "tol"]),
            [nan, nan, 0.005, 0.001, 0.01, 0.02, 0.002, 0.003, 0.004],
        ),
        "bench_solve.Product.time_solve": (
            dict(target=["jax:cpu"], cell=["gru"], solver=["sequential", "chunked_p8_o64_k1"]),
            dict(seq_len=[1024, 2048], hidden_size=[2, 8]),
            [0.001 * (i + 1) for i in range(8)],
        ),
        "bench_diag.DiagNewton.time_solve": (
            dict(target=["numba:cpu"], cell=["gru", "gru_diag"], solver=["sequential", "newton"]),
            dict(hidden_size=[8, 128]),
            [0.002, 0.03, 0.1, 5.0, 0.001, 0.01, 0.002, 0.008],
        ),
    }
    for key, (first, rest, results) in add.items():
        params = {**first, **rest}
        _add(data, bench, key, list(params), list(params.values()), results)
    path.write_text(json.dumps(data))
    (tmp_path / "benchmarks.json").write_text(json.dumps(bench))
    log = "".join(
        f"[50.00%] ··· bench_solve.Budget.time_solve                 ok\n"
        f"             For parameters: 'jax:cpu', 'elman', 'jacobi', {k!r}\n"
        f"             fpbench gate passed: max_abs={e} rel_rms=1.0e-05 (vs exact)\n"
        for k, e in ((1, "1.1e+00"), (16, "1.4e-07"))
    )
    (log_path,) = (tmp_path / "run").glob("fpbench-*.log")
    log_path.write_text(log)
    return tmp_path


def test_every_row_carries_its_whole_problem(main_results):
    """The gradient suites' rows once had no hidden size (the tables printed "—"), the
    training suites' no cell, H or B, and no row had I or dtype."""
    frame = load_results(main_results).frame
    assert set(frame["group"]) == {"GradSeqLen", "TrainLoss", "Budget", "Product", "DiagNewton"}
    for column in PROBLEM:
        assert frame[column].notna().all(), (column, frame.loc[frame[column].isna(), "benchmark"].unique())
    budget = frame["max_iters"].where(~frame["group"].eq("TrainLoss"), frame["budget"])
    assert budget.notna().all()

    gg, tg, m = grad_grids.GRAD_GRIDS["main"], train_grids.TRAIN_GRIDS["main"], grids.GRIDS["main"]
    g = frame[frame["group"].eq("GradSeqLen")]
    assert set(g["hidden_size"]) == {gg.seq_lens_hidden} and set(g["seq_len"]) == {2048}
    assert set(g["batch"]) == {grids.BATCH} and set(g["input_size"]) == {grids.INPUT_SIZE}
    assert set(g["max_iters"]) == {gg.solve_budget} and set(g["contraction"]) == {grids.CONTRACTION}
    assert set(g["dtype"]) == {grids.DTYPE}

    t = frame[frame["group"].eq("TrainLoss")].set_index(["method", "budget"])
    assert set(t["cell"]) == {train_grids.TRAIN_CELL} and set(t["seq_len"]) == {tg.track_seq_len}
    assert set(t["hidden_size"]) == {tg.track_hidden} and set(t["input_size"]) == {
        train_grids.TRAIN_INPUT_SIZE
    }
    assert t.loc[("jacobi_unrolled", 4), ["solver", "backward"]].tolist() == ["jacobi", "unrolled"]
    assert t.loc[("chunked_p8_o64", "tol"), ["solver", "backward"]].tolist() == ["chunked_p8_o64", "implicit"]

    b = frame[frame["group"].eq("Budget")]
    assert set(b["seq_len"]) == {m.budget_seq_len} and set(b["hidden_size"]) == {m.budget_hidden}
    assert set(b["cell"]) == {"elman"}  # swept: the parameter wins over the grid's cells

    p = frame[frame["group"].eq("Product")]
    assert (p["input_size"] == p["hidden_size"]).all() and set(p["batch"]) == {m.product_batch}

    d = frame[frame["group"].eq("DiagNewton")]
    assert set(d["seq_len"]) == {m.diag_seq_len} and set(d["batch"]) == {m.diag_batch}
    assert set(d["input_size"]) == {grids.INPUT_SIZE} and set(d["max_iters"]) == {grids.TOL}


def test_chunked_configurations_are_known_solvers(main_results):
    """A grid's named Chunked configuration (``chunked_p8_o64_k1``) is a solver the report
    knows: its results were once all n/a as an "unknown solver"."""
    frame = load_results(main_results).frame
    chunked = frame[frame["solver"].astype(str).str.startswith("chunked_p")]
    assert not chunked.empty
    assert not chunked["reason"].astype(str).str.contains("unknown solver").any()
    assert chunked[chunked["group"].eq("Product")]["status"].eq("ok").all()


def test_budget_errors_are_the_gates_errors(main_results):
    frame = load_results(main_results).frame
    err = analysis.budget_errors(frame)
    assert set(err["metric"]) == {"track_max_abs_error"} and len(err) == 9
    jacobi = err[err["solver"].eq("jacobi")].set_index("max_iters")
    assert jacobi.loc[1, "value"] == pytest.approx(1.1) and jacobi.loc[16, "value"] == pytest.approx(1.4e-7)
    assert jacobi.loc[1, "status"] == "ok" and set(jacobi["contraction"]) == {grids.CONTRACTION}
    # timed, but no error in the log: a gap with its reason, never a number
    chunked = err[err["solver"].eq("chunked_p8_o64")]
    assert chunked["status"].eq("n/a").all() and chunked["value"].isna().all()
    assert chunked["reason"].str.contains("not recorded").all()


def _product_frame() -> pd.DataFrame:
    rows = []
    for (solver, backend), T, H in itertools.product(
        (("sequential", "jax"), ("jacobi", "jax"), ("jacobi", "torch")), (1024, 2048, 4096), (2, 8)
    ):
        rows.append(
            dict(machine="m", commit="c", device="cpu", cell="gru", group="Product", metric="time_solve",
                 solver=solver, backend=backend, target=f"{backend}:cpu", seq_len=T, hidden_size=H,
                 batch=16, max_iters="tol", value=T * H * 1e-6, q25=None, q75=None, status="ok")
        )  # fmt: skip
    return pd.DataFrame(rows)


AXES = [("seq_len", "hidden_size", "H"), ("hidden_size", "seq_len", "T")]


@pytest.mark.parametrize("x, other, short", AXES)
def test_axis_sweep_is_the_products_slices(x, other, short):
    """Time vs T (vs H) of a grid that ran only the T x H product: its slices at each H (T),
    one line per backend:solver and value of the other axis."""
    frame = _product_frame()
    assert analysis.sweep_groups(frame) == ("Product",)
    rows = analysis.axis_sweep(frame, x)
    assert len(rows) == len(frame)
    for label, line in rows.groupby("label"):
        assert line[other].nunique() == 1 and line[x].nunique() == line[x].size > 1, label
        assert label.endswith(f" {short}={int(line[other].iloc[0])}"), label
    assert analysis.axis_sweep(frame.assign(group="Batch"), x).empty
    with pytest.raises(ValueError, match="x must be"):
        analysis.axis_sweep(frame, "batch")
    assert analysis.sweep_groups(frame.assign(group="SeqLen")) == ("SeqLen",)


def test_report_draws_the_budget_error_and_the_products_slices(main_results, tmp_path):
    """The main grid runs no SeqLen/Hidden and no Accuracy: its time-vs-T and time-vs-H
    sections are the product's slices and its error-vs-budget figure the timed solves' gate
    errors. Those sections were once left out of its report as empty."""
    out = build_report(main_results, out=tmp_path / "out")
    text = (out / "summary.md").read_text()
    for title in ("Time vs sequence length", "Time vs hidden size", "Time and error vs iteration budget"):
        assert f"## {title}" in text
    names = {p.name for p in (out / "figures").glob("*.png")}
    assert any(n.startswith("error-budget-timed") for n in names), names
    for x in ("seq_len", "hidden_size"):
        assert any(n.startswith(f"time-{x}") for n in names), (x, names)
    assert "`Hidden`" not in text.rpartition("did not run")[2]  # the product's slices cover it


def test_report_draws_the_dense_vs_diagonal_section(main_results, tmp_path):
    """The ``DiagNewton`` results reach the report: its section, with the sentence computed
    from them, its figure, and the diagonal cell's verdict in the headline."""
    from fpbench.report.diag_section import TITLE

    out = build_report(main_results, out=tmp_path / "out")
    text = (out / "summary.md").read_text()
    assert f"## {TITLE}" in text
    section = text.split(f"## {TITLE}", 1)[1].split("\n## ", 1)[0]
    wins = "wins on diagonal cells where the dense cell does not: gru_diag at H = 128 (1.25×; gru 0.006×)"
    assert wins in section
    assert "T = 1024, B = 8" in section
    assert any(p.name.startswith("speedup-diag") for p in (out / "figures").glob("*.png"))
    assert "gru_diag" in text.split("## ", 2)[1]  # the headline's verdict per cell
    assert "`DiagNewton`" not in text.rpartition("did not run")[2]
