"""The PyTorch backend (``"torch"``): every solver for every cell, on ``cpu`` and ``cuda``.

Cells. Every cell runs the shared cell maths of :mod:`fpbench.cells` with ``xp = torch``
(``activate``, the structured ``linearise``: :class:`_Kernels`); :data:`CELL_KERNELS` holds
the overrides that measurably pay: elman and gru keep hand-tuned, preallocated, in-place
kernels for the step and its linearisation (the shared versions allocate and use the
overflow-free tanh-form sigmoid; a unit test holds them equal to the shared maths), while
lstm adds only what ``torch.nn.LSTM``'s interface needs. Native and Chunked run the cell's
``torch.nn`` module (``Cell.torch_module``); a cell without one raises ``UnsupportedError``
there.
Solvers are chosen by their traits (``kind``, ``transition``, ``damping``), never by class
or name.

Layout and buffers. ``prepare`` moves the problem to the device and preallocates the
buffers a solve needs. The state ``s`` (``h``; ``[h, c]`` of size ``S = 2H`` for lstm)
lives in two ``(T+1, B, S)`` ping-pong buffers whose row 0 is ``s0``: the previous
states of all T steps are then the contiguous view ``buf[:-1]``, and one Jacobi
iteration of elman or gru is a single ``torch.addmm`` of ``(T*B, H) x (H, gH)`` into a
preallocated output plus in-place elementwise work. The input projection is computed
once per run, outside the iteration loop, with the hidden biases that lie outside the
GRU's ``r * (.)`` folded in, so the iteration's ``addmm`` adds it for free. (lstm's Jacobi
runs the shared ``activate``, allocating.)

Newton (DEER). ``cell.linearise`` gives ``f(s)`` and the structured Jacobian ``J[p, q] =
sum_g diag(c[g, p]) W_g [q == 0] + diag(d[p, q])`` (``W_g`` the H x H gate blocks of
``W_hh``), so ``J s`` and ``diag(J)`` are elementwise in ``W_g h`` and the full ``(T, B, S,
S)`` Jacobians are a few fused multiply-adds. The linear recurrence ``s_t = A_t s_{t-1} +
b_t`` is solved by the recursive odd/even (Blelloch-style) scan :class:`_Scan`: pair
neighbours, compose them (``A_{2i+1} A_{2i}``), recurse on the half-length sequence, then
fill the even positions with one matrix-vector step. It does about ``2N`` compositions in
``2 log2 N`` batched levels, where the Hillis-Steele doubling scan does ``N log2 N``; with
full ``S x S`` Jacobians that is ``log2 N`` times fewer ``S^3`` matrix products (x12 at
T=4096). The diagonal scan (quasi-Newton) reuses the same code with elementwise products.
The B sequences are scanned as one sequence of length ``N = B*T``: the first element of
each sequence gets ``A = 0`` and ``b = f(s0, x_1)``, which resets the composition, so all
pairing is on one flat contiguous axis with no padding for odd lengths. (A NaN/Inf in
one sequence can leak into the next through ``0 * Inf``; the solve is reported as
diverged either way.)

ELK and quasi-ELK (damping > 0). The damped step ``min sum_t |s_t - A_t s_{t-1} - b_t|^2 +
damping sum_t |s_t - y_t|^2`` (``y`` the current iterate) is the smoothing problem of a
linear-Gaussian model with dynamics noise ``I`` and observations ``y_t`` of noise ``I /
damping``. :func:`_kalman_smoother` solves it exactly and in parallel: the Kalman filter
as an associative scan of Särkkä & García-Fernández's filtering elements ``(A, b, C, eta,
J)`` (:func:`_associative_scan`, odd/even, over time with the batch as a batch dimension),
then the Rauch-Tung-Striebel smoother as a reverse affine scan ``m^s_t = E_t m^s_{t+1} +
g_t`` (:class:`_Scan` on the time-reversed sequences). One code path serves both: the
full transitions use matrix products and batched solves (:class:`_FullAlgebra`),
quasi-ELK's diagonal ones the same formulas elementwise (:class:`_DiagonalAlgebra`: every
state component is its own scalar Kalman filter). ``damping = 0`` runs Newton's
(quasi-Newton's) update itself, as the reference does: the smoother would reach the same
states, but its covariances grow without bound on expansive problems.

Native. ``getattr(torch.nn, cell.torch_module)`` (``RNN``, ``GRU``, ``LSTM``; oneDNN on CPU,
cuDNN on CUDA) is timed alone. ``torch.nn.LSTM`` returns every ``h_t`` but only the last
``c``; ``to_host`` (outside the timed call) recovers the c sequence exactly and in parallel
in time (:class:`_LSTM`).

Chunked (``transition == "window"``; :mod:`backends._torch_chunked`, imported on first
use). Each iteration folds its windows into the batch (``x[steps]`` viewed ``(W, n*B, I)``
by ``ChunkLayout.gather_index``) and runs them all at once through the same ``torch.nn``
module as Native, from per-window start states (``s0`` or zero in iteration 1, the old
iterate's state before the chunk in reruns; lstm's c sequence recovered as Native's), then
unfolds the outputs; iteration ``i >= 2`` reruns only chunks ``p >= max(1, i - 1)``, and a
``tol`` is applied after the run as a per-chunk mask (the new values up to the first step
that moved by ``<= tol``). The host reads each iteration's residual (at most ``chunks``
iterations, each a whole sequential window run) to stop.

Stopping with ``tol`` without a host sync per iteration. The residual of every iteration
is written into a device tensor; a device-side ``done`` flag (``r <= tol`` or ``r``
non-finite) and the device-side iteration count are updated with tensor ops, and once
``done`` is set later iterations are frozen with ``torch.where``, so the states and the
iteration count are exactly those of the reference. The host reads ``done`` only every
``check_every`` iterations to leave the loop: 1 on CPU (a read is cheap there and no
iteration is wasted), 8 on CUDA (at most 7 frozen iterations run, with no per-iteration
sync), except for full transitions (Newton, ELK), whose O(T B S^3) iteration dwarfs a
host sync, so checking every iteration is cheaper than up to 7 wasted ones. It is one
code path; only the interval differs. With ``tol=None`` the same flag stops the solve on
a non-finite residual only (diverged), so the budget runs in full otherwise, and after a
NaN torch stops like every backend (with the same iteration count and residuals; on CUDA
the states, NaN anyway, are not frozen, so a fixed budget pays no ``torch.where``). At
most ``fpbench.solvers.iteration_cap`` iterations run (T for the solvers exact after T),
and the residual buffer has that length.

Precision. float32 means IEEE float32: inside every timed call (and the iteration floor)
``torch.set_float32_matmul_precision("highest")`` and ``torch.backends.cudnn.allow_tf32 =
False`` turn TF32 off for cuBLAS and cuDNN (the cuDNN RNN defaults to TF32), and the
caller's settings are restored on exit, so fpbench leaves no global state behind.

Gradients (``prepare_grad``, :mod:`fpbench.grad`), each a prepared, synchronised run on
device-resident data (leaves, module and buffers built and warmed in ``prepare_grad``):

- Sequential (``"bptt"``): autograd through a sequential loop of the shared ``cell.step``.
- Native (``"autograd"``): autograd through ``torch.nn.RNN/GRU/LSTM`` (the loss on ``h``).
- ``backward="unrolled"`` (``"unrolled"``): autograd through the iterations, written
  functionally with the shared cell maths (Newton's linear recurrence by the functional
  odd/even :func:`_associative_scan` of affine maps, ELK's by a functional copy of the
  Kalman smoother); it stops where the forward stops (the decision is not differentiated).
- ``backward="implicit"``: the forward by the fast :class:`_Solve`, then the adjoint
  ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` at its states, parallel in time: one reverse
  :class:`_Scan` over the transposed full Jacobians (``"full"``: Newton, ELK;
  ``"implicit: reverse scan"``), Jacobi on the adjoint (``"none"``) or
  diagonal-preconditioned adjoint iterations, each an elementwise reverse :class:`_Scan`
  (``"diagonal"``), to ``tol`` and at most ``min(max_iters, T)`` times, stopping as the
  forward does; then the parameter gradients as batched products over all (t, b).
- Chunked: implicit (``"implicit: chunked adjoint"``) is the forward above, then the adjoint
  by Chunked's iterations on the time-reversed adjoint recurrence (its windows a loop over
  window positions of batched VJPs on the folded batch: sequential in the window length,
  parallel over chunks), then the same parameter products; unrolled is autograd through
  the forward's iterations (the nn module called with the parameter leaves).

Threads. ``torch.set_num_threads(FPBENCH_THREADS or os.cpu_count())`` is applied once,
when the backend first prepares a solve, a gradient or the iteration floor (never by a
query: ``devices()`` and ``info()`` leave the caller's setting alone), and reported by
:meth:`TorchBackend.info`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from fpbench.backend import (
    Backend,
    BackendUnavailableError,
    GradHost,
    GradOutput,
    Prepared,
    UnsupportedError,
    requested_threads,
)
from fpbench.cells import Cell
from fpbench.solvers import Solver, iteration_cap
from fpbench.spec import PARAM_NAMES, Problem

try:
    import torch
except ImportError as _error:  # the backend reports itself unavailable, with the reason
    torch = None
    _IMPORT_ERROR: ImportError | None = _error
else:
    _IMPORT_ERROR = None

CHECK_EVERY: dict[str, int] = {"cpu": 1, "cuda": 8}
"""Device type -> iterations between host reads of the convergence flag (with a tol);
full transitions (Newton, ELK) always check every iteration."""

_threads: int | None = None  # the thread count applied, once per process


def _require_torch() -> None:
    if torch is None:
        raise BackendUnavailableError(f"backend 'torch' is unavailable: {_IMPORT_ERROR}")


def _apply_threads() -> int:
    """Apply ``FPBENCH_THREADS`` (default ``os.cpu_count()``) to torch, once per process."""
    global _threads
    if _threads is None:
        n = requested_threads()
        torch.set_num_threads(n)
        _threads = n
    return _threads


@contextmanager
def _ieee_fp32() -> Iterator[None]:
    """float32 matmuls and cuDNN RNNs without TF32 inside; the caller's settings after."""
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _host(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy (never a view of a buffer the next run overwrites)."""
    return t.to("cpu", copy=True).numpy()


def _nn_module(problem: Problem, device: torch.device) -> torch.nn.Module:
    """``torch.nn.<cell.torch_module>`` (``RNN``, ``GRU``, ``LSTM``: oneDNN on CPU, cuDNN on
    CUDA) with the problem's parameters, in its dtype, its weights flattened for cuDNN."""
    s = problem.spec
    if s.model.torch_module is None:
        raise UnsupportedError(
            f"torch has no torch.nn module for cell {s.cell!r} (Native and Chunked use one)"
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


def _transition(
    c: torch.Tensor, d: torch.Tensor | None, W: torch.Tensor, full: bool, out: torch.Tensor
) -> None:
    """The transition of the linearised step from the structured Jacobian ``(c, d)``:
    ``out = J`` (full, ``(..., S, S)``) or ``diag(J)`` (``(..., S)``), written in place
    (``out`` may be a strided view).

    Args:
        c: ``(..., g, P, H)``; d: ``(..., P, P, H)`` (:meth:`fpbench.cells.Cell.linearise`),
            or None for zero.
        W: the gate blocks ``(g, H, H)`` of ``W_hh`` (full), or their diagonals ``(g, H)``.
    """
    P, H = c.shape[-2], c.shape[-1]
    if not full:
        o = out.view(*out.shape[:-1], P, H)
        h = o[..., 0, :]  # only the h part's diagonal sees the W_g
        torch.mul(c[..., 0, 0, :], W[0], out=h)
        for g in range(1, W.shape[0]):
            h.addcmul_(c[..., g, 0, :], W[g])
        if d is not None:
            h.add_(d[..., 0, 0, :])
        for p in range(1, P):
            o[..., p, :] = d[..., p, p, :]
        return
    o = out.view(*out.shape[:-2], P, H, P, H)
    if P > 1:
        out.zero_()
    for p in range(P):
        blk = o[..., p, :, 0, :]  # the h column: sum_g diag(c[g, p]) W_g
        torch.mul(c[..., 0, p, :, None], W[0], out=blk)
        for g in range(1, W.shape[0]):
            blk.addcmul_(c[..., g, p, :, None], W[g])
        for q in range(P if d is not None else 0):
            o[..., p, :, q, :].diagonal(dim1=-2, dim2=-1).add_(d[..., p, q, :])


def _jvp(c: torch.Tensor, d: torch.Tensor | None, U: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``J s`` for rows of ``c (n, g, P, H)``, ``d (n, P, P, H)``, ``U = h W_hh^T (n, gH)``
    and ``s (n, S)``, without forming ``J``: ``(n, S)``."""
    n, g, P, H = c.shape
    Js = (c * U.view(n, g, 1, H)).sum(1)
    if d is not None:
        Js += (d * s.view(n, 1, P, H)).sum(2)
    return Js.view(n, P * H)


class _Scan:
    """In-place parallel scan of ``s_k = A_k s_{k-1} + b_k``, ``k < N``, ``s_{-1} = 0``.

    Recursive odd/even (Blelloch-style) scan, unrolled into ``log2 N`` up-sweep and
    down-sweep levels of batched products; the half-length level buffers are allocated
    once here. ``A`` is ``(N, H, H)`` (full) or ``(N, H)`` (diagonal); ``b (N, H)`` is
    overwritten by the states.
    """

    def __init__(self, N: int, H: int, full: bool, dtype: torch.dtype, device: torch.device) -> None:
        self.full = full
        self.levels: list[tuple[torch.Tensor | None, torch.Tensor]] = []
        n = N
        while n > 1:
            n //= 2
            # A of a one-element level is never read (its state is its b).
            shape = (n, H, H) if full else (n, H)
            A = torch.empty(shape, dtype=dtype, device=device) if n > 1 else None
            self.levels.append((A, torch.empty(n, H, dtype=dtype, device=device)))
        self.tmp = torch.empty(N // 2, H, 1, dtype=dtype, device=device) if full else None

    def _affine(self, b: torch.Tensor, A: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
        """``out = A v + b`` row by row (``out`` may be ``b``)."""
        if not self.full:
            torch.addcmul(b, A, v, out=out)
        elif out is b:  # strided in-place: product into a contiguous buffer, then add
            prod = self.tmp[: b.shape[0]]
            torch.bmm(A, v.unsqueeze(-1), out=prod)
            b.add_(prod.squeeze(-1))
        else:
            torch.baddbmm(b.unsqueeze(-1), A, v.unsqueeze(-1), out=out.unsqueeze(-1))

    def __call__(self, A: torch.Tensor, b: torch.Tensor) -> None:
        chain = [(A, b), *self.levels]
        for (A0, b0), (A1, b1) in itertools.pairwise(chain):  # up-sweep: compose pairs
            m = b1.shape[0]
            Ap = A0[: 2 * m].view(m, 2, *A0.shape[1:])
            bp = b0[: 2 * m].view(m, 2, b0.shape[1])
            if A1 is not None:
                (torch.bmm if self.full else torch.mul)(Ap[:, 1], Ap[:, 0], out=A1)
            self._affine(bp[:, 1], Ap[:, 1], bp[:, 0], out=b1)
        for (A0, b0), (_, b1) in reversed(list(itertools.pairwise(chain))):  # down-sweep
            m, n = b1.shape[0], b0.shape[0]
            b0[1 : 2 * m : 2] = b1  # odd positions: the states of the half-length scan
            e = (n - 1) // 2  # even positions 2, 4, .., 2e: one step from their odd neighbour
            if e:
                even = b0[2 : 2 * e + 1 : 2]
                self._affine(even, A0[2 : 2 * e + 1 : 2], b0[1 : 2 * e : 2], out=even)


def _associative_scan(
    op: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], Sequence[torch.Tensor]],
    elems: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """Inclusive scan over axis 1 of ``(B, T, ...)`` tensors (axis 0 is a batch):
    ``out[:, t] = e[:, 0] o e[:, 1] o ... o e[:, t]`` for an associative ``op(earlier, later)``.

    Recursive odd/even: compose neighbouring pairs, scan the half-length sequence (the
    prefixes at odd positions), then one more ``op`` gives the even positions. About ``2T``
    applications of ``op`` in ``2 log2 T`` batched levels, any T.
    """
    n = elems[0].shape[1]
    if n < 2:
        return list(elems)
    odd = _associative_scan(op, op([e[:, 0 : n - 1 : 2] for e in elems], [e[:, 1:n:2] for e in elems]))
    m = (n - 1) // 2  # even positions 2, 4, .., 2m: odd prefix 2k+1, then element 2k+2
    even = op([o[:, :m] for o in odd], [e[:, 2 : 2 * m + 1 : 2] for e in elems]) if m else None
    out = []
    for i, e in enumerate(elems):
        r = torch.empty_like(e)
        r[:, 0] = e[:, 0]
        r[:, 1::2] = odd[i]
        if even is not None:
            r[:, 2::2] = even[i]
        out.append(r)
    return out


class _FullAlgebra:
    """Matrices ``(..., S, S)`` and vectors ``(..., S)``: ELK's full transitions."""

    @staticmethod
    def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)

    @staticmethod
    def mv(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, v.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def t(a: torch.Tensor) -> torch.Tensor:
        return a.transpose(-1, -2)

    @staticmethod
    def scaled_eye(like: torch.Tensor, value: float) -> torch.Tensor:
        eye = torch.eye(like.shape[-1], dtype=like.dtype, device=like.device)
        return (value * eye).expand(*like.shape, like.shape[-1]).clone()

    @staticmethod
    def add_eye(a: torch.Tensor) -> torch.Tensor:
        a.diagonal(dim1=-2, dim2=-1).add_(1.0)
        return a

    @staticmethod
    def solve(M: torch.Tensor, *rhs: torch.Tensor) -> list[torch.Tensor]:
        """``M^{-1} r`` for each right-hand side (matrices or vectors), one factorisation.
        ``solve_ex``: no error and no host sync on a singular (e.g. NaN) system; the
        non-finite result is reported as a divergence."""
        cols = [r if r.dim() == M.dim() else r.unsqueeze(-1) for r in rhs]
        sol = torch.linalg.solve_ex(M, torch.cat(cols, -1)).result
        out, k = [], 0
        for r, col in zip(rhs, cols, strict=True):
            w = col.shape[-1]
            out.append(sol[..., k : k + w] if r.dim() == M.dim() else sol[..., k])
            k += w
        return out


class _DiagonalAlgebra:
    """Diagonal matrices stored as ``(..., S)``: quasi-ELK, one scalar filter per component."""

    @staticmethod
    def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b

    mv = mm

    @staticmethod
    def t(a: torch.Tensor) -> torch.Tensor:
        return a

    @staticmethod
    def scaled_eye(like: torch.Tensor, value: float) -> torch.Tensor:
        return torch.full_like(like, value)

    @staticmethod
    def add_eye(a: torch.Tensor) -> torch.Tensor:
        return a.add_(1.0)

    @staticmethod
    def solve(M: torch.Tensor, *rhs: torch.Tensor) -> list[torch.Tensor]:
        return [r / M for r in rhs]


Algebra = type[_FullAlgebra] | type[_DiagonalAlgebra]


def _kalman_op(
    alg: Algebra,
) -> Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], list[torch.Tensor]]:
    """The associative operator of the parallel Kalman filter (Särkkä & García-Fernández,
    2021) on elements ``(A, b, C, eta, J)``: an element is the conditional density of a
    state given the state ``A``-steps before and the observations in between (``A, b, C``)
    and the likelihood of those observations as a function of that earlier state (``eta,
    J``); composing ``earlier o later``, with ``M = I + C_1 J_2``:

        A = A_2 M^-1 A_1              b = A_2 M^-1 (b_1 + C_1 eta_2) + b_2
        C = A_2 M^-1 C_1 A_2^T + C_2   eta = A_1^T M^-T (eta_2 - J_2 b_1) + eta_1
        J = A_1^T M^-T J_2 A_1 + J_1
    """

    def op(left: Sequence[torch.Tensor], right: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        A1, b1, C1, e1, J1 = left
        A2, b2, C2, e2, J2 = right
        M = alg.add_eye(alg.mm(C1, J2))
        Z, w, V = alg.solve(M, A1, b1 + alg.mv(C1, e2), C1)  # M^-1 A_1, M^-1 (..), M^-1 C_1
        Zt = alg.t(Z)  # = A_1^T M^-T
        return [
            alg.mm(A2, Z),
            alg.mv(A2, w) + b2,
            alg.mm(alg.mm(A2, V), alg.t(A2)) + C2,
            alg.mv(Zt, e2 - alg.mv(J2, b1)) + e1,
            alg.mm(alg.mm(Zt, J2), A1) + J1,
        ]

    return op


def _kalman_smoother(
    A: torch.Tensor, b: torch.Tensor, y: torch.Tensor, damping: float, full: bool, scan: _Scan
) -> torch.Tensor:
    """ELK's damped step: the minimiser of ``sum_t |s_t - A_t s_{t-1} - b_t|^2 + damping
    sum_t |s_t - y_t|^2``, by a parallel Kalman filter and RTS smoother.

    Args:
        A: ``(B, T, S, S)`` full or ``(B, T, S)`` diagonal transitions, batch-major, with
            ``A[:, 0] = 0`` and the known ``s0`` folded into ``b[:, 0] = f(s0)``. Overwritten.
        b, y: ``(B, T, S)`` offsets (overwritten) and observations (the current iterate).
        scan: a :class:`_Scan` of ``N = B*T`` and the same kind, for the smoother.
    Returns:
        ``(B, T, S)`` smoothed means.
    """
    alg: Algebra = _FullAlgebra if full else _DiagonalAlgebra
    m, P = _kalman_filter(alg, A, b, y, damping)  # filtered means, covariances
    # RTS smoother: m^s_t = E_t m^s_{t+1} + g_t, E_t = P_t A_{t+1}^T (A_{t+1} P_t A_{t+1}^T + I)^-1,
    # g_t = m_t - E_t (A_{t+1} m_t + b_{t+1}); at t = T: E = 0, g = m_T.
    An, mk = A[:, 1:], m[:, :-1]
    AP = alg.mm(An, P[:, :-1])
    E = alg.t(alg.solve(alg.add_eye(alg.mm(AP, alg.t(An))), AP)[0])
    g = mk - alg.mv(E, alg.mv(An, mk) + b[:, 1:])
    # ... a reverse affine recurrence: the forward scan on the time-reversed sequences.
    A[:, 0] = 0.0
    A[:, 1:] = E.flip(1)
    b[:, 0] = m[:, -1]
    b[:, 1:] = g.flip(1)
    B, T = b.shape[:2]
    scan(A.view(B * T, *A.shape[2:]), b.view(B * T, -1))
    return b.flip(1)


class _Solve:
    """Device-resident data and preallocated buffers of one (problem, solver, device)."""

    def __init__(self, problem: Problem, solver: Solver, device: torch.device, check_every: int) -> None:
        s = problem.spec
        self.solver, self.device = solver, device
        self.T, self.B, self.S = s.seq_len, s.batch, s.state_size
        rows = self.T * self.B
        sequential = not solver.iterative
        self.kern = _kernels_for(s.cell)(problem, device, rows, self.B if sequential else rows)
        self.x = torch.tensor(problem.x, device=device).view(rows, s.input_size)
        self.s0 = torch.tensor(problem.s0, device=device)
        dtype = self.s0.dtype

        def empty(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=dtype, device=device)

        if sequential:
            self.out = empty(self.T, self.B, self.S)
            return
        self.bufs = (empty(self.T + 1, self.B, self.S), empty(self.T + 1, self.B, self.S))
        for buf in self.bufs:
            buf[0] = self.s0
        self.diff = empty(self.T, self.B, self.S)
        self.cap = iteration_cap(solver, self.T)  # at most T iterations: exact by then
        self.res = empty(self.cap)
        self.check_every = check_every
        self.update, self.project = self.jacobi, self.kern.project
        if solver.transition != "none":
            self.update, self.project = self.newton, self.kern.project_linearise
            self.full = solver.transition == "full"
            self.U = empty(rows, s.gates * s.hidden_size)
            # Scan inputs, batch-major: the B sequences scanned as one of length T*B.
            self.A = empty(rows, self.S, self.S) if self.full else empty(rows, self.S)
            self.b = empty(rows, self.S)
            self.scan = _Scan(rows, self.S, self.full, dtype, device)

    # -- one iteration: dst[1:] from src[:-1] -------------------------------------------

    def jacobi(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        self.kern.apply(src[:-1].view(-1, self.S), dst[1:].view(-1, self.S), slice(None))

    def newton(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Linearise at the iterate and solve the linear recurrence (Newton, quasi-Newton)
        or, with damping, the damped least-squares problem (ELK, quasi-ELK)."""
        T, B, S = self.T, self.B, self.S
        s = src[:-1].view(-1, S)
        f, c, d = self.kern.linearise(s, self.U)
        c_tm, f_tm = c.view(T, B, *c.shape[1:]), f.view(T, B, S)
        d_tm = None if d is None else d.view(T, B, *d.shape[1:])
        # The scan runs batch-major (sequence b is rows b*T .. b*T+T-1); fill it time-major.
        A_tm = self.A.view(B, T, *self.A.shape[1:]).transpose(0, 1)
        b_tm = self.b.view(B, T, S).transpose(0, 1)
        if self.full:
            _transition(c_tm, d_tm, self.kern.blocks, True, out=A_tm)
            torch.sub(f_tm, _jvp(c, d, self.U, s).view(T, B, S), out=b_tm)
        else:
            _transition(c_tm, d_tm, self.kern.blocks_diag, False, out=A_tm)
            torch.addcmul(f_tm, A_tm, s.view(T, B, S), value=-1.0, out=b_tm)
        b_tm[0] = f_tm[0]  # the first state is exact: f(s0, x_1) ...
        A_tm[0] = 0.0  # ... and A = 0 there restarts the composition for each sequence
        if self.solver.damping:
            y = src[1:].transpose(0, 1)  # the current iterate, batch-major
            A = self.A.view(B, T, *self.A.shape[1:])
            dst[1:] = _kalman_smoother(
                A, self.b.view(B, T, S), y, self.solver.damping, self.full, self.scan
            ).transpose(0, 1)
        else:
            self.scan(self.A, self.b)
            dst[1:] = b_tm

    # -- whole solves -----------------------------------------------------------------

    def sequential(self) -> tuple[torch.Tensor, int]:
        B = self.B
        self.kern.project(self.x)
        s = self.s0
        for t in range(self.T):
            self.kern.apply(s, self.out[t], slice(t * B, (t + 1) * B))
            s = self.out[t]
        return self.out, 0

    def iterate(self) -> tuple[torch.Tensor, torch.Tensor, int | torch.Tensor]:
        """Run the budget; returns ``(states (T, B, S), residuals, iterations)``."""
        self.project(self.x)
        src, dst = self.bufs
        src[1:] = 0.0  # every solve starts from H = 0
        tol, every = self.solver.tol, self.check_every
        done = torch.zeros((), dtype=torch.bool, device=self.device)
        count = torch.zeros((), dtype=torch.int64, device=self.device)
        for k in range(self.cap):
            self.update(src, dst)
            r = self.res[k]
            # max |dst - src|; (vector_norm(ord=inf) is a slow, unvectorised reduction on CPU)
            torch.amax(torch.sub(dst[1:], src[1:], out=self.diff).abs_(), out=r)
            if k % every and tol is not None:  # host not looked since the block began: freeze if done
                torch.where(done, src[1:], dst[1:], out=dst[1:])
            count.add_(done.logical_not())
            stop = ~torch.isfinite(r)  # diverged: stop as every backend does, with or without tol
            done.logical_or_(stop if tol is None else stop | (r <= tol))
            src, dst = dst, src
            if (k + 1) % every == 0 and done.item():
                break
        return src[1:], self.res, count


TRANSITIONS: tuple[str, ...] = ("none", "full", "diagonal")
"""The iterative solvers' transitions this backend implements (``fpbench.solvers``)."""


class TorchBackend(Backend):
    """PyTorch implementation of every solver for every cell (``cpu``, ``cuda``).

    Args:
        check_every: iterations between host reads of the convergence flag when a
            ``tol`` is set; default :data:`CHECK_EVERY` for the device type (1 for
            full transitions: Newton, ELK). The states and iteration counts do not
            depend on it.
    """

    name = "torch"

    def __init__(self, check_every: int | None = None) -> None:
        if check_every is not None and (isinstance(check_every, bool) or check_every < 1):
            raise ValueError(f"check_every must be a positive integer or None, got {check_every!r}")
        self.check_every = check_every

    def devices(self) -> list[str]:
        _require_torch()
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    def _device(self, device: str) -> torch.device:
        """The device of a solve about to be prepared (which applies the thread count)."""
        _apply_threads()
        available = self.devices()
        if device not in available:
            raise BackendUnavailableError(
                f"device {device!r} is not available for backend 'torch'; available: {available}"
            )
        return torch.device(device)

    def prepare(self, problem: Problem, solver: Solver, device: str) -> Prepared:
        dev = self._device(device)
        _kernels_for(problem.spec.cell)  # an unknown cell fails here, before any work
        if solver.kind == "native":
            run, to_host = self._native(problem, dev)
        elif solver.kind == "sequential" or (solver.iterative and solver.transition in TRANSITIONS):
            full = solver.transition == "full"
            every = self.check_every or (1 if full else CHECK_EVERY.get(dev.type, 8))
            with torch.inference_mode():
                job = _Solve(problem, solver, dev, every)
            run, to_host = (
                self._timed(job.iterate if solver.iterative else job.sequential, dev),
                self._to_host,
            )
        elif solver.iterative and solver.transition == "window":
            from backends._torch_chunked import ChunkedSolve

            with torch.inference_mode():
                job = ChunkedSolve(problem, solver, dev)
            run, to_host = self._timed(job, dev), self._to_host
        else:
            raise UnsupportedError(f"backend 'torch' does not implement solver {solver.name!r}")
        run()  # warm-up: kernel loading, cuBLAS/cuDNN handles and plans, allocator pools
        return Prepared(run, to_host)

    @staticmethod
    def _timed(solve: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
        """``solve`` under inference mode and IEEE float32, returning once the device is done."""

        def run() -> Any:
            with torch.inference_mode(), _ieee_fp32():
                out = solve()
                _synchronize(device)
            return out

        return run

    def _native(self, problem: Problem, device: torch.device) -> tuple[Callable[[], Any], Callable]:
        """``torch.nn.<cell.torch_module>`` timed alone; ``to_host`` completes the states."""
        s = problem.spec
        kern_cls = _kernels_for(s.cell)
        module = _nn_module(problem, device).eval().requires_grad_(False)
        rows = s.seq_len * s.batch
        x = torch.tensor(problem.x, device=device)
        s0 = torch.tensor(problem.s0, device=device)
        hx = kern_cls.native_hx(s0, s.hidden_size)
        kern = kern_cls(problem, device, rows, rows)

        def to_host(out: tuple) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode(), _ieee_fp32():
                states = kern.native_states(out[0], x.view(rows, -1), s0)
            return _host(states), np.empty(0)

        return self._timed(lambda: (module(x, hx)[0], 0), device), to_host

    @staticmethod
    def _to_host(out: tuple) -> tuple[np.ndarray, np.ndarray]:
        if len(out) == 2:  # Sequential: no iterations
            return _host(out[0]), np.empty(0)
        states, res, n = out
        return _host(states), _host(res[: int(n)])

    def prepare_grad(self, problem: Problem, solver: Solver, device: str, cotangent: np.ndarray) -> Prepared:
        """The forward solve and its backward pass (:mod:`fpbench.grad`), by the solver's
        traits: BPTT (``"bptt"``, autograd through a sequential loop of the shared cell
        step), Native (``"autograd"`` through ``torch.nn``), unrolled (``"unrolled"``,
        autograd through the iterations) and implicit (:class:`_ImplicitGrad`)."""
        dev = self._device(device)
        spec = problem.spec
        kern_cls = _kernels_for(spec.cell)  # an unknown cell fails here, before any work
        method = ""
        if solver.kind == "sequential":
            m = _GradModel(problem, dev, cotangent)
            fn, method = _grad_bptt(m), "bptt"
        elif solver.kind == "native":
            m = _GradModel(problem, dev, cotangent)
            fn, method = _grad_native(problem, m, dev), "autograd"
        elif solver.iterative and solver.transition in TRANSITIONS:
            if solver.backward == "unrolled":
                m = _GradModel(problem, dev, cotangent)
                fn, method = _grad_unrolled(m, solver), "unrolled"
            else:
                full = solver.transition == "full"
                every = self.check_every or (1 if full else CHECK_EVERY.get(dev.type, 8))
                fn = _ImplicitGrad(problem, solver, dev, cotangent, every)
                m, method = fn.m, _BACKWARD_METHODS[solver.transition]
        elif solver.iterative and solver.transition == "window":
            from backends._torch_chunked import ChunkedImplicitGrad, chunked_unrolled

            if solver.backward == "unrolled":
                m = _GradModel(problem, dev, cotangent)
                fn, method = chunked_unrolled(problem, solver, m), "unrolled"
            else:
                fn = ChunkedImplicitGrad(problem, solver, dev, cotangent)
                m, method = fn.m, "implicit: chunked adjoint"
        else:
            raise UnsupportedError(f"backend 'torch' has no backward pass for solver {solver.name!r}")
        implicit = solver.iterative and solver.backward == "implicit"
        rows = spec.seq_len * spec.batch

        def run() -> Any:
            with _ieee_fp32():
                if implicit:
                    with torch.inference_mode():
                        out = fn()
                else:
                    out = fn()
                _synchronize(dev)
            return out

        def to_host(out: GradOutput) -> GradHost:
            if solver.kind == "native":
                with torch.inference_mode(), _ieee_fp32():
                    kern = kern_cls(problem, dev, rows, rows)
                    S = kern.native_states(out.states, m.x.detach().reshape(rows, -1), m.s0.detach())
                out = dataclasses.replace(out, states=S)
            return out.to_host(_host, method)

        run()  # warm-up
        return Prepared(run, to_host)

    def iteration_floor(self, problem: Problem, device: str) -> Callable[[], Any]:
        """One ``addmm`` of ``(T*B, H) x (H, gH)`` with bias plus the cell's elementwise
        maths, written plainly (allocating, as ordinary torch code is)."""
        dev = self._device(device)
        s = problem.spec
        kern_cls = _kernels_for(s.cell)
        with torch.inference_mode():
            w_ih, w_hh, b_ih, b_hh = (torch.tensor(problem.params[k], device=dev) for k in PARAM_NAMES)
            x = torch.tensor(problem.x, device=dev).view(-1, s.input_size)
            gi = torch.addmm(b_ih, x, w_ih.t())
            states = torch.tensor(problem.s0, device=dev).repeat(s.seq_len, 1)  # (T*B, S) states
            h = states[:, : s.hidden_size]

        def step() -> torch.Tensor:
            return kern_cls.floor_step(s.model, states, gi, torch.addmm(b_hh, h, w_hh.t()))

        floor = self._timed(step, dev)
        floor()
        return floor

    def info(self) -> dict[str, str]:
        _require_torch()
        info = {
            "torch": torch.__version__,
            "torch_threads": str(
                _threads
                or f"{torch.get_num_threads()} (fpbench applies "
                f"{requested_threads()} when it first prepares a solve)"
            ),
            "torch_interop_threads": str(torch.get_num_interop_threads()),
        }
        if torch.cuda.is_available():
            info["cuda"] = str(torch.version.cuda)
            info["cudnn"] = str(torch.backends.cudnn.version())
            info["cuda_device"] = torch.cuda.get_device_name()
        return info


# --- gradients: the backward pass of every solver (fpbench.grad) --------------------------
#
# Each gradient program is a zero-argument callable on device-resident data returning a
# fpbench.backend.GradOutput.

_BACKWARD_METHODS = {
    "none": "implicit: jacobi on the adjoint",
    "full": "implicit: reverse scan",
    "diagonal": "implicit: diagonal-preconditioned adjoint iterations",
}


def _shifted(S: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
    """``(s0, S_0, ..., S_{T-2})``: the previous state of every step."""
    return torch.cat([s0[None], S[:-1]])


def _later(v: torch.Tensor) -> torch.Tensor:
    """``out_t = v_{t+1}`` (0 at the last step): what step t+1 sends back to step t."""
    return torch.cat([v[1:], torch.zeros_like(v[:1])])


def _structured_jacobian(c: torch.Tensor, d: torch.Tensor, W: torch.Tensor, full: bool) -> torch.Tensor:
    """``J`` (``(..., S, S)``) or ``diag(J)`` (``(..., S)``) from the structured Jacobian
    ``(c, d)`` and the gate blocks ``W (g, H, H)``, functionally (differentiable, any device:
    the shared ``Cell.jacobian`` builds its identity on the CPU)."""
    P = c.shape[-2]
    if not full:
        Wd = torch.diagonal(W, dim1=-2, dim2=-1)  # (g, H)
        h = (c[..., :, 0, :] * Wd).sum(-2) + d[..., 0, 0, :]
        return torch.cat([h] + [d[..., p, p, :] for p in range(1, P)], -1)
    rows = []
    for p in range(P):
        cols = []
        for q in range(P):
            block = torch.diag_embed(d[..., p, q, :])
            if q == 0:  # sum_g diag(c[g, p]) W_g
                block = block + torch.einsum("...gi,gij->...ij", c[..., :, p, :], W)
            cols.append(block)
        rows.append(torch.cat(cols, -1))
    return torch.cat(rows, -2)


def _affine_op(
    alg: Algebra,
) -> Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], list[torch.Tensor]]:
    """Composition of affine maps ``s -> A s + b`` (``earlier`` then ``later``), functional."""

    def op(earlier: Sequence[torch.Tensor], later: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        (A1, b1), (A2, b2) = earlier, later
        return [alg.mm(A2, A1), alg.mv(A2, b1) + b2]

    return op


def _linear_recurrence_diff(A: torch.Tensor, b: torch.Tensor, full: bool) -> torch.Tensor:
    """``s_t = A_t s_{t-1} + b_t`` over axis 1 of batch-major ``(B, T, ...)`` with ``A[:, 0]``
    ignored (``s_{-1} = 0``), by the functional odd/even associative scan: differentiable
    by autograd (the unrolled backward), parallel in time."""
    alg: Algebra = _FullAlgebra if full else _DiagonalAlgebra
    A = torch.cat([torch.zeros_like(A[:, :1]), A[:, 1:]], 1)
    return _associative_scan(_affine_op(alg), [A, b])[1]


def _kalman_filter(alg: Algebra, A: torch.Tensor, b: torch.Tensor, y: torch.Tensor, damping: float):
    """The parallel Kalman filter of the damped step: ``(filtered means, covariances)``,
    ``(B, T, ...)`` batch-major, by one associative scan (no in-place writes)."""
    nu, kappa = 1.0 / (1.0 + damping), damping / (1.0 + damping)
    # Filtering elements of observing y_t with noise I/damping after dynamics noise I: the
    # gain is kappa * I, so (I - K) = nu * I. With A_1 = 0 the first is the exact prior too.
    At = alg.t(A)
    elems = [
        nu * A,
        nu * b + kappa * y,
        alg.scaled_eye(b, nu),
        kappa * alg.mv(At, y - b),
        kappa * alg.mm(At, A),
    ]
    _, m, P, _, _ = _associative_scan(_kalman_op(alg), elems)
    return m, P


def _kalman_smoother_diff(A: torch.Tensor, b: torch.Tensor, y: torch.Tensor, damping: float, full: bool):
    """:func:`_kalman_smoother` written functionally (no in-place writes, no ``_Scan``), so
    autograd differentiates through it: the unrolled backward of ELK and quasi-ELK.
    ``A, b, y (B, T, ...)`` batch-major with ``A[:, 0] = 0``; returns the smoothed means."""
    alg: Algebra = _FullAlgebra if full else _DiagonalAlgebra
    m, P = _kalman_filter(alg, A, b, y, damping)
    An, mk = A[:, 1:], m[:, :-1]
    AP = alg.mm(An, P[:, :-1])
    E = alg.t(alg.solve(alg.add_eye(alg.mm(AP, alg.t(An))), AP)[0])
    g = mk - alg.mv(E, alg.mv(An, mk) + b[:, 1:])
    Ar = torch.cat([torch.zeros_like(A[:, :1]), E.flip(1)], 1)
    br = torch.cat([m[:, -1:], g.flip(1)], 1)
    return _associative_scan(_affine_op(alg), [Ar, br])[1].flip(1)


class _GradModel:
    """One problem's tensors for the gradient programs: ``x (T, B, I)``, ``s0 (B, S)``,
    the torch-layout ``params`` and the cotangent ``g (T, B, S)``, as autograd leaves."""

    def __init__(self, problem: Problem, device: torch.device, cotangent: np.ndarray) -> None:
        s = problem.spec
        self.cell: Cell = s.model
        self.T, self.B, self.H, self.S = s.seq_len, s.batch, s.hidden_size, s.state_size
        self.x = torch.tensor(problem.x, device=device, requires_grad=True)
        self.s0 = torch.tensor(problem.s0, device=device, requires_grad=True)
        self.params = {
            k: torch.tensor(problem.params[k], device=device, requires_grad=True) for k in PARAM_NAMES
        }
        self.g = torch.tensor(np.asarray(cotangent, dtype=s.dtype), device=device)
        self.none = torch.zeros(1, dtype=self.g.dtype, device=device), 0

    def leaves(self) -> list[torch.Tensor]:
        return [self.x, self.s0, *self.params.values()]

    def autograd(self, S: torch.Tensor, g: torch.Tensor | None = None) -> tuple:
        """``(dparams, dx, ds0)`` of ``sum(g * S)`` by autograd (a never-reached leaf: 0)."""
        grads = torch.autograd.grad(S, self.leaves(), self.g if g is None else g, allow_unused=True)
        grads = [torch.zeros_like(v) if d is None else d for v, d in zip(self.leaves(), grads, strict=True)]
        dx, ds0, *dp = grads
        return dict(zip(PARAM_NAMES, dp, strict=True)), dx, ds0

    # -- the shared cell maths, functional (differentiable) -------------------------------

    def gi(self) -> torch.Tensor:
        p = self.params
        return torch.matmul(self.x, p["weight_ih"].t()) + p["bias_ih"]

    def gh(self, Sp: torch.Tensor) -> torch.Tensor:
        p = self.params
        return torch.matmul(Sp[..., : self.H], p["weight_hh"].t()) + p["bias_hh"]

    def vjp(self, Sp: torch.Tensor, gi: torch.Tensor, gh: torch.Tensor, lam: torch.Tensor):
        """``(J_t^T lam_t, dgi, dgh)`` of every step at once (no autograd)."""
        ds, dgi, dgh = self.cell.vjp_preact(torch, Sp, gi, gh, lam)
        dprev = ds.clone()
        dprev[..., : self.H] += torch.matmul(dgh, self.params["weight_hh"])
        return dprev, dgi, dgh

    def blocks(self) -> torch.Tensor:
        return self.params["weight_hh"].view(-1, self.H, self.H)

    def update(self, solver: Solver, gi: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """One iteration ``S -> S_new`` of ``solver`` (by its traits), functionally."""
        s0, cell = self.s0, self.cell

        def jacobi(S: torch.Tensor) -> torch.Tensor:
            Sp = _shifted(S, s0)
            return cell.activate(torch, Sp, gi, self.gh(Sp))

        def newton(S: torch.Tensor) -> torch.Tensor:
            full = solver.transition == "full"
            Sp = _shifted(S, s0)
            f, c, d = cell.linearise(torch, Sp, gi, self.gh(Sp))
            A = _structured_jacobian(c, d, self.blocks(), full)
            b = f - (torch.matmul(A, Sp.unsqueeze(-1)).squeeze(-1) if full else A * Sp)
            b = torch.cat([f[:1], b[1:]])  # the first state is exact: f(s0, x_1)
            A = torch.cat([torch.zeros_like(A[:1]), A[1:]])
            A_bm, b_bm = A.transpose(0, 1), b.transpose(0, 1)
            if solver.damping:
                out = _kalman_smoother_diff(A_bm, b_bm, S.transpose(0, 1), solver.damping, full)
            else:
                out = _linear_recurrence_diff(A_bm, b_bm, full)
            return out.transpose(0, 1)

        return jacobi if solver.transition == "none" else newton


def _adjoint_iterations(
    update: Callable[[torch.Tensor], torch.Tensor], g: torch.Tensor, cap: int, tol: float | None, every: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``lam <- update(lam)`` from 0, stopping exactly as :meth:`_Solve.iterate` does (after
    the first residual ``<= tol`` or a non-finite one, at most ``cap`` times; later
    iterations frozen on the device, the host reading the flag every ``every``).
    Returns ``(lam, residuals (cap,), count)``."""
    lam = torch.zeros_like(g)
    res = torch.empty(max(cap, 1), dtype=g.dtype, device=g.device)
    done = torch.zeros((), dtype=torch.bool, device=g.device)
    count = torch.zeros((), dtype=torch.int64, device=g.device)
    for k in range(cap):
        new = update(lam)
        r = res[k]
        torch.amax((new - lam).abs(), out=r)
        if k % every and tol is not None:
            new = torch.where(done, lam, new)
        count.add_(done.logical_not())
        stop = ~torch.isfinite(r)
        done.logical_or_(stop if tol is None else stop | (r <= tol))
        lam = new
        if (k + 1) % every == 0 and done.item():
            break
    return lam, res, count


class _ImplicitGrad:
    """The implicit backward: the forward with the fast solve (:class:`_Solve`), then the
    adjoint ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` at its states, parallel in time: one
    reverse :class:`_Scan` with the transposed full Jacobians (``"full"``: Newton, ELK),
    Jacobi on the adjoint (``"none"``), or diagonal-preconditioned adjoint iterations, each
    an elementwise reverse :class:`_Scan` (``"diagonal"``); then every parameter gradient
    as batched products over all (t, b). No Python loop over T."""

    def __init__(
        self, problem: Problem, solver: Solver, device: torch.device, cotangent: np.ndarray, every: int
    ):
        self.solver, self.every = solver, every
        with torch.inference_mode():
            self.job = _Solve(problem, solver, device, every)
            self.m = _GradModel(problem, device, cotangent)
            for v in self.m.leaves():
                v.requires_grad_(False)
        self.cap_b = min(self.job.cap, problem.spec.seq_len)

    def _reverse_scan(self, A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``lam_t = A_t lam_{t+1} + b_t`` backwards in time (``A_{T-1}`` ignored), for
        time-major ``A (T, B, S[, S])`` and ``b (T, B, S)``: the forward :class:`_Scan` on
        the time-reversed, batch-major sequences in the solve's own buffers."""
        job = self.job
        T, B, S = b.shape
        A_bm = job.A.view(B, T, *job.A.shape[1:])
        b_bm = job.b.view(B, T, S)
        A_bm.copy_(A.flip(0).transpose(0, 1))
        A_bm[:, 0] = 0.0  # restarts the composition for each sequence
        b_bm.copy_(b.flip(0).transpose(0, 1))
        job.scan(job.A, job.b)
        return b_bm.transpose(0, 1).flip(0)

    def __call__(self) -> GradOutput:
        job, m, solver = self.job, self.m, self.solver
        S, res, k = job.iterate()
        gi = m.gi()
        Sp = _shifted(S, m.s0)
        gh = m.gh(Sp)
        g = m.g
        transition = solver.transition
        if transition == "full":
            _, c, d = m.cell.linearise(torch, Sp, gi, gh)
            Jt = _structured_jacobian(c, d, m.blocks(), True).transpose(-1, -2)
            lam = self._reverse_scan(_later(Jt), g)  # J_{t+1}^T
            res_b, k_b = m.none
        else:
            if transition == "none":

                def update(lam: torch.Tensor) -> torch.Tensor:
                    return g + _later(m.vjp(Sp, gi, gh, lam)[0])

            else:
                _, c, d = m.cell.linearise(torch, Sp, gi, gh)
                diag = _structured_jacobian(c, d, m.blocks(), False)
                d_next = _later(diag)  # D_{t+1}

                def update(lam: torch.Tensor) -> torch.Tensor:
                    # lam_t = g_t + D_{t+1} lam_{t+1} + (J_{t+1} - D_{t+1})^T lam_{t+1}^old
                    b = g + _later(m.vjp(Sp, gi, gh, lam)[0] - diag * lam)
                    return self._reverse_scan(d_next, b).clone()

            lam, res_b, k_b = _adjoint_iterations(update, g, self.cap_b, solver.tol, self.every)
        return GradOutput(S, res, k, *_param_products(m, Sp, gi, gh, lam), res_b, k_b)


def _param_products(
    m: _GradModel, Sp: torch.Tensor, gi: torch.Tensor, gh: torch.Tensor, lam: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """``(dparams, dx (T, B, I), ds0 (B, S))`` from the adjoint ``lam (T, B, S)`` at the
    previous states ``Sp (T, B, S)`` and preactivations ``gi, gh (T, B, gH)``: one batched
    VJP and products over all (t, b)."""
    dprev, dgi, dgh = m.vjp(Sp, gi, gh, lam)
    gH, I, H = dgi.shape[-1], m.x.shape[-1], m.H
    dgi2, dgh2 = dgi.reshape(-1, gH), dgh.reshape(-1, gH)
    dparams = {
        "weight_ih": dgi2.t() @ m.x.reshape(-1, I),
        "weight_hh": dgh2.t() @ Sp[..., :H].reshape(-1, H),
        "bias_ih": dgi2.sum(0),
        "bias_hh": dgh2.sum(0),
    }
    return dparams, torch.matmul(dgi, m.params["weight_ih"]), dprev[0]


def _grad_bptt(m: _GradModel) -> Callable[[], GradOutput]:
    """BPTT: autograd through a sequential loop of the shared ``cell.step``."""

    def run() -> GradOutput:
        with torch.enable_grad():
            gi = m.gi()
            s, outs = m.s0, []
            for t in range(m.T):
                s = m.cell.step(torch, m.params, s, gi[t])
                outs.append(s)
            S = torch.stack(outs)
            dparams, dx, ds0 = m.autograd(S)
        return GradOutput(S.detach(), *m.none, dparams, dx, ds0, *m.none)

    return run


def _grad_unrolled(m: _GradModel, solver: Solver) -> Callable[[], GradOutput]:
    """Autograd through the iterations the solver runs, written functionally with the shared
    cell maths (Newton's linear recurrences by the functional associative scan, ELK's by
    :func:`_kalman_smoother_diff`); it stops as the forward does (the decision itself is
    not differentiated)."""
    cap = iteration_cap(solver, m.T)
    tol = solver.tol

    def run() -> GradOutput:
        res = torch.zeros(max(cap, 1), dtype=m.g.dtype, device=m.g.device)
        with torch.enable_grad():
            update = m.update(solver, m.gi())
            S = torch.zeros_like(m.g)
            k = 0
            for k in range(1, cap + 1):  # k: the iterations that ran
                new = update(S)
                r = (new - S).detach().abs().amax()
                res[k - 1] = r
                S = new
                r = float(r)
                if not np.isfinite(r) or (tol is not None and r <= tol):
                    break
            dparams, dx, ds0 = m.autograd(S)
        return GradOutput(S.detach(), res, k, dparams, dx, ds0, *m.none)

    return run


def _grad_native(problem: Problem, m: _GradModel, device: torch.device) -> Callable[[], GradOutput]:
    """Autograd through ``torch.nn.<cell.torch_module>`` (the loss on ``h`` only)."""
    s = problem.spec
    module = _nn_module(problem, device)
    weights = [getattr(module, f"{name}_l0") for name in PARAM_NAMES]
    kern_cls = _kernels_for(s.cell)
    H = s.hidden_size

    def run() -> GradOutput:
        with torch.enable_grad():
            h, _ = module(m.x, kern_cls.native_hx(m.s0, H))
            grads = torch.autograd.grad(h, [m.x, m.s0, *weights], m.g[..., :H])
        dx, ds0, *dp = grads
        return GradOutput(h.detach(), *m.none, dict(zip(PARAM_NAMES, dp, strict=True)), dx, ds0, *m.none)

    return run
