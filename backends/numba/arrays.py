"""A problem laid out for the numba backend's kernels, in writable buffers of its own.

:class:`Arrays` holds the inputs, weights and the shared work buffers of one prepared solve
or gradient; the forward and backward passes read their sizes and buffers from it.
"""

from __future__ import annotations

import numpy as np

from fpbench.backend import UnsupportedError
from fpbench.spec import Problem

from .kernels_cells import CELL_IDS, PEEPHOLE_GATES


class Arrays:
    """A problem laid out for the kernels (see ``kernels_cells``), in writable buffers of
    this backend: ``x_aug (T*B, I+1)`` with a ones column, so that one product
    ``x_aug @ w_aug`` is ``gi = x W_ih^T + b_ih``; ``whhT (H, gH)``; ``bhh (gH,)``; ``s0 (B, S)``;
    the ``(T*B, gH)`` buffers ``gi`` and ``gh``; ``hbuf (T*B, H)`` (lstm: the contiguous h for
    the product).

    A diagonal cell (``diagonal``: ``recurrence == "diagonal"``, :mod:`fpbench.cells`) has
    no recurrent product: ``w_aug``'s bias row is ``b_ih + b_hh`` (both act on the input
    side), ``whhT (gH,)`` is its recurrent vectors ``[a_1 .. a_G]`` (what the kernels
    dispatch on: ``W_g = diag(a_g)``) and ``bhh ((G + peepholes) H,)`` the whole vector
    ``weight_hh``, which its row function applies elementwise; ``peepholes`` its
    ``kernels_cells.PEEPHOLE_GATES`` entry (``()`` for every other cell).

    Raises:
        UnsupportedError: the kernels have no entry for the problem's cell.
    """

    def __init__(self, problem: Problem) -> None:
        s = problem.spec
        cell = CELL_IDS.get(s.cell)
        if cell is None:
            raise UnsupportedError(f"backend 'numba' does not implement cell {s.cell!r}")
        self.cell, self.G = cell, s.gates
        self.T, self.B, self.H, self.S = s.seq_len, s.batch, s.hidden_size, s.state_size
        self.N, gH, dt = s.seq_len * s.batch, s.gates * s.hidden_size, problem.x.dtype
        self.x_aug = np.ones((self.N, s.input_size + 1), dtype=dt)
        self.x_aug[:, :-1] = problem.x.reshape(self.N, s.input_size)
        self.diagonal = s.model.recurrence == "diagonal"
        self.peepholes = PEEPHOLE_GATES.get(s.cell, ())
        self.P = self.S // self.H
        if self.diagonal:
            bias = problem.bias_ih + problem.bias_hh
            self.whhT = np.array(problem.weight_hh[:gH], order="C", copy=True)
            self.bhh = np.array(problem.weight_hh, order="C", copy=True)
        else:
            bias = problem.bias_ih
            self.whhT = np.array(problem.weight_hh.T, order="C")  # writable (numba types read-only apart)
            self.bhh = np.array(problem.bias_hh, order="C", copy=True)
        self.w_aug = np.ascontiguousarray(np.vstack([problem.weight_ih.T, bias[None]]))
        self.s0 = np.array(problem.s0, order="C", copy=True)
        self.gi = np.empty((self.N, gH), dtype=dt)
        self.gh = np.empty((self.N, gH), dtype=dt)
        self.hbuf = np.empty((self.N if self.S > self.H else 1, self.H), dtype=dt)

    def transition_shape(self, transition: str) -> tuple[int, ...]:
        """The shape of one row's transition as the linearising kernels store it for an
        iterative solver's ``transition`` (``"full"`` or ``"diagonal"``): the transposed
        Jacobian ``(S, S)``, a diagonal cell's per-unit blocks ``(H, P, P)`` (never ``S x S``;
        ``(S,)`` when ``P = 1``, where the Jacobian is diagonal), or the diagonal ``(S,)``."""
        if transition == "full" and not self.diagonal:
            return (self.S, self.S)
        if transition == "full" and self.P > 1:
            return (self.H, self.P, self.P)
        return (self.S,)

    def scan_weight(self, transition: str) -> float:
        """The cost of composing one step's transitions against applying them, for
        ``linear_scan``'s chunk bounds: ``S + 1`` (full), ``P + 1`` (per-unit blocks), 1."""
        shape = self.transition_shape(transition)
        return float(shape[-1] + 1) if len(shape) > 1 else 1.0

    def state_buffer(self) -> np.ndarray:
        """A ``(T + 1, B, S)`` state buffer whose first slab is ``s0``, the rest zero."""
        s = np.zeros((self.T + 1, self.B, self.S), dtype=self.s0.dtype)
        s[0] = self.s0
        return s

    def forward_op(self, gi3: np.ndarray | None = None) -> tuple:
        """The forward op of ``chunked``: ``(cell, G, gi (T, B, gH), whhT, bhh)``
        (``gi3``: another slab of steps' ``gi`` in place of all of them)."""
        gi = self.gi.reshape(self.T, self.B, -1) if gi3 is None else gi3
        return (self.cell, self.G, gi, self.whhT, self.bhh)
