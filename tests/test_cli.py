"""The ``fpbench`` command prints what it promises."""

import subprocess
import sys

import pytest

from fpbench.cli import main


def test_info_lists_backends_and_threads(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "thread settings:" in out and "OMP_NUM_THREADS=" in out
    for name in ("numpy", "torch", "jax", "numba"):
        assert f"  {name}" in out
    assert "numpy  available  devices=cpu" in out


@pytest.mark.parametrize("solver", ["jacobi", "newton", "quasi_newton", "sequential"])
def test_solve_prints_trace_error_and_time(capsys, solver):
    argv = [
        "solve",
        "--cell",
        "gru",
        "--hidden",
        "8",
        "--seq-len",
        "40",
        "--solver",
        solver,
        "--max-iters",
        "40",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "iterations:" in out and "error vs exact sequential" in out and "run median" in out
    if solver != "sequential":
        assert "iterations: 40  converged=True" in out
        assert "residuals:" in out
    assert "max_abs=" in out


def test_solve_bad_input_is_a_clean_error(capsys):
    assert main(["solve", "--hidden", "0"]) == 2
    assert "hidden_size must be a positive integer" in capsys.readouterr().err
    assert main(["solve", "--backend", "nope", "--seq-len", "4"]) == 2
    assert "unknown backend 'nope'" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpbench.cli",
            "solve",
            "--seq-len",
            "16",
            "--hidden",
            "4",
            "--max-iters",
            "4",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "iterations: 4" in out
