"""Derived tables of the report: speedups, crossovers, backend comparisons, gaps.

All functions take the tidy frame of :mod:`.load` (or a slice of it) and return new
frames; none plots. ``label`` is ``backend:solver`` (plus any parameter that still varies,
e.g. ``k=16``), the line identity in every figure.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import fmt
from .load import BASELINES

SOLVE_GROUPS = ("SeqLen", "Hidden")
"""asv classes whose ``time_solve``/``peakmem_solve`` sweep T and H (the contract)."""

POINT = ["machine", "commit", "device", "cell", "seq_len", "hidden_size", "batch"]
"""What makes two timings comparable: same machine, run, device, cell and shape."""


def fmt_num(x: float) -> str:
    """Compact number for tables and tick labels: ``1024``, ``0.9``, ``3.2e-05``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if float(x).is_integer() and abs(x) < 1e7:
        return str(int(x))
    return f"{x:.3g}"


def fmt_seconds(s: float) -> str:
    """``3.21 ms``-style time."""
    if s is None or math.isnan(s):
        return "—"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def with_labels(df: pd.DataFrame, extra: tuple[str, ...] = ("max_iters",)) -> pd.DataFrame:
    """Add ``label`` = ``backend:solver``, plus ``name=value`` for each ``extra`` parameter
    that takes more than one value among the rows of that backend:solver."""
    out = df.copy()
    out["label"] = out["backend"].astype(str) + ":" + out["solver"].astype(str)
    for col in extra:
        if col not in out or out[col].isna().all():
            continue
        varies = out.groupby("label")[col].transform(lambda s: s.dropna().astype(str).nunique() > 1)
        short = {"max_iters": "k", "hidden_size": "H", "seq_len": "T", "contraction": "ρ"}.get(col, col)
        suffix = " " + short + "=" + out[col].map(lambda v: fmt_num(v) if isinstance(v, float) else str(v))
        out.loc[varies, "label"] = out.loc[varies, "label"] + suffix[varies]
    return out


def suite_rows(frame: pd.DataFrame, group: str, metric: str, extra: tuple[str, ...]) -> pd.DataFrame:
    """The rows of one suite's (``group``'s) ``metric``, labelled by :func:`with_labels`."""
    return with_labels(frame[frame["group"].eq(group) & frame["metric"].eq(metric)], extra)


def solve_rows(
    frame: pd.DataFrame, metric: str = "time_solve", groups: tuple[str, ...] = SOLVE_GROUPS
) -> pd.DataFrame:
    """``metric`` rows of the suites ``groups`` (default: the T and H sweeps), one per
    (point, backend, solver, budget): where two suites measured the same point the median
    of the two is kept."""
    rows = frame[frame["group"].isin(groups) & (frame["metric"] == metric)]
    if rows.empty:
        return rows.assign(label=pd.Series(dtype=str))
    keys = [*POINT, "target", "backend", "solver", "max_iters"]
    # An ok measurement wins over a gap at the same point; gaps keep their status and reason.
    rows = rows.assign(_ok=rows["status"].eq("ok")).sort_values("_ok", ascending=False)
    agg = rows.groupby(keys, dropna=False, sort=False).agg(
        value=("value", "median"),
        q25=("q25", "median"),
        q75=("q75", "median"),
        status=("status", "first"),
        reason=("reason", "first"),
        unit=("unit", "first"),
        date=("date", "first"),
        max_abs_error=("max_abs_error", "max"),
    )
    return with_labels(agg.reset_index())


def speedups(times: pd.DataFrame) -> pd.DataFrame:
    """Speedup of every parallel solver over the fastest sequential baseline at the same point.

    Args:
        times: :func:`solve_rows` output (time_solve).

    Returns:
        One row per parallel (point, label): ``speedup`` = baseline time / solver time
        (> 1: the parallel solver wins), ``baseline`` (the label of the fastest baseline),
        ``baseline_s``, ``time_s``, ``status`` (a failed gate stays ``failed``, no number).
    """
    base = times[times["solver"].isin(BASELINES) & times["status"].eq("ok")]
    best = (
        base.sort_values("value")
        .groupby(POINT, dropna=False, sort=False)
        .head(1)[[*POINT, "label", "value"]]
        .rename(columns={"label": "baseline", "value": "baseline_s"})
    )
    par = times[~times["solver"].isin(BASELINES)]
    out = par.merge(best, on=POINT, how="left").rename(columns={"value": "time_s"})
    out["speedup"] = np.where(out["status"].eq("ok"), out["baseline_s"] / out["time_s"], np.nan)
    no_base = out["baseline_s"].isna() & out["status"].eq("ok")
    out.loc[no_base, "status"] = "no baseline"
    out.loc[no_base, "reason"] = "no sequential baseline measured at this point on this device"
    return out


def crossovers(sp: pd.DataFrame) -> pd.DataFrame:
    """Smallest T at which each parallel solver beats the best baseline, per H.

    Returns:
        Columns machine, device, cell, label, hidden_size, ``crossover_T`` (NaN: never wins in
        the measured range), ``max_speedup`` and the T it occurs at, ``wins_beyond`` (whether it
        keeps winning at every larger measured T).
    """
    rows = []
    keys = ["machine", "device", "cell", "label", "hidden_size"]
    for key, g in sp[sp["status"].eq("ok")].groupby(keys, dropna=False, sort=True):
        g = g.sort_values("seq_len")
        wins = g[g["speedup"] > 1]
        cross = wins["seq_len"].min() if not wins.empty else math.nan
        beyond = bool(wins.empty is False and (g[g["seq_len"] >= cross]["speedup"] > 1).all())
        top = g.loc[g["speedup"].idxmax()]
        rows.append(
            dict(
                zip(keys, key, strict=True),
                crossover_T=cross,
                wins_beyond=beyond,
                max_speedup=top["speedup"],
                at_T=top["seq_len"],
            )
        )
    return pd.DataFrame(rows, columns=[*keys, "crossover_T", "wins_beyond", "max_speedup", "at_T"])


def is_grid(sp: pd.DataFrame) -> bool:
    """Whether the (T, H) points form a 2-D grid worth a heatmap: at least two H values
    each measured at two or more T (gaps inside the grid are drawn as gaps)."""
    per_h = sp.dropna(subset=["seq_len", "hidden_size"]).groupby("hidden_size")["seq_len"].nunique()
    return int((per_h >= 2).sum()) >= 2


def backend_table(times: pd.DataFrame) -> pd.DataFrame:
    """Backend against backend for the same solver at the same point.

    Returns:
        One row per (machine, device, cell, solver, T, H) measured by at least two backends:
        a column of median time per backend, ``fastest``, ``runner-up`` and ``ratio``
        (runner-up time / fastest time: how much faster the winner is).
    """
    ok = times[times["status"].eq("ok")]
    keys = ["machine", "device", "cell", "solver", "max_iters", "seq_len", "hidden_size"]
    wide = ok.pivot_table(index=keys, columns="backend", values="value", aggfunc="median", dropna=False)
    wide = wide.dropna(how="all")
    wide = wide[wide.notna().sum(axis=1) >= 2]
    if wide.empty:
        return pd.DataFrame(columns=[*keys, "fastest", "runner-up", "ratio"])
    ranked = np.argsort(wide.to_numpy(dtype=float, na_value=np.inf), axis=1)
    backends = np.asarray(wide.columns)
    values = wide.to_numpy(dtype=float, na_value=np.nan)
    first = values[np.arange(len(wide)), ranked[:, 0]]
    second = values[np.arange(len(wide)), ranked[:, 1]]
    out = wide.reset_index()
    out["fastest"] = backends[ranked[:, 0]]
    out["runner-up"] = backends[ranked[:, 1]]
    out["ratio"] = second / first
    return out


def gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """Every combination without a number, grouped by (machine, status, target, solver, reason)
    with how many combinations and which benchmarks; failures first."""
    bad = frame[~frame["status"].eq("ok")]
    cols = ["machine", "status", "target", "solver", "reason"]
    if bad.empty:
        return pd.DataFrame(columns=[*cols, "count", "benchmarks"])
    out = (
        bad.fillna({"target": "—", "solver": "—"})
        .groupby(cols, dropna=False)
        .agg(count=("params", "size"), benchmarks=("benchmark", lambda s: ", ".join(sorted(set(s)))))
        .reset_index()
    )
    out["_order"] = out["status"].map({"failed": 0}).fillna(1)
    return out.sort_values(["_order", "machine", "target", "solver"]).drop(columns="_order")


def contraction_bound(k: np.ndarray, rho: float) -> np.ndarray:
    """Jacobi error bound for elman after k iterations, up to the state-norm factor: ρ^k.

    The full bound (docs/design.md, "Truncation") is ρ^k · max_t ‖h_{t−k}‖, and ‖h‖ ≤ √H for tanh states.
    """
    return np.power(float(rho), np.asarray(k, dtype=float))


PRODUCT_GROUP = "Product"
BATCH_GROUP = "Batch"
SPEEDUP_FAMILIES = {
    "T and H sweeps": SOLVE_GROUPS,
    "T x H product": (PRODUCT_GROUP,),
    "batch": (BATCH_GROUP,),
    "dense vs diagonal cells": ("DiagNewton",),
}
"""Suites whose timings may be compared with each other: the same problem family (B, I)."""


def family_speedups(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`speedups` within each family of :data:`SPEEDUP_FAMILIES` (timings of different
    families are never compared: ``Product`` has I = H, the others I = 32), stacked, with
    ``family``, ``batch`` and the gate's ``max_abs_error`` of the parallel solve."""
    parts = []
    for family, groups in SPEEDUP_FAMILIES.items():
        times = solve_rows(frame, groups=groups)
        if times.empty:
            continue
        sp = speedups(times)
        if not sp.empty:
            parts.append(sp.assign(family=family))
    if not parts:
        return pd.DataFrame(columns=[*POINT, "label", "solver", "backend", "speedup", "family"])
    return pd.concat(parts, ignore_index=True)


AXIS_SUITES = {"seq_len": "SeqLen", "hidden_size": "Hidden"}
"""The suite that sweeps each axis alone (T, H) with the rest of its problem fixed."""


def sweep_groups(frame: pd.DataFrame) -> tuple[str, ...]:
    """The suites whose timings make the T and H sweeps of ``frame``: ``SeqLen`` and
    ``Hidden`` where they have rows, else the T x H product (``Product``), whose slices at one
    H and at one T are those sweeps (:func:`axis_sweep`). For :func:`solve_rows`'s
    ``groups`` (the T and H speedups, their crossovers)."""
    ran = tuple(g for g in SOLVE_GROUPS if frame["group"].eq(g).any())
    return ran or (PRODUCT_GROUP,)


def axis_sweep(frame: pd.DataFrame, x: str, metric: str = "time_solve") -> pd.DataFrame:
    """The rows of the sweep of ``x`` (``"seq_len"``: time vs T; ``"hidden_size"``: time vs H)
    with everything else fixed along each line: the suite that sweeps ``x`` alone
    (:data:`AXIS_SUITES`) and the T x H product (``Product``), each of whose values of the
    other axis is one such sweep (its slice), at the product's B and I = H. Measured data,
    not interpolated: a slice has the product's values of ``x``.

    Returns:
        ``metric`` rows of both suites with ``label`` (:func:`with_labels`): one line per
        backend:solver and value of the other axis, of B and of the budget where they vary
        (``jax:jacobi H=8 B=16``), so that lines of different problems are never joined.
    """
    if x not in AXIS_SUITES:
        raise ValueError(f"x must be one of {sorted(AXIS_SUITES)}, got {x!r}")
    other = "hidden_size" if x == "seq_len" else "seq_len"
    rows = frame[frame["group"].isin((AXIS_SUITES[x], PRODUCT_GROUP)) & frame["metric"].eq(metric)]
    return with_labels(rows, ("max_iters", other, "batch"))


BUDGET_GROUP = "Budget"


def budget_errors(frame: pd.DataFrame) -> pd.DataFrame:
    """The error against the iteration budget k of the solves ``Budget`` timed: each
    ``Budget.time_solve`` row with ``value`` = the max |error| against the exact float64
    states its correctness gate measured (``max_abs_error``, from the sweep's log), as
    ``metric`` ``track_max_abs_error`` (unit ``abs error``), the rows the accuracy figure
    draws beside the bound ρᵏ (``figures.accuracy``; its problem's ρ is the ``contraction``
    column). A timed row whose error was not recorded (no sweep log beside the results) is a
    gap (n/a, with the reason); a gap stays one.

    Returns:
        The rows with ``label`` (:func:`with_labels`, no extra parameter: k is the x axis).
    """
    rows = frame[frame["group"].eq(BUDGET_GROUP) & frame["metric"].eq("time_solve")].copy()
    if "max_abs_error" not in rows:
        rows["max_abs_error"] = np.nan
    unknown = rows["status"].eq("ok") & rows["max_abs_error"].isna()
    rows.loc[unknown, "status"] = "n/a"
    rows.loc[unknown, "reason"] = (
        "the gate's error was not recorded (no `fpbench sweep` log with the results)"
    )
    rows["value"] = rows["max_abs_error"].where(rows["status"].eq("ok"))
    rows = rows.assign(metric="track_max_abs_error", type="track", unit="abs error", q25=np.nan, q75=np.nan)
    return with_labels(rows, ())


def value_range(values: pd.Series) -> str:
    """``1024–4096`` (or one value) of the measured values of one axis."""
    v = sorted(set(values.dropna()))
    if not v:
        return fmt.MISSING
    return fmt_num(v[0]) if len(v) == 1 else f"{fmt_num(v[0])}–{fmt_num(v[-1])}"


def _wins_text(g: pd.DataFrame) -> str:
    """Crossover T per (H, B) of one solver: its best backend at each point against the best baseline."""
    best = g.sort_values("speedup", ascending=False).groupby(["seq_len", "hidden_size", "batch"]).head(1)
    parts = []
    for (h, b), per in best.groupby(["hidden_size", "batch"], sort=True):
        per = per.sort_values("seq_len")
        wins = per[per["speedup"] > 1]
        if wins.empty:
            continue
        t0 = wins["seq_len"].min()
        stays = bool((per[per["seq_len"] >= t0]["speedup"] > 1).all())
        parts.append(
            f"H={fmt_num(h)}, B={fmt_num(b)}: T ≥ {fmt_num(t0)}"
            + ("" if stays else " (not at every larger T)")
        )
    return "; ".join(parts) if parts else "nowhere measured"


def headline(sp: pd.DataFrame) -> pd.DataFrame:
    """The answer, one row per (machine, device, cell, parallel solver): where it beats the
    best sequential baseline (crossover T per H and B, over every family of suites), its best
    measured speedup with the backend, point, baseline and the error of that solve (the
    correctness gate passed, or there would be no number), and how many points it won."""
    cols = [
        "machine",
        "device",
        "cell",
        "solver",
        "wins",
        "points won",
        "best speedup",
        "backend",
        "at (T, H, B)",
        "max |error| vs exact",
        "baseline",
        "measured",
    ]
    rows = []
    ok = sp[sp["status"].eq("ok") & sp["speedup"].notna()]
    for (machine, device, cell, solver), g in ok.groupby(["machine", "device", "cell", "solver"], sort=True):
        top = g.loc[g["speedup"].idxmax()]
        err = top.get("max_abs_error", math.nan)
        won = g[g["speedup"] > 1][["seq_len", "hidden_size", "batch", "family"]].drop_duplicates()
        points = g[["seq_len", "hidden_size", "batch", "family"]].drop_duplicates()
        rows.append(
            {
                "machine": machine,
                "device": device,
                "cell": cell,
                "solver": solver,
                "wins": _wins_text(g),
                "points won": f"{len(won)} of {len(points)}",
                "best speedup": top["speedup"],
                "backend": top["backend"],
                "at (T, H, B)": "("
                + ", ".join(fmt_num(top[c]) for c in ("seq_len", "hidden_size", "batch"))
                + ")",
                "max |error| vs exact": err,
                "baseline": top["baseline"],
                "measured": measured(g),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def measured(g: pd.DataFrame) -> str:
    """``T 1024–4096, H 2–16, B 16``: the measured range of each axis of the rows ``g``."""
    return f"T {value_range(g['seq_len'])}, H {value_range(g['hidden_size'])}, B {value_range(g['batch'])}"


def verdict(head: pd.DataFrame, sp: pd.DataFrame, machine: str, device: str, cell: str) -> str:
    """The answer for one (machine, device, cell), in a sentence generated from the data:
    which parallel solvers beat the best sequential baseline, where, by how much and at what
    error (the one its correctness gate measured)."""
    h = head[(head["machine"] == machine) & (head["device"] == device) & (head["cell"] == cell)]
    g = sp[(sp["machine"] == machine) & (sp["device"] == device) & (sp["cell"] == cell)]
    lead = f"**`{machine}`, {device}, {cell}** (measured {measured(g)}): "
    if h.empty:
        return lead + "no parallel solve and sequential baseline were both measured here: no verdict."

    def err(v: float) -> str:
        return "error not recorded, gate passed" if pd.isna(v) else f"max error {fmt.error(v)}, gate passed"

    winners = h[h["best speedup"] > 1].sort_values("best speedup", ascending=False)
    if winners.empty:
        top = h.sort_values("best speedup", ascending=False).iloc[0]
        text = (
            "**no parallel solver beats the best sequential baseline anywhere measured.** The closest is "
            f"{top['solver']} on {top['backend']}: {fmt.speedup(top['best speedup'])} at (T, H, B) = "
            f"{top['at (T, H, B)']} ({err(top['max |error| vs exact'])}), against {top['baseline']}."
        )
    else:
        parts = [
            f"**{r['solver']}** wins at {r['points won']} points ({r['wins']}), best "
            f"{fmt.speedup(r['best speedup'])} on {r['backend']} at (T, H, B) = {r['at (T, H, B)']} "
            f"({err(r['max |error| vs exact'])})"
            for _, r in winners.iterrows()
        ]
        losers = sorted(set(h["solver"]) - set(winners["solver"]))
        text = "**a parallel solver beats the best sequential baseline here:** " + "; ".join(parts) + "."
        if losers:
            text += f" {', '.join(losers)} never win{'s' if len(losers) == 1 else ''} in this range."
    failed = int(g["status"].eq("failed").sum())
    if failed:
        text += f" {failed} timed combination(s) failed their correctness gate and have no number."
    return lead + text
