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


@pytest.mark.parametrize(
    ("solver", "extra"),
    [
        ("sequential", []),
        ("jacobi", ["--tol", "1e-9", "--max-iters", "100"]),
        ("quasi_newton", ["--tol", "1e-9", "--max-iters", "100", "--cell", "lstm"]),
        ("newton", ["--max-iters", "40"]),
        ("jacobi", ["--max-iters", "3", "--backward", "unrolled"]),
    ],
    ids=["sequential", "jacobi-tol", "quasi_newton-lstm", "newton", "jacobi-unrolled"],
)
def test_grad_prints_both_passes_and_gradient_errors(capsys, solver, extra):
    argv = ["grad", "--hidden", "6", "--seq-len", "24", "--batch", "2", "--dtype", "float64"]
    argv += ["--solver", solver]
    assert main([*argv, *extra]) == 0
    out = capsys.readouterr().out
    assert "forward:" in out and "backward:" in out and "forward+backward median" in out
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "x", "h0"):
        assert f"d{name} " in out
    assert ("dc0 " in out) == ("lstm" in extra)
    errs = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("  d")]
    if solver == "jacobi" and "unrolled" in extra:  # the 3-truncated model's gradient: not exact
        assert "backward:   unrolled  iterations=0" in out and max(errs) > 1e-3
    else:
        assert max(errs) < 1e-7, out
    if solver in ("jacobi", "quasi_newton") and "--tol" in extra:
        assert "implicit:" in out and "residuals:" in out


def test_grad_bad_input_is_a_clean_error(capsys):
    small = ["--seq-len", "4", "--hidden", "2"]
    assert main(["grad", "--solver", "newton", "--backward", "unrolled", *small]) == 2
    assert "no unrolled backward" in capsys.readouterr().err
    assert main(["grad", "--solver", "native", "--seq-len", "4", "--hidden", "2"]) == 2
    assert "no backward pass for solver 'native'" in capsys.readouterr().err
