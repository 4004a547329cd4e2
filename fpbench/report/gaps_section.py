"""The report's section on the combinations without a number: n/a, failed, and the
targets with no result at all, grouped by reason with a count."""

from __future__ import annotations

import pandas as pd

from . import fmt
from .page import Details, Image, Section, Table, Text

DEFAULT_NA = "not available here (NotImplementedError in setup)"
"""The reason of an n/a combination whose setup said nothing more (:mod:`.load`)."""


def measurement_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that are measurements: all but the ``Settings`` suite's (what the benchmark
    processes saw, shown in the provenance)."""
    return frame[~frame["group"].eq("Settings")]


def absent_targets(frame: pd.DataFrame) -> pd.DataFrame:
    """Per machine, the targets (``backend:device``) with no result at all there: every
    combination n/a for want of the framework or the device (a GPU target on a machine
    without one), or because the sweep skipped the target. Columns ``machine, target,
    count``."""
    rows = frame[frame["target"].notna()]
    if rows.empty:
        return pd.DataFrame(columns=["machine", "target", "count"])
    plain = rows["status"].eq("n/a") & rows["reason"].fillna(DEFAULT_NA).isin([DEFAULT_NA, ""])
    per = rows.assign(_plain=plain).groupby(["machine", "target"], sort=True)
    out = per.agg(all_plain=("_plain", "all"), count=("_plain", "size")).reset_index()
    return out[out["all_plain"]][["machine", "target", "count"]]


def _short_benchmark(name: str) -> str:
    """``bench_grad.GradSeqLen.time_grad`` -> ``GradSeqLen.time_grad``."""
    return name.split(".", 1)[-1]


def gap_reasons(frame: pd.DataFrame) -> pd.DataFrame:
    """Every combination without a number, grouped by (machine, status, reason): how many,
    on which targets and solvers, in which benchmarks; failures first, then the largest
    groups. The targets of :func:`absent_targets` are left out (the report names them in
    one line)."""
    bad = measurement_rows(frame)
    bad = bad[~bad["status"].eq("ok")]
    absent = absent_targets(frame)
    if not absent.empty:
        gone = bad.set_index(["machine", "target"]).index.isin(absent.set_index(["machine", "target"]).index)
        bad = bad[~gone]
    if "method" in bad:  # the training suites name a method, not a solver
        bad = bad.assign(solver=bad["solver"].fillna(bad["method"]))
    cols = ["machine", "status", "reason"]
    if bad.empty:
        return pd.DataFrame(columns=[*cols, "count", "targets", "solvers", "benchmarks"])

    def names(s: pd.Series) -> str:
        return ", ".join(sorted({str(v) for v in s.dropna()})) or fmt.MISSING

    out = (
        bad.fillna({"reason": ""})
        .groupby(cols, dropna=False, sort=False)
        .agg(
            count=("params", "size"),
            targets=("target", names),
            solvers=("solver", names),
            benchmarks=("benchmark", lambda s: ", ".join(sorted({_short_benchmark(b) for b in s}))),
        )
        .reset_index()
    )
    out["_order"] = out["status"].ne("failed")
    out = out.sort_values(["_order", "machine", "count", "reason"], ascending=[True, True, False, True])
    return out.drop(columns="_order").reset_index(drop=True)


def gaps_section(frame: pd.DataFrame, skipped: list[tuple[str, str]] = ()) -> Section:
    """The combinations without a number, grouped by reason with a count: the failed ones
    shown, the n/a ones collapsed; a target with no result at all is one line per machine."""
    counts = measurement_rows(frame)["status"].value_counts()
    summary = f"{counts.get('ok', 0)} measured, {counts.get('n/a', 0)} n/a, {counts.get('failed', 0)} failed"
    blocks: list[Text | Image | Table | Details] = [
        Text(
            f"{summary}. **n/a**: the combination does not exist here (framework or device missing, "
            "solver not implemented, too large): `NotImplementedError` in setup. **failed**: the benchmark "
            "raised, e.g. its correctness gate (no speed number is reported on a failed gate), or it timed "
            "out. Both are gaps in the figures above."
        )
    ]
    for machine, g in absent_targets(frame).groupby("machine", sort=True):
        targets = ", ".join(f"`{t}`" for t in g["target"])
        blocks.append(
            Text(
                f"**No result at all on `{machine}`** for {targets}: the device or framework is not there, "
                f"or the sweep skips the target ({int(g['count'].sum())} combinations, all n/a)."
            )
        )
    if skipped:
        blocks.append(
            Text(
                f"**{len(skipped)} asv result file(s) could not be read or were skipped** (damaged, with "
                "`--skip-unreadable`; not a regular file; a duplicate of another): every result only in "
                "them is missing from this report."
            )
        )
        blocks.append(Table(pd.DataFrame(skipped, columns=["file", "why"]), "Skipped result files"))
    reasons = gap_reasons(frame)
    failed = reasons[reasons["status"].eq("failed")].drop(columns="status")
    if not failed.empty:
        blocks.append(
            Table(failed, f"Failed: {int(failed['count'].sum())} combinations, {len(failed)} reason(s)")
        )
    na = reasons[reasons["status"].eq("n/a")].drop(columns="status")
    if not na.empty:
        blocks.append(
            Details(
                f"n/a: {int(na['count'].sum())} combinations, {len(na)} reason(s)",
                [Table(na, "")],
            )
        )
    return Section("Missing, n/a and failed combinations", blocks)


__all__ = ["DEFAULT_NA", "absent_targets", "gap_reasons", "gaps_section", "measurement_rows"]
