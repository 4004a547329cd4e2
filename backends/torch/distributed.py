"""The sharded solve in torch: :mod:`fpbench.sharding`'s updates over ``torch.distributed``.

One process per shard (rank), started by ``torch.multiprocessing.spawn``, joined in one
process group on the loopback address (``gloo`` on CPU, ``nccl`` on CUDA with one GPU a
rank). Rank p holds steps ``p T / N .. (p + 1) T / N - 1`` (and Chunked's input halo). Per
iteration the left neighbour's last state arrives point to point (``isend`` / ``irecv``),
the chunk summaries of the Newton family by ``all_gather``, the residual by ``all_reduce``
(max). Each rank computes with one thread (:data:`RANK_THREADS`).

Faults: the process group's ``timeout`` bounds every communication, so a rank that hangs
makes its neighbours raise; ``spawn``'s join sees a rank that raised or died and terminates
the others; :class:`fpbench.sharding.ShardFailure` names what happened.

To run the ranks yourself, across hosts (``torchrun --nnodes=... --nproc-per-node=...``),
call :func:`solve_rank` in every process with the same jobs: it joins the group through
``init_method="env://"`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, which
``torchrun`` sets; ``LOCAL_RANK`` picks the GPU) and returns this rank's part of each job.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from backends.shared.shard import (
    chunked_adjoint,
    chunked_update,
    linear_update,
    newton_adjoint,
    param_products,
)
from fpbench.backend import BackendUnavailableError, GradHost
from fpbench.cells import CELLS, input_projection
from fpbench.sharding import CHUNKED_ADJOINT, REVERSE, ShardedRun, ShardFailure, ShardPlan
from fpbench.solvers import Chunked, Solver
from fpbench.spec import Problem

RANK_THREADS = 1
"""Intra-op threads of a rank: one, as ``torchrun`` sets ``OMP_NUM_THREADS=1`` by default. A
rank is the unit of parallelism (a core, or a GPU); a rank's per-step operations are small,
and several threads a rank oversubscribe the cores the other ranks use."""

FAULTS: tuple[str, ...] = ("exit", "hang", "raise")
"""Faults :func:`prepare` can inject into one rank (tests): die, hang, raise."""


class _Comm:
    """:class:`fpbench.sharding.Comm` of one rank in a ``torch.distributed`` process group."""

    def __init__(self, rank: int, shards: int, dtype: Any, device: Any) -> None:
        import torch

        self.xp = torch
        self.rank, self.shards, self.dtype, self.device = rank, shards, dtype, device

    def index(self) -> int:
        return self.rank

    def from_left(self, last, s0):
        import torch.distributed as dist

        waits = []
        if self.rank < self.shards - 1:
            waits.append(dist.isend(last.contiguous(), self.rank + 1))
        got = s0
        if self.rank > 0:
            got = last.new_empty(last.shape)
            waits.append(dist.irecv(got, self.rank - 1))
        for w in waits:
            w.wait()
        return got

    def from_right(self, first, default):
        import torch.distributed as dist

        waits = []
        if self.rank > 0:
            waits.append(dist.isend(first.contiguous(), self.rank - 1))
        got = default
        if self.rank < self.shards - 1:
            got = first.new_empty(first.shape)
            waits.append(dist.irecv(got, self.rank + 1))
        for w in waits:
            w.wait()
        return got

    def sum(self, a):
        import torch.distributed as dist

        a = a.contiguous().clone()
        dist.all_reduce(a, op=dist.ReduceOp.SUM)
        return a

    def all_gather(self, a):
        import torch
        import torch.distributed as dist

        out = [a.new_empty(a.shape) for _ in range(self.shards)]
        dist.all_gather(out, a.contiguous())
        return torch.stack(out)

    def change(self, new, old, axes=None):
        d = (new - old).abs()  # amax / max propagate NaN
        return d.max() if axes is None else d.amax(dim=axes)

    def max(self, r):
        import torch
        import torch.distributed as dist

        both = torch.stack([torch.isnan(r).to(r.dtype), torch.nan_to_num(r, nan=-torch.inf)])
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        return torch.where(both[0] > 0, torch.nan, both[1])

    def scan(self, compose, elems):
        from .ops import associative_scan

        return tuple(associative_scan(compose, elems))

    def recur(self, step, u, xs):
        import torch

        out = []
        for x in xs:
            u = step(u, x)
            out.append(u)
        return torch.stack(out)

    def const(self, a: np.ndarray):
        import torch

        dtype = self.dtype if a.dtype.kind == "f" else None
        return torch.tensor(a, dtype=dtype, device=self.device)  # a copy: host arrays may be read-only


def _warm(comm: _Comm, plan: ShardPlan, solver: Chunked, p: int) -> tuple[Any, Any, Any]:
    """Shard ``p``'s Chunked index data (:meth:`ShardPlan.warm_index`) as tensors."""
    return tuple(comm.const(a) for a in plan.warm_index(solver, p))


def _iterate(updates: tuple[Callable, Callable], U, cap: int, tol: float | None) -> tuple[Any, Any]:
    """``updates[0]``, then ``updates[1]`` until ``cap`` iterations, a residual ``<= tol`` or a
    non-finite one (every rank sees the same all-reduced residual, so all stop together).
    Returns ``(U, residuals float64 tensor)``."""
    import torch

    residuals: list[float] = []
    for i in range(cap):
        U, r = updates[min(i, 1)](U)
        residuals.append(float(r))
        if not np.isfinite(residuals[-1]) or (tol is not None and residuals[-1] <= tol):
            break
    return U, torch.tensor(residuals, dtype=torch.float64)


def _solve(comm: _Comm, job: Job) -> dict[str, Any]:
    """This rank's part of a job: ``states (L, B, S)`` and ``residuals``, and with a
    cotangent the implicit gradient: ``dx (L, B, I)``, ``s0 (B, S)``, ``params.<name>`` and
    ``backward_residuals``."""
    import torch

    problem, solver, plan, cap, cotangent = job
    spec, p, N, h = problem.spec, comm.rank, plan.shards, plan.halo
    cell = CELLS[spec.cell]
    params = {k: comm.const(np.asarray(v, spec.dtype)) for k, v in problem.params.items()}
    s0 = comm.const(np.asarray(problem.s0, spec.dtype))
    x = comm.const(plan.local_inputs(np.asarray(problem.x, spec.dtype), p))
    gi = input_projection(params, x, torch)
    zeros = torch.zeros((plan.steps, *s0.shape), dtype=s0.dtype, device=s0.device)
    if isinstance(solver, Chunked):
        step = partial(cell.step, torch, params)
        updates = chunked_update(step, plan, gi, _warm(comm, plan, solver, p), s0, solver.tol, comm)
    else:
        first = np.zeros((plan.steps, 1, 1))
        first[0] = p == 0
        update = linear_update(cell, solver.transition, params, gi, s0, comm.const(first), comm)
        updates = (update, update)
    U, residuals = _iterate(updates, zeros, cap, solver.tol)
    out = {"states": U, "residuals": residuals}
    if cotangent is None:
        return out
    a, b = plan.bounds(p)
    g = comm.const(np.asarray(cotangent[a:b], spec.dtype))
    if isinstance(solver, Chunked):
        warm_r = _warm(comm, plan, solver, N - 1 - p)
        adjoint = chunked_adjoint(cell, plan, params, gi[h:], U, g, warm_r, solver.tol, comm)
        lam, res_b = _iterate(adjoint, zeros, cap, solver.tol)
        Sp = torch.cat([comm.from_left(U[-1], s0)[None], U[:-1]])
        dparams, dx, ds0 = param_products(cell, params, gi[h:], x[h:], Sp, lam.flip(0), comm)
    else:
        dparams, dx, ds0 = newton_adjoint(cell, params, gi, x, s0, U, g, comm)
        res_b = torch.zeros(0, dtype=torch.float64)
    grads = {"dx": dx, "s0": ds0, "backward_residuals": res_b}
    return out | grads | {f"params.{k}": v for k, v in dparams.items()}


def _inject(fault: str) -> None:
    if fault == "exit":
        os._exit(3)
    if fault == "hang":
        time.sleep(10**6)
    raise RuntimeError("injected fault")


Job = tuple[Problem, Solver, ShardPlan, int, "np.ndarray | None"]
"""One solve of a launch: ``(problem, solver, plan, iteration cap, cotangent)``; with a full
``cotangent (T, B, S)`` (not None) also its implicit gradient (Newton)."""


def solve_rank(
    jobs: list[Job],
    device: str,
    shards: int,
    timeout: float,
    rank: int | None = None,
    init_method: str = "env://",
    repeats: int = 1,
    fault: tuple[int, str] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Join the process group of ``shards`` ranks as ``rank`` (default ``$RANK``), solve this
    rank's steps of every job ``repeats`` times, and leave the group. Returns, per job, this
    rank's arrays (:func:`_solve`: ``states (L, B, S)``, ``residuals``, gradients) and
    ``seconds``, of each solve between barriers."""
    import torch
    import torch.distributed as dist

    from .backend import _ieee_fp32

    rank = int(os.environ["RANK"]) if rank is None else rank
    cuda = device == "cuda"
    local = int(os.environ.get("LOCAL_RANK", rank))  # torchrun: the rank on this host
    dev = torch.device(f"cuda:{local % max(1, torch.cuda.device_count())}" if cuda else "cpu")
    torch.set_num_threads(RANK_THREADS)
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=init_method,
        rank=rank,
        world_size=shards,
        timeout=timedelta(seconds=timeout),
    )
    try:
        if fault is not None and fault[0] == rank:
            _inject(fault[1])
        out = []
        with _ieee_fp32():
            for job in jobs:
                comm = _Comm(rank, shards, getattr(torch, job[0].spec.dtype), dev)
                seconds = []
                for _ in range(repeats):
                    dist.barrier()
                    t0 = time.perf_counter()
                    arrays = _solve(comm, job)
                    if cuda:
                        torch.cuda.synchronize(dev)
                    dist.barrier()
                    seconds.append(time.perf_counter() - t0)
                host = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
                out.append(host | {"seconds": np.asarray(seconds)})
        return out
    finally:
        dist.destroy_process_group()


def _spawned(rank: int, out: str, port: int, args: tuple, repeats: int, fault) -> None:
    """The entry point of a spawned rank: solve, then write its results under ``out``."""
    results = solve_rank(
        *args, rank=rank, init_method=f"tcp://127.0.0.1:{port}", repeats=repeats, fault=fault
    )
    for j, arrays in enumerate(results):
        np.savez(Path(out) / f"job{j}_rank{rank}.npz", **arrays)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    jobs: list[Job],
    device: str,
    shards: int,
    timeout: float,
    repeats: int = 1,
    fault: tuple[int, str] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Spawn ``shards`` ranks on this host once, run every job in them, and collect, per
    job, ``states (T, B, S)``, ``residuals``, ``seconds`` (of each of ``repeats`` solves)
    and, for a job with a cotangent, ``dx (T, B, I)``, ``s0 (B, S)`` and ``params.<name>``.
    Several jobs share one start-up of the ranks (tests, the scaling benchmark).

    Raises:
        ShardFailure: a rank died, raised, or timed out on a communication.
    """
    import torch.multiprocessing as mp

    if fault is not None and fault[1] not in FAULTS:
        raise ValueError(f"fault must be one of {list(FAULTS)}, got {fault[1]!r}")
    with tempfile.TemporaryDirectory(prefix="fpbench-shard-") as out:
        args = (jobs, device, shards, timeout)
        try:
            mp.spawn(_spawned, (out, _free_port(), args, repeats, fault), nprocs=shards, join=True)
        except mp.ProcessExitedException as e:
            raise ShardFailure(
                f"rank {e.error_index} of {shards} died (exit code {e.exit_code}); the run was stopped"
            ) from None
        except mp.ProcessRaisedException as e:
            last = str(e).strip().splitlines()[-1]
            raise ShardFailure(
                f"rank {e.error_index} of {shards} failed ({last}); a rank that waits on a "
                f"dead or hung neighbour fails after timeout={timeout:g} s"
            ) from None
        results = []
        for j in range(len(jobs)):
            ranks = [dict(np.load(Path(out) / f"job{j}_rank{p}.npz")) for p in range(shards)]
            joined = {k: np.concatenate([r[k] for r in ranks]) for k in ("states", "dx") if k in ranks[0]}
            results.append(ranks[0] | joined)  # the rest is the same on every rank
        return results


def prepare(
    problem: Problem,
    solver: Solver,
    device: str,
    plan: ShardPlan,
    cap: int,
    timeout: float,
    cotangent: np.ndarray | None = None,
) -> ShardedRun:
    """A sharded solve over ``plan.shards`` spawned ranks. Nothing stays resident between
    calls: ``timed(repeats)`` spawns the ranks, solves ``repeats`` times and returns the last
    solve's ``(states, residuals)`` with the seconds of each solve, measured inside the ranks
    between barriers (process start-up excluded).

    Raises:
        BackendUnavailableError: ``device="cuda"`` with fewer GPUs than shards.
    """
    if device == "cuda":
        import torch

        if torch.cuda.device_count() < plan.shards:
            raise BackendUnavailableError(
                f"shards={plan.shards} needs {plan.shards} CUDA devices (one a rank), "
                f"this machine has {torch.cuda.device_count()}"
            )

    jobs: list[Job] = [(problem, solver, plan, cap, cotangent)]

    def timed(repeats: int) -> tuple[Any, list[float]]:
        out = launch(jobs, device, plan.shards, timeout, repeats)[0]
        return out, list(out["seconds"])

    def to_host(out: dict[str, np.ndarray]) -> Any:
        if cotangent is None:
            return out["states"], out["residuals"]
        params = {k.removeprefix("params."): v for k, v in out.items() if k.startswith("params.")}
        method = CHUNKED_ADJOINT if isinstance(solver, Chunked) else REVERSE
        res_b = out["backward_residuals"]
        return GradHost(out["states"], out["residuals"], params, out["dx"], out["s0"], res_b, method)

    return ShardedRun(timed, to_host)
