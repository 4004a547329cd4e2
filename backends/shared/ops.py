"""What a framework provides to the shared algorithms: :class:`Ops`; and the layouts of the
recurrent weights they read: :class:`Recurrent`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .structured import gates_einsum

Array = Any  # a JAX or torch array


@dataclass(frozen=True)
class Ops:
    """A framework's primitives. Everything else the algorithms need comes from ``xp``, the
    array namespace the cells use (``matmul``, ``einsum``, ``concatenate``, ``swapaxes``,
    ``broadcast_to``, ``diagonal``, ``where``, ``zeros_like``, ``isnan``, ``isfinite``, ``max``,
    ``abs``, ``sum``, operators and slicing).

    Attributes:
        xp: the array namespace (``jax.numpy`` with full-precision products, ``torch``).
        solve: ``(M (..., n, n), R (..., n, r)) -> M^-1 R``.
        scan: ``(op, elems, reverse) -> tuple``: the inclusive associative scan over axis 0
            of a tuple of arrays for ``op(earlier, later)``; ``reverse`` scans from the end
            (the same as flipping, scanning and flipping back).
        eye: ``(n, like) -> (n, n)`` identity in ``like``'s dtype and device.
        set_first: ``(a, first) -> a`` with ``a[0] = first``, functionally, where the
            framework has a better form than :meth:`with_first`'s concatenation (JAX's
            ``a.at[0].set``, which XLA updates in place; the concatenation it recomputes
            inside the scan's fusions).
        gate_product: the form of ``sum_g diag(c[g, p]) W_g`` in the full Jacobian
            (:func:`~backends.shared.structured.gates_einsum`, or ``gates_summed`` for XLA).
    """

    xp: Any
    solve: Callable[[Array, Array], Array]
    scan: Callable[[Callable, Sequence[Array], bool], tuple]
    eye: Callable[[int, Array], Array]
    set_first: Callable[[Array, Array], Array] | None = None
    gate_product: Callable[[Any, Array, Array], Array] = gates_einsum

    def with_first(self, a: Array, first: Array) -> Array:
        """``a`` with ``a[0] = first``, functionally."""
        if self.set_first is not None:
            return self.set_first(a, first)
        return self.xp.concatenate([first[None], a[1:]])


class Recurrent(NamedTuple):
    """The recurrent weights in the layouts the algorithms read, from torch-layout
    ``weight_hh (gH, H)`` and ``bias_hh (gH,)``; or, for a diagonal cell
    (:attr:`fpbench.Cell.recurrence`), from its vector ``weight_hh ((g + peepholes) H,)``
    (the recurrent vectors ``a_g``, then the peepholes; ``W_g = diag(a_g)``).

    Attributes:
        w_hh: ``(gH, H)``, torch layout (the adjoint's ``dgh @ W_hh``); a diagonal cell's
            vector ``weight_hh``.
        w_hh_t: ``(H, gH)``: ``h @ w_hh_t`` is ``W_hh h`` for every gate (None for a
            diagonal cell).
        b_hh: ``(gH,)`` (a diagonal cell's acts outside the recurrence:
            :meth:`fpbench.Cell.input_projection` adds it to ``gi``).
        blocks: ``(g, H, H)``, the gate blocks ``W_g``; a diagonal cell's ``(g, H)``, the
            ``a_g``.
        diag: ``(g, H)``, their diagonals.
    """

    w_hh: Array
    w_hh_t: Array | None
    b_hh: Array
    blocks: Array
    diag: Array

    @classmethod
    def of(cls, xp: Any, weight_hh: Array, bias_hh: Array, gates: int) -> Recurrent:
        """The layouts from torch-layout weights of a cell with ``gates`` gate blocks
        (inside a program: a few transposes)."""
        if len(weight_hh.shape) == 1:  # a diagonal cell: W_g = diag(a_g)
            H = bias_hh.shape[-1] // gates
            vectors = weight_hh[: gates * H].reshape(gates, H)
            return cls(weight_hh, None, bias_hh, vectors, vectors)
        H = weight_hh.shape[-1]
        blocks = weight_hh.reshape(-1, H, H)
        return cls(weight_hh, weight_hh.T, bias_hh, blocks, xp.diagonal(blocks, 0, -2, -1))

    @property
    def diagonal(self) -> bool:
        """Whether these are a diagonal cell's weights (static: from the shapes)."""
        return len(self.w_hh.shape) == 1

    def hidden(self, xp: Any, s: Array) -> Array:
        """``W_hh h`` (no bias) of the ``h`` part of states ``s (..., S)``: ``(..., gH)``, the
        ``W_g h`` of every gate (a diagonal cell's ``a_g h``, elementwise)."""
        if self.diagonal:
            g, H = self.diag.shape
            h = s[..., :H]
            return xp.concatenate([h * self.diag[k] for k in range(g)], -1)
        return xp.matmul(s[..., : self.w_hh_t.shape[0]], self.w_hh_t)

    def preactivation(self, xp: Any, s: Array, wh: Array | None = None) -> Array:
        """What the cell gets as ``gh`` (:meth:`fpbench.Cell.recurrent_input`) at states
        ``s (..., S)``: ``W_hh h + b_hh (..., gH)`` (from ``wh``, :meth:`hidden`, when given);
        for a diagonal cell its vector ``weight_hh``, broadcast to ``(..., (g + peepholes) H)``
        (so that it gathers by step like a dense cell's)."""
        if self.diagonal:
            return xp.broadcast_to(self.w_hh, (*s.shape[:-1], self.w_hh.shape[-1]))
        return (self.hidden(xp, s) if wh is None else wh) + self.b_hh
