"""The gradient programs (:mod:`fpbench.grad`): BPTT, Native autograd, autograd through the
unrolled iterations, and the implicit backward (:class:`_ImplicitGrad`), each a zero-argument
callable on device-resident data returning a :class:`~fpbench.backend.GradOutput`.

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
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fpbench.backend import GradOutput
from fpbench.cells import Cell
from fpbench.solvers import Solver, iteration_cap
from fpbench.spec import PARAM_NAMES, Problem

from .forward import _Solve
from .kalman import _kalman_smoother_diff
from .kernels import _kernels_for, _nn_module
from .scan import _linear_recurrence_diff

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
