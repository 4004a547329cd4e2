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


GRAD_TOLERANCES: dict[str, float] = {
    # relative L2 error ||a - e|| / ||e|| of each gradient array (weight_ih, ..., x, h0, c0)
    # against the float64 reference; float32 carries the rounding of both passes.
    "float32": 1e-3,
    "float64": 1e-9,
}


def grad_errors(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative L2 error of every gradient array, by name (NaN if non-finite); the
    denominator is floored at 1e-12 so that an all-zero gradient compares absolutely."""
    if set(actual) != set(expected):
        raise ValueError(f"gradient names differ: {sorted(actual)} vs {sorted(expected)}")
    out = {}
    for k, e in expected.items():
        a = np.asarray(actual[k], dtype=np.float64)
        e = np.asarray(e, dtype=np.float64)
        if a.shape != e.shape:
            raise ValueError(f"d{k}: shape mismatch: actual {a.shape} vs expected {e.shape}")
        if not np.isfinite(a).all():
            out[k] = float("nan")
        else:
            out[k] = float(np.linalg.norm(a - e) / max(float(np.linalg.norm(e)), 1e-12))
    return out


def check_grad_close(
    name: str, actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], dtype: str
) -> tuple[bool, str]:
    """Whether every gradient in ``actual`` (e.g. ``GradResult.arrays()``) matches
    ``expected`` within ``GRAD_TOLERANCES[dtype]``, and a message with each error."""
    tol = GRAD_TOLERANCES[dtype]
    err = grad_errors(actual, expected)
    ok = all(np.isfinite(v) and v <= tol for v in err.values())
    detail = ", ".join(f"{k}={v:.2g}" for k, v in err.items())
    return ok, f"{name}: gradient rel L2 errors {detail} (tol {tol:.0e}) [{dtype}]"


def assert_grad_close(
    name: str, actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], dtype: str
) -> None:
    """Raise ``AssertionError`` with every error unless :func:`check_grad_close` passes."""
    ok, msg = check_grad_close(name, actual, expected, dtype)
    if not ok:
        raise AssertionError(msg)


def cells_on(backend: str) -> list[str]:
    """The cells of :data:`fpbench.CELLS` that ``backend`` implements (its
    :attr:`~fpbench.Backend.recurrences`), for tests that draw a cell for one backend.

    Raises:
        BackendUnavailableError: unknown backend, or its framework is missing.
    """
    from .cells import CELLS
    from .registry import get_backend

    recurrences = get_backend(backend).recurrences
    return [name for name, cell in CELLS.items() if cell.recurrence in recurrences]
