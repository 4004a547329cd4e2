"""Issue 25, item 5: every memory bound is checked before allocation (``train``'s task and
evaluation, ``grad`` with an unrolled backward's kept iterations, the CLI), and the
estimates bound the measured peaks at small sizes."""

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import fpbench
import fpbench.memory
from fpbench.memory import estimate_grad_memory, estimate_memory
from fpbench.train import estimate_train_memory

ROOT = Path(__file__).resolve().parents[1]
TRAIN = importlib.import_module("fpbench.train")  # (fpbench.train is the function)
MiB = 2**20


def _env() -> dict[str, str]:
    """The environment of a subprocess that imports this checkout's fpbench."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path}


def _limit(monkeypatch, nbytes: int) -> None:
    monkeypatch.setattr(fpbench.memory, "available_memory", lambda: nbytes)


def _never(*args, **kwargs):
    raise AssertionError("allocated before the memory check")


# -- train: the task and the evaluation are counted before anything is built ----------------


def test_train_refuses_a_huge_teacher_before_building_it(monkeypatch):
    """GRU T = 10^6, H = 512: the teacher's data and its exact evaluation alone are hundreds
    of GB. Refused from the estimate; the task builder is never called."""
    monkeypatch.setattr(TRAIN, "make_task", _never)
    spec = fpbench.RNNSpec(cell="gru", seq_len=10**6, hidden_size=512, input_size=8, batch=16)
    t0 = time.perf_counter()
    with pytest.raises(fpbench.InsufficientMemoryError, match="training with sequential on numpy:cpu") as e:
        fpbench.train(spec, fpbench.Sequential())
    assert time.perf_counter() - t0 < 5
    assert "estimate_train_memory" in str(e.value) and "MemAvailable" in str(e.value)


def test_train_on_a_gpu_still_counts_the_host_side(monkeypatch):
    """The task and the exact float64 evaluation live on the host whatever the device."""
    spec = fpbench.RNNSpec(cell="gru", seq_len=10**6, hidden_size=512, input_size=8, batch=16)
    host = estimate_train_memory(spec, fpbench.Sequential(), "numpy", device="cuda")
    assert host >= 10**6 * 16 * (8 + 3 * 512 + 512) * 8  # the exact evaluation's inputs, projection, states
    assert estimate_train_memory(spec, fpbench.Sequential(), "numpy") > host


def test_train_counts_its_evaluation_batch(monkeypatch):
    """The NumPy reference evaluates the trained model on the digits' training set
    :data:`~TRAIN.NUMPY_EVAL_CHUNK` sequences at a time, not ``spec.batch``: Newton's
    Jacobians at that batch are counted, and a limit below them refuses before the task."""
    spec = fpbench.RNNSpec(cell="gru", seq_len=8, input_size=8, hidden_size=64, batch=2)
    solver = fpbench.Newton(2)
    eval_spec = dataclasses.replace(spec, batch=TRAIN.NUMPY_EVAL_CHUNK)
    evaluation = estimate_memory(eval_spec, solver, "float64")
    need = estimate_train_memory(spec, solver, "numpy", "digits")
    assert need >= evaluation > 50 * estimate_memory(spec, solver, "float64")
    monkeypatch.setattr(TRAIN, "make_task", _never)
    _limit(monkeypatch, need - evaluation // 2)
    with pytest.raises(fpbench.InsufficientMemoryError, match="training with newton"):
        fpbench.train(spec, solver, task="digits")


def test_numpy_evaluation_batch_is_at_most_the_training_set():
    """The teacher's training set is one batch: it is evaluated at that batch, not padded to
    :data:`~TRAIN.NUMPY_EVAL_CHUNK` sequences."""
    spec = fpbench.RNNSpec(cell="gru", seq_len=8, input_size=2, hidden_size=4, batch=2)
    assert TRAIN.eval_batch(spec, "numpy", 2) == 2
    assert TRAIN.eval_batch(spec, "numpy", 1438) == TRAIN.NUMPY_EVAL_CHUNK
    assert TRAIN.eval_batch(spec, "torch", 1438) == 2


def test_train_estimate_bounds_the_measured_peak():
    """tracemalloc sees every NumPy allocation: a short training run on the reference (an
    unrolled backward, so the kept iterates count) stays under its estimate."""
    spec = fpbench.RNNSpec(cell="gru", seq_len=512, input_size=4, hidden_size=16, batch=4)
    solver = fpbench.Jacobi(8, backward="unrolled")
    fpbench.train(dataclasses.replace(spec, seq_len=8), solver, steps=1)  # (lazy imports)
    tracemalloc.start()
    try:
        fpbench.train(spec, solver, steps=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    need = estimate_train_memory(spec, solver, "numpy")
    assert peak <= need < 10 * peak, (peak, need)


# -- grad: the unrolled backward's kept iterations --------------------------------------------


def test_unrolled_estimate_grows_with_the_iterations_kept():
    """Every iteration an unrolled backward keeps costs rows x (what it keeps) bytes; the
    implicit backward's estimate does not depend on the budget."""
    spec = fpbench.RNNSpec(cell="gru", seq_len=2048, batch=2, hidden_size=64, input_size=32)
    N, S = 2048 * 2, 64

    def grad_mem(k: int, backend=None, backward="unrolled") -> int:
        return estimate_grad_memory(spec, fpbench.Jacobi(k, backward=backward), backend=backend)

    residuals = 2 * 512 * 8  # (the forward's float64 residual buffer, counted twice)
    assert grad_mem(1024, "numpy") - grad_mem(512, "numpy") == 512 * N * S * 8 + residuals  # float64 iterates
    per_iteration = fpbench.memory.unrolled_items(spec, fpbench.Jacobi(1))
    assert grad_mem(1024) - grad_mem(512) == 512 * N * per_iteration * 4 + residuals  # autodiff, float32
    assert grad_mem(1024) > 1024 * N * (3 * S + S) * 4  # at least every iteration's gates and output
    implicit = grad_mem(1024, backward="implicit")
    assert implicit == pytest.approx(grad_mem(4, backward="implicit"), rel=1e-3)  # (residuals only)
    assert grad_mem(10**9) == grad_mem(2048)  # the cap: at most T iterations run


def test_grad_refuses_an_unrolled_backward_that_cannot_keep_its_iterates(monkeypatch):
    """Jacobi(1024) unrolled at T = 2048, B = 2, H = 64 keeps 1024 float64 iterates on the
    reference (2 GiB): refused under a 1 GiB limit before the backend prepares anything,
    while the implicit backward fits."""
    problem = fpbench.make_problem(
        fpbench.RNNSpec(cell="gru", seq_len=2048, batch=2, hidden_size=64, input_size=32)
    )
    _limit(monkeypatch, 2**30)
    monkeypatch.setattr(fpbench.get_backend("numpy"), "prepare_grad", _never)
    with pytest.raises(fpbench.InsufficientMemoryError, match=r"gradient of jacobi.* on numpy:cpu") as e:
        fpbench.grad(problem, fpbench.Jacobi(1024, backward="unrolled"))
    message = str(e.value)
    assert "estimate_grad_memory" in message and "only 1 GiB" in message and "free memory" in message
    assert estimate_grad_memory(problem, fpbench.Jacobi(1024), backend="numpy") < 2**30


@pytest.mark.parametrize("solver", ["jacobi", "chunked"])
def test_numpy_unrolled_estimate_bounds_the_traced_peak(solver):
    """The reference keeps one float64 iterate per iteration: the traced peak grows by that
    per iteration (within 25%) and stays under the estimate."""
    spec = fpbench.RNNSpec(cell="gru", seq_len=1024, batch=2, hidden_size=32, input_size=8)
    problem = fpbench.make_problem(spec)
    make, budgets = {
        "jacobi": (lambda k: fpbench.Jacobi(k, backward="unrolled"), (8, 16)),
        "chunked": (lambda k: fpbench.Chunked(k, chunks=k, backward="unrolled"), (4, 8)),
    }[solver]
    peaks = {}
    for k in budgets:
        tracemalloc.start()
        try:
            fpbench.grad(problem, make(k))
            peaks[k] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        need = estimate_grad_memory(problem, make(k), backend="numpy")
        assert peaks[k] <= need < 10 * peaks[k], (k, peaks[k], need)
    low, high = budgets
    per_iteration = (peaks[high] - peaks[low]) / (high - low)
    assert 0.75 <= per_iteration / (1024 * 2 * 32 * 8) <= 1.25, peaks


CHILD = textwrap.dedent(
    """
    import json, sys
    import fpbench

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    cfg = json.loads(sys.argv[1])
    spec, backend = fpbench.RNNSpec(**cfg["spec"]), cfg["backend"]
    warm = fpbench.make_problem(fpbench.RNNSpec(**{**cfg["spec"], "seq_len": 4, "batch": 1}))
    fields = cfg["solver"]
    solver = fpbench.make_solver(**fields)
    fpbench.grad(warm, fpbench.make_solver(**{**fields, "max_iters": 2}), backend)
    problem = fpbench.make_problem(spec)
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) restarts from the current resident size
    fpbench.grad(problem, solver, backend)
    need = fpbench.estimate_grad_memory(problem, solver, backend=backend)
    print(json.dumps({"solver": str(solver), "peak": status("VmHWM") - before, "need": need}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")
@pytest.mark.parametrize(
    "backend, solvers",
    [
        ("torch", ["jacobi", "quasi_newton"]),
        ("jax", ["jacobi"]),
    ],
)
def test_framework_unrolled_estimate_bounds_the_resident_peak(backend, solvers):
    """torch's CPU allocator is invisible to tracemalloc (and so is XLA's): a fresh process
    per solver (memory a process freed would hide the next peak) measures how far its
    resident memory peaks above where it was before the gradient, at a size where the kept
    iterations dominate (tens of MB), and the estimate bounds it."""
    pytest.importorskip(backend)
    budgets = {"jacobi": 16, "quasi_newton": 4}
    spec = {"cell": "gru", "seq_len": 1024, "batch": 2, "hidden_size": 32, "input_size": 8}
    children = []
    for name in solvers:  # at once: the wall time of one
        cfg = {"spec": spec, "solver": {"name": name, "max_iters": budgets[name], "backward": "unrolled"}}
        argv = [sys.executable, "-c", CHILD, json.dumps({**cfg, "backend": backend})]
        children.append(
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        )
    for child in children:
        stdout, stderr = child.communicate(timeout=300)
        if "clear_refs" in stderr and "Error" in stderr:
            pytest.skip("cannot reset the resident peak (/proc/self/clear_refs)")
        assert child.returncode == 0, stderr[-2000:]
        got = json.loads(stdout.strip().splitlines()[-1])
        assert got["peak"] > 20 * MiB, got  # the kept iterations dominate what is measured
        assert got["peak"] <= got["need"], got


# -- the CLI: refused before the problem is generated ----------------------------------------

CLI_CHILD = textwrap.dedent(
    """
    import json, sys
    import fpbench.memory
    from fpbench.cli import main

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    fpbench.memory.available_memory = lambda: 64 * 2**20  # a 64 MiB limit
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rc = main(sys.argv[1:])
    print(json.dumps({"rc": rc, "grew": status("VmHWM") - before}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")
@pytest.mark.parametrize("command", ["grad", "solve"])
def test_cli_refuses_before_generating_the_problem(command):
    """A problem whose inputs alone are 256 MiB (float64, as they are drawn) under a 64 MiB
    limit: ``fpbench grad`` refuses, as ``fpbench solve`` does, with the resident memory
    barely moved."""
    argv = [command, "--seq-len", str(2**19), "--batch", "8", "--input-size", "8", "--hidden", "8"]
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CLI_CHILD, *argv], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert time.perf_counter() - t0 < 60
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["rc"] == 2, out.stderr
    assert out.stderr.startswith("fpbench: error: ") and "needs about" in out.stderr
    assert "MemAvailable" in out.stderr and "free memory" in out.stderr
    assert got["grew"] < 32 * MiB, got


def test_cli_grad_message_names_the_exact_reference(monkeypatch, capsys):
    """``fpbench grad`` also runs the float64 BPTT it compares with: counted, and said."""
    from fpbench import cli

    monkeypatch.setattr(cli, "make_problem", _never)
    _limit(monkeypatch, MiB)
    argv = ["grad", "--seq-len", str(2**16), "--hidden", "64"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "the gradient of jacobi(max_iters=32) on numpy:cpu needs about" in err
    assert "exact float64 reference" in err


def test_train_cli_refuses_before_building_the_task(monkeypatch, capsys):
    from fpbench.cli import main

    monkeypatch.setattr(TRAIN, "make_task", _never)
    assert main(["train", "--seq-len", str(10**6), "--hidden", "512"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fpbench: error: training with sequential on numpy:cpu needs about")
    assert np.isfinite(float(err.split("needs about ")[1].split(" GiB")[0]))
