"""Bad input raises the documented error, naming the field and what is allowed."""

import numpy as np
import pytest

import fpbench

BAD_SPECS = {
    "cell": ({"cell": "lstm9"}, r"cell must be one of \['elman', 'gru', 'lstm'\]"),
    "hidden_size-zero": ({"hidden_size": 0}, "hidden_size must be a positive integer"),
    "input_size-negative": ({"input_size": -3}, "input_size must be a positive integer"),
    "seq_len-float": ({"seq_len": 2.5}, "seq_len must be a positive integer"),
    "batch-zero": ({"batch": 0}, "batch must be a positive integer"),
    "dtype": ({"dtype": "float16"}, r"dtype must be one of \['float32', 'float64'\]"),
    "contraction-negative": ({"contraction": -0.1}, "contraction must be a finite number >= 0"),
    "contraction-nan": ({"contraction": float("nan")}, "contraction must be a finite number >= 0"),
    "contraction-inf": ({"contraction": float("inf")}, "contraction must be a finite number >= 0"),
    "seed-negative": ({"seed": -1}, "seed must be a non-negative integer"),
}


@pytest.mark.parametrize(("kwargs", "match"), BAD_SPECS.values(), ids=BAD_SPECS)
def test_bad_spec(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fpbench.RNNSpec(**kwargs)


@pytest.mark.parametrize("solver_cls", [fpbench.Jacobi, fpbench.Newton, fpbench.QuasiNewton])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_iters": 0}, "max_iters must be an integer >= 1"),
        ({"max_iters": 2.0}, "max_iters must be an integer >= 1"),
        ({"max_iters": 4, "tol": -1e-3}, "tol must be None or a finite number >= 0"),
        ({"max_iters": 4, "tol": float("nan")}, "tol must be None or a finite number >= 0"),
    ],
    ids=["max_iters-zero", "max_iters-float", "tol-negative", "tol-nan"],
)
def test_bad_solver(solver_cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        solver_cls(**kwargs)


def test_unknown_solver_name():
    with pytest.raises(ValueError, match="unknown solver 'picard'; choose one of"):
        fpbench.make_solver("picard", 3)


def test_mismatched_problem_shapes():
    p = fpbench.make_problem(fpbench.RNNSpec(cell="gru", hidden_size=4, input_size=2, seq_len=5, batch=2))
    with pytest.raises(ValueError, match=r"Problem.x has shape \(5, 2, 3\).*needs \(5, 2, 2\)"):
        fpbench.Problem(p.spec, np.zeros((5, 2, 3), np.float32), p.h0, p.params)
    params = dict(p.params, weight_hh=np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"Problem.weight_hh has shape \(4, 4\).*needs \(12, 4\)"):
        fpbench.Problem(p.spec, p.x, p.h0, params)


def test_unknown_backend_lists_known():
    p = fpbench.make_problem(fpbench.RNNSpec(seq_len=3, hidden_size=2, input_size=2, batch=1))
    with pytest.raises(
        fpbench.BackendUnavailableError, match=r"unknown backend 'tensorflow'; known backends"
    ):
        fpbench.solve(p, fpbench.Sequential(), backend="tensorflow")


def test_unavailable_device_lists_available():
    p = fpbench.make_problem(fpbench.RNNSpec(seq_len=3, hidden_size=2, input_size=2, batch=1))
    with pytest.raises(
        fpbench.BackendUnavailableError, match=r"device 'tpu' is not available.*available: \['cpu'\]"
    ):
        fpbench.solve(p, fpbench.Sequential(), backend="numpy:tpu")
    assert issubclass(fpbench.BackendUnavailableError, LookupError)


def test_unsupported_solver_on_backend():
    p = fpbench.make_problem(fpbench.RNNSpec(seq_len=3, hidden_size=2, input_size=2, batch=1))
    with pytest.raises(fpbench.UnsupportedError, match="does not implement solver 'native'"):
        fpbench.solve(p, fpbench.Native(), backend="numpy")


def test_solve_rejects_non_fpbench_objects():
    p = fpbench.make_problem(fpbench.RNNSpec(seq_len=3, hidden_size=2, input_size=2, batch=1))
    with pytest.raises(TypeError, match="solver must be an fpbench solver"):
        fpbench.solve(p, "jacobi")
    with pytest.raises(TypeError, match=r"problem must be an fpbench\.Problem"):
        fpbench.solve(p.spec, fpbench.Sequential())


def test_import_needs_numpy_only():
    import subprocess
    import sys

    heavy = "('torch', 'jax', 'numba', 'pandas')"
    code = f"import sys, fpbench; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_bad_thread_count_is_named(monkeypatch, raw):
    """One parse of FPBENCH_THREADS serves every backend (torch, JAX, Numba)."""
    from fpbench.backend import requested_threads

    monkeypatch.setenv("FPBENCH_THREADS", raw)
    with pytest.raises(ValueError, match=rf"FPBENCH_THREADS must be a positive integer, got '{raw}'"):
        requested_threads()


def test_thread_count_defaults_to_cores(monkeypatch):
    import os

    from fpbench.backend import requested_threads

    monkeypatch.delenv("FPBENCH_THREADS", raising=False)
    assert requested_threads() == (os.cpu_count() or 1)
    monkeypatch.setenv("FPBENCH_THREADS", " 3 ")
    assert requested_threads() == 3
