"""The numba backend's unrolled backward passes through Chunked and the linearising solvers.

:func:`unrolled_chunked` backpropagates through every run of Chunked's iterations that the
forward recorded; :class:`UnrolledLinearised` through the recorded iterations of Newton,
quasi-Newton, ELK and quasi-ELK, second derivatives by complex step. (Jacobi's, through its
sweeps, is in :mod:`.backward`.)
"""

from __future__ import annotations

import numba
import numpy as np

from fpbench.backend import GradOutput
from fpbench.solvers import Iterative

from . import chunked
from .forward import UnitSystems
from .grad_kernels import (
    bptt,
    coefficient_tangents,
    coefficients,
    diagonals,
    reverse_diagonal,
    reverse_transitions,
    vjp_rows,
)
from .kernels_cells import hidden_projection
from .kernels_damped import damped_diagonal, damped_full
from .kernels_scan import linear_scan, linearise
from .vjp import ParamSums, StepVJP, weight_hh_grad


class _Windows:
    """BPTT through the windows of Chunked's runs, of at most ``W`` steps, in buffers of
    their own (:func:`unrolled_chunked`)."""

    def __init__(self, w: StepVJP, W: int) -> None:
        a = w.a
        B, S, H, G = a.B, a.S, a.H, a.G
        gH, dt, P_ = a.gi.shape[1], a.gi.dtype, a.S // a.H
        self.w = w
        self.win = np.empty((W + 1, B, S), dtype=dt)
        self.work = tuple(x[0] for x in chunked.group_buffers(1, B, S, gH, dt))
        self.C, self.CI = np.empty((W * B, G, P_, H), dtype=dt), np.empty((W * B, G, P_, H), dtype=dt)
        self.Dd = np.empty((W * B, P_, P_, H), dtype=dt)
        self.gh, self.hbuf = np.empty((W * B, gH), dtype=dt), np.empty((W * B if S > H else 1, H), dtype=dt)
        self.gwin, self.lam, self.ds = (np.empty((W * B, S), dtype=dt) for _ in range(3))
        self.no_steps = np.empty((0, S), dtype=dt)  # (the window keeps its new states)
        self.dgh, self.dgi = np.empty((W * B, gH), dtype=dt), np.empty((W * B, gH), dtype=dt)
        self.scratch = (np.empty((B, gH), dtype=dt), np.empty((B, gH), dtype=dt), np.empty((B, S), dtype=dt))

    def bptt(self, Gc: np.ndarray, start, steps: tuple[int, int, int], sums: ParamSums, nblk: int):
        """BPTT through one run's window ``steps = (lo, hi, written)``: steps ``lo..hi - 1``
        from the state ``start`` (``(B, S)``, or 0.0) before step ``lo``, on the cotangents
        ``Gc (T, B, S)`` of the steps it wrote (``written..hi - 1``). Adds to ``sums``;
        returns the start state's cotangent ``(B, S)``."""
        w, a = self.w, self.w.a
        B, S, H = a.B, a.S, a.H
        lo, hi, written = steps
        n, m = hi - lo, (hi - lo) * B
        C, Dd, CI, dgh, ds, win = self.C, self.Dd, self.CI, self.dgh, self.ds, self.win
        win[0] = start
        chunked.sequential(a.forward_op(a.gi.reshape(a.T, B, -1)[lo:hi]), win[: n + 1], *self.work)
        prev = win[:n].reshape(m, S)
        hidden_projection(prev, a.whhT, self.gh[:m], self.hbuf[: m if S > H else 1])
        coefficients(a.cell, a.gi[lo * B : hi * B], self.gh[:m], a.bhh, prev, C, Dd, CI, self.no_steps, nblk)
        gw = self.gwin[:m].reshape(n, B, S)
        gw[: written - lo] = 0.0
        gw[written - lo :] = Gc[written:hi]
        bptt(C[:m], Dd[:m], CI[:m], w.whh, self.gwin[:m], self.lam[:m], *self.scratch, B)
        vjp_rows(C[:m], Dd[:m], CI[:m], self.lam[:m], dgh[:m], self.dgi[:m], ds[:m], nblk)
        states = (prev, win[1 : n + 1].reshape(m, S))
        sums.add(a, self.dgi[:m], dgh[:m], prev[:, :H], slice(lo * B, hi * B), states)
        mu = ds[:B].copy()  # the start state's cotangent
        mu[:, :H] += w.back(dgh[:B])
        return mu


def unrolled_chunked(w: StepVJP, solver: Iterative, record: list):
    """``backward(s)`` through the runs of Chunked's iterations that the forward recorded
    (``(old iterate, first chunk, begins, stops)`` each), last iteration first, as
    :func:`fpbench.reference_grad.unrolled_chunked`: each run's window is recomputed from its
    start state (the Sequential kernel), differentiated by BPTT (``grad_kernels.bptt`` on the
    cotangents of the steps it wrote), and its start state's cotangent goes to ``ds0`` (a
    window from ``s0``) or to the old iterate (a rerun); the cotangent of a step no run
    wrote passes through to the old iterate."""
    a = w.a
    T, B, S = a.T, a.B, a.S
    lay = solver.layout(T)
    starts = lay.starts
    windows = _Windows(w, lay.window)  # the longest run

    def backward(s: np.ndarray) -> GradOutput:
        nblk = numba.get_num_threads()
        Gc = w.g.reshape(T, B, S).copy()  # dL/d(the iterate after the iteration differentiated)
        sums, ds0 = ParamSums.zeros(a), np.zeros((B, S), dtype=a.gi.dtype)
        for n_it, (old, first, begins, stops) in reversed(list(enumerate(record))):
            G_old = Gc.copy()  # steps no run wrote pass their cotangent to the old iterate
            for p in range(first, lay.chunks):
                G_old[starts[p] : stops[p]] = 0.0
            for p in range(first, lay.chunks):
                lo, hi, written = int(begins[p]), int(stops[p]), starts[p]
                if n_it > 0:
                    start = old[written]  # the old state at step written - 1
                else:
                    start = a.s0 if lo == 0 else 0.0
                mu = windows.bptt(Gc, start, (lo, hi, written), sums, nblk)
                if n_it > 0:
                    G_old[written - 1] += mu
                elif lo == 0:
                    ds0 += mu
            Gc = G_old
        return w.result(sums, ds0, np.empty(0), "unrolled: bptt through every run's window")

    return backward


class UnrolledLinearised:
    """``backward(s)`` through the recorded iterations of Newton, quasi-Newton, ELK or
    quasi-ELK, last first, on the coefficient and VJP buffers of ``w``.

    Every iteration maps the iterate ``y`` (previous states ``y_{t-1}``, ``y_{-1} = s0``) to
    ``h = y + delta``, where ``delta`` solves ``M delta = D^T e``: ``e_t = F(y_{t-1}) - y_t``,
    ``(D x)_t = x_t - A_t x_{t-1}`` with ``A_t`` the transition at ``y_{t-1}`` (the Jacobian
    ``J_t`` or its diagonal; ``x_{-1} = 0``) and ``M = D^T D + damping I``. For the cotangent
    ``v`` of ``h``, with ``mu = M^{-1} v``, ``ebar = D mu`` (undamped: ``ebar = D^{-T} v``, the
    implicit backward's reverse scan) and ``rho = e - D delta`` (0 undamped), the cotangent
    of ``y`` is

        v_t - ebar_t + J_{t+1}^T ebar_{t+1} + grad_y sum_t (ebar_t^T A_t delta_{t-1} - rho_t^T A_t mu_{t-1}),

    and the parameters get ``F``'s VJP for ``ebar`` plus the parameter gradient of the sum.
    The sum needs the cells' second derivatives: the derivatives of the structured
    coefficients along ``delta`` (and ``mu``), by complex step (``grad_kernels``), then the
    coefficients' VJP, plus the explicit recurrent-weight term (:meth:`along`). For a diagonal
    ``A`` the sum is ``sum_t w_t . diag(J_t)`` with ``w_t = ebar_t delta_{t-1} - rho_t mu_{t-1}``;
    a dense cell's is differentiated one block of pre-activations at a time (a coefficient
    depends on its own component's pre-activations only, :meth:`diagonal`), a diagonal
    cell's, whose Jacobian is per-unit blocks, as ``sum_p (w 1_p)^T J 1_p`` over its state
    parts ``p`` (:meth:`along`, :meth:`unit_diagonal`). A diagonal cell's ``"full"``
    transitions are its per-unit blocks (or, one part, its diagonal: the diagonal solves
    serve). The first iterate is 0: its cotangent is dropped."""

    method = (
        "unrolled: backpropagation through the linearised iterations (second derivatives by complex step)"
    )

    def __init__(self, w: StepVJP, solver: Iterative, iterates: list[np.ndarray]) -> None:
        a = w.a
        T, B, S, N = a.T, a.B, a.S, a.N
        gH, dt = a.gi.shape[1], a.gi.dtype
        self.w, self.iterates = w, iterates
        self.full, self.damped = solver.transition == "full", solver.damping > 0
        shape = a.transition_shape(solver.transition)  # (S, S), (H, P, P) or (S,)
        self.scan = not self.damped and len(shape) > 1  # the adjoint by the reverse scan
        self.Ct, self.CIt, self.Ddt = np.empty_like(w.C), np.empty_like(w.CI), np.empty_like(w.Dd)
        self.dgh2, self.dgi2, self.ds2 = np.empty_like(w.dgh), np.empty_like(w.dgi), np.empty_like(w.ds)
        self.ugh, self.hbuf2 = np.empty_like(a.gh), np.empty_like(a.hbuf)
        self.Ju = np.empty((N if a.peepholes else 0, S), dtype=dt)  # J u, for the peepholes
        self.A = np.empty((N, *shape), dtype=dt)
        self.evec, self.mu, self.ebar, self.Dg = (np.empty((N, S), dtype=dt) for _ in range(4))
        self.no_direction = np.zeros((1, gH), dtype=dt)
        self.damping = dt.type(solver.damping)
        if self.scan:
            self.A_rev, self.b_rev = np.empty((T, B, *shape), dtype=dt), np.empty((T, B, S), dtype=dt)
            self.u_scan = np.zeros((T + 1, B, S), dtype=dt)
            self.scan_weight = a.scan_weight(solver.transition)
        if self.damped:
            self.zeros = np.zeros((N, S), dtype=dt)
            if len(shape) == 3:
                self.systems = UnitSystems(a, self.A, solver.damping)
            else:
                self.Lbuf = np.empty((T, B, S, S) if len(shape) == 2 else (T, B * S), dtype=dt)
        G, P = a.G, S // a.H
        self.blocks = [(0, gg) for gg in range(G)] + [(1, gg) for gg in range(G)] + [(2, q) for q in range(P)]

    def shift(self, x: np.ndarray) -> np.ndarray:
        """Row ``i`` gets ``x[i - B]``, the previous step's (0 for the first step)."""
        B, N = self.w.a.B, self.w.a.N
        out = np.zeros_like(x)
        out[B:] = x[: N - B]
        return out

    def apply_D(self, x: np.ndarray) -> np.ndarray:
        """``(D x)_t = x_t - A_t x_{t-1}`` (``A`` transposed, per-unit blocks transposed, or
        diagonal, as stored; full ``S x S`` is one block of ``S``)."""
        xp = self.shift(x)
        if self.A.ndim == 2:
            return x - self.A * xp
        N, k = x.shape[0], self.A.shape[-1]
        xu = xp.reshape(N, k, -1).transpose(0, 2, 1)  # (N, units, k): the blocks' parts
        Ax = np.matmul(xu[:, :, None, :], self.A.reshape(N, -1, k, k))[:, :, 0, :]
        return x - Ax.transpose(0, 2, 1).reshape(x.shape)

    def __call__(self, s: np.ndarray) -> GradOutput:
        w, a = self.w, self.w.a
        T, B, S, N = a.T, a.B, a.S, a.N
        nblk = numba.get_num_threads()
        v = np.array(w.g, copy=True)  # the cotangent of the current iteration's output
        sums, ds0 = ParamSums.zeros(a), np.zeros((B, S), dtype=a.gi.dtype)
        for y_buf, h_buf in zip(reversed(self.iterates), reversed([*self.iterates[1:], s]), strict=True):
            y_flat = y_buf.reshape((T + 1) * B, S)
            y_prev = y_flat[:N]
            delta = h_buf.reshape((T + 1) * B, S)[B:] - y_flat[B:]
            # a.gh (and a.hbuf, lstm's h_prev) hold y_prev's until the next iteration:
            # the direction products below go to their own buffers, ugh and hbuf2
            h_prev = w.coefficients(y_prev, nblk)
            if not self.scan:  # the transitions A as the forward had them, and e
                linearise(a.cell, a.G, a.gi, a.gh, a.whhT, a.bhh, y_flat, self.A, self.evec, B, True, nblk)
            ebar = self.adjoint(v, nblk)
            # F's VJP for ebar: the parameters, and J_{t+1}^T ebar_{t+1} for y_t
            w.vjp(ebar, nblk)
            w.ds[:, : a.H] += w.wdgh
            sums.add(a, w.dgi, w.dgh, h_prev, states=(y_prev, w.F))
            ds0 += w.ds[:B]
            dy = w.ds.copy()  # the cotangent of the previous states y_prev
            self.second_order(y_prev, delta, h_prev, nblk, sums, dy)
            v = v - ebar
            v[: N - B] += dy[B:]  # row i + B's previous state is y_i; dy[:B] is s0's
        return w.result(sums, ds0, np.empty(0, dtype=np.float64), self.method)

    def adjoint(self, v: np.ndarray, nblk: int) -> np.ndarray:
        """``ebar`` for the cotangent ``v``: ``D^{-T} v`` by the reverse scan (full or per-unit
        blocks) or the reverse diagonal recurrence, undamped; ``D M^{-1} v`` by the damped
        smoother (which leaves ``mu = M^{-1} v``)."""
        a, ebar = self.w.a, self.ebar
        T, B, S = a.T, a.B, a.S
        if self.scan:
            reverse_transitions(self.w.C, self.w.Dd, a.whhT, self.A_rev, v, self.b_rev, B, nblk)
            linear_scan(self.A_rev, self.b_rev, self.u_scan, self.scan_weight, nblk)
            ebar.reshape(T, B, S)[:] = self.u_scan[:0:-1]
        elif not self.damped:
            ebar[:] = v
            reverse_diagonal(self.A, ebar, B, nblk)
        else:
            rhs = np.array(v, copy=True)
            if self.A.ndim == 4:
                self.systems.solve(*(x.reshape(T, B, S) for x in (rhs, self.zeros, self.mu)), rhs=True)
            elif self.A.ndim == 3:
                shape = (T, B, S)
                damped_full(
                    self.A.reshape(T, B, S, S),
                    rhs.reshape(shape),
                    self.Lbuf,
                    self.zeros.reshape(shape),
                    self.mu.reshape(shape),
                    self.damping,
                    True,
                )
            else:
                shape = (T, B * S)
                damped_diagonal(
                    self.A.reshape(shape),
                    rhs.reshape(shape),
                    self.Lbuf,
                    self.zeros.reshape(shape),
                    self.mu.reshape(shape),
                    self.damping,
                    nblk,
                    True,
                )
            ebar[:] = self.apply_D(self.mu)
        return ebar

    def second_order(self, y_prev, delta, h_prev, nblk: int, sums: ParamSums, dy: np.ndarray) -> None:
        """The gradient of ``sum_t (ebar_t^T A_t delta_{t-1} - rho_t^T A_t mu_{t-1})`` (class
        docstring) into ``dy`` and ``sums``; ``w.dgh`` must hold ``vjp(ebar)``'s."""
        u1 = self.shift(delta)
        if self.full:
            self.along(y_prev, self.ebar, u1, h_prev, nblk, sums, dy)  # dgh is still vjp(ebar)'s
            if self.damped:
                minus_rho = self.apply_D(delta) - self.evec
                self.w.vjp(minus_rho, nblk)
                self.along(y_prev, minus_rho, self.shift(self.mu), h_prev, nblk, sums, dy)
            return
        wt = self.ebar * u1
        if self.damped:
            wt -= (self.evec - self.apply_D(delta)) * self.shift(self.mu)
        if self.w.a.diagonal:
            self.unit_diagonal(y_prev, wt, h_prev, nblk, sums, dy)
        else:
            self.diagonal(y_prev, wt, h_prev, nblk, sums, dy)

    def add_second_order(self, h_prev: np.ndarray, sums: ParamSums, dy: np.ndarray, states: tuple) -> None:
        """Route the pre-activation gradients ``dgh2, dgi2, ds2`` of the sum to ``dy`` (the
        previous states') and the parameter sums (``states``: the steps' previous and new
        states, for a cell with peepholes)."""
        self.ds2[:, : self.w.a.H] += self.w.back(self.dgh2)
        dy += self.ds2
        sums.add(self.w.a, self.dgi2, self.dgh2, h_prev, states=states)

    def along(self, y_prev, weight, u, h_prev, nblk: int, sums: ParamSums, dy: np.ndarray) -> None:
        """The gradient of ``sum_t weight_t^T J_t u_t`` (``u`` per row); ``w.dgh`` must hold
        ``vjp(weight)``'s. By the symmetry of second derivatives it is the derivative along
        ``u`` of ``F``'s VJP for ``weight``: the VJP with the coefficients' tangents, plus the
        explicit term where the VJP's recurrent-weight gradient ``dgh ⊗ (the state it
        multiplies)`` moves with ``u``: ``dgh u_h^T`` (a diagonal cell's ``dgh u_h`` per
        unit, and each peephole's ``dgh`` times its cell state's tangent: ``u_c``, or the new
        one's, ``(J u)_c``)."""
        a = self.w.a
        hidden_projection(u, a.whhT, self.ugh, self.hbuf2)
        direction = (self.no_direction, self.ugh, u)  # (gi, gh, s): u and its W_hh product
        tangents = (self.Ct, self.Ddt, self.CIt, self.Ju)
        coefficient_tangents(a.cell, a.gi, a.gh, a.bhh, y_prev, *direction, *tangents, nblk)
        sums.dW_hh += weight_hh_grad(a, self.w.dgh, u[:, : a.H], (u, self.Ju))
        vjp_rows(self.Ct, self.Ddt, self.CIt, weight, self.dgh2, self.dgi2, self.ds2, nblk)
        self.add_second_order(h_prev, sums, dy, (y_prev, self.w.F))

    def unit_diagonal(self, y_prev, wt, h_prev, nblk: int, sums: ParamSums, dy: np.ndarray) -> None:
        """A diagonal cell's ``A = diag(J)``: the gradient of ``sum_t wt_t . diag(J_t)``. ``J``
        is per-unit blocks, so it is ``sum_p (wt 1_p)^T J 1_p`` over the state parts ``p``
        (``1_p``: ones on part ``p``), :meth:`along` once per part."""
        H = self.w.a.H
        for p in range(self.w.a.P):
            part = slice(p * H, (p + 1) * H)
            weight, u = np.zeros_like(wt), np.zeros_like(wt)
            weight[:, part], u[:, part] = wt[:, part], 1.0
            self.w.vjp(weight, nblk)
            self.along(y_prev, weight, u, h_prev, nblk, sums, dy)

    def diagonal(self, y_prev, wt, h_prev, nblk: int, sums: ParamSums, dy: np.ndarray) -> None:
        """A dense cell's diagonal ``A``: the gradient of ``sum_t wt_t . diag(J_t)``."""
        a = self.w.a
        N, S, H, G, gH, dt = a.N, a.S, a.H, a.G, a.gi.shape[1], a.gi.dtype
        P = S // H
        no_step = self.Ju[:0]
        for kind, k in self.blocks:
            u = [np.zeros((1, gH), dtype=dt), np.zeros((1, gH), dtype=dt), np.zeros((1, S), dtype=dt)]
            u[kind][0, k * H : (k + 1) * H] = 1.0
            tangents = (self.Ct, self.Ddt, self.CIt, no_step)
            coefficient_tangents(a.cell, a.gi, a.gh, a.bhh, y_prev, *u, *tangents, nblk)
            diagonals(self.Ct, self.Ddt, a.whhT, self.Dg, nblk)
            block = (wt * self.Dg).reshape(N, P, H).sum(1)
            (self.dgi2, self.dgh2, self.ds2)[kind][:, k * H : (k + 1) * H] = block
        self.add_second_order(h_prev, sums, dy, (y_prev, self.w.F))
        wc = np.einsum("ij,igj->gj", wt[:, :H], self.w.C[:, :, 0, :])  # diag(J)_j has c[g, 0, j] W_g[j, j]
        diag_idx = np.arange(H)
        for gg in range(G):
            sums.dW_hh[gg * H + diag_idx, diag_idx] += wc[gg]
