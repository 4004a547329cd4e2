"""The ``fpbench`` command: ``info``, ``solve``, ``grad``, ``train`` (and, with the report
extra,
``report``/``sweep``)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

from . import __version__
from .backend import THREAD_VARS, BackendUnavailableError, UnsupportedError
from .cli_args import add_problem_args, solver_from_args, spec_from_args
from .grad import default_cotangent, timed_grad
from .grad import grad as exact_grad_of
from .lyapunov import lyapunov
from .memory import InsufficientMemoryError, check_memory
from .reference import exact_states
from .registry import backend_status, get_backend, resolve, timed_solve
from .report.cli import add_commands
from .solvers import make_solver
from .spec import make_problem
from .testing import errors, grad_errors
from .train_cli import add_train_command


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
    spec = spec_from_args(args)
    solver = solver_from_args(args)
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


def cmd_grad(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    solver = solver_from_args(args)
    problem = make_problem(spec)
    g, prepare_s, run_s = timed_grad(problem, solver, args.backend, args.device, repeats=args.repeats)
    # the exact gradient of the same numbers: the same (spec-dtype) cotangent, in float64
    cotangent = default_cotangent(spec).astype("float64")
    exact = exact_grad_of(problem.astype("float64"), make_solver("sequential"), cotangent=cotangent)
    print(f"spec:       {spec}")
    print(f"solver:     {solver} on {g.backend}:{g.device}")
    print("loss:       sum(cotangent * states), the default cotangent (standard normal, seeded)")
    for name, p in (("forward", g.forward), ("backward", g.backward)):
        print(
            f"{name + ':':11s} {p.method}  iterations={p.iterations}  "
            f"converged={p.converged}  diverged={p.diverged}"
        )
        if p.residuals:
            print(f"  residuals: {' '.join(f'{r:.2e}' for r in p.residuals)}")
    err = errors(g.states, exact.states)
    print(f"states vs exact (float64): max_abs={err['max_abs']:.3e}  rel_rms={err['rel_rms']:.3e}")
    print("gradient relative L2 error vs the exact float64 gradient (BPTT):")
    for name, e in grad_errors(g.arrays(), exact.arrays()).items():
        print(f"  d{name:10s} {e:.3e}")
    print(
        f"time:       prepare {prepare_s * 1e3:.1f} ms, forward+backward median "
        f"{statistics.median(run_s) * 1e3:.3f} ms over {len(run_s)} run(s)"
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
    add_problem_args(p, seq_len=4096)
    p.add_argument("--repeats", type=int, default=1, help="timed runs of the prepared solve")
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("grad", help="run one forward + backward pass and compare the gradients with BPTT")
    add_problem_args(p, seq_len=1024, backward=True)
    p.add_argument("--repeats", type=int, default=1, help="timed runs of the prepared forward + backward")
    p.set_defaults(func=cmd_grad)

    add_train_command(sub)  # train: fpbench.train_cli
    add_commands(sub)  # report, sweep: their heavy imports happen when they run
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, BackendUnavailableError, UnsupportedError, InsufficientMemoryError, ImportError) as e:
        print(f"fpbench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
