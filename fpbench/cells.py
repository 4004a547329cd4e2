"""The cells: one class per cell holds everything cell-specific, written once.

A cell is a map ``s' = f(s, x)`` on its *state* ``s``: ``h`` for ``elman``, ``gru`` and
``gru_diag``, the pair ``(h, c)`` stacked as ``s = [h, c]`` (size ``2H``) for ``lstm`` and
``lstm_cifg_diag``. A cell declares its
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

*Diagonal* cells (``recurrence = "diagonal"``: ParaRNN's ``gru_diag`` and
``lstm_cifg_diag``) keep the four parameter names, but ``weight_hh`` is a vector: the ``g``
recurrent vectors ``a_g (H,)`` stacked (``W_g = diag(a_g)`` in the form above), followed by
the cell's ``peepholes`` ``H``-vectors, ``((g + peepholes) H,)``. Both biases act outside
the recurrence (the equations' ``b = b_ih + b_hh``), so :meth:`Cell.input_projection` adds
both and what the cell gets from the recurrence (:meth:`Cell.recurrent_input`, the ``gh``
of the methods above) is the vector ``weight_hh`` itself, applied elementwise by the cell;
``vjp_preact``'s ``ds`` is then the whole ``J^T g`` and its ``dgh (..., (g + peepholes) H)``
the per-row gradient of ``weight_hh``. Their Jacobian is block diagonal per unit
(:meth:`Cell.unit_jacobian`: ``(..., H, P, P)``), so Newton never forms ``S x S`` matrices.

Adding a cell is one class here, registered in :data:`CELLS`. The NumPy reference, JAX and
torch run it from this maths alone (torch's ``Native`` needs a ``torch.nn`` module with the
same layout: ``torch_module``, None when there is none, and then it is n/a; torch's
``Chunked`` uses the module when there is one); Numba needs a row function in
``backends/numba/kernels_cells.py`` (without one it raises ``UnsupportedError``). A
diagonal cell runs on the backends whose :attr:`fpbench.Backend.recurrences` list
``"diagonal"`` (the NumPy reference, JAX, torch and Numba); any other refuses it with
``UnsupportedError``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

Array = Any  # a NumPy, JAX or torch array

RECURRENCES: tuple[str, ...] = ("dense", "diagonal")
"""How the state enters a cell's gates (:attr:`Cell.recurrence`)."""


def sigmoid(xp: Any, a: Array) -> Array:
    """The logistic function, overflow-free (``tanh`` form) in any namespace."""
    return 0.5 * (1.0 + xp.tanh(0.5 * a))


def _dense_only(params: Mapping[str, Array], what: str) -> None:
    if len(params["weight_hh"].shape) != 2:
        raise ValueError(
            f"{what} is the dense cells' (weight_hh of shape (gH, H)); these parameters have a "
            f"vector weight_hh of shape {tuple(params['weight_hh'].shape)} (a diagonal cell): "
            f"use the cell's own method, Cell.{what}"
        )


def input_projection(params: Mapping[str, Array], x: Array, xp: Any = np) -> Array:
    """``gi = x W_ih^T + b_ih``: ``x (T, B, I)`` -> ``(T, B, gH)``, for dense cells
    (:meth:`Cell.input_projection` is every cell's).

    Raises:
        ValueError: the parameters are a diagonal cell's (whose ``gi`` also holds ``b_hh``).
    """
    _dense_only(params, "input_projection")
    return _project(xp, params, x)


def _project(xp: Any, params: Mapping[str, Array], x: Array) -> Array:
    return xp.matmul(x, params["weight_ih"].T) + params["bias_ih"]


def hidden_preactivation(params: Mapping[str, Array], h: Array, xp: Any = np) -> Array:
    """``gh = h W_hh^T + b_hh``: ``h (..., H)`` -> ``(..., gH)``, for dense cells
    (:meth:`Cell.recurrent_input` is every cell's).

    Raises:
        ValueError: the parameters are a diagonal cell's.
    """
    _dense_only(params, "hidden_preactivation")
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
    recurrence: ClassVar[str] = "dense"
    """``"dense"``: ``weight_hh`` holds ``g`` H x H gate blocks; ``"diagonal"``: it holds
    ``g`` recurrent vectors and :attr:`peepholes` more (module docstring)."""
    peepholes: ClassVar[int] = 0
    """H-vectors that follow the recurrent vectors in a diagonal cell's ``weight_hh``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.state_parts not in (("h",), ("h", "c")):
            raise TypeError(
                f"{cls.__name__}.state_parts must be ('h',) or ('h', 'c') (the parts Problem and "
                f"Result carry), got {cls.state_parts!r}"
            )
        if cls.recurrence not in RECURRENCES:
            raise TypeError(f"{cls.__name__}.recurrence must be one of {RECURRENCES}, got {cls.recurrence!r}")
        if cls.peepholes and cls.recurrence != "diagonal":
            raise TypeError(f"{cls.__name__}.peepholes: only diagonal cells have peephole vectors")
        cls.parts = len(cls.state_parts)
        cls.has_cell_state = "c" in cls.state_parts

    def state_size(self, hidden_size: int) -> int:
        """``S = parts * H``, the length of the state vector."""
        return self.parts * hidden_size

    def param_shapes(self, hidden_size: int, input_size: int) -> dict[str, tuple[int, ...]]:
        """Parameter name -> shape: exactly the ``torch.nn`` layout of a single layer for
        dense cells; a diagonal cell's ``weight_hh`` is ``((g + peepholes) H,)``."""
        gH = self.gates * hidden_size
        diagonal = self.recurrence == "diagonal"
        return {
            "weight_ih": (gH, input_size),
            "weight_hh": ((self.gates + self.peepholes) * hidden_size,) if diagonal else (gH, hidden_size),
            "bias_ih": (gH,),
            "bias_hh": (gH,),
        }

    def hidden_size(self, params: Mapping[str, Array]) -> int:
        """H, from the parameters' shapes."""
        return params["bias_hh"].shape[-1] // self.gates

    def input_projection(self, xp: Any, params: Mapping[str, Array], x: Array) -> Array:
        """``gi``: ``x (..., I)`` -> ``(..., gH)``: ``x W_ih^T + b_ih``, plus ``b_hh`` for a
        diagonal cell (whose recurrence holds no bias)."""
        gi = _project(xp, params, x)
        return gi + params["bias_hh"] if self.recurrence == "diagonal" else gi

    def recurrent_input(self, xp: Any, params: Mapping[str, Array], h: Array) -> Array:
        """The ``gh`` that :meth:`activate` gets: ``h W_hh^T + b_hh (..., gH)`` for a dense
        cell (:func:`hidden_preactivation`); for a diagonal one the vector ``weight_hh``
        itself (the cell applies it elementwise, to ``h`` and through peepholes to ``c``)."""
        if self.recurrence == "diagonal":
            return params["weight_hh"]
        return hidden_preactivation(params, h, xp)

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
        dependence on ``s`` only (the path through ``gh`` is ``dgh @ W_hh``). For a diagonal
        cell ``gh`` is ``weight_hh``: ``ds`` is all of ``J^T g`` and ``dgh`` is the per-row
        gradient of ``weight_hh``, ``(..., (g + peepholes) H)``."""

    # -- derived once, for every cell --------------------------------------------------------

    def step(self, xp: Any, params: Mapping[str, Array], s: Array, gi: Array) -> Array:
        """``s' = f(s, x)`` from ``s (..., S)`` and ``gi (..., gH)``."""
        return self.activate(xp, s, gi, self._gh(xp, params, s))

    def _gh(self, xp: Any, params: Mapping[str, Array], s: Array) -> Array:
        return self.recurrent_input(xp, params, s[..., : self.hidden_size(params)])

    def _linearise(self, xp: Any, params: Mapping[str, Array], s: Array, gi: Array) -> tuple[Array, Array]:
        return self.linearise(xp, s, gi, self._gh(xp, params, s))[1:]

    def vjp(
        self, xp: Any, params: Mapping[str, Array], s: Array, gi: Array, g: Array
    ) -> tuple[Array, Array, Array]:
        """The VJP of :meth:`step` for a cotangent ``g (..., S)``: ``(J^T g (..., S), dgi,
        dgh)`` (``dgi``, ``dgh`` as :meth:`vjp_preact`; :meth:`recurrent_grads` sums them
        into the recurrent parameters' gradients)."""
        ds, dgi, dgh = self.vjp_preact(xp, s, gi, self._gh(xp, params, s), g)
        if self.recurrence == "dense":
            back = xp.matmul(dgh, params["weight_hh"])
            ds = back + ds if self.parts == 1 else ds + xp.concatenate([back, xp.zeros_like(back)], -1)
        return ds, dgi, dgh

    def recurrent_grads(self, h: Array, dgi: Array, dgh: Array) -> tuple[Array, Array]:
        """``(dL/dweight_hh, dL/dbias_hh)`` from :meth:`vjp`'s ``dgi (..., gH)`` and
        ``dgh`` at the previous hidden states ``h (..., H)``, summed over every leading axis
        (dense: ``sum dgh^T h`` and ``sum dgh``; diagonal: ``sum dgh`` and ``sum dgi``,
        ``b_hh`` acting like ``b_ih``)."""
        if self.recurrence == "diagonal":
            return dgh.reshape(-1, dgh.shape[-1]).sum(0), dgi.reshape(-1, dgi.shape[-1]).sum(0)
        flat = dgh.reshape(-1, dgh.shape[-1])
        return flat.T @ h.reshape(-1, h.shape[-1]), flat.sum(0)

    def blocks(self, params: Mapping[str, Array]) -> list[Array]:
        """The ``g`` gate blocks of ``W_hh``: ``W_g (H, H)`` for a dense cell, the vectors
        ``a_g (H,)`` (``W_g = diag(a_g)``) for a diagonal one."""
        W = params["weight_hh"]
        H = self.hidden_size(params)
        return [W[k * H : (k + 1) * H] for k in range(self.gates)]

    def unit_jacobian(self, xp: Any, params: Mapping[str, Array], s: Array, gi: Array) -> Array:
        """A diagonal cell's Jacobian per unit: ``(..., H, P, P)``, entry ``[i, p, q]`` =
        ``d s'[p, i] / d s[q, i]`` (part p of unit i by part q of unit i; every other entry of
        ``df/ds`` is zero). Built from the structured form, never ``S x S``.

        Raises:
            TypeError: a dense cell (its Jacobian couples the units).
        """
        if self.recurrence != "diagonal":
            raise TypeError(f"unit_jacobian is for diagonal cells; {self.name!r} is {self.recurrence}")
        c, d = self._linearise(xp, params, s, gi)
        a = self.blocks(params)
        rows = []
        for p in range(self.parts):
            cols = []
            for q in range(self.parts):
                entry = d[..., p, q, :]
                if q == 0:
                    for k in range(self.gates):
                        entry = entry + c[..., k, p, :] * a[k]
                cols.append(entry)
            rows.append(xp.stack(cols, -1))
        return xp.stack(rows, -2)

    def jacobian(self, xp: Any, params: Mapping[str, Array], s: Array, gi: Array) -> Array:
        """``df/ds``: ``(..., S, S)``, row i = output i, column j = ``s_j``."""
        H = self.hidden_size(params)
        eye = xp.eye(H, dtype=s.dtype)
        if self.recurrence == "diagonal":
            U = self.unit_jacobian(xp, params, s, gi)
            blocks = [[U[..., :, p, q, None] * eye for q in range(self.parts)] for p in range(self.parts)]
        else:
            c, d = self._linearise(xp, params, s, gi)
            W = self.blocks(params)
            blocks = []
            for p in range(self.parts):
                row = []
                for q in range(self.parts):
                    block = d[..., p, q, :, None] * eye
                    if q == 0:
                        for k in range(self.gates):
                            block = block + c[..., k, p, :, None] * W[k]
                    row.append(block)
                blocks.append(row)
        return xp.concatenate([xp.concatenate(row, -1) for row in blocks], -2)

    def jacobian_diag(self, xp: Any, params: Mapping[str, Array], s: Array, gi: Array) -> Array:
        """The diagonal of ``df/ds``: ``(..., S)``, without forming the matrix."""
        c, d = self._linearise(xp, params, s, gi)
        blocks = self.blocks(params)
        diag_w = blocks if self.recurrence == "diagonal" else [_diagonal(xp, W) for W in blocks]
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


class GRUDiag(Cell):
    """ParaRNN's diagonal GRU: recurrent weights are vectors, ``W_g = diag(a_g)``.

    Layout (no ``torch.nn`` module has it): gate blocks r, z, n (``gru``'s order) in
    ``weight_ih (3H, I)``, ``bias_ih``, ``bias_hh (3H,)`` and ``weight_hh = [a_r, a_z, a_n]
    (3H,)``; ``b = b_ih + b_hh``::

        r = sigmoid(a_r h + W_r x + b_r)
        z = sigmoid(a_z h + W_z x + b_z)
        n = tanh(a_n (r h) + W_n x + b_n)      (no bias inside r)
        h' = z n + (1 - z) h                   (z weighs the candidate, unlike ``gru``)

    The Jacobian ``dh'/dh`` is diagonal (:meth:`Cell.unit_jacobian` is ``(..., H, 1, 1)``),
    so Newton is quasi-Newton.
    """

    name = "gru_diag"
    gates = 3
    recurrence = "diagonal"

    @staticmethod
    def _gates(xp, s, gi, w):
        H = s.shape[-1]
        a_r, a_z, a_n = w[..., :H], w[..., H : 2 * H], w[..., 2 * H :]
        r = sigmoid(xp, gi[..., :H] + a_r * s)
        z = sigmoid(xp, gi[..., H : 2 * H] + a_z * s)
        n = xp.tanh(gi[..., 2 * H :] + a_n * (r * s))
        return (a_r, a_z, a_n), r, z, n

    def activate(self, xp, s, gi, gh):
        _, _, z, n = self._gates(xp, s, gi, gh)
        return z * n + (1.0 - z) * s

    def linearise(self, xp, s, gi, gh):
        (_, _, a_n), r, z, n = self._gates(xp, s, gi, gh)
        dn = z * (1.0 - n * n)  # d h' / d (n's preactivation)
        parts = [dn * a_n * s * r * (1.0 - r), (n - s) * z * (1.0 - z), dn * r]
        c = xp.stack([part[..., None, :] for part in parts], -3)
        return z * n + (1.0 - z) * s, c, (1.0 - z)[..., None, None, :]

    def vjp_preact(self, xp, s, gi, gh, g):
        (a_r, a_z, a_n), r, z, n = self._gates(xp, s, gi, gh)
        dn_pre = g * z * (1.0 - n * n)
        dr_pre = dn_pre * a_n * s * r * (1.0 - r)
        dz_pre = g * (n - s) * z * (1.0 - z)
        ds = g * (1.0 - z) + dr_pre * a_r + dz_pre * a_z + dn_pre * r * a_n
        dgi = xp.concatenate([dr_pre, dz_pre, dn_pre], -1)
        dw = xp.concatenate([dr_pre * s, dz_pre * s, dn_pre * r * s], -1)
        return ds, dgi, dw


class LSTMCIFGDiag(Cell):
    """ParaRNN's diagonal LSTM with coupled input-forget gates and peepholes; the state is
    ``s = [h, c]``.

    Layout (no ``torch.nn`` module has it): gate blocks f, g (the candidate ``c~``), o in
    ``weight_ih (3H, I)``, ``bias_ih``, ``bias_hh (3H,)``; ``weight_hh (5H,)`` is the
    recurrent vectors then the peepholes, ``[a_f, a_g, a_o, p_f, p_o]``; ``b = b_ih + b_hh``::

        f = sigmoid(a_f h + W_f x + p_f c + b_f)
        g = tanh(a_g h + W_g x + b_g)
        c' = f c + (1 - f) g
        o = sigmoid(a_o h + W_o x + p_o c' + b_o)
        h' = o tanh(c')

    The Jacobian is 2 x 2-block diagonal per unit (:meth:`Cell.unit_jacobian`). In the
    structured form the peepholes are elementwise, so they sit in ``d``.
    """

    name = "lstm_cifg_diag"
    gates = 3
    peepholes = 2
    state_parts = ("h", "c")
    recurrence = "diagonal"

    @staticmethod
    def _gates(xp, s, gi, w):
        H = s.shape[-1] // 2
        h, c = s[..., :H], s[..., H:]
        a_f, a_g, a_o, p_f, p_o = (w[..., k * H : (k + 1) * H] for k in range(5))
        f = sigmoid(xp, gi[..., :H] + a_f * h + p_f * c)
        g = xp.tanh(gi[..., H : 2 * H] + a_g * h)
        c_new = f * c + (1.0 - f) * g
        o = sigmoid(xp, gi[..., 2 * H :] + a_o * h + p_o * c_new)
        return (a_f, a_g, a_o, p_f, p_o), h, c, f, g, c_new, o, xp.tanh(c_new)

    def activate(self, xp, s, gi, gh):
        *_, c_new, o, tc = self._gates(xp, s, gi, gh)
        return xp.concatenate([o * tc, c_new], -1)

    def linearise(self, xp, s, gi, gh):
        (_, _, _, p_f, p_o), _, c, f, g, c_new, o, tc = self._gates(xp, s, gi, gh)
        do = tc * o * (1.0 - o)  # dh'/d(o's preactivation)
        u = o * (1.0 - tc * tc) + do * p_o  # dh'/dc', also through o's peephole
        dc = [(c - g) * f * (1.0 - f), (1.0 - f) * (1.0 - g * g)]  # dc'/d(f, g preactivations)
        zero = xp.zeros_like(u)
        coeffs = xp.stack([xp.stack([u * a, a], -2) for a in dc] + [xp.stack([do, zero], -2)], -3)
        dcc = f + dc[0] * p_f  # dc'/dc, directly and through f's peephole
        d = xp.stack([xp.stack([zero, u * dcc], -2), xp.stack([zero, dcc], -2)], -3)
        return xp.concatenate([o * tc, c_new], -1), coeffs, d

    def vjp_preact(self, xp, s, gi, gh, g):
        H = s.shape[-1] // 2
        (a_f, a_g, a_o, p_f, p_o), h, c, f, gg, c_new, o, tc = self._gates(xp, s, gi, gh)
        g_h, g_c = g[..., :H], g[..., H:]
        do_pre = g_h * tc * o * (1.0 - o)
        dc_new = g_c + g_h * o * (1.0 - tc * tc) + do_pre * p_o
        df_pre = dc_new * (c - gg) * f * (1.0 - f)
        dg_pre = dc_new * (1.0 - f) * (1.0 - gg * gg)
        ds = xp.concatenate([df_pre * a_f + dg_pre * a_g + do_pre * a_o, dc_new * f + df_pre * p_f], -1)
        dgi = xp.concatenate([df_pre, dg_pre, do_pre], -1)
        dw = xp.concatenate([df_pre * h, dg_pre * h, do_pre * h, df_pre * c, do_pre * c_new], -1)
        return ds, dgi, dw


CELLS: dict[str, Cell] = {cell.name: cell for cell in (Elman(), GRU(), LSTM(), GRUDiag(), LSTMCIFGDiag())}
"""Cell name -> its (stateless) instance: the one table of cells."""
