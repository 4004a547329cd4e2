"""Tolerances (one table keyed by dtype) and the one closeness check.

Used by the tests and by the benchmarks' correctness gate, so "correct" means the
same thing in both.
"""

from __future__ import annotations

import numpy as np

TOLERANCES: dict[str, dict[str, float]] = {
    # rel_rms: ||a - e||_2 / ||e||_2 over all states; max_abs: max |a - e|.
    # float32 is compared with the float64 reference, so it carries float32 rounding.
    "float32": {"rel_rms": 1e-4, "max_abs": 1e-3},
    "float64": {"rel_rms": 1e-10, "max_abs": 1e-9},
}


def errors(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """``{"max_abs", "rel_rms"}`` of ``actual`` against ``expected`` (NaN if non-finite)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: actual {a.shape} vs expected {e.shape}")
    if not np.isfinite(a).all():
        return {"max_abs": float("nan"), "rel_rms": float("nan")}
    d = a - e
    norm = float(np.linalg.norm(e)) or 1.0
    return {"max_abs": float(np.max(np.abs(d), initial=0.0)), "rel_rms": float(np.linalg.norm(d)) / norm}


def check_close(name: str, actual: np.ndarray, expected: np.ndarray, dtype: str) -> tuple[bool, str]:
    """Whether ``actual`` matches ``expected`` within ``TOLERANCES[dtype]``, and a message
    with both error measures. Fails on any NaN/Inf."""
    tol = TOLERANCES[dtype]
    err = errors(actual, expected)
    ok = all(np.isfinite(v) and v <= tol[k] for k, v in err.items())
    msg = (
        f"{name}: max_abs={err['max_abs']:.3g} (tol {tol['max_abs']:.0e}), "
        f"rel_rms={err['rel_rms']:.3g} (tol {tol['rel_rms']:.0e}) [{dtype}]"
    )
    return ok, msg


def assert_close(name: str, actual: np.ndarray, expected: np.ndarray, dtype: str) -> None:
    """Raise ``AssertionError`` with both error measures unless :func:`check_close` passes."""
    ok, msg = check_close(name, actual, expected, dtype)
    if not ok:
        raise AssertionError(msg)
