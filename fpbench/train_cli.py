"""``fpbench train``: train the RNN + readout with one method and print the loss curve and
the wall time per step (:func:`fpbench.train`)."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .cli_args import add_problem_args, solver_from_args, spec_from_args
from .tasks import TASKS, TEXT_VOCAB, MissingDependencyError
from .train import DEFAULT_LR, DEFAULT_STEPS, TrainResult, train

INPUT_SIZE = 8
"""``--input-size`` when not given (``text``: :data:`~fpbench.tasks.TEXT_VOCAB`, its one-hot input)."""

CURVE_ROWS = 20
"""The printed loss curve shows at most this many steps (evenly spaced, first and last)."""

PROGRESS_AFTER_S = 2.0
"""A run shows a progress bar (on stderr) once it has taken this long."""


class Progress:
    """A one-line progress bar on ``stream``, shown once a run has taken
    :data:`PROGRESS_AFTER_S` seconds (short runs print nothing) and redrawn at most about
    ten times a second; the line is erased when the run ends."""

    def __init__(self, total: int, stream=None, after_s: float = PROGRESS_AFTER_S, width: int = 30):
        self.total, self.stream, self.after_s, self.width = total, stream or sys.stderr, after_s, width
        self.start = time.perf_counter()
        self.last_draw = -1.0
        self.drawn = False

    def __call__(self, step: int, loss: float, seconds: float) -> None:
        now = time.perf_counter() - self.start
        done = step + 1
        if now < self.after_s or (now - self.last_draw < 0.1 and done < self.total):
            return
        self.last_draw = now
        fill = round(self.width * done / self.total)
        eta = now / done * (self.total - done)
        self.stream.write(
            f"\r[{'#' * fill}{'.' * (self.width - fill)}] step {done}/{self.total}  "
            f"loss {loss:.4g}  {seconds * 1e3:.1f} ms/step  {now:.0f}s elapsed, ~{eta:.0f}s left"
        )
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()


def curve_steps(n: int, rows: int = CURVE_ROWS) -> list[int]:
    """0-based steps of the printed curve: all of them when ``n <= rows``, else ``rows``
    evenly spaced from the first to the last."""
    return list(range(n)) if n <= rows else sorted(set(np.linspace(0, n - 1, rows).round().astype(int)))


def print_result(r: TrainResult) -> None:
    print(f"spec:      {r.spec}")
    print(f"task:      {r.task}: {r.task_description}")
    print(f"method:    {r.solver} on {r.backend}:{r.device}, Adam lr={r.lr:g}, {r.steps} steps")
    print(f"loss:      {r.loss_unit}")
    print("loss curve (loss before each step's update; ms = the timed step; s = cumulative timed seconds):")
    print(f"  {'step':>6} {'loss':>12} {'ms':>10} {'s':>9} {'fwd it':>6} {'bwd it':>6}")
    cum = np.cumsum(r.step_seconds)
    for i in curve_steps(r.steps):
        print(
            f"  {i + 1:>6} {r.losses[i]:>12.6g} {r.step_seconds[i] * 1e3:>10.3f} {cum[i]:>9.3f} "
            f"{r.forward_iterations[i]:>6} {r.backward_iterations[i]:>6}"
        )
    med = float(np.median(r.step_seconds))
    print(
        f"time/step: median {med * 1e3:.3f} ms, mean {np.mean(r.step_seconds) * 1e3:.3f} ms "
        f"(gradient run forward+backward + readout + Adam update); not in it: the extra forward "
        f"for the cotangent {np.sum(r.forward_seconds):.3f} s, prepare/transfer/compile overhead "
        f"{np.sum(r.overhead_seconds):.3f} s (total over all steps)"
    )
    print(
        f"final:     train_loss={r.train_loss:.6g} (training solver)  eval_loss={r.eval_loss:.6g} "
        f"(exact sequential forward)  gap={r.gap:+.3g}  heldout_loss={r.heldout_loss:.6g}"
    )
    if r.metrics:
        print("metrics:   " + "  ".join(f"{k}={v:.4g}" for k, v in r.metrics.items()))
    if r.diverged:
        print("DIVERGED:  a step produced NaN or Inf; training stopped there")


def cmd_train(args: argparse.Namespace) -> int:
    if args.input_size is None:
        args.input_size = TEXT_VOCAB if args.task == "text" else INPUT_SIZE
    spec, solver = spec_from_args(args), solver_from_args(args)
    progress = Progress(args.steps)
    try:
        result = train(
            spec,
            solver,
            args.backend,
            args.device,
            steps=args.steps,
            task=args.task,
            seed=args.task_seed,
            lr=args.lr,
            progress=progress,
        )
    except MissingDependencyError as e:
        print(f"fpbench: error: {e}", file=sys.stderr)
        return 2
    finally:
        progress.close()
    print_result(result)
    return 1 if result.diverged else 0


def add_train_command(sub) -> None:
    """Register ``fpbench train`` on the CLI's subparsers."""
    p = sub.add_parser(
        "train", help="train the RNN + a linear readout with Adam; print loss curve and time/step"
    )
    p.add_argument(
        "--task",
        choices=TASKS,
        default="teacher",
        help="teacher RNN, digits (needs scikit-learn), or text (CPython's help text, bits per character)",
    )
    add_problem_args(
        p,
        seq_len=64,
        input_size=None,
        input_help=f"features per step I (default {INPUT_SIZE}; --task text: {TEXT_VOCAB}, one-hot)",
        hidden=16,
        batch=16,
        solver="sequential",
        max_iters=None,
        backward=True,
    )
    p.add_argument("--task-seed", type=int, default=0, help="the task's teacher, data and batches")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help="Adam's learning rate")
    p.set_defaults(func=cmd_train)
