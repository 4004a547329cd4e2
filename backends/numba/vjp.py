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


def weight_hh_grad(
    a: Arrays, dgh: np.ndarray, h_prev: np.ndarray, states: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """``dL/dweight_hh`` from the pre-activation gradients ``dgh (n, gH)`` of steps whose
    previous hidden states are ``h_prev (n, H)``: ``dgh^T h_prev (gH, H)``; for a diagonal
    cell (:class:`.arrays.Arrays`) the vector ``((G + peepholes) H,)``: per gate ``sum dgh_g
    h_prev`` elementwise, then each peephole's ``sum dgh_gate c`` with ``c`` from ``states
    = (previous (n, S), new (n, S))``."""
    if not a.diagonal:
        return dgh.T @ h_prev
    if a.peepholes and states is None:
        raise ValueError("weight_hh_grad: a cell with peepholes needs the steps' states")
    n, G, H = dgh.shape[0], a.G, a.H
    d3 = dgh.reshape(n, G, H)
    parts = [np.einsum("ngh,nh->gh", d3, h_prev).reshape(G * H)]
    for gate, new in a.peepholes:
        parts.append(np.einsum("nh,nh->h", d3[:, gate], states[1 if new else 0][:, H:]))
    return np.concatenate(parts)


@dataclasses.dataclass
class ParamSums:
    """Running sums of the pre-activation gradients of ``gi`` and of the parameters of
    ``gh``: ``dgi (N, gH)``, ``dW_hh`` (the shape of ``weight_hh``), ``db_hh (gH,)`` (a
    diagonal cell's ``b_hh`` gets ``b_ih``'s, :meth:`StepVJP.result`)."""

    dgi: np.ndarray
    dW_hh: np.ndarray
    db_hh: np.ndarray

    @classmethod
    def zeros(cls, a: Arrays) -> ParamSums:
        gH, dt = a.gi.shape[1], a.gi.dtype
        shape = a.bhh.shape if a.diagonal else (gH, a.H)
        return cls(np.zeros((a.N, gH), dtype=dt), np.zeros(shape, dtype=dt), np.zeros(gH, dtype=dt))

    def add(
        self,
        a: Arrays,
        dgi: np.ndarray,
        dgh: np.ndarray,
        h_prev: np.ndarray,
        rows: slice = slice(None),
        states: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Add the pre-activation gradients ``dgi, dgh (n, gH)`` of the steps ``rows`` (all
        by default), whose previous hidden states are ``h_prev (n, H)`` (``states``: as
        :func:`weight_hh_grad`)."""
        self.dgi[rows] += dgi
        self.dW_hh += weight_hh_grad(a, dgh, h_prev, states)
        self.db_hh += dgh.sum(0)


class StepVJP:
    """The VJP of every step ``i = t*B + b`` of the flat ``(N, S)`` arrays, at the previous
    states given to :meth:`coefficients`: after ``vjp(v, nblk)``, ``dgh, dgi (N, gH)``,
    ``ds (N, S)`` hold the step's VJP for ``v`` without the ``W_hh`` term, ``wdgh (N, H) =
    dgh @ W_hh`` that term. ``g (N, S)``: the cotangent of the states, ``whh (gH, H)`` (a
    diagonal cell's: its recurrent vectors ``(gH,)``); ``F (N, S)`` the steps at the
    previous states, kept for a cell with peepholes (else no rows)."""

    def __init__(self, a: Arrays, problem: Problem, cotangent: np.ndarray) -> None:
        N, S, H, G, gH, dt = a.N, a.S, a.H, a.G, a.gi.shape[1], a.gi.dtype
        P = S // H
        self.a = a
        self.g = np.array(cotangent, dtype=dt, order="C").reshape(N, S)
        self.whh = a.whhT if a.diagonal else np.array(problem.weight_hh, order="C", copy=True)
        self.F = np.empty((N if a.peepholes else 0, S), dtype=dt)
        self.wih = np.array(problem.weight_ih, order="C", copy=True)
        self.C, self.CI = np.empty((N, G, P, H), dtype=dt), np.empty((N, G, P, H), dtype=dt)
        self.Dd = np.empty((N, P, P, H), dtype=dt)
        self.dgh, self.dgi = np.empty((N, gH), dtype=dt), np.empty((N, gH), dtype=dt)
        self.ds, self.wdgh = np.empty((N, S), dtype=dt), np.empty((N, H), dtype=dt)

    def vjp(self, v: np.ndarray, nblk: int) -> None:
        """``dgh, dgi, ds, wdgh`` = the VJP of every step for ``v (N, S)``."""
        vjp_rows(self.C, self.Dd, self.CI, v, self.dgh, self.dgi, self.ds, nblk)
        self.back(self.dgh, self.wdgh)

    def back(self, dgh: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``dgh @ W_hh``: ``dgh (n, gH)`` -> ``(n, H)`` (a diagonal cell's: ``sum_g a_g
        dgh_g`` elementwise), into ``out`` if given."""
        if not self.a.diagonal:
            return np.dot(dgh, self.whh, out=out)
        n, G, H = dgh.shape[0], self.a.G, self.a.H
        return np.einsum("ngh,gh->nh", dgh.reshape(n, G, H), self.whh.reshape(G, H), out=out)

    def coefficients(self, flat_prev: np.ndarray, nblk: int) -> np.ndarray:
        """C, Dd, CI (and ``F``) at the previous states ``flat_prev (N, S)``; returns their
        ``h (N, H)``."""
        a = self.a
        hidden_projection(flat_prev, a.whhT, a.gh, a.hbuf)
        coefficients(a.cell, a.gi, a.gh, a.bhh, flat_prev, self.C, self.Dd, self.CI, self.F, nblk)
        if a.S == a.H:
            return flat_prev
        return flat_prev[:, : a.H] if a.diagonal else a.hbuf  # (lstm: hidden_projection copied h there)

    def result(self, sums: ParamSums, ds0: np.ndarray, res_b: np.ndarray, method: str) -> GradOutput:
        """The gradients from the pre-activation sums (``ds0 (B, S)``: ``dL/ds0``), with the
        backward's residuals and name; the forward's fields are filled in by the caller."""
        a = self.a
        w_ih_aug = sums.dgi.T @ a.x_aug
        params = {
            "weight_ih": w_ih_aug[:, :-1],
            "weight_hh": sums.dW_hh,
            "bias_ih": w_ih_aug[:, -1].copy(),
            "bias_hh": w_ih_aug[:, -1].copy() if a.diagonal else sums.db_hh,
        }
        dx = (sums.dgi @ self.wih).reshape(a.T, a.B, -1)
        empty = np.empty(0, dtype=np.float64)
        return GradOutput(None, empty, 0, params, dx, ds0, res_b.copy(), len(res_b), method)
