"""The report's figures as files: each saved as ``figures/<name>.png`` in the output folder
and handed back as an :class:`~.page.Image` block (:class:`FigureFiles`)."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from .load import ResultSet
from .output import OutputFolder, safe_name
from .page import Image


class FigureFiles:
    """Saves figures as ``figures/<name>.png`` into the output folder and hands back
    :class:`Image` blocks; with ``name_runs`` (a report of several machines or commits)
    each caption ends naming the machine and commit of its data."""

    def __init__(self, out: OutputFolder, result: ResultSet | None, name_runs: bool = True) -> None:
        self.out = out
        self.result = result
        self.name_runs = name_runs

    def provenance(self, rows: pd.DataFrame) -> str:
        runs = rows[["machine", "commit", "date"]].drop_duplicates()
        return "; ".join(
            f"machine `{m}`, commit `{c[:8]}` ({d:%Y-%m-%d})"
            if pd.notna(d)
            else f"machine `{m}`, commit `{c[:8]}`"
            for m, c, d in runs.itertuples(index=False)
        )

    def add(self, name: str, fig: Figure | None, caption: str, rows: pd.DataFrame) -> list[Image]:
        if fig is None:
            return []
        path = f"figures/{safe_name(name)}.png"
        fig.savefig(self.out.path(path), dpi=110, bbox_inches="tight")
        plt.close(fig)
        return [Image(path, f"{caption} Data: {self.provenance(rows)}." if self.name_runs else caption)]

    def per_machine(
        self,
        name: str,
        rows: pd.DataFrame,
        make: Callable[[pd.DataFrame, str], Figure | None],
        caption: str,
        by: tuple[str, ...] = ("machine", "device"),
    ) -> list[Image]:
        """One figure per machine and device (and any other ``by`` column); its title is the
        caption's head (before the first colon)."""
        blocks: list[Image] = []
        by = tuple(c for c in by if c in rows and rows[c].notna().any())
        if rows.empty or not by:
            return blocks
        for key, g in rows.groupby(list(by), sort=True):
            key = key if isinstance(key, tuple) else (key,)
            title = f"{caption.split(':')[0]} — {', '.join(map(str, key))}"
            blocks += self.add("-".join([name, *map(str, key)]), make(g, title), caption, g)
        return blocks


__all__ = ["FigureFiles"]
