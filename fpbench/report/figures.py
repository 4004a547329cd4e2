"""The report's seaborn figures. Each function returns a matplotlib Figure, or None when the
frame holds nothing to draw; it never raises on gaps (missing points are simply absent,
failed correctness gates are drawn as red crosses on the x axis, never as numbers)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import itertools
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import fmt
from .analysis import contraction_bound
from .fmt import number as fmt_num

AXIS_LABEL = {
    "batch": "batch size B",
    "seq_len": "sequence length T",
    "hidden_size": "hidden size H",
    "max_iters": "iteration budget k",
    "contraction": "contraction ρ = ‖W_hh‖₂",
}

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


BACKEND_COLOURS: dict[str, str] = {
    "numpy": "#7f7f7f",
    "torch": "#d62728",
    "jax": "#1f77b4",
    "numba": "#2ca02c",
}
"""One colour per backend in every figure (others get a stable colour from :data:`_SPARE`)."""

SOLVER_STYLES: dict[str, tuple[str, str]] = {
    "sequential": (":", "o"),
    "native": ("--", "s"),
    "jacobi": ("-", "^"),
    "newton": ("-", "D"),
    "quasi_newton": ("-.", "v"),
    "elk": ("-", "P"),
    "quasi_elk": ("-.", "X"),
    "chunked_p2_o64": ("-", "*"),
    "chunked_p8_o64": ("--", "*"),
    "chunked_p64_o16": (":", "*"),
    "chunked_p8_o256": ("-.", "*"),
}
"""One (line style, marker) per solver in every figure (the Chunked configurations share a
star)."""

_SPARE = ["#bcbd22", "#17becf", "#e377c2", "#8c564b", "#9467bd", "#ff7f0e"]
_SPARE_STYLES = [("-", "h"), ("--", "*"), (":", "p"), ("-.", "<")]


def _stable(name: str, n: int) -> int:
    return sum(name.encode()) % n


def backend_colour(backend: str) -> str:
    return BACKEND_COLOURS.get(backend) or _SPARE[_stable(backend, len(_SPARE))]


def solver_style(solver: str) -> tuple[str, str]:
    return SOLVER_STYLES.get(solver) or _SPARE_STYLES[_stable(solver, len(_SPARE_STYLES))]


def _styles(labels: list[str]) -> dict[str, dict]:
    """Line style per ``backend:solver`` label (a suffix such as `` k=16`` may follow): colour
    by backend, dash and marker by solver, the same in every figure of every report."""
    out = {}
    variants: dict[str, int] = {}
    for lab in sorted(labels):
        backend, _, rest = lab.partition(":")
        solver = rest.split(" ", 1)[0] or backend
        ls, marker = solver_style(solver)
        base = f"{backend}:{solver}"
        n = variants[base] = variants.get(base, -1) + 1  # same backend:solver, another k / H / T
        if n:
            ls = ("-", "--", ":", "-.")[n % 4]
        out[lab] = {
            "color": backend_colour(backend),
            "ls": ls,
            "marker": marker,
            "alpha": 1.0 - 0.25 * (n % 3),
        }
    return out


def plain_log_labels(ax: Any) -> None:
    """Label ``ax``'s log y axis with plain numbers (:func:`.fmt.number`: ``0.1``, ``1``,
    ``10``), not matplotlib's mathtext, which the report renders as raw text
    (``text.parse_math`` is off); its minor ticks are labelled only where the axis spans
    less than a decade (no major tick may show there)."""

    def minor(v: float, _: Any) -> str:
        lo, hi = sorted(ax.get_ylim())
        return fmt_num(v) if lo > 0 and hi / lo < 10 else ""

    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt_num(v)))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(minor))


def _order(values: list, key: str) -> list:
    """Facet order: solvers in :data:`SOLVER_STYLES` order (baselines first), others sorted."""
    if key != "solver":
        return values
    known = list(SOLVER_STYLES)
    return sorted(values, key=lambda v: (known.index(v) if v in known else len(known), str(v)))


def _facets(df: pd.DataFrame, row: str, col: str) -> tuple[list, list]:
    rows = _order(sorted(df[row].dropna().unique()), row) or [None]
    cols = _order(sorted(df[col].dropna().unique()), col) or [None]
    return rows, cols


def _grid(n_rows: int, n_cols: int, height: float = 3.2, width: float = 4.2) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(width * n_cols + 1.8, height * n_rows), squeeze=False, sharey="row"
    )
    return fig, axes


def _finish(fig: Figure, axes: np.ndarray, handles: dict, title: str) -> Figure:
    if handles:
        fig.legend(
            list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False
        )
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def lines(
    df: pd.DataFrame,
    x: str,
    ylabel: str,
    title: str,
    scale: float = 1.0,
    logx: bool = True,
    logy: bool = True,
    row: str = "device",
    col: str = "cell",
) -> Figure | None:
    """Median (line) and interquartile range (band) of ``value`` against ``x``, one line per
    ``label``, faceted by ``row`` × ``col``.

    Args:
        df: tidy rows with columns ``x``, ``label``, ``value``, ``q25``, ``q75``, ``status``, row, col.
        scale: multiplies values (e.g. 1e3 for milliseconds).
    """
    df = df[df[x].notna()]
    ok = df[df["status"].eq("ok")]
    if ok.empty:
        return None
    df = df[df[row].isin(ok[row].unique()) & df[col].isin(ok[col].unique())]
    rows, cols = _facets(ok, row, col)
    styles = _styles(sorted(df["label"].unique()))
    fig, axes = _grid(len(rows), len(cols))
    handles: dict = {}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            panel = df[(df[row] == r) & (df[col] == c)]
            for label, g in panel.groupby("label", sort=True):
                good = g[g["status"].eq("ok")].sort_values(x)
                xs = good[x].astype(float)
                if not good.empty:
                    (h,) = ax.plot(xs, good["value"] * scale, label=label, **styles[label])
                    handles.setdefault(label, h)
                    if good["q25"].notna().any():
                        band = (good["q25"] * scale, good["q75"] * scale)
                        ax.fill_between(xs, *band, color=styles[label]["color"], alpha=0.15, lw=0)
                bad = g[g["status"].eq("failed")]
                if not bad.empty:
                    h = ax.scatter(
                        bad[x].astype(float),
                        np.full(len(bad), 0.03),
                        transform=ax.get_xaxis_transform(),
                        marker="x",
                        color="red",
                        s=50,
                        zorder=5,
                    )
                    handles.setdefault("failed (correctness gate / error)", h)
            if logx:
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt_num(v)))
            if logy:
                ax.set_yscale("log")
                plain_log_labels(ax)
            ax.set_title(" · ".join(f"{k}={v}" for k, v in ((row, r), (col, c)) if v is not None))
            ax.set_xlabel(AXIS_LABEL.get(x, x))
            ax.set_ylabel(ylabel if j == 0 else "")
    return _finish(fig, axes, handles, title)


def speedup_heatmaps(sp: pd.DataFrame, crossings: pd.DataFrame, title: str) -> Figure | None:
    """Speedup over the best sequential baseline on the (T, H) grid: one panel per backend
    (columns) and parallel solver (rows).

    Colour is log2(speedup) centred at 1× (red: the parallel solver wins); each cell is
    annotated with the speedup, ``failed`` for a failed gate, empty for no measurement. The
    solid black line is the break-even contour (speedup = 1, interpolated between measured
    cells); the black box in each H row is the crossover, the smallest T that wins.
    """
    data = sp.dropna(subset=["seq_len", "hidden_size"])
    if data["speedup"].notna().sum() == 0:
        return None
    data = data[data.groupby(["backend", "solver"])["speedup"].transform(lambda v: v.notna().any())]
    backends = sorted(data["backend"].unique())
    solvers, ts, hs, norm = _heat_grid(data)
    fig, axes = plt.subplots(
        len(solvers),
        len(backends),
        figsize=(1.0 * len(ts) * len(backends) + 2.5, 0.6 * len(hs) * len(solvers) + 1.6 * len(solvers)),
        squeeze=False,
        layout="constrained",
    )
    for (i, solver), (j, backend) in itertools.product(enumerate(solvers), enumerate(backends)):
        ax = axes[i, j]
        g = data[(data["backend"] == backend) & (data["solver"] == solver)]
        if g.empty:
            ax.set_visible(False)
            continue
        speed = g.pivot_table(index="hidden_size", columns="seq_len", values="speedup", aggfunc="median")
        speed = speed.reindex(index=hs, columns=ts).astype(float)
        status = g.pivot_table(index="hidden_size", columns="seq_len", values="status", aggfunc="first")
        status = status.reindex(index=hs, columns=ts)
        notes = np.where(
            speed.notna(),
            speed.map(lambda v: fmt.speedup(v) if pd.notna(v) else ""),
            status.map(lambda s: "failed" if s == "failed" else ""),
        )
        _speedup_panel(ax, speed, status, notes, norm)
        label = f"{backend}:{solver}"
        cross = crossings[crossings["label"] == label].dropna(subset=["crossover_T"])
        for _, c in cross.iterrows():
            if c["hidden_size"] in hs and c["crossover_T"] in ts:
                ax.add_patch(
                    Rectangle(
                        (ts.index(c["crossover_T"]), hs.index(c["hidden_size"])),
                        1,
                        1,
                        fill=False,
                        edgecolor="black",
                        lw=2.5,
                    )
                )
        ax.invert_yaxis()
        ax.grid(False)
        ax.set_title(label, color=backend_colour(backend))
        ax.set_xlabel(AXIS_LABEL["seq_len"] if i == len(solvers) - 1 else "")
        ax.set_ylabel(AXIS_LABEL["hidden_size"] if j == 0 else "")
    mappable = plt.cm.ScalarMappable(norm=norm, cmap="RdBu_r")
    bar = fig.colorbar(mappable, ax=axes, shrink=0.8, label="speedup (log scale; white = break-even)")
    bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt.speedup(2**v)))
    fig.suptitle(
        title + "\n(black line: break-even contour, speedup = 1; black box: crossover T per H; "
        "hatched: failed gate)"
    )
    return fig


def _heat_grid(data: pd.DataFrame) -> tuple[list, list, list, TwoSlopeNorm]:
    """``(solvers, ts, hs, norm)`` of a speedup heatmap of ``data``: its solvers in the
    report's solver order, its T and H values, and the colour scale of log2(speedup)
    centred at 1x and symmetric about it."""
    solvers = sorted(
        data["solver"].unique(), key=lambda v: (list(SOLVER_STYLES).index(v) if v in SOLVER_STYLES else 99, v)
    )
    ts = sorted(data["seq_len"].unique())
    hs = sorted(data["hidden_size"].unique())
    lim = max(1.0, float(np.nanmax(np.abs(np.log2(data["speedup"].dropna())))))
    return solvers, ts, hs, TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)


def _speedup_panel(
    ax, speed: pd.DataFrame, status: pd.DataFrame, notes: np.ndarray, norm: TwoSlopeNorm, **heatmap: Any
) -> None:
    """One (H rows x T columns) panel of a speedup heatmap on ``ax``: log2(``speed``)
    coloured by ``norm`` and annotated with ``notes``, a failed gate (``status``, no speedup)
    hatched red, and the break-even contour where the panel has both signs."""
    log_speed = np.log2(speed)
    sns.heatmap(
        log_speed,
        ax=ax,
        cmap="RdBu_r",
        norm=norm,
        annot=notes,
        fmt="",
        cbar=False,
        linewidths=0.5,
        linecolor="white",
        xticklabels=[fmt_num(t) for t in speed.columns],
        yticklabels=[fmt_num(h) for h in speed.index],
        **heatmap,
    )
    for (r, c), st in np.ndenumerate(status.to_numpy()):
        if st == "failed" and pd.isna(speed.to_numpy()[r, c]):
            ax.add_patch(Rectangle((c, r), 1, 1, fill=False, hatch="//", edgecolor="red", lw=0))
    values = log_speed.to_numpy()
    finite = values[np.isfinite(values)]
    rows, cols = values.shape
    if cols >= 2 and rows >= 2 and finite.size and finite.min() < 0 < finite.max():
        xs, ys = np.arange(cols) + 0.5, np.arange(rows) + 0.5
        ax.contour(xs, ys, np.ma.masked_invalid(values), levels=[0.0], colors="black", linewidths=2)


def best_backend(sp: pd.DataFrame) -> pd.DataFrame:
    """Per parallel solver and point (T, H, B): the row of its fastest backend (highest
    speedup); a point where no backend has a speedup keeps one row (a failed gate stays
    ``failed``)."""
    keys = ["solver", "seq_len", "hidden_size", "batch"]
    data = sp.assign(_rank=sp["speedup"].fillna(-np.inf))
    return (
        data.sort_values("_rank", ascending=False).groupby(keys, dropna=False).head(1).drop(columns="_rank")
    )


def headline_heatmap(sp: pd.DataFrame, title: str) -> Figure | None:
    """The headline figure: one panel per parallel solver, the (T, H) grid coloured by the
    speedup of the solver's fastest backend over the best sequential baseline (log scale,
    white at 1×, red: the parallel solve wins), each cell annotated with that speedup and
    the backend; the black line is the break-even contour, hatched cells failed their gate.
    Where the points are not a (T, H) grid (one T or one H), the panel is a one-row grid."""
    data = best_backend(sp.dropna(subset=["seq_len", "hidden_size"]))
    if data["speedup"].notna().sum() == 0:
        return None
    solvers, ts, hs, norm = _heat_grid(data)
    fig, axes = plt.subplots(
        1,
        len(solvers),
        figsize=(1.05 * len(ts) * len(solvers) + 2.2, 0.55 * len(hs) + 1.6),
        squeeze=False,
        layout="constrained",
    )
    for j, solver in enumerate(solvers):
        ax = axes[0, j]
        g = data[data["solver"] == solver]
        speed = g.pivot_table(index="hidden_size", columns="seq_len", values="speedup", aggfunc="max")
        speed = speed.reindex(index=hs, columns=ts).astype(float)
        backend = g.pivot_table(index="hidden_size", columns="seq_len", values="backend", aggfunc="first")
        backend = backend.reindex(index=hs, columns=ts)
        status = g.pivot_table(index="hidden_size", columns="seq_len", values="status", aggfunc="first")
        status = status.reindex(index=hs, columns=ts)
        notes = np.empty(speed.shape, dtype=object)
        for (r, c), v in np.ndenumerate(speed.to_numpy()):
            st = status.to_numpy()[r, c]
            notes[r, c] = (
                f"{fmt.speedup(v)}\n{backend.to_numpy()[r, c]}"
                if pd.notna(v)
                else ("failed" if st == "failed" else "")
            )
        _speedup_panel(ax, speed, status, notes, norm, annot_kws={"fontsize": "small"})
        ax.invert_yaxis()
        ax.grid(False)
        ax.tick_params(axis="y", labelrotation=0)
        ax.set_title(solver)
        ax.set_xlabel(AXIS_LABEL["seq_len"])
        ax.set_ylabel(AXIS_LABEL["hidden_size"] if j == 0 else "")
    mappable = plt.cm.ScalarMappable(norm=norm, cmap="RdBu_r")
    bar = fig.colorbar(mappable, ax=axes, shrink=0.9, label="speedup (log scale)")
    bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt.speedup(2**v)))
    fig.suptitle(title)
    return fig


def speedup_lines(sp: pd.DataFrame, title: str) -> Figure | None:
    """Speedup against T, one line per label, one panel per H (the grid has no (T, H)
    product to draw a heatmap from); the dashed line is break-even."""
    data = sp.dropna(subset=["seq_len"]).assign(
        value=sp["speedup"], q25=np.nan, q75=np.nan, H=sp["hidden_size"].map(fmt_num)
    )
    fig = lines(data, "seq_len", "speedup over best sequential (×)", title, row="H", col="solver")
    if fig is not None:
        for ax in fig.axes:
            ax.axhline(1.0, color="black", ls="--", lw=1)
    return fig


def speedup_batch(sp: pd.DataFrame, title: str) -> Figure | None:
    """Speedup against the batch size B, one panel per cell and parallel solver, one line per
    backend; the dashed line is break-even."""
    return speedup_against(sp, "batch", title, row="cell", col="solver")


def speedup_against(sp: pd.DataFrame, x: str, title: str, row: str, col: str) -> Figure | None:
    """Speedup (``sp``: :func:`.analysis.speedups` rows) against ``x``, faceted by ``row`` ×
    ``col``, one line per label; the dashed line is break-even."""
    data = sp.dropna(subset=[x]).assign(value=sp["speedup"], q25=np.nan, q75=np.nan)
    fig = lines(data, x, "speedup over best sequential (×)", title, row=row, col=col)
    if fig is not None:
        for ax in fig.axes:
            if ax.get_title():
                ax.axhline(1.0, color="black", ls="--", lw=1)
    return fig


def accuracy(acc: pd.DataFrame, title: str) -> Figure | None:
    """Max abs error against the iteration budget k (log y), per contraction ρ, with the
    Jacobi bound ρ^k for elman (the bound up to the state-norm factor max‖h‖)."""
    data = acc[pd.to_numeric(acc["max_iters"], errors="coerce").notna()].copy()
    data["max_iters"] = data["max_iters"].astype(float)
    data["ρ"] = data["contraction"].map(fmt_num)
    # log axis: an exact answer (error 0) is drawn at the float64 rounding floor
    data["value"] = data["value"].clip(lower=1e-16)
    fig = lines(data, "max_iters", "max |error| vs exact", title, logx=False, row="ρ", col="solver")
    if fig is None:
        return None
    cells = set(data["cell"].dropna())
    axes = [a for a in fig.axes if a.get_title()]
    for ax in axes:
        parts = dict(p.split("=", 1) for p in ax.get_title().split(" · "))
        if cells != {"elman"} or "ρ" not in parts:
            continue
        rho = float(parts["ρ"])
        k = np.linspace(0, max(1.0, ax.get_xlim()[1]), 100)
        ax.plot(k, contraction_bound(k, rho), color="black", ls="--", lw=1.2)
        ax.text(
            0.97, 0.95, "dashed: bound ρᵏ", ha="right", va="top", transform=ax.transAxes, fontsize="small"
        )
    return fig


def overlap_accuracy(acc: pd.DataFrame, title: str) -> Figure | None:
    """Max abs error against Chunked's overlap (log y), per contraction ρ, with the bound
    ρ^(overlap+1) for elman (up to the state-norm factor max‖h‖)."""
    data = acc.assign(
        overlap=pd.to_numeric(acc["overlap"], errors="coerce"), ρ=acc["contraction"].map(fmt_num)
    )
    data["value"] = data["value"].clip(lower=1e-16)
    fig = lines(data, "overlap", "max |error| vs exact", title, logx=False, row="ρ", col="cell")
    if fig is None:
        return None
    for ax in (a for a in fig.axes if a.get_title()):
        parts = dict(p.split("=", 1) for p in ax.get_title().split(" · "))
        if parts.get("cell") != "elman" or "ρ" not in parts:
            continue
        o = np.linspace(0, max(1.0, ax.get_xlim()[1]), 100)
        ax.plot(o, contraction_bound(o + 1, float(parts["ρ"])), color="black", ls="--", lw=1.2)
        ax.text(
            0.97,
            0.95,
            "dashed: ρ^(overlap+1)",
            ha="right",
            va="top",
            transform=ax.transAxes,
            fontsize="small",
        )
    return fig


def iterations(it: pd.DataFrame, title: str) -> Figure | None:
    """Iterations to reach the tolerance against the contraction ρ."""
    return lines(
        it, "contraction", "iterations to tolerance", title, logx=False, logy=False, row="cell", col="solver"
    )


def bars(df: pd.DataFrame, x: str, ylabel: str, title: str) -> Figure | None:
    """Bar chart of ``value`` per ``x`` and backend, one panel per device (log y)."""
    ok = df[df["status"].eq("ok")]
    if ok.empty:
        return None
    grid = sns.catplot(
        data=ok,
        kind="bar",
        x=x,
        y="value",
        hue="backend",
        col="device",
        height=3.2,
        aspect=1.3,
        errorbar=None,
    )
    grid.set(yscale="log")
    grid.set_axis_labels(x, ylabel)
    grid.figure.suptitle(title)
    grid.figure.tight_layout()
    return grid.figure
