"""The cells: one class per cell holds everything cell-specific, written once.

A cell is a map ``s' = f(s, x)`` on its *state* ``s``: ``h`` for ``elman`` and ``gru``, the
pair ``(h, c)`` stacked as ``s = [h, c]`` (size ``2H``) for ``lstm``. A cell declares its
state's H-sized parts in ``state_parts`` (``("h",)`` or ``("h", "c")``: the first part is
always ``h``, and a second one is the *cell state* ``c`` that ``Problem.c0``,
``Result.cell_states`` and ``GradResult.c0`` carry); ``parts`` and ``has_cell_state`` are
derived from it, and nothing else infers them.

The maths is written once, against an array namespace ``xp`` that NumPy, JAX and PyTorch
all satisfy (``xp.tanh``, ``xp.matmul``, ``xp.concatenate``, ``xp.stack``, ``xp.zeros_like``,
``xp.eye``, operators, ``...`` slicing): the NumPy reference passes ``numpy``, the JAX
backend ``jax.numpy`` (with full-precision products), the torch backend ``torch``. Every
function broadcasts over leading dimensions.

Each cell works from its preactivations: ``gi = W_ih x + b_ih`` (computed once for the
whole sequence) and ``gh = W_hh h + b_hh`` (:func:`hidden_preactivation`), both
``(..., gH)`` with the ``g`` gate blocks in ``torch.nn`` order. It implements

- :meth:`Cell.activate`: ``f(s)``;
- :meth:`Cell.linearise`: ``f(s)`` and the *structured* Jacobian ``(c, d)`` with

      J[p, q] = sum_g diag(c[g, p]) W_g [q == 0] + diag(d[p, q])

  for state parts ``p`` (rows) and ``q`` (columns), where ``W_g`` is the H x H gate block
  g of ``W_hh``: the state enters the gates only through ``h`` (``q = 0``), and every
  other dependence is elementwise. ``c`` is ``(..., g, P, H)``, ``d`` is ``(..., P, P, H)``.
  Backends exploit this form (``J h`` and ``diag(J)`` without forming ``J``); the full
  :meth:`Cell.jacobian` and :meth:`Cell.jacobian_diag` are derived from it here, once;
- :meth:`Cell.vjp_preact`: the vector-Jacobian product through ``activate``:
  ``(ds, dgi, dgh)`` for a cotangent ``ds'`` (used by the gradients).

Adding a cell is one class here, registered in :data:`CELLS`. The NumPy reference, JAX and
torch run it from this maths alone (torch's ``Native`` and ``Chunked`` need a ``torch.nn``
module with the same layout: ``torch_module``, None when there is none); Numba needs a
row function in ``backends/numba/kernels_cells.py`` (without one it raises ``UnsupportedError``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

Array = Any  # a NumPy, JAX or torch array


def sigmoid(xp: Any, a: Array) -> Array:
    """The logistic function, overflow-free (``tanh`` form) in any namespace."""
    return 0.5 * (1.0 + xp.tanh(0.5 * a))


def input_projection(params: Mapping[str, Array], x: Array, xp: Any = np) -> Array:
    """``gi = x W_ih^T + b_ih``: ``x (T, B, I)`` -> ``(T, B, gH)``."""
    return xp.matmul(x, params["weight_ih"].T) + params["bias_ih"]


def hidden_preactivation(params: Mapping[str, Array], h: Array, xp: Any = np) -> Array:
    """``gh = h W_hh^T + b_hh``: ``h (..., H)`` -> ``(..., gH)``."""
    return xp.matmul(h, params["weight_hh"].T) + params["bias_hh"]


class Cell(ABC):
    """One cell's maths (abstract; subclasses are final). See the module docstring."""

    name: ClassVar[str]
    gates: ClassVar[int]
    """Gate blocks stacked in ``weight_ih`` / ``weight_hh`` (torch order)."""
    state_parts: ClassVar[tuple[str, ...]] = ("h",)
    """The H-sized parts of the state, in order: ``("h",)`` or ``("h", "c")``."""
    parts: ClassVar[int] = 1
    """``len(state_parts)`` (derived when the class is defined)."""
    has_cell_state: ClassVar[bool] = False
    """Whether the state carries a cell state ``c`` after ``h`` (derived from ``state_parts``)."""
    torch_module: ClassVar[str | None] = None
    """The ``torch.nn`` module with the same parameter layout (the external oracle, and the
    torch backend's ``Native`` and ``Chunked``), or None when torch has none."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.state_parts not in (("h",), ("h", "c")):
            raise TypeError(
                f"{cls.__name__}.state_parts must be ('h',) or ('h', 'c') (the parts Problem and "
                f"Result carry), got {cls.state_parts!r}"
            )
        cls.parts = len(cls.state_parts)
        cls.has_cell_state = "c" in cls.state_parts

    def state_size(self, hidden_size: int) -> int:
        """``S = parts * H``, the length of the state vector."""
        return self.parts * hidden_size

    def param_shapes(self, hidden_size: int, input_size: int) -> dict[str, tuple[int, ...]]:
        """Parameter name -> shape, exactly the ``torch.nn`` layout of a single layer."""
        gH = self.gates * hidden_size
        return {
            "weight_ih": (gH, input_size),
            "weight_hh": (gH, hidden_size),
            "bias_ih": (gH,),
            "bias_hh": (gH,),
        }

    @abstractmethod
    def activate(self, xp: Any, s: Array, gi: Array, gh: Array) -> Array:
        """``f(s)``: ``s (..., S)``, ``gi, gh (..., gH)`` -> ``(..., S)``."""

    @abstractmethod
    def linearise(self, xp: Any, s: Array, gi: Array, gh: Array) -> tuple[Array, Array, Array]:
        """``(f(s), c (..., g, P, H), d (..., P, P, H))``: the step and its structured
        Jacobian (module docstring)."""

    @abstractmethod
    def vjp_preact(self, xp: Any, s: Array, gi: Array, gh: Array, g: Array) -> tuple[Array, Array, Array]:
        """The VJP of :meth:`activate` for a cotangent ``g (..., S)`` on ``f(s)``:
        ``(ds (..., S), dgi (..., gH), dgh (..., gH))``, where ``ds`` is the *direct*
        dependence on ``s`` only (the path through ``gh`` is ``dgh @ W_hh``)."""

    # -- derived once, for every cell --------------------------------------------------------

    def step(self, xp: Any, params: Mapping[str, Array], s: Array, gi: Array) -> Array:
        """``s' = f(s, x)`` from ``s (..., S)`` and ``gi (..., gH)``."""
        H = params["weight_hh"].shape[-1]
        return self.activate(xp, s, gi, hidden_preactivation(params, s[..., :H], xp))

    def blocks(self, params: Mapping[str, Array]) -> list[Array]:
        """The ``g`` gate blocks ``W_g (H, H)`` of ``W_hh``."""
        W = params["weight_hh"]
        H = W.shape[-1]
        return [W[k * H : (k + 1) * H] for k in range(self.gates)]

    def jacobian(self, xp: Any, params: Mapping[str, Array], s: Array, gi: Array) -> Array:
        """``df/ds``: ``(..., S, S)``, row i = output i, column j = ``s_j``."""
        H = params["weight_hh"].shape[-1]
        _, c, d = self.linearise(xp, s, gi, hidden_preactivation(params, s[..., :H], xp))
        eye = xp.eye(H, dtype=s.dtype)
        W = self.blocks(params)
        rows = []
        for p in range(self.parts):
            cols = []
            for q in range(self.parts):
                block = d[..., p, q, :, None] * eye
                if q == 0:
                    for k in range(self.gates):
                        block = block + c[..., k, p, :, None] * W[k]
                cols.append(block)
            rows.append(xp.concatenate(cols, -1))
        return xp.concatenate(rows, -2)

    def jacobian_diag(self, xp: Any, params: Mapping[str, Array], s: Array, gi: Array) -> Array:
        """The diagonal of ``df/ds``: ``(..., S)``, without forming the matrix."""
        H = params["weight_hh"].shape[-1]
        _, c, d = self.linearise(xp, s, gi, hidden_preactivation(params, s[..., :H], xp))
        diag_w = [_diagonal(xp, W) for W in self.blocks(params)]
        h_part = d[..., 0, 0, :]
        for k in range(self.gates):
            h_part = h_part + c[..., k, 0, :] * diag_w[k]
        return xp.concatenate([h_part] + [d[..., p, p, :] for p in range(1, self.parts)], -1)


def _diagonal(xp: Any, W: Array) -> Array:
    """The diagonal of a square 2-D array in any namespace."""
    H = W.shape[-1]
    return (W * xp.eye(H, dtype=W.dtype)).sum(-1)


class Elman(Cell):
    """``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (``torch.nn.RNN``, tanh)."""

    name = "elman"
    gates = 1
    torch_module = "RNN"

    def activate(self, xp, s, gi, gh):
        return xp.tanh(gi + gh)

    def linearise(self, xp, s, gi, gh):
        f = xp.tanh(gi + gh)
        return f, (1.0 - f * f)[..., None, None, :], xp.zeros_like(f)[..., None, None, :]

    def vjp_preact(self, xp, s, gi, gh, g):
        f = xp.tanh(gi + gh)
        da = g * (1.0 - f * f)
        return xp.zeros_like(s), da, da


class GRU(Cell):
    """``torch.nn.GRU``: gates r, z, n; ``h' = (1 - z) n + z h``."""

    name = "gru"
    gates = 3
    torch_module = "GRU"

    @staticmethod
    def _gates(xp, s, gi, gh):
        H = s.shape[-1]
        r = sigmoid(xp, gi[..., :H] + gh[..., :H])
        z = sigmoid(xp, gi[..., H : 2 * H] + gh[..., H : 2 * H])
        hn = gh[..., 2 * H :]
        n = xp.tanh(gi[..., 2 * H :] + r * hn)
        return r, z, n, hn

    def activate(self, xp, s, gi, gh):
        _, z, n, _ = self._gates(xp, s, gi, gh)
        return (1.0 - z) * n + z * s

    def linearise(self, xp, s, gi, gh):
        r, z, n, hn = self._gates(xp, s, gi, gh)
        a = (1.0 - z) * (1.0 - n * n)  # d h' / d (n's preactivation)
        # Stacked over gates from (..., 1, H) parts, not stacked and then given the P axis:
        # XLA's CPU fusion writes the latter's stack out twice per iteration.
        parts = [a * hn * r * (1.0 - r), (s - n) * z * (1.0 - z), a * r]
        c = xp.stack([part[..., None, :] for part in parts], -3)
        return (1.0 - z) * n + z * s, c, z[..., None, None, :]

    def vjp_preact(self, xp, s, gi, gh, g):
        r, z, n, hn = self._gates(xp, s, gi, gh)
        dn_pre = g * (1.0 - z) * (1.0 - n * n)
        dr_pre = dn_pre * hn * r * (1.0 - r)
        dz_pre = g * (s - n) * z * (1.0 - z)
        dgi = xp.concatenate([dr_pre, dz_pre, dn_pre], -1)
        dgh = xp.concatenate([dr_pre, dz_pre, dn_pre * r], -1)
        return g * z, dgi, dgh


class LSTM(Cell):
    """``torch.nn.LSTM``: gates i, f, g, o; ``c' = f c + i g``, ``h' = o tanh(c')``;
    the state is ``s = [h, c]``."""

    name = "lstm"
    gates = 4
    state_parts = ("h", "c")
    torch_module = "LSTM"

    @staticmethod
    def _gates(xp, s, gi, gh):
        H = s.shape[-1] // 2
        a = gi + gh
        i = sigmoid(xp, a[..., :H])
        f = sigmoid(xp, a[..., H : 2 * H])
        g = xp.tanh(a[..., 2 * H : 3 * H])
        o = sigmoid(xp, a[..., 3 * H :])
        c_new = f * s[..., H:] + i * g
        tc = xp.tanh(c_new)
        return i, f, g, o, c_new, tc

    def activate(self, xp, s, gi, gh):
        _, _, _, o, c_new, tc = self._gates(xp, s, gi, gh)
        return xp.concatenate([o * tc, c_new], -1)

    def linearise(self, xp, s, gi, gh):
        H = s.shape[-1] // 2
        i, f, g, o, c_new, tc = self._gates(xp, s, gi, gh)
        c_prev = s[..., H:]
        # dc'/d(gate preactivations): i, f, g; dh'/d(.) adds o's own and carries dc' through tanh
        dc = [g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g)]
        u = o * (1.0 - tc * tc)  # dh'/dc'
        do = tc * o * (1.0 - o)
        zero = xp.zeros_like(u)
        c = xp.stack([xp.stack([u * a, a], -2) for a in dc] + [xp.stack([do, zero], -2)], -3)
        d = xp.stack([xp.stack([zero, u * f], -2), xp.stack([zero, f], -2)], -3)
        return xp.concatenate([o * tc, c_new], -1), c, d

    def vjp_preact(self, xp, s, gi, gh, g):
        H = s.shape[-1] // 2
        i, f, gg, o, _, tc = self._gates(xp, s, gi, gh)
        gh_, gc_ = g[..., :H], g[..., H:]
        dc_new = gc_ + gh_ * o * (1.0 - tc * tc)
        da = xp.concatenate(
            [
                dc_new * gg * i * (1.0 - i),
                dc_new * s[..., H:] * f * (1.0 - f),
                dc_new * i * (1.0 - gg * gg),
                gh_ * tc * o * (1.0 - o),
            ],
            -1,
        )
        return xp.concatenate([xp.zeros_like(gh_), dc_new * f], -1), da, da


CELLS: dict[str, Cell] = {cell.name: cell for cell in (Elman(), GRU(), LSTM())}
"""Cell name -> its (stateless) instance: the one table of cells."""
