"""The command-line options every ``fpbench`` command that builds a problem and a solver
shares (``solve``, ``grad``, ``train``), and the spec and solver they describe."""

from __future__ import annotations

import argparse

from .solvers import BACKWARDS, SOLVERS, Solver, make_solver
from .spec import CELLS, DTYPES, RNNSpec


def add_problem_args(
    p: argparse.ArgumentParser,
    *,
    seq_len: int,
    input_size: int | None = 32,
    input_help: str = "features per step I",
    hidden: int = 64,
    batch: int = 8,
    solver: str = "jacobi",
    max_iters: int | None = 32,
    backward: bool = False,
) -> None:
    """The spec, solver and backend options, with this command's defaults (``max_iters``
    None: the budget defaults to T; ``input_size`` None: the command sets it from its other
    options, as ``input_help`` says); ``backward`` adds ``--backward``."""
    p.add_argument("--cell", choices=sorted(CELLS), default="gru")
    p.add_argument("--input-size", type=int, default=input_size, help=input_help)
    p.add_argument("--hidden", type=int, default=hidden, help="hidden size H")
    p.add_argument("--seq-len", type=int, default=seq_len, help="sequence length T")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--contraction", type=float, default=0.9, help="rho: spectral norm of W_hh")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solver", choices=sorted(SOLVERS), default=solver)
    budget = "iteration budget" + (" (default: T)" if max_iters is None else "")
    p.add_argument("--max-iters", type=int, default=max_iters, help=budget)
    p.add_argument("--tol", type=float, default=None, help="stop when max |update| <= tol")
    p.add_argument("--damping", type=float, default=None, help="ELK / quasi-ELK damping (default 0.1)")
    p.add_argument("--chunks", type=int, default=None, help="chunked: number of chunks P (default 2)")
    p.add_argument(
        "--overlap", type=int, default=None, help="chunked: warm-up steps before each chunk (default 0)"
    )
    if backward:
        p.add_argument(
            "--backward",
            choices=list(BACKWARDS),
            default=None,
            help="iterative solvers: implicit (adjoint at the returned states, default) or unrolled",
        )
    p.add_argument("--backend", default="numpy", help="backend or backend:device, e.g. torch:cuda")
    p.add_argument("--device", default=None)


def spec_from_args(args: argparse.Namespace) -> RNNSpec:
    """The :class:`RNNSpec` the options describe."""
    return RNNSpec(
        cell=args.cell,
        input_size=args.input_size,
        hidden_size=args.hidden,
        seq_len=args.seq_len,
        batch=args.batch,
        dtype=args.dtype,
        contraction=args.contraction,
        seed=args.seed,
    )


def solver_from_args(args: argparse.Namespace) -> Solver:
    """The solver the options describe (a budget of None is T)."""
    extra = {k: v for k in ("damping", "chunks", "overlap") if (v := getattr(args, k, None)) is not None}
    if getattr(args, "backward", None) is not None and SOLVERS[args.solver].iterative:
        extra["backward"] = args.backward
    max_iters = args.seq_len if args.max_iters is None else args.max_iters
    return make_solver(args.solver, max_iters, args.tol, **extra)
