"""What every backward pass of the numba backend shares: the steps' VJP and the gradients.

:class:`StepVJP` holds the cotangent, the structured coefficients of every step and the
VJP's buffers, and turns pre-activation gradients into the ``GradOutput``;
:class:`ParamSums` accumulates the parameter gradients over iterations or windows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fpbench.backend import GradOutput
from fpbench.spec import Problem

from .arrays import Arrays
from .grad_kernels import coefficients, vjp_rows
from .kernels_cells import hidden_projection


@dataclasses.dataclass
class ParamSums:
    """Running sums of the pre-activation gradients of ``gi`` and of the parameters of
    ``gh``: ``dgi (N, gH)``, ``dW_hh (gH, H)``, ``db_hh (gH,)``."""

    dgi: np.ndarray
    dW_hh: np.ndarray
    db_hh: np.ndarray

    @classmethod
    def zeros(cls, a: Arrays) -> ParamSums:
        gH, dt = a.gi.shape[1], a.gi.dtype
        return cls(np.zeros((a.N, gH), dtype=dt), np.zeros((gH, a.H), dtype=dt), np.zeros(gH, dtype=dt))

    def add(self, dgi: np.ndarray, dgh: np.ndarray, h_prev: np.ndarray, rows: slice = slice(None)) -> None:
        """Add the pre-activation gradients ``dgi, dgh (n, gH)`` of the steps ``rows`` (all
        by default), whose previous hidden states are ``h_prev (n, H)``."""
        self.dgi[rows] += dgi
        self.dW_hh += dgh.T @ h_prev
        self.db_hh += dgh.sum(0)


class StepVJP:
    """The VJP of every step ``i = t*B + b`` of the flat ``(N, S)`` arrays, at the previous
    states given to :meth:`coefficients`: after ``vjp(v, nblk)``, ``dgh, dgi (N, gH)``,
    ``ds (N, S)`` hold the step's VJP for ``v`` without the ``W_hh`` term, ``wdgh (N, H) =
    dgh @ W_hh`` that term. ``g (N, S)``: the cotangent of the states, ``whh (gH, H)``."""

    def __init__(self, a: Arrays, problem: Problem, cotangent: np.ndarray) -> None:
        N, S, H, G, gH, dt = a.N, a.S, a.H, a.G, a.gi.shape[1], a.gi.dtype
        P = S // H
        self.a = a
        self.g = np.array(cotangent, dtype=dt, order="C").reshape(N, S)
        self.whh = np.array(problem.weight_hh, order="C", copy=True)
        self.wih = np.array(problem.weight_ih, order="C", copy=True)
        self.C, self.CI = np.empty((N, G, P, H), dtype=dt), np.empty((N, G, P, H), dtype=dt)
        self.Dd = np.empty((N, P, P, H), dtype=dt)
        self.dgh, self.dgi = np.empty((N, gH), dtype=dt), np.empty((N, gH), dtype=dt)
        self.ds, self.wdgh = np.empty((N, S), dtype=dt), np.empty((N, H), dtype=dt)

    def vjp(self, v: np.ndarray, nblk: int) -> None:
        """``dgh, dgi, ds, wdgh`` = the VJP of every step for ``v (N, S)``."""
        vjp_rows(self.C, self.Dd, self.CI, v, self.dgh, self.dgi, self.ds, nblk)
        np.dot(self.dgh, self.whh, out=self.wdgh)

    def coefficients(self, flat_prev: np.ndarray, nblk: int) -> np.ndarray:
        """C, Dd, CI at the previous states ``flat_prev (N, S)``; returns their ``h (N, H)``."""
        a = self.a
        hidden_projection(flat_prev, a.whhT, a.gh, a.hbuf)
        coefficients(a.cell, a.gi, a.gh, a.bhh, flat_prev, self.C, self.Dd, self.CI, nblk)
        return flat_prev if a.S == a.H else a.hbuf  # (lstm: hidden_projection copied h there)

    def result(self, sums: ParamSums, ds0: np.ndarray, res_b: np.ndarray, method: str) -> GradOutput:
        """The gradients from the pre-activation sums (``ds0 (B, S)``: ``dL/ds0``), with the
        backward's residuals and name; the forward's fields are filled in by the caller."""
        a = self.a
        w_ih_aug = sums.dgi.T @ a.x_aug
        params = {
            "weight_ih": w_ih_aug[:, :-1],
            "weight_hh": sums.dW_hh,
            "bias_ih": w_ih_aug[:, -1].copy(),
            "bias_hh": sums.db_hh,
        }
        dx = (sums.dgi @ self.wih).reshape(a.T, a.B, -1)
        empty = np.empty(0, dtype=np.float64)
        return GradOutput(None, empty, 0, params, dx, ds0, res_b.copy(), len(res_b), method)
