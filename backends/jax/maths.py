"""The cell maths in JAX: :data:`xp`, ``jax.numpy`` with full-precision products, in which the
shared cells of :mod:`fpbench.cells` are evaluated; the parameters' layouts; the structured
Jacobian, the products and the time shifts every program is written with.

Float32 matmul precision: every product passes ``precision=lax.Precision.HIGHEST``, so on
GPU float32 is true float32, never TF32/bf16 passes (on CPU it changes nothing). This is
per operation; the global ``jax_default_matmul_precision`` is left alone.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fpbench.backend import UnsupportedError
from fpbench.cells import CELLS, Cell
from fpbench.spec import Problem

_HIGHEST = lax.Precision.HIGHEST


class _FullPrecisionNumpy:
    """``jax.numpy`` with ``matmul`` at ``Precision.HIGHEST``: the array namespace the shared
    cells (:mod:`fpbench.cells`) are evaluated in, so on GPU float32 is true float32."""

    def __getattr__(self, name: str) -> Any:
        return getattr(jnp, name)

    @staticmethod
    def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.matmul(a, b, precision=_HIGHEST)


xp = _FullPrecisionNumpy()
_mm = xp.matmul


def _cell_of(name: str) -> Cell:
    """The shared cell itself (:data:`fpbench.CELLS`), evaluated in :data:`xp`: every cell runs."""
    try:
        return CELLS[name]
    except KeyError:
        raise UnsupportedError(f"the jax backend has no cell {name!r}") from None


# The structured Jacobian (fpbench.cells): J[p, q] = sum_g diag(c[g, p]) W_g [q == 0] +
# diag(d[p, q]), with c (..., g, P, H), d (..., P, P, H). Generic in the cell.


def _structured_apply(c: jax.Array, d: jax.Array, wh: jax.Array, s: jax.Array) -> jax.Array:
    """``J s`` without forming ``J``: ``wh (..., gH)`` holds ``W_g h`` of every gate (the
    product the step computed anyway), ``s (..., P*H)`` the state. Returns ``(..., P*H)``."""
    g, P, H = c.shape[-3:]
    # Sums written out over the (few) gates and parts: XLA's CPU fusion of a reshape and
    # a reduction over the gate axis is much slower (reports/ holds the speed ratios).
    parts = [
        sum(c[..., k, p, :] * wh[..., k * H : (k + 1) * H] for k in range(g))
        + sum(d[..., p, q, :] * s[..., q * H : (q + 1) * H] for q in range(P))
        for p in range(P)
    ]
    return parts[0] if P == 1 else jnp.concatenate(parts, -1)


def _full_jacobian(c: jax.Array, d: jax.Array, blocks: jax.Array) -> jax.Array:
    """``J (..., P*H, P*H)`` from the structured form; ``blocks (g, H, H)`` are the ``W_g``."""
    g, P, H = c.shape[-3:]
    gate = sum(c[..., k, :, :, None] * blocks[k] for k in range(g))  # (..., P, H, H)
    diag = d[..., None] * jnp.eye(H, dtype=d.dtype)  # (..., P, Q, H, H)
    J = jnp.concatenate([diag[..., :1, :, :] + gate[..., None, :, :], diag[..., 1:, :, :]], -3)
    return jnp.swapaxes(J, -3, -2).reshape(*J.shape[:-4], P * H, P * H)


def _diag_jacobian(c: jax.Array, d: jax.Array, w_diag: jax.Array) -> jax.Array:
    """``diag(J) (..., P*H)`` from the structured form, elementwise; ``w_diag (g, H)`` are
    the diagonals of the ``W_g``. Only the ``h`` part (``p = q = 0``) sees the gates."""
    g, P, _ = c.shape[-3:]
    h_part = d[..., 0, 0, :] + sum(c[..., k, 0, :] * w_diag[k] for k in range(g))
    return jnp.concatenate([h_part] + [d[..., p, p, :] for p in range(1, P)], -1)


def _input_projection(x: jax.Array, w: dict[str, jax.Array]) -> jax.Array:
    """``gi = x W_ih^T + b_ih``: ``x (T, B, I)`` -> ``(T, B, gH)``, once per solve."""
    return _mm(x, w["w_ih_t"]) + w["b_ih"]


def _hidden_product(s: jax.Array, w: dict[str, jax.Array]) -> jax.Array:
    """``W_hh h`` (no bias) of the ``h`` part of states ``s (..., S)``: ``(..., gH)``."""
    return _mm(s[..., : w["w_hh_t"].shape[0]], w["w_hh_t"])


def _shifted(S: jax.Array, s0: jax.Array) -> jax.Array:
    """``(s0, S_1, ..., S_{T-1})``: the previous state of every step."""
    return jnp.concatenate([s0[None], S[:-1]])


def _mv(A: jax.Array, v: jax.Array) -> jax.Array:
    """``A v`` for ``A (..., n, m)``, ``v (..., m)``."""
    return _mm(A, v[..., None])[..., 0]


def _weights(problem: Problem) -> dict[str, Any]:
    """The parameters in the layouts the programs use (host arrays, spec dtype)."""
    p, H = problem.params, problem.spec.hidden_size
    blocks = p["weight_hh"].reshape(-1, H, H)  # the gate blocks W_g
    return {
        "torch": dict(p),  # torch names and layout, for the native baseline
        "w_ih_t": np.ascontiguousarray(p["weight_ih"].T),  # (I, gH): products are x @ W^T
        "w_hh_t": np.ascontiguousarray(p["weight_hh"].T),  # (H, gH)
        "b_ih": p["bias_ih"],
        "b_hh": p["bias_hh"],
        "blocks": np.ascontiguousarray(blocks),  # (g, H, H)
        "diag": np.ascontiguousarray(np.diagonal(blocks, axis1=1, axis2=2)),  # (g, H)
    }


def _layouts(params: dict[str, jax.Array]) -> dict[str, Any]:
    """:func:`_weights`' layouts from torch-layout ``params``, inside a program."""
    W = params["weight_hh"]
    H = W.shape[-1]
    blocks = W.reshape(-1, H, H)
    return {
        "torch": params,
        "w_ih_t": params["weight_ih"].T,
        "w_hh_t": W.T,
        "b_ih": params["bias_ih"],
        "b_hh": params["bias_hh"],
        "blocks": blocks,
        "diag": jnp.diagonal(blocks, axis1=1, axis2=2),
    }


def _later(v: jax.Array) -> jax.Array:
    """``out_t = v_{t+1}`` (0 at the last step): what step t+1 sends back to step t."""
    return jnp.concatenate([v[1:], jnp.zeros_like(v[:1])])
