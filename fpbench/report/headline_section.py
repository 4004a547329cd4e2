"""The report's first section, the answer: where each parallel solver beats the best
sequential baseline, with its best speedup, that solve's error, and the one figure that
shows it."""

from __future__ import annotations

import pandas as pd

from . import analysis, figures, fmt
from .figure_files import FigureFiles
from .load import BASELINES
from .page import Image, Section, Table, Text


def _fmt_error(v: float) -> str:
    return "not recorded" if pd.isna(v) else fmt.error(v)


HEADLINE_FAMILIES = ("T x H product", "T and H sweeps", "batch")
"""Which family of suites (:data:`.analysis.SPEEDUP_FAMILIES`) draws the headline figure:
the first one measured."""


def _headline_figures(sp: pd.DataFrame, figs: FigureFiles) -> list[Image]:
    """The one figure that shows the answer, per machine, device and cell: the best backend's
    speedup of each parallel solver over (T, H) (:func:`.figures.headline_heatmap`), from
    the first family of :data:`HEADLINE_FAMILIES` measured there."""
    blocks: list[Image] = []
    measured = sp[sp["status"].isin(["ok", "failed"])]
    for (machine, device, cell), g in measured.groupby(["machine", "device", "cell"], sort=True):
        family = next((f for f in HEADLINE_FAMILIES if g["family"].eq(f).any()), None)
        if family is None:
            continue
        g = g[g["family"].eq(family)]
        batch = analysis.value_range(g["batch"])
        title = f"Best speedup over the best sequential baseline — {machine}, {device}, {cell}, B = {batch}"
        blocks += figs.add(
            f"headline-{machine}-{device}-{cell}",
            figures.headline_heatmap(g, title),
            f"Where each parallel solver wins ({family}): at each (T, H), the speedup of its fastest "
            "backend (named under the number) over the fastest sequential baseline of any backend; red: "
            "the parallel solve wins, blue: it loses; black line: break-even (speedup = 1); hatched: a "
            "failed correctness gate.",
            g,
        )
    return blocks


NO_VERDICT = (
    "**No verdict**: no parallel solve and sequential baseline were both measured on the same "
    "machine and device (run `fpbench sweep`, whose default grid `main` measures both over T, H and B)."
)


def solvers_line(frame: pd.DataFrame) -> str:
    """``Parallel solvers: ...; baselines: ... .`` naming only the kinds the results hold."""
    solvers = set(frame["solver"].dropna())
    parts = [
        f"{label}: {', '.join(sorted(names))}"
        for label, names in (
            ("Parallel solvers", solvers - set(BASELINES)),
            ("baselines", solvers & set(BASELINES)),
        )
        if names
    ]
    return "; ".join(parts) + ". " if parts else ""


def headline_section(frame: pd.DataFrame, figs: FigureFiles) -> Section:
    """The answer first, on the page's first screen: for each machine, device and cell, a
    verdict; per parallel solver where it beats the best sequential baseline, its best
    speedup and the error of that solve; and the one figure that shows it."""
    section = Section("Headline: where does a parallel solver beat the best sequential baseline?")
    sp = analysis.family_speedups(frame)
    ok = sp[sp["status"].eq("ok") & sp["speedup"].notna()] if not sp.empty else sp
    if ok.empty:  # not drawn, unless the page would have nothing else (build_report)
        return section
    head = analysis.headline(sp)
    for (machine, device, cell), _ in head.groupby(["machine", "device", "cell"], sort=True):
        section.blocks.append(Text(analysis.verdict(head, sp, machine, device, cell)))
    shown = head.assign(
        **{
            "best speedup": head["best speedup"].map(fmt.speedup),
            "max |error| vs exact (gate passed)": head["max |error| vs exact"].map(_fmt_error),
            "wins where (crossover T per H, B)": head["wins"],
            "on": head["backend"],
            "against": head["baseline"],
        }
    )
    order = [
        *(c for c in ("machine", "device", "cell") if head[c].nunique() > 1),  # else the verdict names it
        "solver",
        "wins where (crossover T per H, B)",
        "points won",
        "best speedup",
        "on",
        "at (T, H, B)",
        "max |error| vs exact (gate passed)",
        "against",
    ]
    section.blocks.append(Table(shown[order], "Where each parallel solver wins, and its best speedup"))
    section.blocks += _headline_figures(sp, figs)
    section.blocks.append(
        Text(
            "Speedup = time of the fastest sequential baseline (`sequential` or `native`, any backend) at "
            "the same machine, device and (T, H, B), divided by the parallel solver's time on its fastest "
            "backend; above 1× the parallel solve wins. Every timed solve first passed its correctness "
            "gate against the exact float64 states, and its error is the one that gate measured; a "
            "failed gate has no number."
        )
    )
    machines = sorted(head["machine"].unique())
    if len(machines) > 1:
        side = head.assign(
            value=head.apply(
                lambda r: f"{fmt.speedup(r['best speedup'])} ({r['backend']}, {r['at (T, H, B)']})", axis=1
            ),
            where=head["device"] + ", " + head["cell"] + ", " + head["solver"],
        ).pivot_table(index="where", columns="machine", values="value", aggfunc="first")
        section.blocks.append(
            Table(
                side.reset_index().rename(columns={"where": "device, cell, solver"}),
                "Machines side by side: best speedup (backend, (T, H, B))",
            )
        )
    return section


__all__ = ["HEADLINE_FAMILIES", "NO_VERDICT", "headline_section", "solvers_line"]
