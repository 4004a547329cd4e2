"""The torch backend's :class:`~fpbench.solvers.Chunked` (``transition == "window"``),
imported lazily by :mod:`.backend`.

Fold. Every iteration runs its windows all at once: :meth:`ChunkLayout.gather_index
<fpbench.solvers.ChunkLayout.gather_index>` gives the input step of every window position,
``steps (W, n)``, so ``x[steps]`` is the windows' inputs ``(W, n, B, I)``, viewed as one
sequence of batch ``n*B``; the outputs ``(W, n*B, S)``, viewed ``(W, n, B, S)``, are unfolded
by the ``(pos, chunk)`` of every step: ``new[t] = out[pos[t], chunk[t]]``. Iteration 1 runs
every chunk's warm window (from ``s0`` where it starts at step 0, else from zero); iteration
``i >= 2`` reruns only chunks ``p >= max(1, i - 1)`` over their ``length`` steps, from the
old iterate's state at ``starts[p] - 1`` (the others would start from a state unchanged
since their last run, so they would change nothing); with a ``tol`` the stopping rule is
applied afterwards as a mask (per chunk: the new values up to and including the first step
that moved by ``<= tol``, the old ones after). :func:`chunked_iterations` is that loop, for
any window runner; it reads the residual on the host once per iteration (at most ``chunks``
iterations, each a whole sequential run over a window) to stop after a residual ``<= tol``
or a non-finite one.

Forward (:class:`ChunkedSolve`). The windows run through the cell's own
``torch.nn.RNN/GRU/LSTM`` (oneDNN on CPU, cuDNN on CUDA) with the problem's parameters;
``torch.nn.LSTM`` returns only the last ``c``, so the c sequence is recovered from the ``h``
sequence as the Native solver does (``_LSTM.native_states``). The module is used at every
size: the backend's own sequential loop (one ``addmm`` plus in-place gate maths per window
position, on the folded batch) is no faster on CPU, even at a tiny hidden size. A cell
without a ``torch.nn`` module (the diagonal cells) runs its windows by a loop over their
positions of the shared ``cell.step`` on the folded batch (:func:`step_windows`), forward
and unrolled.

Gradients. ``backward="implicit"`` (:class:`ChunkedImplicitGrad`, ``"implicit: chunked
adjoint"``): the forward above, then the adjoint ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` at
its states by the same :func:`chunked_iterations` on the time-reversed recurrence (the
reversed sequence has the same layout, so its windows' overlap lies later in time and
reruns restart from the right neighbour), each window a loop over its positions of one
batched VJP on the folded batch (sequential in the window length, parallel over chunks);
its residuals are the backward residuals. Then the parameter products over all (t, b), as
the backend's other implicit backwards. ``backward="unrolled"`` (:func:`chunked_unrolled`):
autograd through the same iterations, the windows through the nn module called with the
parameter leaves (``torch.func.functional_call``) and, for lstm, the c sequence recovered
differentiably (a functional associative scan); the stopping decisions are not
differentiated.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from backends.shared import Recurrent, adjoint, iteration, linear
from fpbench.backend import GradOutput
from fpbench.cells import Cell
from fpbench.solvers import Chunked, ChunkLayout, iteration_cap
from fpbench.spec import PARAM_NAMES, Problem

from .grad import _GradModel
from .kernels import _Kernels, _kernels_for, _nn_module
from .ops import OPS

WindowRunner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(steps (W, n), start states (n*B, S)) -> outputs (W, n*B, S)``: the recurrence run over
``n`` windows at once, window position ``j`` of window ``k`` reading step ``steps[j, k]``."""


class Folds:
    """:meth:`ChunkLayout.gather_index` as device tensors, made on first use and kept."""

    def __init__(self, layout: ChunkLayout, device: torch.device) -> None:
        self.layout, self.device = layout, device
        self._cache: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.starts = torch.tensor(layout.starts, device=device)
        self.from_s0 = torch.tensor([a == 0 for a in layout.warm_starts], device=device)

    def __call__(self, first: int, warm: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(steps (W, n), pos (T'), chunk (T'))`` of chunks ``first..`` (``gather_index``)."""
        key = (first, warm)
        if key not in self._cache:
            idx = self.layout.gather_index(first, warm)
            self._cache[key] = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in idx)
        return self._cache[key]


def chunked_iterations(
    folds: Folds, run: WindowRunner, s0: torch.Tensor, tol: float | None, cap: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Chunked's iterations (module docstring) of the recurrence that ``run`` runs over
    windows, from the zero iterate; functional (no in-place writes), so autograd can
    differentiate through it.

    Args:
        folds: the layout's fold indices.
        run: the window runner.
        s0: ``(B, S)`` the state before step 0.
        tol: the solver's tol; cap: the most iterations (``iteration_cap``).
    Returns:
        ``(states (T, B, S), residuals (k,), k)``.
    """
    lay = folds.layout
    B, S = s0.shape
    U = s0.new_zeros(lay.seq_len, B, S)
    res = []
    for i in range(cap):
        warm = i == 0
        first = 0 if warm else max(1, i)  # iteration i + 1 >= 2 reruns chunks p >= max(1, i)
        steps, pos, chunk = folds(first, warm)
        W, n = steps.shape
        if warm:
            h0 = torch.where(folds.from_s0[:, None, None], s0, torch.zeros_like(s0))
        else:
            h0 = U[folds.starts[first:] - 1]
        out = run(steps, h0.reshape(n * B, S)).view(W, n, B, S)
        if not warm and tol is not None:  # keep up to and including the first step that moved <= tol
            old = U[steps]
            stop = ((out - old).abs().amax((2, 3)) <= tol).long()
            keep = stop.cumsum(0) - stop == 0
            out = torch.where(keep[..., None, None], out, old)
        new = out[pos, chunk]
        s = lay.starts[first]
        r = (new - U[s:]).detach().abs().amax()
        U = torch.cat([U[:s], new]) if s else new
        res.append(r)
        if not torch.isfinite(r) or (tol is not None and r <= tol):
            break
    return U, torch.stack(res), len(res)


def step_windows(cell: Cell, params: dict[str, torch.Tensor], gi: torch.Tensor, B: int) -> WindowRunner:
    """The :data:`WindowRunner` of a cell without a ``torch.nn`` module (the diagonal cells):
    a loop over the window positions of the shared ``cell.step`` on the folded batch, from
    the input projections ``gi (T, B, gH)`` (differentiable: the unrolled backward runs it
    on the parameter leaves)."""

    def run(steps: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        W, n = steps.shape
        g = gi[steps].reshape(W, n * B, -1)
        outs = []
        for j in range(W):
            u = cell.step(torch, params, u, g[j])
            outs.append(u)
        return torch.stack(outs)

    return run


class ChunkedSolve:
    """The forward: device-resident problem, the nn module (a cell without one:
    :func:`step_windows`), fold indices and kernels. Calling it returns ``(states (T, B, S),
    residuals (k,), k)``."""

    def __init__(self, problem: Problem, solver: Chunked, device: torch.device) -> None:
        s = problem.spec
        self.problem, self.device = problem, device
        self.tol, self.cap = solver.tol, iteration_cap(solver, s.seq_len)
        self.B, self.H, self.S, self.I = s.batch, s.hidden_size, s.state_size, s.input_size
        self.x = torch.tensor(problem.x, device=device)
        self.s0 = torch.tensor(problem.s0, device=device)
        self.folds = Folds(solver.layout(s.seq_len), device)
        self.kern_cls = _kernels_for(s.cell)
        self.cell, self.module = s.model, None
        if s.model.torch_module is None:
            self.params = {k: torch.tensor(problem.params[k], device=device) for k in PARAM_NAMES}
        else:
            self.module = _nn_module(problem, device).eval().requires_grad_(False)
        self._kerns: dict[int, _Kernels] = {}  # lstm's c recovery, by rows (one per window shape)

    def run_windows(self, steps: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """The windows through ``torch.nn.<module>`` (:data:`WindowRunner`)."""
        W, n = steps.shape
        x = self.x[steps].view(W, n * self.B, self.I)
        h, _ = self.module(x, self.kern_cls.native_hx(h0, self.H))
        rows = W * n * self.B
        if rows not in self._kerns:
            self._kerns[rows] = self.kern_cls(self.problem, self.device, rows, rows)
        return self._kerns[rows].native_states(h, x.view(rows, self.I), h0)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        run = self.run_windows
        if self.module is None:
            gi = self.cell.input_projection(torch, self.params, self.x)
            run = step_windows(self.cell, self.params, gi, self.B)
        return chunked_iterations(self.folds, run, self.s0, self.tol, self.cap)


class ChunkedImplicitGrad:
    """The implicit backward (module docstring). Calling it returns the gradient program's
    :class:`~fpbench.backend.GradOutput`."""

    def __init__(self, problem: Problem, solver: Chunked, device: torch.device, cotangent: np.ndarray):
        with torch.inference_mode():
            self.job = ChunkedSolve(problem, solver, device)
            self.m = _GradModel(problem, device, cotangent)
            for v in self.m.leaves():
                v.requires_grad_(False)

    def adjoint(self, S: torch.Tensor, gi: torch.Tensor, gh: torch.Tensor, rec: Recurrent) -> tuple:
        """``(lam (T, B, S), residuals, k)`` at the states ``S`` (``gi``, ``gh (T, B, gH)`` the
        preactivations of every step) by the chunked iterations on the reversed recurrence
        ``u_tau = g_t + J_{t+1}^T u_{tau-1}``, ``t = T - 1 - tau`` (``u_0 = g_{T-1}``)."""
        m, job = self.m, self.job
        B = job.B
        # reversed time: step t + 1's previous state S[t] and preactivations (tau = 0: masked)
        g_r, prev_r = m.g.flip(0), S.flip(0)
        gi_r, gh_r = gi.roll(-1, 0).flip(0), gh.roll(-1, 0).flip(0)

        def run(steps: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
            W, n = steps.shape
            g, prev, gi_w, gh_w = (a[steps].view(W, n * B, -1) for a in (g_r, prev_r, gi_r, gh_r))
            live = (steps > 0)[..., None, None].expand(W, n, B, 1).reshape(W, n * B, 1)
            out = torch.empty_like(g)
            for j in range(W):
                back = adjoint.vjp_steps(torch, m.cell, prev[j], gi_w[j], gh_w[j], lam, rec)[0]
                lam = torch.add(g[j], torch.where(live[j], back, 0.0), out=out[j])
            return out

        lam, res, k = chunked_iterations(job.folds, run, torch.zeros_like(job.s0), job.tol, job.cap)
        return lam.flip(0), res, k

    def __call__(self) -> GradOutput:
        m = self.m
        S, res, k = self.job()
        gi, rec = m.gi(), m.rec()
        Sp = iteration.shifted(torch, S, m.s0)
        gh = adjoint.hidden_preactivations(torch, Sp, rec)
        lam, res_b, k_b = self.adjoint(S, gi, gh, rec)
        return GradOutput(S, res, k, *m.param_products(Sp, gi, gh, lam, rec), res_b, k_b)


def _lstm_states_diff(m: _GradModel, h: torch.Tensor, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """The full lstm states ``[h, c] (W, N, 2H)`` from the ``h (W, N, H)`` that
    ``torch.nn.LSTM`` returns for inputs ``x (W, N, I)`` and start states ``h0 (N, 2H)``,
    differentiably: ``c_t = f_t c_{t-1} + i_t g_t`` with the gates from ``h_{t-1}``, a diagonal
    linear recurrence solved by the functional associative scan."""
    H, p, rec = m.H, m.params, m.rec()
    hp = iteration.shifted(torch, h, h0[:, :H])
    gi = torch.matmul(x, p["weight_ih"].t()) + p["bias_ih"]
    gh = rec.preactivation(torch, hp)
    f, _, d = m.cell.linearise(torch, torch.cat([hp, torch.zeros_like(hp)], -1), gi, gh)
    A, b = d[..., 1, 1, :], f[..., H:]  # c_t = A_t c_{t-1} + b_t
    b = OPS.with_first(b, b[0] + A[0] * h0[:, H:])
    return torch.cat([h, linear.linear_recurrence(OPS, False, A, b)], -1)


def chunked_unrolled(problem: Problem, solver: Chunked, m: _GradModel) -> Callable[[], GradOutput]:
    """The unrolled backward (module docstring): a gradient program (no backward iterations)."""
    device = m.x.device
    module = None if m.cell.torch_module is None else _nn_module(problem, device)
    kern_cls = _kernels_for(problem.spec.cell)
    folds = Folds(solver.layout(m.T), device)
    cap = iteration_cap(solver, m.T)
    lstm = problem.spec.model.has_cell_state

    def run() -> GradOutput:
        with torch.enable_grad(), warnings.catch_warnings():
            # (cuDNN: the leaves are not its flattened weight block; compacting them is fine)
            warnings.filterwarnings("ignore", message="RNN module weights are not part")
            weights = {f"{k}_l0": m.params[k] for k in PARAM_NAMES}

            def windows(steps: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
                W, n = steps.shape
                x = m.x[steps].reshape(W, n * m.B, -1)
                hx = kern_cls.native_hx(h0, m.H)
                h, _ = torch.func.functional_call(module, weights, (x, hx))
                return _lstm_states_diff(m, h, x, h0) if lstm else h

            run = windows if module is not None else step_windows(m.cell, m.params, m.gi(), m.B)
            S, res, k = chunked_iterations(folds, run, m.s0, solver.tol, cap)
            dparams, dx, ds0 = m.autograd(S)
        return GradOutput(S.detach(), res, k, dparams, dx, ds0, *m.none)

    return run
