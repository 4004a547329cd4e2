"""The gradient programs (:mod:`fpbench.grad`): BPTT, Native autograd, autograd through the
unrolled iterations, and the implicit backward (:class:`_ImplicitGrad`), each a zero-argument
callable on device-resident data returning a :class:`~fpbench.backend.GradOutput`.

Gradients (``prepare_grad``, :mod:`fpbench.grad`), each a prepared, synchronised run on
device-resident data (leaves, module and buffers built and warmed in ``prepare_grad``):

- Sequential (``"bptt"``): autograd through a sequential loop of the shared ``cell.step``.
- Native (``"autograd"``): autograd through ``torch.nn.RNN/GRU/LSTM`` (the loss on ``h``).
- ``backward="unrolled"`` (``"unrolled"``): autograd through the iterations, the shared
  :func:`backends.shared.iteration.update` over torch's functional primitives
  (:data:`.ops.OPS`: the odd/even associative scan, ``solve_ex``); it stops where the
  forward stops (:func:`~backends.shared.iteration.stopped`, not differentiated).
- ``backward="implicit"``: the forward by the fast :class:`.forward._Solve` (a diagonal
  cell's: :class:`.shared_solve.SharedSolve`), then the adjoint
  ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` at its states, parallel in time
  (:mod:`backends.shared.adjoint`): one reverse scan over the transposed full Jacobians
  (``"full"``: Newton, ELK; ``"implicit: reverse scan"``; the in-place :class:`_Scan`, the
  fast path), Jacobi on the adjoint
  (``"none"``) or diagonal-preconditioned adjoint iterations, each an elementwise reverse
  scan (``"diagonal"``), to ``tol`` and at most ``min(max_iters, T)`` times, stopping as the
  forward does; then the shared parameter products, batched over all (t, b).
- Chunked: implicit (``"implicit: chunked adjoint"``) is the forward above, then the adjoint
  by Chunked's iterations on the time-reversed adjoint recurrence (its windows a loop over
  window positions of batched VJPs on the folded batch: sequential in the window length,
  parallel over chunks), then the same parameter products; unrolled is autograd through
  the forward's iterations (the nn module called with the parameter leaves).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from backends.shared import Recurrent, adjoint, iteration
from fpbench.backend import GradOutput
from fpbench.cells import Cell
from fpbench.solvers import Solver, iteration_cap
from fpbench.spec import PARAM_NAMES, Problem

from .kernels import _kernels_for, _nn_module
from .ops import OPS
from .shared_solve import iterations, solve_job

_BACKWARD_METHODS = {
    "none": "implicit: jacobi on the adjoint",
    "full": "implicit: reverse scan",
    "diagonal": "implicit: diagonal-preconditioned adjoint iterations",
}


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

    def gi(self) -> torch.Tensor:
        """The input projection ``x W_ih^T + b_ih (T, B, gH)`` (:meth:`fpbench.Cell.input_projection`)."""
        return self.cell.input_projection(torch, self.params, self.x)

    def rec(self) -> Recurrent:
        """The recurrent weights in the shared layer's layouts (views of the leaves)."""
        return Recurrent.of(torch, self.params["weight_hh"], self.params["bias_hh"], self.cell.gates)

    def param_products(
        self, Sp: torch.Tensor, gi: torch.Tensor, gh: torch.Tensor, lam: torch.Tensor, rec: Recurrent
    ):
        """``(dparams, dx, ds0)`` from the adjoint ``lam`` (:func:`shared.adjoint.param_products`)."""
        w_ih = self.params["weight_ih"]
        return adjoint.param_products(torch, self.cell, Sp, self.x, gi, gh, lam, rec, w_ih)


class _ImplicitGrad:
    """The implicit backward: the forward with the fast solve (:class:`.forward._Solve`; a diagonal
    cell's :class:`.shared_solve.SharedSolve`), then the adjoint ``lam_t = g_t + J_{t+1}^T
    lam_{t+1}`` at its states, parallel in time (:mod:`backends.shared.adjoint`), then every
    parameter gradient as batched products over all (t, b). No Python loop over T."""

    def __init__(
        self, problem: Problem, solver: Solver, device: torch.device, cotangent: np.ndarray, every: int
    ):
        self.solver, self.every = solver, every
        with torch.inference_mode():
            self.job = solve_job(problem, solver, device, every)
            self.m = _GradModel(problem, device, cotangent)
            for v in self.m.leaves():
                v.requires_grad_(False)
        self.cap_b = min(self.job.cap, problem.spec.seq_len)

    def _reverse_scan(self, A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``lam_t = A_t lam_{t+1} + b_t`` backwards in time (``A_{T-1}`` ignored), for
        time-major ``A (T, B, S, S)`` and ``b (T, B, S)``: the forward :class:`_Scan` on
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
        gi, rec, g = m.gi(), m.rec(), m.g
        Sp = iteration.shifted(torch, S, m.s0)
        gh = adjoint.hidden_preactivations(torch, Sp, rec)
        if solver.transition == "full" and not rec.diagonal:
            # The fast path of shared.adjoint.full_adjoint: its reverse scan over the full
            # Jacobians by the in-place _Scan in the solve's buffers, measured faster than the
            # functional scan. The elementwise scans of "diagonal" are the shared ones,
            # measured no slower.
            lam = self._reverse_scan(adjoint.next_jacobians_t(OPS, m.cell, Sp, gi, gh, rec)[0], g)
            res_b, k_b = m.none
        elif solver.transition == "full":  # a diagonal cell: its per-unit blocks, shared
            lam, (res_b, k_b) = adjoint.full_adjoint(OPS, m.cell, Sp, gi, gh, rec, g), m.none
        else:
            update = adjoint.adjoint_update(OPS, m.cell, solver.transition, Sp, gi, gh, rec, g)
            lam, res_b, k_b = iterations(update, g, self.cap_b, solver.tol, self.every)
        return GradOutput(S, res, k, *m.param_products(Sp, gi, gh, lam, rec), res_b, k_b)


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
    """Autograd through the iterations the solver runs (:func:`shared.iteration.update` over
    torch's functional primitives); it stops as the forward does
    (:func:`shared.iteration.stopped`, the decision itself not differentiated)."""
    cap = iteration_cap(solver, m.T)
    tol = solver.tol

    def run() -> GradOutput:
        res = torch.zeros(max(cap, 1), dtype=m.g.dtype, device=m.g.device)
        with torch.enable_grad():
            damped, damping = bool(solver.damping), solver.damping
            update = iteration.update(OPS, m.cell, solver.transition, damped, m.gi(), m.s0, m.rec(), damping)
            S = torch.zeros_like(m.g)
            k = 0
            for k in range(1, cap + 1):  # k: the iterations that ran
                S, r = update(S)
                res[k - 1] = r = r.detach()
                if iteration.stopped(torch, r, tol):
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
