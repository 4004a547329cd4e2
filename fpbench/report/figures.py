"""The report's seaborn figures. Each function returns a matplotlib Figure, or None when the
frame holds nothing to draw; it never raises on gaps (missing points are simply absent,
failed correctness gates are drawn as red crosses on the x axis, never as numbers)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .analysis import contraction_bound, fmt_num

AXIS_LABEL = {
    "seq_len": "sequence length T",
    "hidden_size": "hidden size H",
    "max_iters": "iteration budget k",
    "contraction": "contraction ρ = ‖W_hh‖₂",
}

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


_STYLES = [(ls, m) for m in ("o", "s", "^", "D", "v", "P") for ls in ("-", "--", ":", "-.")]


def _styles(labels: list[str]) -> dict[str, dict]:
    """Line style per ``backend:solver`` label: colour by backend, dash and marker by solver
    (so a dozen lines stay tellable apart)."""
    backends = sorted({lab.split(":", 1)[0] for lab in labels})
    solvers = sorted({lab.split(":", 1)[-1] for lab in labels})
    colours = dict(zip(backends, sns.color_palette("tab10", n_colors=max(len(backends), 1)), strict=False))
    dash = {sol: _STYLES[i % len(_STYLES)] for i, sol in enumerate(solvers)}
    return {
        lab: {
            "color": colours[lab.split(":", 1)[0]],
            "ls": dash[lab.split(":", 1)[-1]][0],
            "marker": dash[lab.split(":", 1)[-1]][1],
        }
        for lab in labels
    }


def _facets(df: pd.DataFrame, row: str, col: str) -> tuple[list, list]:
    rows = sorted(df[row].dropna().unique()) or [None]
    cols = sorted(df[col].dropna().unique()) or [None]
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
            ax.set_title(" · ".join(f"{k}={v}" for k, v in ((row, r), (col, c)) if v is not None))
            ax.set_xlabel(AXIS_LABEL.get(x, x))
            ax.set_ylabel(ylabel if j == 0 else "")
    return _finish(fig, axes, handles, title)


def speedup_heatmaps(sp: pd.DataFrame, crossings: pd.DataFrame, title: str) -> Figure | None:
    """Speedup over the best sequential baseline on a (H, T) grid, one panel per label.

    Colour is log2(speedup) centred at 1× (red: the parallel solver wins); each cell is
    annotated with the speedup, ``failed`` for a failed gate, empty for no measurement.
    The crossover (smallest T that wins) of every H row is outlined in black.
    """
    data = sp.dropna(subset=["seq_len", "hidden_size"])
    if data["speedup"].notna().sum() == 0:
        return None
    labels = sorted(data["label"].unique())
    ts = sorted(data["seq_len"].unique())
    hs = sorted(data["hidden_size"].unique())
    lim = max(1.0, float(np.nanmax(np.abs(np.log2(data["speedup"].dropna())))))
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
    ncols = min(3, len(labels))
    nrows = -(-len(labels) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(1.1 * len(ts) * ncols + 3.0, 0.7 * len(hs) * nrows + 2.0),
        squeeze=False,
        layout="constrained",
    )
    for ax, label in zip(axes.flat, labels, strict=False):
        g = data[data["label"] == label]
        speed = g.pivot_table(index="hidden_size", columns="seq_len", values="speedup", aggfunc="median")
        speed = speed.reindex(index=hs, columns=ts)
        status = g.pivot_table(index="hidden_size", columns="seq_len", values="status", aggfunc="first")
        status = status.reindex(index=hs, columns=ts)
        notes = np.where(
            speed.notna(),
            speed.map(lambda v: f"{v:.2g}×" if pd.notna(v) else ""),
            status.map(lambda s: "failed" if s == "failed" else ""),
        )
        sns.heatmap(
            np.log2(speed.astype(float)),
            ax=ax,
            cmap="RdBu_r",
            norm=norm,
            annot=notes,
            fmt="",
            cbar=False,
            linewidths=0.5,
            linecolor="white",
            xticklabels=[fmt_num(t) for t in ts],
            yticklabels=[fmt_num(h) for h in hs],
        )
        for (i, j), s in np.ndenumerate(status.to_numpy()):
            if s == "failed":
                ax.add_patch(Rectangle((j, i), 1, 1, fill=False, hatch="//", edgecolor="red", lw=0))
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
        ax.set_title(label)
        ax.set_xlabel(AXIS_LABEL["seq_len"])
        ax.set_ylabel(AXIS_LABEL["hidden_size"])
    for ax in list(axes.flat)[len(labels) :]:
        ax.set_visible(False)
    mappable = plt.cm.ScalarMappable(norm=norm, cmap="RdBu_r")
    bar = fig.colorbar(mappable, ax=axes, shrink=0.8, label="log₂ speedup (0 = break-even)")
    bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{2**v:.2g}×"))
    fig.suptitle(title + "\n(black outline: crossover, the smallest T that wins; hatched: failed gate)")
    return fig


def speedup_lines(sp: pd.DataFrame, title: str) -> Figure | None:
    """Speedup against T, one line per label, one panel per H (the grid has no (T, H)
    product to draw a heatmap from); the dashed line is break-even."""
    data = sp.dropna(subset=["seq_len"]).assign(
        value=sp["speedup"], q25=np.nan, q75=np.nan, H=sp["hidden_size"].map(fmt_num)
    )
    fig = lines(data, "seq_len", "speedup over best sequential (×)", title, row="cell", col="H")
    if fig is not None:
        for ax in fig.axes:
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
    fig = lines(data, "max_iters", "max |error| vs exact", title, logx=False, row="cell", col="ρ")
    if fig is None:
        return None
    axes = [a for a in fig.axes if a.get_title()]
    for ax in axes:
        parts = dict(p.split("=", 1) for p in ax.get_title().split(" · "))
        if parts.get("cell") != "elman" or "ρ" not in parts:
            continue
        rho = float(parts["ρ"])
        k = np.linspace(0, max(1.0, ax.get_xlim()[1]), 100)
        ax.plot(k, contraction_bound(k, rho), color="black", ls="--", lw=1.2)
        ax.text(
            0.97, 0.95, "dashed: bound ρᵏ", ha="right", va="top", transform=ax.transAxes, fontsize="small"
        )
    return fig


def iterations(it: pd.DataFrame, title: str) -> Figure | None:
    """Iterations to reach the tolerance against the contraction ρ."""
    return lines(it, "contraction", "iterations to tolerance", title, logx=False, logy=False, row="device")


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
