"""The cell maths in JAX: :data:`xp`, ``jax.numpy`` with full-precision products, in which the
shared cells of :mod:`fpbench.cells` and the shared algorithms of :mod:`backends.shared` are
evaluated; the parameters' layouts (:func:`_layouts`).

Float32 matmul precision: every product passes ``precision=lax.Precision.HIGHEST``, so on
GPU float32 is true float32, never TF32/bf16 passes (on CPU it changes nothing). This is
per operation; the global ``jax_default_matmul_precision`` is left alone.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from backends.shared import Recurrent
from fpbench.backend import UnsupportedError
from fpbench.cells import CELLS, Cell

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


def _input_projection(x: jax.Array, w: dict[str, Any]) -> jax.Array:
    """``gi = x W_ih^T + b_ih``: ``x (T, B, I)`` -> ``(T, B, gH)``, once per solve (a
    diagonal cell's ``b_ih + b_hh``: :func:`_layouts`)."""
    return _mm(x, w["w_ih_t"]) + w["b_ih"]


def _layouts(ns: Any, params: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """The parameters in the layouts the programs read, from torch-layout ``params``: host
    arrays with ``ns = numpy`` (the forward programs' arguments), or inside a program with
    ``ns = xp`` (the gradient programs, so that autodiff gives ``dL/dparams`` in torch
    layout). ``"torch"``: ``params`` themselves (Native, Chunked); ``"w_ih_t" (I, gH)``,
    ``"b_ih"`` (a diagonal cell's ``b_ih + b_hh``, both outside its recurrence, as
    :meth:`fpbench.Cell.input_projection` adds them); ``"rec"``: the
    :class:`~backends.shared.Recurrent` layouts."""
    b_ih = params["bias_ih"]
    return {
        "torch": dict(params),
        "w_ih_t": params["weight_ih"].T,
        "b_ih": b_ih + params["bias_hh"] if cell.recurrence == "diagonal" else b_ih,
        "rec": Recurrent.of(ns, params["weight_hh"], params["bias_hh"], cell.gates),
    }
