"""The cell maths in NumPy: the step ``f(h, x)`` and its Jacobian ``df/dh``.

Every function takes the input projection ``gi = W_ih x + b_ih`` (computed once for
the whole sequence, since it does not depend on the state) and broadcasts over any
leading dimensions: ``h`` is ``(..., H)``, ``gi`` is ``(..., gH)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # overflow-free logistic


def input_projection(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """``gi = x W_ih^T + b_ih``: ``x (T, B, I)`` -> ``(T, B, gH)``."""
    return x @ params["weight_ih"].T + params["bias_ih"]


def _gru_parts(params, h, gi):
    H = h.shape[-1]
    gh = h @ params["weight_hh"].T + params["bias_hh"]
    r = sigmoid(gi[..., :H] + gh[..., :H])
    z = sigmoid(gi[..., H : 2 * H] + gh[..., H : 2 * H])
    hn = gh[..., 2 * H :]
    n = np.tanh(gi[..., 2 * H :] + r * hn)
    return r, z, n, hn


def step(cell: str, params: Mapping[str, np.ndarray], h: np.ndarray, gi: np.ndarray) -> np.ndarray:
    """One cell step ``h' = f(h, x)`` from ``h (..., H)`` and ``gi (..., gH)``."""
    if cell == "elman":
        return np.tanh(gi + h @ params["weight_hh"].T + params["bias_hh"])
    if cell == "gru":
        _, z, n, _ = _gru_parts(params, h, gi)
        return (1.0 - z) * n + z * h
    raise ValueError(f"unknown cell {cell!r}")


def jacobian(cell: str, params: Mapping[str, np.ndarray], h: np.ndarray, gi: np.ndarray) -> np.ndarray:
    """``df/dh`` at ``(h, gi)``: ``(..., H, H)``, row i = output i, column j = ``h_j``."""
    W = params["weight_hh"]
    if cell == "elman":
        hn = step(cell, params, h, gi)
        return (1.0 - hn**2)[..., :, None] * W
    if cell == "gru":
        H = h.shape[-1]
        Wr, Wz, Wn = W[:H], W[H : 2 * H], W[2 * H :]
        r, z, n, hn = _gru_parts(params, h, gi)
        dr = (r * (1.0 - r))[..., :, None] * Wr
        dz = (z * (1.0 - z))[..., :, None] * Wz
        dn = (1.0 - n**2)[..., :, None] * (hn[..., :, None] * dr + r[..., :, None] * Wn)
        eye = np.eye(H, dtype=h.dtype)
        return (1.0 - z)[..., :, None] * dn + (h - n)[..., :, None] * dz + z[..., :, None] * eye
    raise ValueError(f"unknown cell {cell!r}")


def jacobian_diag(cell: str, params: Mapping[str, np.ndarray], h: np.ndarray, gi: np.ndarray) -> np.ndarray:
    """The diagonal of ``df/dh``: ``(..., H)``, without forming the full matrix."""
    W = params["weight_hh"]
    if cell == "elman":
        hn = step(cell, params, h, gi)
        return (1.0 - hn**2) * np.diagonal(W)
    if cell == "gru":
        H = h.shape[-1]
        dWr, dWz, dWn = (np.diagonal(W[k * H : (k + 1) * H]) for k in range(3))
        r, z, n, hn = _gru_parts(params, h, gi)
        dr = r * (1.0 - r) * dWr
        dz = z * (1.0 - z) * dWz
        dn = (1.0 - n**2) * (hn * dr + r * dWn)
        return (1.0 - z) * dn + (h - n) * dz + z
    raise ValueError(f"unknown cell {cell!r}")
