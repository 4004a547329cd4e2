"""The forward solves of the cells the in-place fast path (:mod:`.forward`) does not
implement: the diagonal cells (:attr:`fpbench.Cell.recurrence`), whose vector ``weight_hh``
the fast path's kernels (dense ``W_hh`` blocks, ``addmm``) cannot read. They run the shared
layer instead: :class:`SharedSolve` is every iterative solver as
:func:`backends.shared.iteration.update` over torch's functional primitives (:data:`.ops.OPS`:
Newton's per-unit ``P x P`` blocks, never ``S x S``), under :func:`iterations`, the stopping
loop the implicit backward's adjoint iterations run too; Sequential is a loop of the shared
``cell.step``. :func:`solve_job` picks the job for a cell.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from backends.shared import Recurrent, iteration
from fpbench.solvers import Solver, iteration_cap
from fpbench.spec import PARAM_NAMES, Problem

from .forward import _Solve
from .ops import OPS


def iterations(
    update: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    like: torch.Tensor,
    cap: int,
    tol: float | None,
    every: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``u, r <- update(u)`` from ``u = 0`` (shaped as ``like``), stopping exactly as
    :meth:`.forward._Solve.iterate` does (:func:`shared.iteration.stopped`, at most ``cap``
    times; later iterations frozen on the device, the host reading the flag every ``every``).
    Returns ``(u, residuals (cap,), count)``."""
    u = torch.zeros_like(like)
    res = torch.empty(max(cap, 1), dtype=like.dtype, device=like.device)
    done = torch.zeros((), dtype=torch.bool, device=like.device)
    count = torch.zeros((), dtype=torch.int64, device=like.device)
    for k in range(cap):
        new, r = update(u)
        res[k] = r
        if k % every and tol is not None:
            new = torch.where(done, u, new)
        count.add_(done.logical_not())
        done.logical_or_(iteration.stopped(torch, r, tol))
        u = new
        if (k + 1) % every == 0 and done.item():
            break
    return u, res, count


class SharedSolve:
    """One (problem, solver, device) of a diagonal cell, with :class:`.forward._Solve`'s
    interface (``sequential``, ``iterate``, ``cap``), through the shared layer (module
    docstring)."""

    def __init__(self, problem: Problem, solver: Solver, device: torch.device, check_every: int) -> None:
        s = problem.spec
        self.cell, self.solver, self.check_every = s.model, solver, check_every
        self.T, self.B, self.S = s.seq_len, s.batch, s.state_size
        self.x = torch.tensor(problem.x, device=device)
        self.s0 = torch.tensor(problem.s0, device=device)
        self.params = {k: torch.tensor(problem.params[k], device=device) for k in PARAM_NAMES}
        self.rec = Recurrent.of(torch, self.params["weight_hh"], self.params["bias_hh"], s.gates)
        self.cap = iteration_cap(solver, self.T) if solver.iterative else 0

    def sequential(self) -> tuple[torch.Tensor, int]:
        gi = self.cell.input_projection(torch, self.params, self.x)
        out = self.x.new_empty(self.T, self.B, self.S)
        s = self.s0
        for t in range(self.T):
            s = out[t] = self.cell.step(torch, self.params, s, gi[t])
        return out, 0

    def iterate(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the budget; returns ``(states (T, B, S), residuals, iterations)``."""
        solver = self.solver
        gi = self.cell.input_projection(torch, self.params, self.x)
        damped = bool(solver.damping)
        update = iteration.update(
            OPS, self.cell, solver.transition, damped, gi, self.s0, self.rec, solver.damping
        )
        like = self.x.new_empty(self.T, self.B, self.S)
        return iterations(update, like, self.cap, solver.tol, self.check_every)


def solve_job(
    problem: Problem, solver: Solver, device: torch.device, check_every: int
) -> _Solve | SharedSolve:
    """The forward job of a Sequential or linearising/Jacobi solve: the in-place
    :class:`.forward._Solve` for a dense cell, :class:`SharedSolve` for a diagonal one."""
    job = SharedSolve if problem.spec.model.recurrence == "diagonal" else _Solve
    return job(problem, solver, device, check_every)
