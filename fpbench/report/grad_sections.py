"""Report sections of the gradient and training suites (``benchmarks/bench_grad.py``,
``benchmarks/bench_train.py``).

:func:`grad_sections` returns the sections in report order; ``build_report`` adds them with
``*grad_sections(frame, figs)`` (its :class:`~.figure_files.FigureFiles` saves the figures):

- backward (forward + backward) time against T and against H, per backend, solver and
  backward mode;
- backward speedup over the best sequential BPTT (``sequential``/``native``, any backend)
  on the same device, at each (cell, T, H) point;
- gradient error against the budget k beside ρᵏ (the truncated gradient of Miller & Hardt,
  measured), and the iterations of the backward pass;
- peak memory of unrolled against implicit, over the budget;
- training: time per step, final training loss, held-out loss with the exact forward, and
  the train/inference consistency gap, per method; the loss against steps and against
  seconds, and the steps and seconds each method needs to reach a stated loss as a ratio
  to BPTT (the ``TrainLoss`` runs' curves, :func:`.load.curve_frame`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import analysis, figures, fmt
from .page import Section, Table
from .store import BASELINES


def _labelled(rows: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows with ``solver`` naming the backward mode too (``jacobi (unrolled)``; the
    baselines keep their name) and ``label = backend:solver``."""
    if rows.empty:
        return rows.assign(label=pd.Series(dtype=str))
    out = rows.copy()
    if "backward" in out:
        iterative = ~out["solver"].isin(BASELINES) & out["backward"].notna()
        out.loc[iterative, "solver"] = (
            out.loc[iterative, "solver"] + " (" + out.loc[iterative, "backward"] + ")"
        )
    return analysis.with_labels(out, extra)


def _select(frame: pd.DataFrame, group: str, metric: str) -> pd.DataFrame:
    return frame[frame["group"].eq(group) & frame["metric"].eq(metric)]


def _time_sections(frame: pd.DataFrame, figs: Any) -> list[Section]:
    out = []
    for title, group, x, other in (
        ("Backward: time vs sequence length", "GradSeqLen", "seq_len", "hidden_size"),
        ("Backward: time vs hidden size", "GradHidden", "hidden_size", "seq_len"),
    ):
        rows = _labelled(_select(frame, group, "time_grad"), ("max_iters", other))
        blocks = figs.per_machine(
            f"grad-time-{x}",
            rows,
            lambda g, t, x=x: figures.lines(g, x, "time (ms)", t, scale=1e3, row="cell", col="solver"),
            f"{title}: median time of the forward solve plus its backward pass (log-log), one panel per "
            "cell and solver (with its backward mode), one line per backend.",
        )
        out.append(Section(title, blocks))  # no data: no blocks, and the report leaves it out
    return out


def speedups_over_baseline(rows: pd.DataFrame, point: list[str], name: str, keep: list[str]) -> pd.DataFrame:
    """Speedup of every ok row over the fastest baseline row (``rows[name]`` in
    :data:`BASELINES`, any backend) at the same ``point``: ``speedup = baseline time / time``,
    with the baseline's ``bptt_s``, ``bptt_backend`` and ``bptt_solver``; ``keep``: the other
    columns of a candidate row to carry."""
    rows = rows[rows["status"].eq("ok")]
    if rows.empty:
        return pd.DataFrame()
    base = rows[rows[name].isin(BASELINES)]
    best = base.loc[base.groupby(point, dropna=False)["value"].idxmin()]
    best = best[[*point, "value", "backend", name]].rename(
        columns={"value": "bptt_s", "backend": "bptt_backend", name: "bptt_solver"}
    )
    cols = [*point, "backend", name, *keep, "value"]
    cand = rows[~rows[name].isin(BASELINES)][[c for c in cols if c in rows]]
    out = cand.merge(best, on=point, how="inner")
    out["speedup"] = out["bptt_s"] / out["value"]
    return out.sort_values([*point, "speedup"], ascending=[True] * len(point) + [False])


SHAPE_NAMES = {"seq_len": "T", "hidden_size": "H", "batch": "B"}
"""Shape columns as the tables head them."""


def _speedup_table(sp: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``sp`` (:func:`speedups_over_baseline`) formatted: ``columns`` (a shape as an integer,
    headed ``T``, ``H``), then the time, the baseline it is compared with, and the speedup."""
    shapes = {c: sp[c].map(fmt.integer) for c in columns if c in SHAPE_NAMES}
    return (
        sp.assign(
            **shapes,
            time=sp["value"].map(fmt.seconds),
            bptt=sp["bptt_backend"] + ":" + sp["bptt_solver"] + " " + sp["bptt_s"].map(fmt.seconds),
            speedup=sp["speedup"].map(fmt.speedup),
        )[[*columns, "time", "bptt", "speedup"]]
        .rename(columns=SHAPE_NAMES)
        .reset_index(drop=True)
    )


def backward_speedups(frame: pd.DataFrame) -> pd.DataFrame:
    """Speedup of every gradient over the fastest BPTT baseline (``sequential`` or ``native``,
    any backend) on the same machine, device and point (cell, T, H): one row per
    (point, backend, solver, backward, budget), ``speedup = best baseline time / time``."""
    rows = frame[frame["group"].isin(("GradSeqLen", "GradHidden")) & frame["metric"].eq("time_grad")]
    point = ["machine", "device", "cell", "seq_len", "hidden_size"]
    return speedups_over_baseline(rows, point, "solver", ["backward", "max_iters"])


def _speedup_section(frame: pd.DataFrame) -> Section:
    section = Section("Backward speedup over the best sequential BPTT")
    sp = backward_speedups(frame)
    if sp.empty:
        return section
    columns = ["machine", "device", "cell", "seq_len", "hidden_size", "backend", "solver", "backward"]
    section.blocks.append(
        Table(
            _speedup_table(sp, columns),
            "Forward + backward time of each fixed-point gradient against the fastest BPTT baseline "
            "(sequential or native autograd, any backend) on the same device at the same (cell, T, H); "
            "above 1×: the parallel gradient is faster.",
        )
    )
    return section


def _accuracy_section(frame: pd.DataFrame, figs: Any) -> Section:
    section = Section("Gradient error vs iteration budget")
    err = _labelled(_select(frame, "GradAccuracy", "track_grad_rel_error"))
    section.blocks += figs.per_machine(
        "grad-error-budget",
        err,
        lambda g, t: figures.accuracy(g, t),
        "Gradient error vs iteration budget k: the largest relative L2 error of dL/dW, dL/db, dL/dx, "
        "dL/dh0 against the exact float64 gradient (log y; the axis label reads max |error|), one panel "
        "per contraction ρ and solver (with its backward mode); dashed black: ρᵏ (elman). Unrolled "
        "Jacobi is the k-truncated model's gradient (Miller & Hardt).",
        by=("machine", "device", "cell"),
    )
    it = _labelled(_select(frame, "GradAccuracy", "track_backward_iterations"))
    it = it[it["max_iters"].astype(str).eq("tol")]
    section.blocks += figs.per_machine(
        "grad-iterations-tol",
        it,
        lambda g, t: figures.iterations(g, t),
        'Backward iterations vs contraction ρ (max_iters = "tol"): adjoint iterations of the '
        "implicit backward of Jacobi and quasi-Newton (0: a direct backward).",
    )
    return section


def _memory_section(frame: pd.DataFrame, figs: Any) -> Section:
    rows = _select(frame, "GradBudget", "peakmem_grad")
    rows = rows[pd.to_numeric(rows["max_iters"], errors="coerce").notna()].assign(
        max_iters=lambda d: d["max_iters"].astype(float)
    )
    blocks = figs.per_machine(
        "grad-memory-budget",
        _labelled(rows),
        lambda g, t: figures.lines(
            g, "max_iters", "peak memory (MiB)", t, scale=1 / 2**20, row="cell", col="solver"
        ),
        "Peak memory of forward + backward vs iteration budget k: unrolled keeps every iterate (and "
        "Newton's Jacobians), implicit does not. asv's peakmem (process RSS; GPU memory is not in it).",
    )
    return Section("Gradient memory: unrolled vs implicit", blocks)


LOSS_COLUMNS = {
    "track_train_loss": (fmt.loss, "train loss"),
    "track_eval_loss": (fmt.loss, "eval loss (exact forward)"),
    "track_gap": (fmt.gap, "gap (eval − train)"),
}
"""The ``TrainLoss`` metrics, how each prints and its column head, in table order."""

TARGET_AT = 0.5
"""The stated loss of the training curves: BPTT's training loss after this fraction of its steps."""


def _method_label(curves: pd.DataFrame) -> pd.Series:
    """``backend:solver`` labels of the training methods (``jacobi_unrolled`` -> ``jacobi
    unrolled``, so that it is drawn as Jacobi's second variant)."""
    return curves["backend"] + ":" + curves["method"].str.replace("_unrolled", " unrolled", regex=False)


def _reach(run: pd.DataFrame, target: float) -> tuple[int | None, float | None]:
    """:func:`fpbench.train.steps_to_loss` of one curve (rows by step)."""
    from fpbench.train import steps_to_loss

    return steps_to_loss(run["loss"].to_numpy(), run["step_seconds"].to_numpy(), target)


def steps_to_loss_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (machine, device, backend, contraction): the stated loss (BPTT's, i.e. the
    ``sequential`` method's, at :data:`TARGET_AT` of its steps) and, per method and budget,
    the steps and the timed seconds until its training loss first reaches it, each as a
    ratio to BPTT's on the same backend (below 1x: fewer steps, less time)."""
    rows = []
    group = ["machine", "device", "backend", "contraction"]
    for key, g in curves.groupby(group, sort=True, dropna=False):
        bptt = g[g["method"].eq("sequential")].sort_values("step")
        if bptt.empty:
            continue
        at = max(1, round(TARGET_AT * len(bptt)))
        target = float(bptt["loss"].iloc[at - 1])

        ref_steps, ref_s = _reach(bptt, target)
        for (method, budget), run in g.groupby(["method", "budget"], sort=True):
            run = run.sort_values("step")
            n, sec = _reach(run, target)
            rows.append(
                {
                    **dict(zip(group, key, strict=True)),
                    "stated loss": fmt.loss(target),
                    "method": method,
                    "budget": budget,
                    "steps to loss": fmt.MISSING if n is None else n,
                    "steps vs BPTT": "not reached" if n is None else fmt.ratio(n / ref_steps),
                    "seconds to loss": fmt.MISSING if sec is None else fmt.seconds(sec),
                    "seconds vs BPTT": "not reached" if sec is None else fmt.ratio(sec / ref_s),
                    "final loss": fmt.loss(run["loss"].iloc[-1]),
                }
            )
    return pd.DataFrame(rows)


def _curves_blocks(curves: pd.DataFrame, figs: Any) -> list[Any]:
    """Loss against step and against seconds, one panel per backend and budget, one line per
    method; and :func:`steps_to_loss_table`."""
    if curves.empty:
        return []
    base = curves[curves["method"].isin(BASELINES)]
    others = sorted(set(curves["budget"]) - set(base["budget"]))
    drawn = pd.concat([curves, *(base.assign(budget=b) for b in others)])  # BPTT in every panel
    rows = drawn.assign(
        label=_method_label(drawn), value=drawn["loss"], q25=float("nan"), q75=float("nan"), status="ok"
    )
    blocks: list[Any] = []
    for x, what in (("step", "steps"), ("seconds", "timed seconds")):
        blocks += figs.per_machine(
            f"train-curve-{x}",
            rows,
            lambda g, t, x=x: figures.lines(
                g, x, "training loss", t, logx=False, row="budget", col="backend"
            ),
            f"Training loss vs {what}: the TrainLoss runs (teacher task), one panel per backend and "
            "budget k, one line per method (BPTT drawn in every panel); the seconds are the timed "
            "steps (forward + backward, readout, Adam update), summed.",
            by=("machine", "device", "contraction"),
        )
    table = steps_to_loss_table(curves)
    if not table.empty:
        blocks.append(
            Table(
                table,
                f"Steps and timed seconds each method needs to reach the stated loss (BPTT's training "
                f"loss after {TARGET_AT:.0%} of its steps, on the same backend), and their ratio to "
                "BPTT's (below 1×: fewer steps, less time; not reached: never within the steps run).",
            )
        )
    return blocks


def _training_section(frame: pd.DataFrame, figs: Any, curves: pd.DataFrame | None = None) -> Section:
    """The training suites of ``benchmarks/bench_train.py``: ``TrainSeqLen`` / ``TrainHidden``
    (``time_train_step``) and ``TrainLoss`` (``track_train_loss``, ``track_eval_loss``,
    ``track_gap``), each with a ``method`` parameter (a solver and its backward mode)."""
    section = Section("Training: time per step, loss and the train/inference gap")
    for group, x in (("TrainSeqLen", "seq_len"), ("TrainHidden", "hidden_size")):
        step = _select(frame, group, "time_train_step")
        if step.empty or "method" not in step:
            continue
        step = analysis.with_labels(step.assign(solver=step["method"]), ())
        section.blocks += figs.per_machine(
            f"train-step-{x}",
            step,
            lambda g, t, x=x: figures.lines(
                g, x, "time per step (ms)", t, scale=1e3, row="device", col="solver"
            ),
            f"Time per training step vs {figures.AXIS_LABEL.get(x, x)}: forward + backward, the "
            "readout's loss and gradient, one Adam update; one panel per method, one line per backend.",
        )
    steps = frame[frame["group"].isin(("TrainSeqLen", "TrainHidden")) & frame["metric"].eq("time_train_step")]
    sp = speedups_over_baseline(steps, ["machine", "device", "seq_len", "hidden_size"], "method", [])
    if not sp.empty:
        section.blocks.append(
            Table(
                _speedup_table(sp, ["machine", "device", "seq_len", "hidden_size", "backend", "method"]),
                "Time per training step of each fixed-point method against the fastest BPTT step "
                "(sequential or native autograd, any backend) at the same (T, H); above 1×: the step "
                "is faster.",
            )
        )
    tracks = frame[frame["group"].eq("TrainLoss") & frame["status"].eq("ok")]
    if not tracks.empty and "method" in tracks:
        keys = [k for k in ("machine", "device", "backend", "method", "budget", "contraction") if k in tracks]
        wide = tracks.assign(**{k: tracks[k].astype(str) for k in keys}).pivot_table(
            index=keys, columns="metric", values="value", aggfunc="median"
        )
        wide = wide.reset_index()
        wide.columns.name = None
        wide = wide.assign(
            **{m: wide[m].map(f) for m, (f, _) in LOSS_COLUMNS.items() if m in wide},
            **{k: wide[k].map(fmt.number) for k in ("budget", "contraction") if k in wide},
        ).rename(columns={m: name for m, (_, name) in LOSS_COLUMNS.items()})
        shown = [c for c in (*keys, *(name for _, name in LOSS_COLUMNS.values())) if c in wide]
        section.blocks.append(
            Table(
                wide[shown],
                "After a fixed number of Adam steps on the teacher task: the training loss under the method "
                "trained with, the same model's loss under the exact recurrence (eval), and their gap "
                "(what training with an approximate fixed point costs at exact inference).",
            )
        )
    if curves is not None:
        kept = frame[["machine", "commit", "date"]].drop_duplicates(["machine", "commit"])
        section.blocks += _curves_blocks(curves.merge(kept, on=["machine", "commit"]), figs)
    return section


def grad_sections(frame: pd.DataFrame, figs: Any, curves: pd.DataFrame | None = None) -> list[Section]:
    """The gradient and training sections (module docstring), for ``build_report``;
    ``curves``: the training curves (:attr:`.load.ResultSet.curves`)."""
    return [
        *_time_sections(frame, figs),
        _speedup_section(frame),
        _accuracy_section(frame, figs),
        _memory_section(frame, figs),
        _training_section(frame, figs, curves),
    ]
