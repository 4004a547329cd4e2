"""``fpbench train`` prints the loss curve, the time per step and the gap; bad input and a
missing dataset package are clean errors."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from fpbench import tasks
from fpbench.cli import main
from fpbench.train import steps_to_loss, trailing_mean
from fpbench.train_cli import Progress, curve_steps

SMALL = [
    "train",
    "--seq-len",
    "8",
    "--hidden",
    "4",
    "--input-size",
    "2",
    "--batch",
    "3",
    "--dtype",
    "float64",
]


@pytest.mark.parametrize(
    "method",
    [["--solver", "sequential"], ["--solver", "jacobi", "--max-iters", "2", "--backward", "unrolled"]],
    ids=["bptt", "jacobi2"],
)
def test_train_prints_curve_time_and_gap(capsys, method):
    assert main([*SMALL, *method, "--steps", "30"]) == 0
    out = capsys.readouterr().out
    assert "loss curve" in out and "time/step: median" in out and "eval_loss=" in out and "gap=" in out
    rows = [line for line in out.splitlines() if line.startswith("  ") and line.split()[0].isdigit()]
    assert len(rows) == 20 and rows[0].split()[0] == "1" and rows[-1].split()[0] == "30"
    assert float(rows[-1].split()[1]) < float(rows[0].split()[1])  # the loss fell
    if "jacobi" in method:
        assert rows[0].split()[4] == "2"  # forward iterations


def test_train_bad_input_is_a_clean_error(capsys):
    assert main([*SMALL, "--steps", "0"]) == 2
    assert "steps must be a positive integer" in capsys.readouterr().err
    assert main([*SMALL, "--solver", "newton", "--backward", "unrolled", "--steps", "1"]) == 2
    assert "unrolled backward" in capsys.readouterr().err


def test_train_missing_package_is_a_clean_error(capsys, monkeypatch):
    def missing():
        raise tasks.MissingDependencyError("task 'digits' needs scikit-learn: pip install 'fpbench[train]'")

    monkeypatch.setattr(tasks, "load_digits_images", missing)
    argv = ["train", "--task", "digits", "--seq-len", "8", "--input-size", "8", "--steps", "1"]
    assert main(argv) == 2
    assert "pip install 'fpbench[train]'" in capsys.readouterr().err


def test_progress_bar_shows_only_for_long_runs():
    quiet, loud = io.StringIO(), io.StringIO()
    p = Progress(10, stream=quiet, after_s=1e9)
    for i in range(10):
        p(i, 1.0, 0.01)
    p.close()
    assert quiet.getvalue() == ""
    p = Progress(10, stream=loud, after_s=0.0)
    for i in range(10):
        p(i, 0.5, 0.01)
    p.close()
    assert "step 10/10" in loud.getvalue() and "loss 0.5" in loud.getvalue()


def test_curve_steps():
    assert curve_steps(5) == [0, 1, 2, 3, 4]
    s = curve_steps(1000)
    assert len(s) == 20 and s[0] == 0 and s[-1] == 999


def test_train_compare_tool_writes_the_table(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "train_compare.py"
    spec = importlib.util.spec_from_file_location("train_compare", path)
    tool = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_compare", tool)  # (its dataclass looks itself up there)
    spec.loader.exec_module(tool)
    out, curves = tmp_path / "training.md", tmp_path / "curves.csv"
    argv = ["--steps", "6", "--seq-len", "6", "--hidden", "3", "--batch", "2", "--ks", "2", "--tol", "1e-8"]
    assert tool.main([*argv, "--out", str(out), "--curves", str(curves)]) == 0
    text = out.read_text()
    assert "| `bptt (sequential)` |" in text and "1.00x" in text and "Stated loss" in text
    for label in (
        "jacobi(2) unrolled",
        "newton implicit @ tol",
        "quasi_newton implicit @ tol",
        "elk implicit @ tol",
        "chunked(P=4, o=8, k=1) unrolled",
        "chunked(P=4, o=8) implicit @ tol",
    ):
        assert f"`{label}`" in text
    assert "`native`: n/a" in text  # the numpy reference has no native autograd
    np.testing.assert_allclose(trailing_mean(np.array([1.0, 3.0, 5.0]), 2), [1.0, 2.0, 4.0])
    assert steps_to_loss(np.array([3.0, 2.0, 1.0]), np.array([0.5, 0.25, 0.25]), 2.0) == (2, 0.75)
    assert steps_to_loss(np.array([3.0, 2.0]), np.array([0.5, 0.25]), 1.0) == (None, None)
    rows = curves.read_text().splitlines()
    assert rows[0].startswith("task,method,step,loss") and len(rows) == 1 + 8 * 6  # 8 methods ran, 6 steps


def test_train_compare_tool_digits_smooths_minibatch_losses(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "train_compare.py"
    spec = importlib.util.spec_from_file_location("train_compare", path)
    tool = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_compare", tool)
    spec.loader.exec_module(tool)
    out = tmp_path / "training.md"
    argv = ["--task", "digits", "--steps", "3", "--hidden", "3", "--batch", "4", "--ks", "2", "--smooth", "2"]
    assert tool.main([*argv, "--tol", "1e-5", "--out", str(out)]) == 0
    text = out.read_text()
    assert "trailing mean over 2 steps" in text and "Accuracy (exact inference" in text
