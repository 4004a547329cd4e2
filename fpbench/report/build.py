"""``build_report``: asv results -> ``index.html``, ``summary.md``, ``results.csv``, ``figures/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib as mpl
import pandas as pd

from fpbench import grids as fpbench_grids

from . import analysis
from .accuracy_sections import accuracy_section, overlap_section
from .diag_section import diag_section
from .figure_files import FigureFiles
from .gaps_section import gaps_section, measurement_rows
from .grad_sections import grad_sections
from .headline_section import NO_VERDICT, headline_section, solvers_line
from .load import ResultSet, load_results
from .output import OutputFolder, safe_name
from .page import Details, Section, Table, Text, write_csv, write_html, write_markdown
from .provenance_section import provenance_section
from .shard_section import shard_sections
from .solve_sections import (
    backend_section,
    batch_section,
    budget_section,
    cold_section,
    memory_section,
    product_section,
    speedup_section,
    time_sections,
)

FIXED_BY_GROUP = {
    "SeqLen": {"hidden_size": "seq_lens_hidden"},
    "Hidden": {"seq_len": "hidden_seq_len"},
    "Budget": {"seq_len": "budget_seq_len", "hidden_size": "budget_hidden"},
    "Accuracy": {"seq_len": "accuracy_seq_len", "hidden_size": "accuracy_hidden"},
    "ChunkedOverlap": {"seq_len": "accuracy_seq_len", "hidden_size": "accuracy_hidden"},
    "ColdStart": {"seq_len": "cold_seq_len", "hidden_size": "cold_hidden"},
    "Product": {"batch": "product_batch"},
    "Batch": {"seq_len": "batch_seq_len", "hidden_size": "batch_hidden"},
}
"""Shape parameters a suite holds fixed, and the :class:`fpbench.grids.Grid` field giving them."""


def fill_fixed_shapes(frame: pd.DataFrame, grids: Any | None = None) -> pd.DataFrame:
    """Fill T, H and B that a suite held fixed (not an asv parameter) from the run's named
    grid in :mod:`fpbench.grids` (append-only, so a grid name keeps its values); every suite
    but ``Product`` and ``Batch`` holds B at :data:`fpbench.grids.BATCH`."""
    grids = grids if grids is not None else fpbench_grids
    frame = frame.copy()
    known = getattr(grids, "GRIDS", {})
    for group, fields in FIXED_BY_GROUP.items():
        for column, attr in fields.items():
            for grid_name, grid in known.items():
                rows = frame["group"].eq(group) & frame["grid"].eq(grid_name) & frame[column].isna()
                if rows.any() and hasattr(grid, attr):
                    frame.loc[rows, column] = float(getattr(grid, attr))
    rows = frame["group"].isin(set(FIXED_BY_GROUP) - {"Product", "Batch"}) & frame["batch"].isna()
    rows &= frame["grid"].isin(list(known))
    frame.loc[rows, "batch"] = float(getattr(grids, "BATCH", 8))
    return frame


REPORT_SUITES = (
    "Product",
    "SeqLen",
    "Hidden",
    "Budget",
    "Batch",
    "DiagNewton",
    "Accuracy",
    "ChunkedOverlap",
    "GradSeqLen",
    "GradHidden",
    "GradAccuracy",
    "GradBudget",
    "TrainSeqLen",
    "TrainHidden",
    "TrainLoss",
    "ColdStart",
    "IterationFloor",
)
"""The asv suites the report draws, in the report's order."""


def not_run_text(frame: pd.DataFrame) -> Text | None:
    """One line naming the suites of :data:`REPORT_SUITES` these results hold nothing of,
    and how to run them; None when every suite ran."""
    missing = [s for s in REPORT_SUITES if not frame["group"].eq(s).any()]
    if frame["group"].eq(analysis.PRODUCT_GROUP).any():  # its slices are the time-vs-H sweep
        missing = [s for s in missing if s != "Hidden"]
    if not missing:
        return None
    grids = sorted(set(frame["grid"].dropna().astype(str)) - {"unknown"})
    grid = f"grid `{grids[0]}`" if len(grids) == 1 else "these results"
    option = f" --grid {grids[0]}" if len(grids) == 1 and grids[0] in fpbench_grids.GRIDS else ""
    return Text(
        f"**Suites {grid} did not run**: {', '.join(f'`{s}`' for s in missing)} (their sections are left "
        "out). "
        f"Add one to these results with `fpbench sweep{option} --bench '\\.{missing[0]}\\.'` (repeat "
        "`--bench` for more), or run every suite with `fpbench sweep --grid default`."
    )


IDENTITY_COLUMNS = ("machine", "device")
"""Table columns left out when the whole report has one value of them (the subtitle names it)."""


def _compact(sections: list[Section], frame: pd.DataFrame) -> list[Section]:
    """``sections`` with the columns of :data:`IDENTITY_COLUMNS` dropped from every table
    where the report measured on one machine (one device): they would repeat it in every row."""
    measured = frame[frame["status"].eq("ok")]
    drop = [c for c in IDENTITY_COLUMNS if measured[c].dropna().nunique() <= 1]

    def compact(block: Any) -> Any:
        if isinstance(block, Table):
            return Table(block.frame.drop(columns=[c for c in drop if c in block.frame]), block.caption)
        if isinstance(block, Details):
            return Details(block.summary, [compact(b) for b in block.blocks])
        return block

    return [Section(s.title, [compact(b) for b in s.blocks]) for s in sections]


def build_report(
    results_dir: Path | str,
    out: Path | str | None = None,
    machines: list[str] | None = None,
    all_commits: bool = False,
    title: str = "fpbench: fixed-point RNN evaluation benchmarks",
    skip_unreadable: bool = False,
) -> Path:
    """Read asv results and write the comparative report.

    Every field of the results is data, never markup: it is escaped for each format, figure
    texts are plain (no mathtext), and a machine name only ever names a folder inside ``reports/``.

    Args:
        results_dir: asv results directory (``.asv/results``).
        out: output folder (created); default ``reports/<machine>`` for one machine (the name
            made a plain file name by :func:`~.output.safe_name`), else ``reports/all``. It
            must be empty, new, or hold an earlier report (:class:`~.output.OutputFolder`).
        machines: only these asv machines (default: all).
        all_commits: every commit in the tables and CSV (figures always use each machine's newest).
        skip_unreadable: skip asv result files that cannot be read, and list them in the
            report's missing section, instead of failing.

    Raises:
        ReportError: no results (:class:`~.store.ResultsNotFound`), an unknown machine, a file
            that cannot be read (named), or ``out`` is a file, cannot be created, holds files
            that are not an earlier report's, or holds a symbolic link the report would write.

    Returns:
        The output folder, holding ``index.html``, ``summary.md``, ``results.csv`` and ``figures/``.
    """
    result = load_results(
        Path(results_dir), machines=machines, all_commits=all_commits, skip_unreadable=skip_unreadable
    )
    result.frame = fill_fixed_shapes(result.frame)
    names = sorted(result.frame["machine"].unique())
    default = Path("reports") / safe_name(names[0] if len(names) == 1 else "all")
    out = Path(out) if out is not None else default
    folder = OutputFolder(out)
    write_csv(result.frame, folder.path("results.csv"))

    frame = _newest_commits(result.frame) if all_commits else result.frame
    several_runs = len(frame[["machine", "commit"]].drop_duplicates()) > 1
    figs = FigureFiles(folder, result, name_runs=several_runs)
    with mpl.rc_context({"text.parse_math": False}):  # a `$` in a machine name is text, not math
        sections = _sections(result, frame, figs)
    subtitle = _subtitle(result, frame, names)
    write_html(sections, out, title, subtitle, folder.path("index.html"))
    write_markdown(sections, title, subtitle, folder.path("summary.md"))
    folder.finish()
    return out


def _newest_commits(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of each machine's newest commit: what the figures and comparisons show when
    the tables hold every commit."""
    newest = frame.sort_values("date").groupby("machine")["commit"].transform("last")
    return frame[frame["commit"].eq(newest)]


def _sections(result: ResultSet, frame: pd.DataFrame, figs: FigureFiles) -> list[Section]:
    """The report's sections with data, in the order a reader asks in (README, "Reading the
    report"): the answer first, then the speedups, accuracy, gradients and training, costs,
    the gaps and the provenance; the suites not run named on the last line. ``frame``: the
    rows the figures show, ``result.frame``: every row (the gaps and provenance count them all)."""
    sections = [
        headline_section(frame, figs),
        product_section(frame, figs),  # the T and H sweeps
        *time_sections(frame, figs),
        speedup_section(frame, figs),
        budget_section(frame, figs),  # the budget sweep
        batch_section(frame, figs),
        diag_section(frame, figs),  # dense vs diagonal cells against H
        backend_section(frame),
        accuracy_section(frame, figs),
        overlap_section(frame, figs),
        *grad_sections(frame, figs, result.curves),  # backward, then training
        *shard_sections(frame, figs),  # the sharded solve's scaling
        memory_section(frame, figs),  # costs
        cold_section(frame, figs),
        gaps_section(result.frame, result.skipped),
        provenance_section(result, result.frame),
    ]
    headline = sections[0]
    sections = [s for s in sections if s.blocks]  # a section without data is not drawn
    if not sections:
        headline.blocks.append(Text(NO_VERDICT))
        sections = [headline]
    not_run = not_run_text(result.frame)
    if not_run is not None:  # the page's last line
        sections[-1].blocks.append(not_run)
    return _compact(sections, result.frame)


def _subtitle(result: ResultSet, frame: pd.DataFrame, names: list[str]) -> str:
    """The line under the title: an interrupted sweep first, then the machines and devices,
    the counts measured, n/a and failed, the solvers, and how to read the numbers."""
    from .store import interrupted_note  # first on the page: the results come from a stopped sweep

    counts = measurement_rows(result.frame)["status"].value_counts()
    devices = sorted(set(frame.loc[frame["status"].eq("ok"), "device"].dropna().astype(str)))
    subtitle = (
        f"{'Machine' if len(names) == 1 else 'Machines'} {', '.join(f'`{n}`' for n in names)}"
        + (f" ({', '.join(devices)})" if devices else "")
        + f": {counts.get('ok', 0)} measured, {counts.get('n/a', 0)} n/a, {counts.get('failed', 0)} failed. "
        + solvers_line(frame)
        + "Times are medians of asv's samples; shaded bands are interquartile ranges. Commit, grid, threads "
        "and versions: see Provenance."
    )
    return interrupted_note(result.sweeps) + subtitle


__all__ = ["build_report", "fill_fixed_shapes"]
