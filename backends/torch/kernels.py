"""The cells' kernels on one device: :class:`_Kernels`, the shared cell maths of
:mod:`fpbench.cells` with ``xp = torch``; :data:`CELL_KERNELS`, the hand-tuned overrides;
:func:`_nn_module`, the cell's ``torch.nn`` module (Native; Chunked where there is one).

Every cell runs the shared cell maths of :mod:`fpbench.cells` with ``xp = torch``
(``activate``, the structured ``linearise``: :class:`_Kernels`); :data:`CELL_KERNELS` holds
the overrides that measurably pay: elman and gru keep hand-tuned, preallocated, in-place
kernels for the step and its linearisation (the shared versions allocate and use the
overflow-free tanh-form sigmoid; a unit test holds them equal to the shared maths), while
lstm adds only what ``torch.nn.LSTM``'s interface needs. Native runs the cell's ``torch.nn``
module (``Cell.torch_module``; a cell without one raises ``UnsupportedError`` there), and so
does Chunked where there is one (without one, its windows loop the shared cell step).
"""

from __future__ import annotations

from typing import Any

import torch

from fpbench.backend import UnsupportedError
from fpbench.cells import Cell
from fpbench.spec import PARAM_NAMES, Problem

from .scan import _Scan


def _nn_module(problem: Problem, device: torch.device) -> torch.nn.Module:
    """``torch.nn.<cell.torch_module>`` (``RNN``, ``GRU``, ``LSTM``: oneDNN on CPU, cuDNN on
    CUDA) with the problem's parameters, in its dtype, its weights flattened for cuDNN."""
    s = problem.spec
    if s.model.torch_module is None:
        raise UnsupportedError(
            f"Native is not applicable to cell {s.cell!r} on torch: Native is the cell's torch.nn "
            "module, and torch.nn has none with its layout (a diagonal cell: every other solver runs it)"
        )
    module = getattr(torch.nn, s.model.torch_module)(s.input_size, s.hidden_size)
    module = module.to(device=device, dtype=getattr(torch, s.dtype))
    with torch.no_grad():
        for name, value in problem.params.items():
            getattr(module, f"{name}_l0").copy_(torch.tensor(value))
    module.flatten_parameters()  # one contiguous weight block for cuDNN
    return module


class _Kernels:
    """One problem's cell on one device: the shared maths of :mod:`fpbench.cells` run with
    ``xp = torch`` (allocating, as ordinary torch code), over stacked (time, batch) rows.

    The Jacobi and sequential kernel is :meth:`project` (the input side, once per run) and
    :meth:`apply` (``out = f(s)``); Newton and ELK use :meth:`project_linearise` and
    :meth:`linearise` (the structured Jacobian). Hand-tuned subclasses replace these with
    preallocated, in-place versions.

    Args:
        rows: rows of the input projection (``T*B``).
        step_rows: rows of one :meth:`apply` (``B`` for the sequential solver, else ``T*B``).
    """

    def __init__(self, problem: Problem, device: torch.device, rows: int, step_rows: int) -> None:
        s = problem.spec
        self.cell: Cell = s.model
        self.H, self.g, self.S = s.hidden_size, s.gates, s.state_size
        self.rows, self.step_rows = rows, step_rows
        w_ih, w_hh, b_ih, b_hh = (torch.tensor(problem.params[k], device=device) for k in PARAM_NAMES)
        self.w_ihT, self.w_hhT = w_ih.t(), w_hh.t()  # addmm reads transposed operands for free
        self.b_ih, self.b_hh = b_ih, b_hh
        self.blocks = w_hh.view(self.g, self.H, self.H)  # W_g: row i is output i
        self.blocks_diag = torch.diagonal(self.blocks, dim1=-2, dim2=-1)  # (g, H)
        self.gi: torch.Tensor | None = None

    def _empty(self, *shape: int) -> torch.Tensor:
        return torch.empty(shape, dtype=self.b_hh.dtype, device=self.b_hh.device)

    def project_gi(self, x: torch.Tensor) -> None:
        """``gi = x W_ih^T + b_ih`` for inputs ``x (rows, I)``, into a buffer (made on first use)."""
        if self.gi is None:
            self.gi = self._empty(self.rows, self.g * self.H)
        torch.addmm(self.b_ih, x, self.w_ihT, out=self.gi)

    def project(self, x: torch.Tensor) -> None:
        """The input side that :meth:`apply` reads."""
        self.project_gi(x)

    def apply(self, s: torch.Tensor, out: torch.Tensor, rows: slice) -> None:
        """``out = f(s)`` for states ``s (n, S)`` and the ``n`` projected input ``rows``."""
        gh = torch.addmm(self.b_hh, s[:, : self.H], self.w_hhT)
        out.copy_(self.cell.activate(torch, s, self.gi[rows], gh))

    def project_linearise(self, x: torch.Tensor) -> None:
        """The input side that :meth:`linearise` reads."""
        self.project_gi(x)

    def linearise(
        self, s: torch.Tensor, U: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(f(s), c, d)`` (:meth:`fpbench.cells.Cell.linearise`) on all rows, after
        :meth:`project_linearise`; writes ``U = h W_hh^T`` (no bias), which ``J s`` reads.
        A hand-tuned version may return ``d = None`` for a ``d`` that is zero."""
        torch.mm(s[:, : self.H], self.w_hhT, out=U)
        return self.cell.linearise(torch, s, self.gi, U + self.b_hh)

    @staticmethod
    def floor_step(cell: Cell, s: torch.Tensor, gi: torch.Tensor, gh: torch.Tensor) -> torch.Tensor:
        """The elementwise work of :meth:`TorchBackend.iteration_floor`, written plainly."""
        return cell.activate(torch, s, gi, gh)

    @staticmethod
    def native_hx(s0: torch.Tensor, H: int) -> Any:
        """The initial state ``(1, B, .)`` as the ``torch.nn`` module takes it."""
        return s0[None]

    def native_states(self, h: torch.Tensor, x: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
        """The full states ``(T, B, S)`` from the ``h`` sequence the native module returns."""
        return h


class _Elman(_Kernels):
    """Hand-tuned Jacobi/sequential kernel: one ``addmm`` straight into the output rows
    (``C = gi + b_hh`` folded once per run), then ``tanh`` in place."""

    def project(self, x: torch.Tensor) -> None:
        if not hasattr(self, "C"):
            self.C = self._empty(self.rows, self.H)
        torch.addmm(self.b_ih + self.b_hh, x, self.w_ihT, out=self.C)

    def apply(self, s: torch.Tensor, out: torch.Tensor, rows: slice) -> None:
        torch.addmm(self.C[rows], s, self.w_hhT, out=out)
        out.tanh_()

    def project_linearise(self, x: torch.Tensor) -> None:
        self.project(x)

    def linearise(self, s: torch.Tensor, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """The shared ``Elman.linearise``, in place into a preallocated ``f``, and with
        ``d = None`` for its zero ``d`` (the shared version allocates both)."""
        if not hasattr(self, "f"):
            self.f = self._empty(self.rows, self.H)
        torch.mm(s, self.w_hhT, out=U)
        torch.add(U, self.C, out=self.f).tanh_()
        return self.f, (1.0 - self.f * self.f)[:, None, None, :], None

    @staticmethod
    def floor_step(cell: Cell, s: torch.Tensor, gi: torch.Tensor, gh: torch.Tensor) -> torch.Tensor:
        return torch.tanh(gi + gh)


class _GRU(_Kernels):
    """Hand-tuned Jacobi/sequential kernel. Preactivations ``G = C + h W_hh^T`` with ``C =
    [gi_r + b_hr, gi_z + b_hz, b_hn]`` and the n-gate input ``gin = gi_n`` kept apart (it
    sits outside ``r * (W_hn h + b_hn)``), so one ``addmm`` into a preallocated ``G`` plus
    in-place gate work is the whole step."""

    def project(self, x: torch.Tensor) -> None:
        H, H2 = self.H, 2 * self.H
        if not hasattr(self, "C"):
            self.C = self._empty(self.rows, 3 * H)
            self.C[:, H2:] = self.b_hh[H2:]
            self.gin = self._empty(self.rows, H)
            self.G = self._empty(self.step_rows, 3 * H)
            self.n = self._empty(self.step_rows, H)
        torch.addmm(self.b_ih[:H2] + self.b_hh[:H2], x, self.w_ihT[:, :H2], out=self.C[:, :H2])
        torch.addmm(self.b_ih[H2:], x, self.w_ihT[:, H2:], out=self.gin)

    def _activate(self, s: torch.Tensor, gin: torch.Tensor, out: torch.Tensor) -> None:
        """``out = f(s)`` from the preactivations in ``G``, in place: ``G`` becomes ``[r, z,
        W_hn h + b_hn]`` and ``n`` holds the n gate."""
        H, G, n = self.H, self.G, self.n
        G[:, : 2 * H].sigmoid_()
        r, z, hn = G[:, :H], G[:, H : 2 * H], G[:, 2 * H :]
        torch.addcmul(gin, r, hn, out=n).tanh_()
        torch.lerp(n, s, z, out=out)  # (1 - z) n + z h

    def apply(self, s: torch.Tensor, out: torch.Tensor, rows: slice) -> None:
        torch.addmm(self.C[rows], s, self.w_hhT, out=self.G)
        self._activate(s, self.gin[rows], out)

    def project_linearise(self, x: torch.Tensor) -> None:
        self.project(x)

    def linearise(self, s: torch.Tensor, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The shared ``GRU.linearise``, hand-tuned: the in-place gates of :meth:`apply` and
        the coefficients regrouped (the shared version recomputes the gates with the
        overflow-free tanh-form sigmoid)."""
        if not hasattr(self, "f"):
            self.f = self._empty(self.rows, self.H)
        torch.mm(s, self.w_hhT, out=U)
        torch.add(U, self.C, out=self.G)
        self._activate(s, self.gin, self.f)
        H, n = self.H, self.n
        r, z, hn = self.G[:, :H], self.G[:, H : 2 * H], self.G[:, 2 * H :]
        a = (1.0 - z) * (1.0 - n * n)
        c = torch.stack([a * hn * r * (1.0 - r), (s - n) * z * (1.0 - z), a * r], dim=1)
        return self.f, c[:, :, None, :], z[:, None, None, :]

    @staticmethod
    def floor_step(cell: Cell, s: torch.Tensor, gi: torch.Tensor, gh: torch.Tensor) -> torch.Tensor:
        H = s.shape[-1]
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        return (1.0 - z) * n + z * s


class _LSTM(_Kernels):
    """The shared maths throughout; what is lstm-specific is ``torch.nn.LSTM``'s interface.

    ``torch.nn.LSTM`` takes ``(h0, c0)`` and returns every ``h_t`` but only the last ``c``.
    The c sequence is recovered exactly and in parallel in time: given ``h_{t-1}`` (known
    for every t from the module's output), ``c' = f c + i g`` is affine in ``c`` with the
    elementwise transition ``d[1, 1] = f`` of the structured Jacobian, so the gates of all
    steps are one batched product, the offsets ``i g`` are the c part of ``f([h_{t-1}, 0])``,
    and ``c_t`` is a diagonal linear recurrence solved by :class:`_Scan`.
    """

    @staticmethod
    def native_hx(s0: torch.Tensor, H: int) -> Any:
        return s0[None, :, :H].contiguous(), s0[None, :, H:].contiguous()

    def native_states(self, h: torch.Tensor, x: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
        T, B, H = h.shape
        self.project_gi(x)
        hp = torch.cat([s0[None, :, :H], h[:-1]]).view(-1, H)
        gh = torch.addmm(self.b_hh, hp, self.w_hhT)
        f, _, d = self.cell.linearise(torch, torch.cat([hp, torch.zeros_like(hp)], -1), self.gi, gh)
        # batch-major for the scan: sequence b is rows b*T .. b*T+T-1
        A = d[:, 1, 1].reshape(T, B, H).transpose(0, 1).contiguous()
        b = f[:, H:].reshape(T, B, H).transpose(0, 1).contiguous()
        b[:, 0].addcmul_(A[:, 0], s0[:, H:])  # c_1 = f_1 c0 + i_1 g_1 ...
        A[:, 0] = 0.0  # ... and A = 0 there restarts the composition for each sequence
        _Scan(T * B, H, False, h.dtype, h.device)(A.view(-1, H), b.view(-1, H))
        return torch.cat([h, b.transpose(0, 1)], -1)


CELL_KERNELS: dict[str, type[_Kernels]] = {"elman": _Elman, "gru": _GRU, "lstm": _LSTM}
"""Cell name -> its hand-tuned torch implementation; every other cell of
:data:`fpbench.CELLS` runs the shared maths (:class:`_Kernels`)."""


def _kernels_for(cell: str) -> type[_Kernels]:
    return CELL_KERNELS.get(cell, _Kernels)
