"""Bad input raises the documented error, naming the field and what is allowed."""

import numpy as np
import pytest

import fpbench

BAD_SPECS = {
    "cell": (
        {"cell": "lstm9"},
        r"cell must be one of \['elman', 'gru', 'gru_diag', 'lstm', 'lstm_cifg_diag'\]",
    ),
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


def test_unavailable_device_lists_available(monkeypatch):
    """A device the backend knows but this machine lacks (a stand-in: numpy given a "tpu")."""
    from fpbench import registry

    monkeypatch.setitem(registry.ALL_DEVICES, "numpy", ("cpu", "tpu"))
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


# -- issue 25, item 6: errors that name the argument and what is allowed ------------------


def _tiny() -> fpbench.Problem:
    return fpbench.make_problem(fpbench.RNNSpec(seq_len=3, hidden_size=2, input_size=2, batch=1))


UNCLEAR = {
    "train-seed-negative": (
        lambda p: fpbench.train(p.spec, fpbench.Sequential(), steps=1, seed=-1),
        ValueError,
        r"seed must be a non-negative integer \(the task's seed\), got -1",
    ),
    "train-seed-bool": (
        lambda p: fpbench.train(p.spec, fpbench.Sequential(), steps=1, seed=True),
        ValueError,
        "seed must be a non-negative integer",
    ),
    "train-spec-string": (
        lambda p: fpbench.train("gru", fpbench.Sequential(), steps=1),
        TypeError,
        r"spec must be an fpbench\.RNNSpec such as fpbench\.RNNSpec\(cell='gru'\), got 'gru'",
    ),
    "spec-cell-list": (
        lambda p: fpbench.RNNSpec(cell=["gru"]),
        ValueError,
        r"RNNSpec\.cell must be one of \['elman', 'gru', 'gru_diag', 'lstm', 'lstm_cifg_diag'\], "
        r"got \['gru'\]",
    ),
    "make_solver-name-list": (
        lambda p: fpbench.make_solver(["jacobi"], 3),
        ValueError,
        r"unknown solver \['jacobi'\]; choose one of",
    ),
    "default_cotangent-problem": (
        lambda p: fpbench.default_cotangent(p),
        TypeError,
        r"spec must be an fpbench\.RNNSpec \(for a Problem, pass problem\.spec\), got Problem",
    ),
    "default_cotangent-string": (
        lambda p: fpbench.default_cotangent("gru"),
        TypeError,
        r"spec must be an fpbench\.RNNSpec, got str",
    ),
    "estimate_memory-solver-string": (
        lambda p: fpbench.estimate_memory(p, "newton"),
        TypeError,
        r"solver must be an fpbench solver such as fpbench\.Jacobi\(\.\.\.\), got 'newton'",
    ),
}


@pytest.mark.parametrize(("call", "error", "match"), UNCLEAR.values(), ids=UNCLEAR)
def test_error_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call(_tiny())


# -- issue 25, item 6: non-numeric nested lists, truncated_states' k, huge contractions ----

NOT_NUMBERS = {
    "strings": ([[["a", "b"]], [["c", "d"]], [["e", "f"]]], TypeError, "must hold real numbers.*<U1"),
    "bools": ([[[True, False]], [[True, True]], [[False, False]]], TypeError, "must hold real numbers.*bool"),
    "none": ([[[1.0, None]], [[1.0, 2.0]], [[3.0, 4.0]]], TypeError, "must hold real numbers.*object"),
    "complex": ([[[1j, 2.0]], [[1.0, 2.0]], [[3.0, 4.0]]], TypeError, "must hold real numbers.*complex"),
    "ragged": ([[[1.0, 2.0]], [[1.0]], [[3.0, 4.0]]], ValueError, "must be a rectangular array"),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("x", "error", "match"), NOT_NUMBERS.values(), ids=NOT_NUMBERS)
def test_problem_rejects_non_numeric_lists(dtype, x, error, match):
    """A float64 spec used to store these as they came (``<U1``, ``bool``, ``object``)."""
    p = fpbench.make_problem(fpbench.RNNSpec(seq_len=3, hidden_size=2, input_size=2, batch=1, dtype=dtype))
    with pytest.raises(error, match=rf"Problem\.x {match}"):
        fpbench.Problem(p.spec, x, p.h0, p.params)


def test_problem_still_refuses_an_array_of_another_dtype():
    """Lists are converted; NumPy arrays are checked, never cast (nothing loosened)."""
    p = fpbench.make_problem(
        fpbench.RNNSpec(seq_len=3, hidden_size=2, input_size=2, batch=1, dtype="float64")
    )
    with pytest.raises(ValueError, match=r"Problem\.x has dtype int64, but the spec needs float64"):
        fpbench.Problem(p.spec, np.ones((3, 1, 2), dtype=np.int64), p.h0, p.params)


@pytest.mark.parametrize("k", [-1, -5, 1.5, True, "2", None], ids=repr)
def test_truncated_states_rejects_bad_k(k):
    """``k = -1`` used to return zeros without a word."""
    with pytest.raises(ValueError, match=r"k must be an integer >= 0 .*got"):
        fpbench.truncated_states(_tiny(), k)


def test_truncated_states_k_zero_is_the_zero_start():
    """k = 0: the model that has seen no input (Jacobi's starting iterate); k >= T: exact."""
    p = _tiny()
    np.testing.assert_array_equal(fpbench.truncated_states(p, 0), np.zeros((3, 1, 2)))
    np.testing.assert_allclose(fpbench.truncated_states(p, np.int64(3)), fpbench.reference_states(p))


@pytest.mark.parametrize(
    ("dtype", "contraction", "limit"),
    [("float32", 1e300, "3.4028235e\\+38"), ("float32", 1e39, "3.4028235e\\+38")],
    ids=["float32-1e300", "float32-1e39"],
)
def test_contraction_beyond_the_dtype_is_refused(dtype, contraction, limit):
    """It used to be accepted and made +-inf weights."""
    with pytest.raises(ValueError, match=rf"RNNSpec\.contraction must be at most {limit} for dtype {dtype}"):
        fpbench.RNNSpec(contraction=contraction, dtype=dtype)


@pytest.mark.parametrize(
    ("dtype", "contraction", "hidden"),
    [
        ("float32", float(np.finfo(np.float32).max), 1),
        ("float32", 3e38, 4),
        ("float64", 1e300, 4),
        ("float64", float(np.finfo(np.float64).max), 5),
    ],
    ids=["float32-max-H1", "float32-3e38", "float64-1e300", "float64-max-H5"],
)
def test_largest_contractions_give_finite_weights(dtype, contraction, hidden):
    spec = fpbench.RNNSpec(cell="elman", contraction=contraction, dtype=dtype, hidden_size=hidden, seq_len=2)
    w = fpbench.make_problem(spec).weight_hh
    assert np.isfinite(w).all()
    assert np.linalg.norm(w.astype(np.float64), 2) == pytest.approx(contraction, rel=1e-6)


UNKNOWN_DEVICES = {
    "torch:gpu": (
        "torch:gpu",
        None,
        r"unknown device 'gpu' for backend 'torch'; use one of \['cpu', 'cuda'\]",
    ),
    "jax:cuda": ("jax:cuda", None, r"unknown device 'cuda' for backend 'jax'; use one of \['cpu', 'gpu'\]"),
    "numpy-device-tpu": ("numpy", "tpu", r"unknown device 'tpu' for backend 'numpy'; use one of \['cpu'\]"),
    "torch:CUDA": ("torch:CUDA", None, r"unknown device 'CUDA' for backend 'torch'.*case-sensitive"),
}


@pytest.mark.parametrize(("backend", "device", "match"), UNKNOWN_DEVICES.values(), ids=UNKNOWN_DEVICES)
def test_unknown_device_is_named_unknown(backend, device, match):
    """Not "not available on this machine": it is not a device name at all."""
    with pytest.raises(fpbench.BackendUnavailableError, match=match):
        fpbench.solve(_tiny(), fpbench.Sequential(), backend=backend, device=device)


def test_cli_unknown_device(capsys):
    from fpbench.cli import main

    argv = ["solve", "--seq-len", "3", "--hidden", "2", "--input-size", "2", "--batch", "1"]
    assert main([*argv, "--backend", "torch:gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "fpbench: error: unknown device 'gpu' for backend 'torch'; use one of ['cpu', 'cuda']"
    )


# -- issue 25, item 6: report --out below a file -------------------------------------------


@pytest.mark.parametrize("below", ["sub", "sub/deeper"])
def test_report_out_below_a_file(tmp_path, capsys, below):
    """``--out FILE/sub`` was a NotADirectoryError traceback."""
    pytest.importorskip("pandas")
    pytest.importorskip("seaborn")
    pytest.importorskip("asv")
    from pathlib import Path

    from fpbench.cli import main

    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    fixture = Path(__file__).parent / "data" / "asv_results"
    assert main(["report", "--results", str(fixture), "--out", str(blocker / below)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fpbench: error: cannot create the output folder") and "Traceback" not in err
    assert f"{blocker} is a file, not a folder" in err
    assert blocker.read_text() == "x"
