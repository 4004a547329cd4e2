"""What is specific to the torch backend: the parallel scan, the device-side convergence
check, the float32 precision guard and the thread setting."""

import os
import subprocess
import sys

import numpy as np
import pytest
from problems import spec

import fpbench

torch = pytest.importorskip("torch")
tb = pytest.importorskip("backends.torch")


@pytest.mark.parametrize("full", [True, False], ids=["full", "diagonal"])
@pytest.mark.parametrize("N", [1, 2, 3, 6, 7, 13, 64])
def test_scan_matches_sequential_recurrence(N, full):
    """Every length, odd ones included: s_k = A_k s_{k-1} + b_k from s_{-1} = 0."""
    rng = np.random.default_rng(N)
    H = 4
    A = rng.uniform(-0.6, 0.6, size=(N, H, H) if full else (N, H))
    b = rng.standard_normal((N, H))
    expected = fpbench.reference.linear_recurrence(A[:, None], b[:, None], np.zeros((1, H)))[:, 0]
    scan = tb._Scan(N, H, full, torch.float64, torch.device("cpu"))
    got = torch.tensor(b)
    scan(torch.tensor(A), got)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "solver",
    [fpbench.Jacobi(200, tol=1e-5), fpbench.QuasiNewton(200, tol=1e-5), fpbench.Newton(50, tol=1e-9)],
    ids=str,
)
@pytest.mark.parametrize("cell", ["elman", "gru"])
def test_check_interval_changes_nothing(cell, solver):
    """The CUDA strategy (read the device-side flag every few iterations, freeze the
    converged state in between) gives exactly the iterations and states of checking
    every iteration; run on CPU so that it is tested everywhere."""
    problem = fpbench.make_problem(spec("T33-B2-H16-I4-rho0.5", cell, "float64"))
    outs = []
    for every in (1, 8):
        prepared = tb.TorchBackend(check_every=every).prepare(problem, solver, "cpu")
        outs.append(prepared.to_host(prepared.run()))
    n = len(outs[0][1])
    assert n % 8 and n < solver.max_iters  # converged inside a block: frozen iterations ran
    np.testing.assert_array_equal(outs[1][1], outs[0][1])
    np.testing.assert_array_equal(outs[1][0], outs[0][0])


def test_check_interval_stops_on_nonfinite():
    good = fpbench.make_problem(spec("T7-B3-H5-I2", "gru", "float32"))
    x = good.x.copy()
    x[2, 1, 0] = np.nan
    bad = fpbench.Problem(good.spec, x, good.h0, good.params)
    prepared = tb.TorchBackend(check_every=8).prepare(bad, fpbench.Jacobi(50, tol=1e-6), "cpu")
    _, residuals = prepared.to_host(prepared.run())
    assert len(residuals) == 1 and np.isnan(residuals[0])


def test_float32_precision_guard_restores_caller_settings():
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        with tb._ieee_fp32():
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.backends.cudnn.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_threads_come_from_fpbench_threads():
    code = (
        "import torch, fpbench; b = fpbench.get_backend('torch'); b.devices(); "
        "print(torch.get_num_threads(), b.info()['torch_threads'])"
    )
    env = {**os.environ, "FPBENCH_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1"]


def test_bad_fpbench_threads_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(tb, "_threads", None)  # as if first used now
    monkeypatch.setenv("FPBENCH_THREADS", "zero")
    with pytest.raises(ValueError, match="FPBENCH_THREADS must be a positive integer"):
        tb.TorchBackend().devices()
