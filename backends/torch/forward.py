"""The in-place fast path of :func:`backends.shared.iteration.update` (the forward solves):
:class:`_Solve`, the device-resident data and preallocated buffers of one (problem, solver,
device), its Jacobi and Newton/ELK iterations and the device-side application of the shared
stopping rule; :func:`_transition` and :func:`_jvp` build the linearised step in place.

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
b_t`` is solved by the parallel scan :class:`~.scan._Scan`. The B sequences are scanned as
one sequence of length ``N = B*T``: the first element of each sequence gets ``A = 0`` and
``b = f(s0, x_1)``, which resets the composition, so all pairing is on one flat contiguous
axis with no padding for odd lengths. (A NaN/Inf in one sequence can leak into the next
through ``0 * Inf``; the solve is reported as diverged either way.)

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
"""

from __future__ import annotations

import torch

from backends.shared.iteration import stopped
from fpbench.solvers import Solver, iteration_cap
from fpbench.spec import Problem

from .kalman import _kalman_smoother
from .kernels import _kernels_for
from .scan import _Scan


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
            done.logical_or_(stopped(torch, r, tol))  # a diverged run stops, with or without tol
            src, dst = dst, src
            if (k + 1) % every == 0 and done.item():
                break
        return src[1:], self.res, count


TRANSITIONS: tuple[str, ...] = ("none", "full", "diagonal")
"""The iterative solvers' transitions this backend implements (``fpbench.solvers``)."""
