"""Numba-specific checks: the chunked parallel scan for any chunk count, and info()."""

import numpy as np
import pytest

import fpbench
from fpbench.reference import linear_recurrence

pytest.importorskip("numba")
pytest.importorskip("scipy")
K = pytest.importorskip("backends._numba_kernels")


@pytest.mark.parametrize("chunks", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("full", [True, False], ids=["full", "diagonal"])
def test_chunked_scan_matches_sequential_recurrence(full, chunks):
    """More chunks than steps, and chunk counts this machine's threads never reach."""
    T, B, H = 33, 2, 5
    rng = np.random.default_rng(0)
    A = rng.uniform(-0.6, 0.6, size=(T, B, H, H) if full else (T, B, H))
    b, h0 = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    expected = linear_recurrence(A, b, h0)
    s = np.zeros((T + 1, B, H))
    s[0] = h0
    # the kernel takes transposed Jacobians, weight as in the backend, and destroys A, b
    At = np.ascontiguousarray(np.swapaxes(A, -1, -2)) if full else A.copy()
    K.linear_scan(At, b.copy(), s, float(H + 1) if full else 1.0, chunks)
    np.testing.assert_allclose(s[1:], expected, rtol=1e-12, atol=1e-12)


def test_info_reports_threads():
    info = fpbench.get_backend("numba").info()
    assert int(info["numba_threads"]) >= 1
    assert info["numba_threading_layer"] in {"tbb", "omp", "workqueue"}
