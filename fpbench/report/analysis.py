"""Derived tables of the report: speedups, crossovers, backend comparisons, gaps.

All functions take the tidy frame of :mod:`.load` (or a slice of it) and return new
frames; none plots. ``label`` is ``backend:solver`` (plus any parameter that still varies,
e.g. ``k=16``), the line identity in every figure.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .load import BASELINES

SOLVE_GROUPS = ("SeqLen", "Hidden")
"""asv classes whose ``time_solve``/``peakmem_solve`` sweep T and H (the contract)."""

POINT = ["machine", "commit", "device", "cell", "seq_len", "hidden_size"]
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


def solve_rows(frame: pd.DataFrame, metric: str = "time_solve") -> pd.DataFrame:
    """``metric`` rows of the T and H sweeps, one per (point, backend, solver, budget):
    where both sweeps measured the same point the median of the two is kept."""
    rows = frame[frame["group"].isin(SOLVE_GROUPS) & (frame["metric"] == metric)]
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

    The full bound (DESIGN §1) is ρ^k · max_t ‖h_{t−k}‖, and ‖h‖ ≤ √H for tanh states.
    """
    return np.power(float(rho), np.asarray(k, dtype=float))
