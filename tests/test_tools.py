"""The measurement tools in ``tools/``: what they run, not how fast (speed is never asserted)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEED_RATIOS = ROOT / "tools" / "speed_ratios.py"


@pytest.fixture(scope="module")
def speed_ratios():
    spec = importlib.util.spec_from_file_location("speed_ratios", SPEED_RATIOS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_worker_measures_a_checked_solve(speed_ratios):
    case = speed_ratios.Case("numpy:cpu", "solve", "elman", 4, 8, "jacobi", 2)
    (seconds,) = speed_ratios.measure([case], rounds=1, repeats=1)
    assert isinstance(seconds, float) and seconds > 0


def test_a_grad_case_reaches_the_solver_with_its_backward_mode(speed_ratios):
    """``Case.backward`` is the solver's field: unrolled runs, a wrong mode is the solver's error."""
    case = speed_ratios.Case("numpy:cpu", "grad", "elman", 4, 8, "jacobi", 8, tol=1e-9, backward="unrolled")
    (seconds,) = speed_ratios.measure([case], rounds=1, repeats=1)
    assert isinstance(seconds, float) and seconds > 0
    (reply,) = speed_ratios.measure([speed_ratios.replace(case, backward="sideways")], rounds=1, repeats=1)
    assert isinstance(reply, str) and "backward must be one of" in reply


def test_against_runs_the_other_checkouts_fpbench(speed_ratios, tmp_path):
    """``Case.tree``: the worker imports fpbench from that checkout, not this one."""
    (tmp_path / "fpbench").mkdir()
    (tmp_path / "fpbench" / "__init__.py").write_text("raise ImportError('the other checkout')\n")
    case = speed_ratios.Case("numpy:cpu", "solve", "elman", 4, 8, "jacobi", 2, tree=str(tmp_path))
    (reply,) = speed_ratios.measure([case], rounds=1, repeats=1)
    assert isinstance(reply, str) and reply.startswith("FAILED") and "the other checkout" in reply


def test_against_a_folder_without_fpbench_is_refused(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SPEED_RATIOS), "--against", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert f"--against {tmp_path}: no fpbench package" in out.stderr
