"""The ``fpbench`` command: ``info``, ``solve``, ``grad``, ``train`` (and, with the report
extra,
``report``/``sweep``)."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
from collections.abc import Callable
from typing import Any, TextIO

from . import __version__
from .backend import THREAD_VARS, BackendUnavailableError, UnsupportedError
from .cli_args import add_problem_args, solver_from_args, spec_from_args
from .grad import default_cotangent, timed_grad
from .grad import grad as exact_grad_of
from .lyapunov import lyapunov, verdict
from .memory import InsufficientMemoryError, estimate_grad_memory, estimate_memory, refuse_over_limit
from .reference import exact_states
from .registry import backend_status, get_backend, resolve, timed_solve
from .report.cli import add_commands
from .solvers import Sequential, Solver, make_solver
from .spec import RNNSpec, make_problem
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
    check_command_memory(spec, solver, args, grad=False)  # before generating the problem
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
    print(f"lyapunov:   lambda_max={lam:+.3f} per step ({LYAPUNOV_VERDICTS[verdict(lam)]}{over})")
    print(
        f"time:       prepare {prepare_s * 1e3:.1f} ms, run median {statistics.median(run_s) * 1e3:.3f} ms "
        f"over {len(run_s)} run(s)"
    )
    return 0


def check_command_memory(spec: RNNSpec, solver: Solver, args: argparse.Namespace, grad: bool) -> None:
    """Refuse ``fpbench solve`` (``grad``: ``fpbench grad``) before its problem is generated
    when what it runs cannot fit: on a CPU device the solve (:func:`fpbench.estimate_memory`)
    or the gradient (:func:`fpbench.estimate_grad_memory`) on the backend, and on any device
    the exact float64 reference it compares with, on the host (the sequential solve; for
    ``grad``, BPTT plus the float64 copies of the problem and the cotangent,
    ``T B (I + S + H)`` items).

    Raises:
        BackendUnavailableError: an unknown or unavailable backend or device.
        InsufficientMemoryError: the estimate exceeds the available memory.
    """
    impl, dev = resolve(args.backend, args.device)
    exact, N = Sequential(), spec.seq_len * spec.batch
    if grad:
        need = estimate_grad_memory(spec, exact, "float64", "numpy")
        need += N * (spec.input_size + spec.state_size + spec.hidden_size) * 8
        what, estimate = f"the gradient of {solver}", "fpbench.estimate_grad_memory"
    else:
        need = estimate_memory(spec, exact, "float64")
        what, estimate = str(solver), "fpbench.estimate_memory"
    if dev == "cpu":
        dt = impl.compute_dtype
        need += (
            estimate_grad_memory(spec, solver, dt, impl.name) if grad else estimate_memory(spec, solver, dt)
        )
    estimate += " of the run and of the exact float64 reference"
    refuse_over_limit(need, f"{what} on {impl.name}:{dev}", estimate, spec, impl.compute_dtype)


def cmd_grad(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    solver = solver_from_args(args)
    check_command_memory(spec, solver, args, grad=True)  # before generating the problem
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


LYAPUNOV_VERDICTS = {
    "contractive": "contractive: predictable, parallel solvers converge fast",
    "chaotic": "chaotic: errors grow like exp(lambda t), float32 cannot track float64, Newton needs ~T iters",
    "neutral": "neutral: perturbations neither grow nor shrink on average",
    "undefined": "undefined: the exact trajectory is not finite",
}
"""What ``fpbench solve`` prints for each :func:`fpbench.lyapunov.verdict`."""

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


EXIT_CLOSED_PIPE = 128 + getattr(signal, "SIGPIPE", 13)
"""The exit status when the reader of the output went away (``fpbench info | head -1``):
the status a shell reports for a command ended by SIGPIPE."""

EXIT_OUTPUT_ERROR = 1
"""The exit status when the output could not be written (a full disk, an I/O error)."""


def _discard_output(*streams: object) -> None:
    """Point ``streams`` (standard output, error) at the null device, so that the
    interpreter's final flush of what is still buffered cannot fail again (and print a
    traceback) at exit."""
    for stream in streams:
        try:
            fd = stream.fileno()
        except (AttributeError, ValueError, OSError):  # not a real file (a test's capture)
            continue
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


class OutputError(OSError):
    """Standard output or error could not be written (a full disk; not a closed pipe).
    ``stream`` is the stream that failed."""

    stream: object = None


class _Named:
    """A text stream whose write errors, other than a closed pipe, say which stream failed
    (:class:`OutputError`); everything else is the stream's own."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream, self._name = stream, name

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            error = OutputError(e.errno, f"cannot write to {self._name}: {e.strerror or e}")
            error.stream = self._stream
            raise error from e

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    """Run the ``fpbench`` command line; returns the exit status.

    A closed pipe on the output ends the command quietly with :data:`EXIT_CLOSED_PIPE`; any
    other ``OSError`` (a full disk) is one line, ``fpbench: error: …`` with the errno and the
    file (or standard output) it could not write, and :data:`EXIT_OUTPUT_ERROR`.
    """
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Named(stdout, "standard output"), _Named(stderr, "standard error")
    try:
        args = build_parser().parse_args(argv)
        try:
            status = args.func(args)
        except (
            ValueError,
            BackendUnavailableError,
            UnsupportedError,
            InsufficientMemoryError,
            ImportError,
        ) as e:
            print(f"fpbench: error: {e}", file=sys.stderr)
            status = 2
        sys.stdout.flush()  # a write error surfaces here, not in the interpreter's exit
        return status
    except BrokenPipeError:
        _discard_output(stdout, stderr)
        return EXIT_CLOSED_PIPE
    except OSError as e:
        if isinstance(e, OutputError):
            _discard_output(e.stream)  # what is still buffered for it
        try:
            print(f"fpbench: error: {e}", file=stderr)
        except OSError:  # standard error cannot be written either: the status says it
            _discard_output(stderr)
        return EXIT_OUTPUT_ERROR
    finally:
        sys.stdout, sys.stderr = stdout, stderr


if __name__ == "__main__":
    sys.exit(main())
