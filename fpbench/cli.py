"""The ``fpbench`` command: ``info``, ``solve`` (and, with the report extra, ``report``/``sweep``)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

from . import __version__
from .backend import THREAD_VARS, BackendUnavailableError, UnsupportedError
from .lyapunov import lyapunov
from .memory import InsufficientMemoryError, check_memory
from .reference import exact_states
from .registry import backend_status, get_backend, resolve, timed_solve
from .report.cli import add_commands
from .solvers import SOLVERS, make_solver
from .spec import CELLS, DTYPES, RNNSpec, make_problem
from .testing import errors


def cmd_info(args: argparse.Namespace) -> int:
    print(f"fpbench {__version__}  python {platform.python_version()}  {platform.platform()}")
    print(f"cpu cores: {os.cpu_count()}")
    print("thread settings:")
    for var in THREAD_VARS:
        print(f"  {var}={os.environ.get(var, '(unset)')}")
    print("backends:")
    for name, status in backend_status().items():
        if isinstance(status, list):
            details = ", ".join(f"{k}={v}" for k, v in get_backend(name).info().items())
            print(f"  {name:6s} available  devices={','.join(status)}  {details}")
        else:
            print(f"  {name:6s} unavailable: {status}")
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    spec = RNNSpec(
        cell=args.cell,
        input_size=args.input_size,
        hidden_size=args.hidden,
        seq_len=args.seq_len,
        batch=args.batch,
        dtype=args.dtype,
        contraction=args.contraction,
        seed=args.seed,
    )
    extra = {} if args.damping is None else {"damping": args.damping}
    solver = make_solver(args.solver, args.max_iters, args.tol, **extra)
    impl, dev = resolve(args.backend, args.device)
    if dev == "cpu":  # before generating the problem (timed_solve checks again)
        check_memory(spec, solver, impl.compute_dtype, f"{impl.name}:{dev}")
    problem = make_problem(spec)
    result, prepare_s, run_s = timed_solve(problem, solver, args.backend, args.device, args.repeats)
    err = errors(result.states, exact_states(problem))
    steps = min(spec.seq_len, LYAPUNOV_STEPS)
    lam = lyapunov(problem, steps=steps)
    print(f"spec:       {spec}")
    print(f"solver:     {solver} on {result.backend}:{result.device}")
    print(f"iterations: {result.iterations}  converged={result.converged}  diverged={result.diverged}")
    if result.residuals:
        trace = " ".join(f"{r:.2e}" for r in result.residuals)
        print(f"residuals:  {trace}")
    print(f"error vs exact sequential (float64): max_abs={err['max_abs']:.3e}  rel_rms={err['rel_rms']:.3e}")
    over = "" if steps == spec.seq_len else f", first {steps} of {spec.seq_len} steps"
    verdict = (
        "contractive: predictable, parallel solvers converge fast"
        if lam < 0
        else "chaotic: errors grow like exp(lambda t), float32 cannot track float64, Newton needs ~T iters"
    )
    print(f"lyapunov:   lambda_max={lam:+.3f} per step ({verdict}{over})")
    print(
        f"time:       prepare {prepare_s * 1e3:.1f} ms, run median {statistics.median(run_s) * 1e3:.3f} ms "
        f"over {len(run_s)} run(s)"
    )
    return 0


LYAPUNOV_STEPS = 1024
"""``fpbench solve`` estimates the Lyapunov exponent over at most this many steps (cost)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, backends with their devices, thread settings")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("solve", help="run one solve and compare it with the exact states")
    p.add_argument("--cell", choices=sorted(CELLS), default="gru")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64, help="hidden size H")
    p.add_argument("--seq-len", type=int, default=4096, help="sequence length T")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--contraction", type=float, default=0.9, help="spectral norm of W_hh")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solver", choices=sorted(SOLVERS), default="jacobi")
    p.add_argument("--max-iters", type=int, default=32, help="iteration budget")
    p.add_argument("--tol", type=float, default=None, help="stop when max |update| <= tol")
    p.add_argument("--damping", type=float, default=None, help="ELK / quasi-ELK damping (default 0.1)")
    p.add_argument("--backend", default="numpy", help="backend or backend:device, e.g. torch:cuda")
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=1, help="timed runs of the prepared solve")
    p.set_defaults(func=cmd_solve)

    add_commands(sub)  # report, sweep: their heavy imports happen when they run
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, BackendUnavailableError, UnsupportedError, InsufficientMemoryError) as e:
        print(f"fpbench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
