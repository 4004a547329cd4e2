"""The PyTorch backend (``"torch"``): every solver for every cell, on ``cpu`` and ``cuda``.

Layout and buffers. ``prepare`` moves the problem to the device and preallocates every
buffer a solve needs, so a run allocates nothing large. The state iterate lives in two
``(T+1, B, H)`` ping-pong buffers whose row 0 is ``h0``: the previous states of all T
steps, ``(h0, H_1, .., H_{T-1})``, are then the contiguous view ``buf[:-1]``, and one
Jacobi iteration is a single ``torch.addmm`` of ``(T*B, H) x (H, gH)`` into a preallocated
output plus in-place elementwise work. The input projection is computed once per run,
outside the iteration loop, with the hidden biases that lie outside the GRU's
``r * (.)`` folded in, so the iteration's ``addmm`` adds it for free.

Newton (DEER). The Jacobian of both cells has the form ``J = sum_g c_g[:, None] * W_g
+ diag(s)`` (``W_g`` the H x H gate blocks of ``W_hh``, ``c_g`` and ``s`` elementwise
functions of the gates; elman: ``c = 1 - h'^2``, ``s = 0``), so ``J H_{t-1}`` and
``diag(J)`` are elementwise in ``W_g H_{t-1}``, and the full ``(T, B, H, H)`` Jacobians are
a few fused multiply-adds. The linear recurrence ``h_t = A_t h_{t-1} + b_t`` is solved by
the recursive odd/even (Blelloch-style) scan: pair neighbours, compose them
(``A_{2i+1} A_{2i}``), recurse on the half-length sequence, then fill the even positions
with one matrix-vector step. It does about ``2N`` compositions in ``2 log2 N`` batched
levels, where the Hillis-Steele doubling scan does ``N log2 N``; with full ``H x H``
Jacobians that is ``log2 N`` times fewer ``H^3`` matrix products (x12 at T=4096), which is
why it is used here (the diagonal scan reuses the same code with elementwise products).
The B sequences are scanned as one sequence of length ``N = B*T``: the first element of
each sequence gets ``A = 0`` and ``b = f(h0, x_1)``, which resets the composition, so
all pairing is on one flat contiguous axis with no padding for odd lengths. (A NaN/Inf in
one sequence can leak into the next through ``0 * Inf``; the solve is reported as
diverged either way.)

Stopping with ``tol`` without a host sync per iteration. The residual of every iteration
is written into a device tensor; a device-side ``done`` flag (``r <= tol`` or ``r``
non-finite) and the device-side iteration count are updated with tensor ops, and once
``done`` is set later iterations are frozen with ``torch.where``, so the states and the
iteration count are exactly those of the reference. The host reads ``done`` only every
``check_every`` iterations to leave the loop: 1 on CPU (a read is cheap there and no
iteration is wasted), 8 on CUDA (at most 7 frozen iterations run, with no per-iteration
sync), except for Newton, whose O(T B H^3) iteration dwarfs a host sync, so checking
every iteration is cheaper than up to 7 wasted ones. It is one code path; only the
interval differs. With ``tol=None`` the same flag stops the solve on a non-finite
residual only (diverged), so the budget runs in full otherwise, and after a NaN torch
stops like every backend (with the same iteration count and residuals; on CUDA the
states, NaN anyway, are not frozen, so a fixed budget pays no ``torch.where``). At most
``fpbench.solvers.iteration_cap`` iterations run (T for the solvers exact after T), and
the residual buffer has that length.

Precision. float32 means IEEE float32: inside every timed call (and the iteration floor)
``torch.set_float32_matmul_precision("highest")`` and ``torch.backends.cudnn.allow_tf32 =
False`` turn TF32 off for cuBLAS and cuDNN (the cuDNN RNN defaults to TF32), and the
caller's settings are restored on exit, so fpbench leaves no global state behind.

Threads. ``torch.set_num_threads(FPBENCH_THREADS or os.cpu_count())`` is applied once,
when the backend is first used, and reported by :meth:`TorchBackend.info`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from fpbench.backend import Backend, BackendUnavailableError, Prepared, UnsupportedError, requested_threads
from fpbench.solvers import Iterative, Jacobi, Native, Newton, QuasiNewton, Sequential, Solver, iteration_cap
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
Newton always checks every iteration."""

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


class _Cell:
    """The cell maths of one problem on one device, on ``rows`` stacked (time, batch) rows.

    Preactivations are ``G = C + h W_hh^T`` with ``C`` from :meth:`project`: elman
    ``C = gi + b_hh``; gru ``C = [gi_r + b_hr, gi_z + b_hz, b_hn]`` and the n-gate input
    ``gi_n`` kept apart (it sits outside ``r * (W_hn h + b_hn)``).
    """

    def __init__(self, problem: Problem, device: torch.device) -> None:
        s = problem.spec
        self.cell, self.H, self.g = s.cell, s.hidden_size, s.gates
        H = self.H

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.tensor(a, device=device)

        w_ih, w_hh = put(problem.weight_ih), put(problem.weight_hh)
        b_ih, b_hh = put(problem.bias_ih), put(problem.bias_hh)
        self.w_ihT, self.w_hhT = w_ih.t(), w_hh.t()  # addmm reads transposed operands for free
        self.b_hh = b_hh
        if self.cell == "elman":
            self.c_bias = b_ih + b_hh
        else:
            self.c_bias = b_ih[: 2 * H] + b_hh[: 2 * H]
            self.b_in = b_ih[2 * H :]
        self.blocks = w_hh.view(self.g, H, H)  # W_g: row i is output i
        self.blocks_diag = torch.diagonal(self.blocks, dim1=-2, dim2=-1)  # (g, H)

    def new_c(self, rows: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Buffers ``C (rows, gH)`` (gru: its constant ``b_hn`` block filled) and ``gi_n``."""
        C = torch.empty(rows, self.g * self.H, dtype=self.b_hh.dtype, device=self.b_hh.device)
        if self.cell == "elman":
            return C, None
        C[:, 2 * self.H :] = self.b_hh[2 * self.H :]
        return C, torch.empty_like(C[:, : self.H])

    def project(self, x: torch.Tensor, C: torch.Tensor, gin: torch.Tensor | None) -> None:
        """Write the input side of ``C`` (and ``gin``) for inputs ``x (rows, I)``."""
        if self.cell == "elman":
            torch.addmm(self.c_bias, x, self.w_ihT, out=C)
        else:
            H2 = 2 * self.H
            torch.addmm(self.c_bias, x, self.w_ihT[:, :H2], out=C[:, :H2])
            torch.addmm(self.b_in, x, self.w_ihT[:, H2:], out=gin)

    def activate(
        self, G: torch.Tensor, h: torch.Tensor, gin: torch.Tensor | None, out: torch.Tensor, n: torch.Tensor
    ) -> None:
        """``out = f(h)`` from preactivations ``G (rows, gH)``, in place (``G`` becomes the
        gates ``[r, z, W_hn h + b_hn]``; gru leaves ``tanh`` of the n gate in ``n (rows, H)``).
        For elman ``G`` may be ``out`` itself."""
        if self.cell == "elman":
            torch.tanh(G, out=out)
            return
        H = self.H
        G[:, : 2 * H].sigmoid_()
        r, z, hn = G[:, :H], G[:, H : 2 * H], G[:, 2 * H :]
        torch.addcmul(gin, r, hn, out=n).tanh_()
        torch.lerp(n, h, z, out=out)  # (1 - z) n + z h

    def linearisation(
        self, G: torch.Tensor, n: torch.Tensor, h: torch.Tensor, f: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(c (rows, g, H), s (rows, H) or None)`` with ``J = sum_g c_g W_g + diag(s)``
        at ``h``, from the gates ``G`` and ``n`` left by :meth:`activate` and ``f = f(h)``
        (the formulas of ``fpbench.cells.jacobian``, regrouped by gate block)."""
        if self.cell == "elman":
            return (1.0 - f * f).unsqueeze(1), None
        H = self.H
        r, z, hn = G[:, :H], G[:, H : 2 * H], G[:, 2 * H :]
        a = (1.0 - z) * (1.0 - n * n)
        c = torch.stack([a * hn * r * (1.0 - r), (h - n) * z * (1.0 - z), a * r], dim=1)
        return c, z


def _combine(c: torch.Tensor, mats: torch.Tensor, s: torch.Tensor | None, out: torch.Tensor) -> None:
    """``out = sum_g c_g * mats_g + diag(s)``; full (``out (..., H, H)``, rows of ``mats_g``
    scaled by ``c_g``) or diagonal (``out (..., H)``).

    Args:
        c: ``(..., g, H)`` coefficients.
        mats: ``(g, H, H)`` blocks for a full ``out``, ``(g, H)`` diagonals otherwise.
        s: ``(..., H)`` added on the diagonal, or None.
    """
    full = out.dim() == c.dim()
    coef = [c[..., g, :, None] if full else c[..., g, :] for g in range(c.shape[-2])]
    torch.mul(coef[0], mats[0], out=out)
    for g in range(1, len(coef)):
        out.addcmul_(coef[g], mats[g])
    if s is not None:
        (out.diagonal(dim1=-2, dim2=-1) if full else out).add_(s)


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


class _Solve:
    """Device-resident data and preallocated buffers of one (problem, solver, device)."""

    def __init__(self, problem: Problem, solver: Solver, device: torch.device, check_every: int) -> None:
        s = problem.spec
        self.solver, self.device = solver, device
        self.T, self.B, self.H = s.seq_len, s.batch, s.hidden_size
        rows = self.T * self.B
        self.cell = _Cell(problem, device)
        self.x = torch.tensor(problem.x, device=device).view(rows, s.input_size)
        self.h0 = torch.tensor(problem.h0, device=device)
        self.C, self.gin = self.cell.new_c(rows)
        dtype = self.h0.dtype

        def empty(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=dtype, device=device)

        # Preactivations G (rows, gH) and the GRU's n gate (rows, H) of one step (B rows) or
        # of all steps (T*B rows); elman writes G straight into the output rows instead.
        step_rows = self.B if isinstance(solver, Sequential) else rows
        self.G = empty(step_rows, self.cell.g * self.H) if s.cell == "gru" else None
        self.n = empty(step_rows, self.H)
        if isinstance(solver, Sequential):
            self.out = empty(self.T, self.B, self.H)
            return
        assert isinstance(solver, Iterative)
        self.bufs = (empty(self.T + 1, self.B, self.H), empty(self.T + 1, self.B, self.H))
        for buf in self.bufs:
            buf[0] = self.h0
        self.diff = empty(self.T, self.B, self.H)
        self.cap = iteration_cap(solver, self.T)  # at most T iterations: exact by then
        self.res = empty(self.cap)
        self.check_every = check_every
        if isinstance(solver, (Newton, QuasiNewton)):
            full = isinstance(solver, Newton)
            self.U = empty(rows, self.cell.g * self.H)
            self.f = empty(rows, self.H)
            # Scan inputs, batch-major: the B sequences scanned as one of length T*B.
            self.A = empty(rows, self.H, self.H) if full else empty(rows, self.H)
            self.b = empty(rows, self.H)
            self.scan = _Scan(rows, self.H, full, dtype, device)

    # -- one iteration: dst[1:] from src[:-1] -------------------------------------------

    def jacobi(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        h, out = src[:-1].view(-1, self.H), dst[1:].view(-1, self.H)
        G = out if self.G is None else self.G
        torch.addmm(self.C, h, self.cell.w_hhT, out=G)
        self.cell.activate(G, h, self.gin, out, self.n)

    def newton(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        T, B, H = self.T, self.B, self.H
        h = src[:-1].view(-1, H)
        G = self.f if self.G is None else self.G
        torch.mm(h, self.cell.w_hhT, out=self.U)  # W_hh h without bias: J h needs it
        torch.add(self.U, self.C, out=G)
        self.cell.activate(G, h, self.gin, self.f, self.n)
        c, s = self.cell.linearisation(G, self.n, h, self.f)
        c_tm, s_tm = c.view(T, B, *c.shape[1:]), None if s is None else s.view(T, B, H)
        # The scan runs batch-major (sequence b is rows b*T .. b*T+T-1); fill it time-major.
        A_tm = self.A.view(B, T, *self.A.shape[1:]).transpose(0, 1)
        b_tm = self.b.view(B, T, H).transpose(0, 1)
        if isinstance(self.solver, Newton):
            _combine(c_tm, self.cell.blocks, s_tm, out=A_tm)
            Jh = (c * self.U.view(-1, self.cell.g, H)).sum(1)
            if s is not None:
                Jh.addcmul_(s, h)
            torch.sub(self.f.view(T, B, H), Jh.view(T, B, H), out=b_tm)
        else:
            _combine(c_tm, self.cell.blocks_diag, s_tm, out=A_tm)
            torch.addcmul(self.f.view(T, B, H), A_tm, h.view(T, B, H), value=-1.0, out=b_tm)
        b_tm[0] = self.f.view(T, B, H)[0]  # the first state is exact: f(h0, x_1) ...
        A_tm[0] = 0.0  # ... and A = 0 there restarts the composition for each sequence
        self.scan(self.A, self.b)
        dst[1:] = b_tm

    # -- whole solves -----------------------------------------------------------------

    def sequential(self) -> tuple[torch.Tensor, int]:
        T, B, H = self.T, self.B, self.H
        self.cell.project(self.x, self.C, self.gin)
        C = self.C.view(T, B, -1)
        gin = None if self.gin is None else self.gin.view(T, B, H)
        h = self.h0
        for t in range(T):
            G = self.out[t] if self.G is None else self.G
            torch.addmm(C[t], h, self.cell.w_hhT, out=G)
            self.cell.activate(G, h, None if gin is None else gin[t], self.out[t], self.n)
            h = self.out[t]
        return self.out, 0

    def iterate(self) -> tuple[torch.Tensor, torch.Tensor, int | torch.Tensor]:
        """Run the budget; returns ``(states (T, B, H), residuals, iterations)``."""
        self.cell.project(self.x, self.C, self.gin)
        update = self.jacobi if isinstance(self.solver, Jacobi) else self.newton
        src, dst = self.bufs
        src[1:] = 0.0  # every solve starts from H = 0
        tol, every = self.solver.tol, self.check_every
        done = torch.zeros((), dtype=torch.bool, device=self.device)
        count = torch.zeros((), dtype=torch.int64, device=self.device)
        for k in range(self.cap):
            update(src, dst)
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


class TorchBackend(Backend):
    """PyTorch implementation of every solver for every cell (``cpu``, ``cuda``).

    Args:
        check_every: iterations between host reads of the convergence flag when a
            ``tol`` is set; default :data:`CHECK_EVERY` for the device type (1 for
            Newton). The states and iteration counts do not depend on it.
    """

    name = "torch"

    def __init__(self, check_every: int | None = None) -> None:
        if check_every is not None and (isinstance(check_every, bool) or check_every < 1):
            raise ValueError(f"check_every must be a positive integer or None, got {check_every!r}")
        self.check_every = check_every

    def devices(self) -> list[str]:
        _require_torch()
        _apply_threads()
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    def _device(self, device: str) -> torch.device:
        available = self.devices()
        if device not in available:
            raise BackendUnavailableError(
                f"device {device!r} is not available for backend 'torch'; available: {available}"
            )
        return torch.device(device)

    def prepare(self, problem: Problem, solver: Solver, device: str) -> Prepared:
        dev = self._device(device)
        if isinstance(solver, Native):
            run = self._native(problem, dev)
        elif isinstance(solver, (Sequential, Jacobi, Newton, QuasiNewton)):
            every = self.check_every or (1 if isinstance(solver, Newton) else CHECK_EVERY.get(dev.type, 8))
            with torch.inference_mode():
                job = _Solve(problem, solver, dev, every)
            run = self._timed(job.sequential if isinstance(solver, Sequential) else job.iterate, dev)
        else:
            raise UnsupportedError(f"backend 'torch' does not implement solver {solver.name!r}")
        run()  # warm-up: kernel loading, cuBLAS/cuDNN handles and plans, allocator pools
        return Prepared(run, self._to_host)

    @staticmethod
    def _timed(solve: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
        """``solve`` under inference mode and IEEE float32, returning once the device is done."""

        def run() -> Any:
            with torch.inference_mode(), _ieee_fp32():
                out = solve()
                _synchronize(device)
            return out

        return run

    def _native(self, problem: Problem, device: torch.device) -> Callable[[], Any]:
        s = problem.spec
        cls = torch.nn.GRU if s.cell == "gru" else torch.nn.RNN
        kwargs = {} if s.cell == "gru" else {"nonlinearity": "tanh"}
        module = cls(s.input_size, s.hidden_size, **kwargs).to(device=device, dtype=getattr(torch, s.dtype))
        with torch.no_grad():
            for name, value in problem.params.items():
                getattr(module, f"{name}_l0").copy_(torch.tensor(value))
        module.flatten_parameters()  # one contiguous weight block for cuDNN
        module.eval().requires_grad_(False)
        x = torch.tensor(problem.x, device=device)
        h0 = torch.tensor(problem.h0, device=device)[None]
        return self._timed(lambda: (module(x, h0)[0], 0), device)

    @staticmethod
    def _to_host(out: tuple) -> tuple[np.ndarray, np.ndarray]:
        if len(out) == 2:  # Sequential / Native: no iterations
            return _host(out[0]), np.empty(0)
        states, res, n = out
        return _host(states), _host(res[: int(n)])

    def iteration_floor(self, problem: Problem, device: str) -> Callable[[], Any]:
        """One ``addmm`` of ``(T*B, H) x (H, gH)`` with bias plus the cell's elementwise
        maths, written plainly (allocating, as ordinary torch code is)."""
        dev = self._device(device)
        s = problem.spec
        H = s.hidden_size
        with torch.inference_mode():
            w_ih, w_hh, b_ih, b_hh = (torch.tensor(problem.params[k], device=dev) for k in PARAM_NAMES)
            x = torch.tensor(problem.x, device=dev).view(-1, s.input_size)
            gi = torch.addmm(b_ih, x, w_ih.t())
            h = torch.tensor(problem.h0, device=dev).repeat(s.seq_len, 1)  # (T*B, H) states

        def step() -> torch.Tensor:
            gh = torch.addmm(b_hh, h, w_hh.t())
            if s.cell == "elman":
                return torch.tanh(gi + gh)
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
            n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
            return (1.0 - z) * n + z * h

        floor = self._timed(step, dev)
        floor()
        return floor

    def info(self) -> dict[str, str]:
        _require_torch()
        info = {
            "torch": torch.__version__,
            "torch_threads": str(_apply_threads()),
            "torch_interop_threads": str(torch.get_num_interop_threads()),
        }
        if torch.cuda.is_available():
            info["cuda"] = str(torch.version.cuda)
            info["cudnn"] = str(torch.backends.cudnn.version())
            info["cuda_device"] = torch.cuda.get_device_name()
        return info
