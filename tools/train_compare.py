"""Compare training methods on one task and budget of steps: a Markdown table.

    python tools/train_compare.py [--task teacher|digits|text] [--backend numpy] [--steps 150]
        [--seq-len 32] [--hidden 16] [--ks 1,2,4,8] [--chunks 4] [--overlap 8]
        [--methods bptt,jacobi_unrolled,newton,...] [--target-loss X | --target-at 0.5]
        [--out reports/vm/training.md] [--curves reports/vm/training_curves.csv]
        [--figure reports/vm/figures/training-loss-vm.png]

Every method trains the same model (same spec, initialisation, task, batches and Adam
hyper-parameters) with :func:`fpbench.train` for ``--steps`` steps:

- ``bptt``: ``Sequential`` (BPTT); ``native``: the framework's autograd (where the backend has it);
- ``jacobi(k) unrolled``: ``Jacobi(k, backward="unrolled")``, the k-truncated model, per ``--ks``;
- ``chunked(P, o, k=1) unrolled``: one ``Chunked`` iteration over ``--chunks`` chunks with
  ``--overlap`` steps of warm-up, differentiated as it ran (the overlap-truncated model);
- ``jacobi`` / ``newton`` / ``quasi_newton`` / ``elk`` / ``chunked`` ``implicit @ tol``: the solver run to
  ``--tol`` (budget T; damped ELK, which is not exact after T: 4T) with the
  implicit-function-theorem gradient (ELK with damping 0.1). A step where such a method did
  not reach the tolerance is flagged in the table.

``--methods`` runs a subset, by the keys of :data:`METHOD_KEYS` (BPTT always runs: it is the
reference of every ratio). Losses are in the task's unit (``text``: bits per character);
minibatch losses (``digits``, ``text``) are compared as a trailing mean over ``--smooth``
steps. For ``text``, ``--k-figure`` also plots the truncated models' final losses against k
(training bits per character under the truncated model, and held-out bits per character
under the exact recurrence) beside BPTT's.

The stated loss is ``--target-loss``, or (default) the loss BPTT reaches after the fraction
``--target-at`` of its steps. For each method the table gives the steps and the timed
seconds (:attr:`fpbench.TrainResult.step_seconds`: gradient run + readout + Adam update)
until the training loss first reaches it, each as a ratio to BPTT (below 1: faster than
BPTT), the median seconds per step, the final losses and the train/eval gap
(:attr:`fpbench.TrainResult.gap`: the loss under exact sequential inference minus the loss
under the method the model was trained with). Combinations the backend does not implement
are listed as n/a with the reason.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import fpbench
from fpbench import ELK, Chunked, Jacobi, Native, Newton, QuasiNewton, Sequential
from fpbench.tasks import TEXT_VOCAB
from fpbench.train import TrainResult, steps_to_loss, trailing_mean, train

ELK_BUDGET = 4
"""Damped ELK is not exact after T iterations: it gets a budget of this many times T to
reach the tolerance (the table flags any step where it still did not)."""


METHOD_KEYS: tuple[str, ...] = (
    "bptt",
    "native",
    "jacobi_unrolled",
    "chunked_unrolled",
    "jacobi",
    "newton",
    "quasi_newton",
    "elk",
    "chunked",
)
"""``--methods`` keys, in table order: ``bptt``, ``native``, ``jacobi_unrolled`` (every k of
``--ks``), ``chunked_unrolled`` (one iteration), and the implicit methods to ``--tol``."""


@dataclass
class Run:
    label: str
    solver: fpbench.Solver
    result: TrainResult | None = None
    error: str = ""
    wall_s: float = 0.0


def methods(
    seq_len: int,
    ks: list[int],
    tol: float,
    chunks: int = 4,
    overlap: int = 8,
    only: tuple[str, ...] = METHOD_KEYS,
) -> list[tuple[str, fpbench.Solver]]:
    """``(label, solver)`` of every compared method whose key is in ``only`` (module
    docstring), BPTT first."""
    cfg = {"chunks": chunks, "overlap": overlap}
    keyed: list[tuple[str, str, fpbench.Solver]] = [("bptt", "bptt (sequential)", Sequential())]
    keyed += [("native", "native", Native())]
    unrolled = [k for k in ks if k < seq_len]
    keyed += [("jacobi_unrolled", f"jacobi({k}) unrolled", Jacobi(k, backward="unrolled")) for k in unrolled]
    keyed += [
        (
            "chunked_unrolled",
            f"chunked(P={chunks}, o={overlap}, k=1) unrolled",
            Chunked(1, backward="unrolled", **cfg),
        ),
        ("jacobi", "jacobi implicit @ tol", Jacobi(seq_len, tol)),
        ("newton", "newton implicit @ tol", Newton(seq_len, tol)),
        ("quasi_newton", "quasi_newton implicit @ tol", QuasiNewton(seq_len, tol)),
        ("elk", "elk implicit @ tol", ELK(ELK_BUDGET * seq_len, tol, damping=0.1)),
        ("chunked", f"chunked(P={chunks}, o={overlap}) implicit @ tol", Chunked(seq_len, tol, **cfg)),
    ]
    return [(label, solver) for key, label, solver in keyed if key in only]


def parse_methods(text: str | None) -> tuple[str, ...]:
    """The keys of ``--methods`` (None: all), BPTT added first.

    Raises:
        ValueError: an unknown key (the message lists the known ones).
    """
    if text is None:
        return METHOD_KEYS
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in METHOD_KEYS]
    if unknown:
        raise ValueError(f"unknown --methods {unknown}; choose from {list(METHOD_KEYS)}")
    return ("bptt", *(k for k in keys if k != "bptt"))


def run_all(
    spec, backend, steps, task, lr, seed, ks, tol, log=sys.stderr, chunks=4, overlap=8, only=METHOD_KEYS
) -> list[Run]:
    runs = []
    for label, solver in methods(spec.seq_len, ks, tol, chunks, overlap, only):
        run = Run(label, solver)
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", fpbench.DivergenceWarning)
                run.result = train(spec, solver, backend, steps=steps, task=task, seed=seed, lr=lr)
        except (fpbench.UnsupportedError, fpbench.BackendUnavailableError) as e:
            run.error = str(e)
        run.wall_s = time.perf_counter() - t0
        status = run.error or f"final loss {run.result.losses[-1]:.4g}"
        print(f"  {label:32s} {run.wall_s:7.1f} s  {status}", file=log, flush=True)
        runs.append(run)
    return runs


def _ratio(x: float | None, ref: float | None) -> str:
    if x is None:
        return "not reached"
    if ref is None or ref == 0:
        return "—"
    return f"{x / ref:.2f}x"


def _unconverged(run: Run) -> str:
    """A note when a method run to a tolerance did not reach it on some steps."""
    if getattr(run.solver, "tol", None) is None:
        return ""
    r = run.result
    fwd, bwd = int(np.sum(~r.forward_converged)), int(np.sum(~r.backward_converged))
    notes = [f"{n} of {r.steps} {what} passes not converged" for n, what in ((fwd, "fwd"), (bwd, "bwd")) if n]
    return f" ({'; '.join(notes)})" if notes else ""


def markdown(runs: list[Run], target: float, target_note: str, header: str, window: int = 1) -> str:
    """The comparison table (module docstring) under ``header``."""
    bptt = runs[0].result
    assert bptt is not None, "BPTT must run: it is the reference of every ratio"
    ref_steps, ref_s = steps_to_loss(bptt.losses, bptt.step_seconds, target, window)
    lines = [
        header,
        "",
        f"Stated loss: **{target:.4g}** ({target_note})."
        + (
            f" Minibatch losses are compared as their trailing mean over {window} steps."
            if window > 1
            else ""
        ),
        "",
        "| method | steps to loss | vs BPTT | seconds to loss | vs BPTT | ms/step (median) "
        "| final train loss | eval loss (exact) | gap | held-out loss | fwd / bwd iters |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    na = []
    for run in runs:
        r = run.result
        if r is None:
            na.append(f"- `{run.label}`: n/a — {run.error}")
            continue
        n, s = steps_to_loss(r.losses, r.step_seconds, target, window)
        extra = " (diverged)" if r.diverged else ""
        lines.append(
            f"| `{run.label}`{extra} | {n if n is not None else '—'} | {_ratio(n, ref_steps)} "
            f"| {f'{s:.3f}' if s is not None else '—'} | {_ratio(s, ref_s)} "
            f"| {np.median(r.step_seconds) * 1e3:.2f} | {r.train_loss:.4g} | {r.eval_loss:.4g} "
            f"| {r.gap:+.2g} | {r.heldout_loss:.4g} "
            f"| {np.mean(r.forward_iterations):.1f} / {np.mean(r.backward_iterations):.1f}"
            f"{_unconverged(run)} |"
        )
    if bptt.metrics:
        lines += ["", "Accuracy (exact inference, training set / held-out):", ""]
        for run in runs:
            if run.result is not None and "eval_accuracy" in run.result.metrics:
                m = run.result.metrics
                lines.append(
                    f"- `{run.label}`: {m['eval_accuracy']:.3f} / {m['heldout_accuracy']:.3f}"
                    f" (under its own solver: {m['train_accuracy']:.3f})"
                )
    if na:
        lines += ["", "Not run on this backend:", "", *na]
    return "\n".join(lines) + "\n"


def write_curves(runs: list[Run], path: Path, task: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["task", "method", "step", "loss", "step_seconds", "cumulative_seconds"])
        for run in runs:
            if run.result is None:
                continue
            cum = np.cumsum(run.result.step_seconds)
            for i, (loss, s) in enumerate(zip(run.result.losses, run.result.step_seconds, strict=True)):
                w.writerow([task, run.label, i + 1, f"{loss:.8g}", f"{s:.6g}", f"{cum[i]:.6g}"])


def write_figure(all_runs: list[tuple[str, list[Run], float, int]], path: Path) -> bool:
    """Loss against step and against timed seconds, per method, one row per task (needs
    matplotlib; returns False without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(len(all_runs), 2, figsize=(11, 4 * len(all_runs)), squeeze=False)
    labels = list(dict.fromkeys(run.label for _, runs, _, _ in all_runs for run in runs))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}  # one colour per method
    for row, (title, runs, target, window) in zip(axes, all_runs, strict=True):
        unit = next(run.result.loss_unit for run in runs if run.result is not None)
        for run in runs:
            r = run.result
            if r is None:
                continue
            steps = np.arange(1, r.steps + 1)
            style = "-" if "unrolled" not in run.label else "--"
            loss = trailing_mean(r.losses, window)
            kw = {"color": colors[run.label], "label": run.label}
            row[0].plot(steps, loss, style, **kw)
            row[1].plot(np.cumsum(r.step_seconds), loss, style, **kw)
        if window > 1:
            title += f", trailing mean of {window} steps"
        for ax, xlabel in zip(row, ("step", "timed seconds (cumulative, log)"), strict=True):
            ax.set_yscale("log")
            ax.axhline(target, color="gray", lw=0.8, ls=":")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"training loss ({unit})")
            ax.set_title(f"{title}: loss against {xlabel.split(' (')[0]}", fontsize=9)
        row[1].set_xscale("log")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_k_figure(runs: list[Run], spec: fpbench.RNNSpec, path: Path) -> bool:
    """The truncated models' (``jacobi(k) unrolled``) final losses against k: the training
    loss under the truncated model, the same model under the exact recurrence and its
    held-out loss (exact), with BPTT's as horizontal lines (needs matplotlib; False without
    it or without a truncated model)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    trunc = sorted(
        (run.solver.max_iters, run.result)
        for run in runs
        if run.result is not None and run.label.startswith("jacobi(") and run.label.endswith("unrolled")
    )
    if not trunc:
        return False
    bptt = runs[0].result
    ks = [k for k, _ in trunc]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    series = (
        ("train_loss", "training set, under the truncated model", "C0", "-o"),
        ("eval_loss", "training set, exact recurrence", "C1", "-s"),
        ("heldout_loss", "held-out, exact recurrence", "C2", "-^"),
    )
    for name, label, color, style in series:
        values = [getattr(r, name) for _, r in trunc]
        ax.plot(ks, values, style, color=color, label=f"Jacobi(k) unrolled: {label}")
        ax.axhline(getattr(bptt, name), color=color, lw=0.8, ls=":")
    ax.plot([], [], ":", color="gray", label="BPTT (dotted, same colours)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel(f"k: Jacobi iterations = steps of context (T = {spec.seq_len})")
    ax.set_ylabel(f"final loss ({bptt.loss_unit})")
    title = f"k-truncated models after {bptt.steps} steps ({spec.cell}, H={spec.hidden_size})"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _parser() -> argparse.ArgumentParser:
    """The command line (the module docstring describes the comparison)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", action="append", help="teacher, digits, text (repeatable; default teacher)")
    p.add_argument("--backend", default="numpy")
    p.add_argument("--cell", default="gru")
    p.add_argument("--seq-len", type=int, default=32, help="T for teacher (digits: 8 or 64 from its layout)")
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--input-size", type=int, default=4, help="I for teacher (text: its one-hot vocabulary)")
    p.add_argument("--digits-layout", choices=["rows", "pixels"], default="rows")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--contraction", type=float, default=0.9)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0, help="the task's seed")
    p.add_argument("--ks", default="1,2,4,8", help="budgets of the unrolled Jacobi (truncated) models")
    p.add_argument("--chunks", type=int, default=4, help="the Chunked methods' number of chunks")
    p.add_argument("--overlap", type=int, default=8, help="the Chunked methods' overlap")
    p.add_argument("--tol", type=float, default=1e-6, help="tolerance of the implicit methods")
    p.add_argument("--target-loss", type=float, default=None)
    p.add_argument(
        "--target-at", type=float, default=0.5, help="default stated loss: BPTT's after this share"
    )
    p.add_argument(
        "--smooth", type=int, default=10, help="trailing-mean window of minibatch (digits, text) losses"
    )
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHOD_KEYS)}")
    p.add_argument("--out", type=Path, default=None, help="Markdown file (default: stdout)")
    p.add_argument("--curves", type=Path, default=None, help="CSV of every loss curve (overwritten)")
    p.add_argument("--figure", type=Path, default=None, help="PNG: loss vs step and vs seconds")
    p.add_argument("--k-figure", type=Path, default=None, help="PNG (text): final losses against k")
    return p


def task_spec(task: str, args: argparse.Namespace) -> fpbench.RNNSpec:
    """The spec of ``task`` from the command line: digits fixes T and I by its layout, text
    fixes I to its vocabulary."""
    if task == "digits":
        T, I = (8, 8) if args.digits_layout == "rows" else (64, 1)
    elif task == "text":
        T, I = args.seq_len, TEXT_VOCAB
    else:
        T, I = args.seq_len, args.input_size
    return fpbench.RNNSpec(
        cell=args.cell,
        input_size=I,
        hidden_size=args.hidden,
        seq_len=T,
        batch=args.batch,
        dtype=args.dtype,
        contraction=args.contraction,
        seed=0,
    )


def stated_loss(bptt: fpbench.TrainResult, args: argparse.Namespace, window: int) -> tuple[float, str]:
    """The loss every method is timed to, and what it is: ``--target-loss``, or BPTT's
    trailing-mean training loss after the ``--target-at`` share of the steps."""
    if args.target_loss is not None:
        return args.target_loss, "given"
    at = max(1, round(args.target_at * args.steps))
    return float(
        trailing_mean(bptt.losses, window)[at - 1]
    ), f"BPTT's training loss at step {at} of {args.steps}"


def section_head(
    task: str, spec: fpbench.RNNSpec, bptt: fpbench.TrainResult, args: argparse.Namespace
) -> str:
    """The heading and settings line of one task's section."""
    return (
        f"## Task `{task}`: {bptt.task_description}\n\n"
        f"`{spec.cell}`, T = {spec.seq_len}, I = {spec.input_size}, H = {spec.hidden_size}, "
        f"B = {spec.batch}, {spec.dtype}, ρ = {spec.contraction:g}; "
        f"backend `{bptt.backend}:{bptt.device}`; "
        f"{args.steps} Adam steps, lr = {args.lr:g}; implicit methods to tol = {args.tol:g}. "
        f"Losses: {bptt.loss_unit}."
    )


def intro(argv: list[str] | None, seconds: float) -> list[str]:
    """The report's opening lines: the command, the machine, and how to read the tables."""
    return [
        "# Training: methods compared on one task and budget of steps",
        "",
        f"Made by `python tools/train_compare.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"on this machine ({os.cpu_count()} CPU cores, {platform.machine()}, "
        f"Python {platform.python_version()}, fpbench {fpbench.__version__}) in {seconds:.0f} s.",
        "",
        "How to read it: *steps to loss* and *seconds to loss* count the steps, and the timed seconds "
        '(gradient run forward + backward, readout, Adam update; README "Training"), until the training '
        "loss first reaches the stated loss; *vs BPTT* divides by BPTT's (below 1: faster than BPTT; "
        "*not reached*: never within the budget). *gap* = eval loss (the trained model under the exact "
        "sequential recurrence) − final train loss (under the method it was trained with): Wang & Ragni's "
        "train/inference consistency; near 0 for exact methods, the truncated models' price otherwise.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    tasks = args.task or ["teacher"]
    try:
        only = parse_methods(args.methods)
    except ValueError as e:
        p.error(str(e))

    started = time.perf_counter()
    sections, figure_rows, k_figures = [], [], []
    if args.curves is not None and args.curves.exists():
        args.curves.unlink()
    for task in tasks:
        spec = task_spec(task, args)
        print(f"{task}: {spec}", file=sys.stderr)
        runs = run_all(
            spec, args.backend, args.steps, task, args.lr, args.seed, ks, args.tol,
            chunks=args.chunks, overlap=args.overlap, only=only,
        )  # fmt: skip
        bptt = runs[0].result
        if bptt is None:
            print(f"fpbench: error: BPTT did not run: {runs[0].error}", file=sys.stderr)
            return 2
        window = 1 if task == "teacher" else args.smooth  # teacher: one full batch, no noise
        target, note = stated_loss(bptt, args, window)
        sections.append(markdown(runs, target, note, section_head(task, spec, bptt, args), window))
        figure_rows.append(
            (f"{task} ({spec.cell}, T={spec.seq_len}, H={spec.hidden_size})", runs, target, window)
        )
        if task == "text" and args.k_figure is not None:
            k_figures.append((runs, spec))
        if args.curves is not None:
            write_curves(runs, args.curves, task)
    text = "\n".join(intro(argv, time.perf_counter() - started)) + "\n" + "\n".join(sections)
    if args.figure is not None and write_figure(figure_rows, args.figure):
        rel = os.path.relpath(args.figure, args.out.parent) if args.out else args.figure
        text += f"\n![loss against step and against timed seconds, per method]({rel})\n"
    for runs, spec in k_figures:
        if write_k_figure(runs, spec, args.k_figure):
            rel = os.path.relpath(args.k_figure, args.out.parent) if args.out else args.k_figure
            text += f"\n![final bits per character against the truncation k]({rel})\n"
    if args.out is None:
        print(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
