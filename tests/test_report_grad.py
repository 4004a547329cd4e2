"""The gradient and training report sections (fpbench/report/grad_sections.py) from a
synthetic tidy frame shaped like the loader's rows of bench_grad / bench_train results."""

import itertools
import re

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("seaborn")

from fpbench.report.figure_files import FigureFiles
from fpbench.report.grad_sections import backward_speedups, grad_sections
from fpbench.report.output import OutputFolder
from fpbench.report.page import Image, Table

BASE = dict(machine="m", commit="abcdef12", date=pd.Timestamp("2026-01-01"), device="cpu", status="ok")


def row(group, metric, value, **params):
    target = params.pop("target", "torch:cpu")
    return dict(
        BASE,
        group=group,
        metric=metric,
        value=value,
        q25=value * 0.9,
        q75=value * 1.1,
        target=target,
        backend=target.split(":")[0],
        reason="",
        **params,
    )


def frame():
    rows = []
    solvers = [
        ("sequential", "implicit"),
        ("native", "implicit"),
        ("jacobi", "implicit"),
        ("jacobi", "unrolled"),
    ]
    for (solver, backward), T in itertools.product(solvers, (128, 1024)):
        t = T * (1e-5 if solver in ("sequential", "native") else 2e-6)
        p = dict(cell="gru", solver=solver, backward=backward, seq_len=T, hidden_size=32, max_iters="tol")
        rows.append(row("GradSeqLen", "time_grad", t, **p))
    for backward, k in itertools.product(("implicit", "unrolled"), (1, 2, 4, 8)):
        p = dict(cell="elman", solver="jacobi", backward=backward, max_iters=k, contraction=0.5, seq_len=128)
        rows.append(row("GradAccuracy", "track_grad_rel_error", 0.5**k, **p))
        p = dict(cell="gru", solver="jacobi", backward=backward, max_iters=k, seq_len=128, hidden_size=32)
        rows.append(
            row("GradBudget", "peakmem_grad", 2**20 * (100 + (k if backward == "unrolled" else 0)), **p)
        )
    methods = ("sequential", "jacobi_unrolled")
    for method, metric in itertools.product(methods, ("track_train_loss", "track_eval_loss", "track_gap")):
        p = dict(method=method, budget="tol", contraction=0.5, target="numpy:cpu")
        rows.append(row("TrainLoss", metric, 0.1, **p))
    for method, T in itertools.product(methods, (64, 256)):
        p = dict(method=method, seq_len=T, hidden_size=16, target="numpy:cpu")
        rows.append(
            row("TrainSeqLen", "time_train_step", (1e-4 if method == "sequential" else 4e-5) * T, **p)
        )
    return pd.DataFrame(rows)


def test_backward_speedups_against_the_best_bptt():
    sp = backward_speedups(frame())
    assert set(sp["solver"]) == {"jacobi"} and len(sp) == 4
    np.testing.assert_allclose(sp["speedup"], 5.0)


def test_sections_have_figures_and_tables(tmp_path):
    sections = grad_sections(frame(), FigureFiles(OutputFolder(tmp_path), None))
    titles = [s.title for s in sections]
    assert "Backward speedup over the best sequential BPTT" in titles
    by_title = {s.title: s for s in sections}
    assert any(isinstance(b, Image) for b in by_title["Backward: time vs sequence length"].blocks)
    assert any(isinstance(b, Image) for b in by_title["Gradient error vs iteration budget"].blocks)
    assert any(isinstance(b, Image) for b in by_title["Gradient memory: unrolled vs implicit"].blocks)
    training = by_title["Training: time per step, loss and the train/inference gap"].blocks
    assert any(isinstance(b, Table) for b in training) and any(isinstance(b, Image) for b in training)
    assert len(list((tmp_path / "figures").glob("*.png"))) >= 4


def test_training_step_speedup_against_the_best_bptt(tmp_path):
    sections = {s.title: s for s in grad_sections(frame(), FigureFiles(OutputFolder(tmp_path), None))}
    training = sections["Training: time per step, loss and the train/inference gap"].blocks
    speed = next(b.frame for b in training if isinstance(b, Table) and "speedup" in b.frame)
    assert list(speed["method"]) == ["jacobi_unrolled"] * 2 and list(speed["speedup"]) == ["2.5×"] * 2


def test_sections_of_an_empty_frame_are_empty(tmp_path):
    """A section without data has no blocks (the report leaves it out), never a "No ...
    results" paragraph."""
    empty = frame().iloc[:0]
    for s in grad_sections(empty, FigureFiles(OutputFolder(tmp_path), None)):
        assert s.blocks == [], s.title


def test_tables_print_numbers_for_reading(tmp_path):
    """Issue 21: T prints as ``2048``, not ``2048.0``; losses and gaps in a notation that shows
    their size, never 17 digits; every number with at most 3 significant figures."""
    f = frame()
    f["seq_len"] = f["seq_len"].astype(float)  # the loader's shapes are floats (NaN where absent)
    train = f["group"].eq("TrainLoss")
    f.loc[train & f["metric"].eq("track_train_loss"), "value"] = 0.01765907967349243
    f.loc[train & f["metric"].eq("track_eval_loss"), "value"] = 0.017659079696815306
    f.loc[train & f["metric"].eq("track_gap"), "value"] = 2.322692385647862e-11
    f.loc[f["group"].eq("GradSeqLen") & f["seq_len"].eq(1024), "seq_len"] = 2048.0
    tables = [
        b.frame for s in grad_sections(f, FigureFiles(OutputFolder(tmp_path), None)) for b in s.blocks
        if isinstance(b, Table)
    ]  # fmt: skip
    cells = [str(v) for t in tables for v in t.to_numpy().ravel()]
    assert "2048" in cells and "2048.0" not in cells
    assert "0.0177" in cells and "2.32e-11" in cells
    for cell in cells:
        for token in re.findall(r"(?<![\w.])[-+]?\d+\.\d+(?:e[-+]?\d+)?(?![\w.])", cell):
            assert len(token.split("e")[0].lstrip("+-").replace(".", "").lstrip("0")) <= 3, cell
    loss = next(t for t in tables if "gap (eval − train)" in t)
    assert list(loss.columns[-3:]) == ["train loss", "eval loss (exact forward)", "gap (eval − train)"]


def test_every_suite_parameter_is_a_column_of_the_frame():
    """The loader keeps only the parameters it knows (``PARAM_COLUMNS``): the gradient suites'
    ``backward`` was once dropped, and the report crashed on the first real gradient sweep."""
    import importlib

    from fpbench.report.load import PARAM_COLUMNS

    names = set()
    modules = ("bench_solve", "bench_accuracy", "bench_cold", "bench_floor", "bench_grad", "bench_train")
    for module in (*modules, "bench_diag"):
        mod = importlib.import_module(f"benchmarks.{module}")
        for obj in vars(mod).values():
            if isinstance(obj, type) and obj.__module__ == mod.__name__ and hasattr(obj, "param_names"):
                names.update(obj.param_names)
    assert {"backward", "method", "budget"} <= names
    assert names <= set(PARAM_COLUMNS), sorted(names - set(PARAM_COLUMNS))


def curve_records():
    """Three training runs of 20 steps: BPTT (loss 1/step, 0.1 s a step), the truncated
    model (loss 1/(2 step), 0.05 s a step) and one that never learns."""
    steps = np.arange(1, 21)
    common = dict(target="torch:cpu", contraction=0.9, machine="m", commit="abcdef12")
    return [
        dict(common, method="sequential", budget="tol", losses=list(1 / steps), step_seconds=[0.1] * 20),
        dict(common, method="jacobi_unrolled", budget=4, losses=list(0.5 / steps), step_seconds=[0.05] * 20),
        dict(common, method="newton", budget=4, losses=[1.0] * 20, step_seconds=[0.01] * 20),
    ]


def test_curve_frame_counts_steps_and_sums_seconds_and_a_later_sweep_wins():
    from fpbench.report.load import curve_frame

    first, *rest = curve_records()
    earlier = dict(first, losses=[9.0] * 20)
    curves = curve_frame([earlier, first, *rest])
    bptt = curves[curves["method"].eq("sequential")]
    assert len(curves) == 60 and list(bptt["step"]) == list(range(1, 21))
    np.testing.assert_allclose(bptt["seconds"], 0.1 * np.arange(1, 21))
    assert bptt["loss"].iloc[0] == 1.0 and set(curves["backend"]) == {"torch"}


def test_training_section_draws_the_curves_and_the_steps_to_loss_table(tmp_path):
    from fpbench.report.load import curve_frame

    f = frame()
    sections = {
        s.title: s
        for s in grad_sections(f, FigureFiles(OutputFolder(tmp_path), None), curve_frame(curve_records()))
    }
    training = sections["Training: time per step, loss and the train/inference gap"].blocks
    names = [b.path for b in training if isinstance(b, Image)]
    assert any("train-curve-step" in n for n in names) and any("train-curve-seconds" in n for n in names)
    table = next(b.frame for b in training if isinstance(b, Table) and "steps to loss" in b.frame)
    by = table.set_index("method")
    assert by.loc["sequential", "stated loss"] == "0.1"  # BPTT's loss at step 10 of 20
    assert by.loc["jacobi_unrolled", "steps to loss"] == 5
    assert by.loc["jacobi_unrolled", "steps vs BPTT"] == "0.5×"
    assert by.loc["jacobi_unrolled", "seconds vs BPTT"] == "0.25×"
    assert by.loc["newton", "steps vs BPTT"] == "not reached"


def test_damaged_curves_file_names_the_file_and_line(tmp_path):
    from fpbench.report.store import ReportError, read_curves

    path = tmp_path / "fpbench-abcdef12.curves"
    assert read_curves(path) == []
    good = '{"target": "t", "method": "m", "budget": 1, "contraction": 0.5, "losses": [], "step_seconds": []}'
    path.write_text(good + "\n{broken\n")
    with pytest.raises(ReportError, match=rf"{path.name}, line 2"):
        read_curves(path)
    path.write_text(good + '\n{"target": "t"}\n')
    with pytest.raises(ReportError, match="line 2: expected an object with"):
        read_curves(path)
    path.write_text(good + "\n")
    assert read_curves(path)[0]["method"] == "m"
