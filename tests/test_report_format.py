"""How the report prints numbers (fpbench/report/fmt.py), and how it shows its gaps: grouped
by reason with a count, collapsed in the HTML, a target absent from the machine in one line."""

from __future__ import annotations

import math

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("seaborn")

from fpbench.report import fmt  # noqa: E402
from fpbench.report.gaps_section import absent_targets, gap_reasons, gaps_section  # noqa: E402
from fpbench.report.page import Details, Section, Table, write_html, write_markdown  # noqa: E402


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2048.0, "2048"),
        (np.float64(16.0), "16"),
        (np.int64(7), "7"),
        (0.9, "0.9"),
        (0.01765907967349243, "0.0177"),
        (12.345, "12.3"),
        (1234.5, "1230"),
        (0.000123456, "0.000123"),
        (4.56e-05, "4.56e-05"),
        (1.5e7 + 0.5, "1.50e+07"),
        (float("nan"), "—"),
        (None, "—"),
        ("tol", "tol"),
        (float("inf"), "∞"),
    ],
)
def test_number(value, text):
    assert fmt.number(value) == text


def test_units_and_notations():
    assert fmt.seconds(0.0221) == "22.1 ms" and fmt.seconds(2.5) == "2.5 s"
    assert fmt.seconds(4.5e-4) == "450 µs" and fmt.seconds(8e-8) == "80 ns"
    assert fmt.seconds(math.nan) == "—"
    assert fmt.mebibytes(25276063744) == "23.5 GiB" and fmt.mebibytes(3 * 2**20) == "3 MiB"
    assert fmt.speedup(0.35196) == "0.352×" and fmt.speedup(7.0) == "7×" and fmt.ratio(1.1) == "1.1×"
    assert fmt.error(2.3456e-07) == "2.3e-07" and fmt.error(0.0) == "0"
    assert fmt.gap(2.322692385647862e-11) == "2.32e-11" and fmt.gap(-1.1632059204735867e-10) == "-1.16e-10"
    assert fmt.loss(0.017814981577476515) == "0.0178" and fmt.loss(4.5612e-05) == "4.56e-05"
    assert fmt.signed(-0.6931) == "-0.693" and fmt.signed(0.105) == "+0.105"
    assert fmt.cell(2048.0) == "2048" and fmt.cell(None) == "—" and fmt.cell("a|b") == "a|b"


def test_a_raw_float_in_a_table_prints_formatted(tmp_path):
    """The page writers format a number that reaches a table unformatted (no ``2048.0``)."""
    table = pd.DataFrame({"T": [2048.0, 1024.0], "loss": [0.01765907967349243, math.nan]})
    sections = [Section("s", [Table(table, "t")])]
    write_markdown(sections, "title", "sub", tmp_path / "s.md")
    text = (tmp_path / "s.md").read_text()
    assert "| 2048 | 0.0177 |" in text and "| 1024 | — |" in text


def _gap_frame() -> pd.DataFrame:
    """One machine without a GPU: ``torch:cuda`` has no result at all; ``torch:cpu`` has a
    result, two n/a reasons and a failed gate."""
    rows = []
    base = dict(machine="m", commit="c", group="SeqLen", solver="jacobi", method=None)
    for i in range(40):
        rows.append(
            dict(base, target="torch:cuda", status="n/a", reason="", params=str(i), benchmark="b.SeqLen.t")
        )
    rows.append(dict(base, target="torch:cpu", status="ok", reason="", params="ok", benchmark="b.SeqLen.t"))
    for i in range(3):
        reason = "NotImplementedError('over the memory cap')"
        rows.append(
            dict(
                base,
                target="torch:cpu",
                status="n/a",
                reason=reason,
                params=f"a{i}",
                benchmark="b.SeqLen.time_solve",
            )
        )
    rows.append(
        dict(base, target="torch:cpu", status="n/a", reason="NotImplementedError('no elk')", params="e",
             benchmark="b.Hidden.time_solve", solver=None, method="elk")
    )  # fmt: skip
    rows.append(
        dict(base, target="torch:cpu", status="failed", reason="AssertionError: correctness gate failed",
             params="f", benchmark="b.SeqLen.time_solve")
    )  # fmt: skip
    rows.append(
        dict(base, target=None, group="Settings", status="n/a", reason="unset", params="OMP", benchmark="s")
    )
    return pd.DataFrame(rows)


def test_gaps_group_by_reason_and_name_an_absent_target_once(tmp_path):
    frame = _gap_frame()
    absent = absent_targets(frame)
    assert list(absent["target"]) == ["torch:cuda"] and list(absent["count"]) == [40]
    reasons = gap_reasons(frame)
    assert list(reasons["status"]) == ["failed", "n/a", "n/a"]  # failures first, then the largest
    assert list(reasons["count"]) == [1, 3, 1]
    assert "torch:cuda" not in " ".join(reasons["targets"])
    assert reasons.loc[reasons["reason"].str.contains("elk"), "solvers"].item() == "elk"  # its method
    assert reasons["benchmarks"].iloc[1] == "SeqLen.time_solve"

    section = gaps_section(frame)
    texts = [b.text for b in section.blocks if hasattr(b, "text")]
    assert sum("torch:cuda" in t for t in texts) == 1
    assert any(isinstance(b, Table) and "Failed: 1 combinations" in b.caption for b in section.blocks)
    (details,) = [b for b in section.blocks if isinstance(b, Details)]
    assert details.summary.startswith("n/a: 4 combinations, 2 reason(s)")

    write_html([section], tmp_path, "t", "s", tmp_path / "index.html")
    page = (tmp_path / "index.html").read_text()
    assert "<details><summary>n/a: 4 combinations, 2 reason(s)</summary>" in page
    assert page.index("<details>") < page.index("over the memory cap") < page.index("</details>")
    write_markdown([section], "t", "s", tmp_path / "s.md")
    md = (tmp_path / "s.md").read_text()
    assert "<details" not in md and "**n/a: 4 combinations, 2 reason(s)**" in md


def test_a_report_without_comparisons_draws_no_headline_and_names_only_what_it_has():
    """Results that compare no parallel solve with a baseline (a sharded-scaling sweep, say)
    draw no "No verdict" headline above their own sections, and the subtitle lists only the
    kinds of solver they hold (no "baselines: ." with nothing after it)."""
    from fpbench.report.headline_section import headline_section, solvers_line
    from fpbench.report.load import COLUMNS

    rows = [{"suite": "ShardStrong", "solver": s, "status": "ok", "value": 0.1} for s in ("jacobi", "newton")]
    frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
    assert headline_section(frame, None).blocks == []
    assert solvers_line(frame) == "Parallel solvers: jacobi, newton. "
    assert solvers_line(pd.DataFrame({"solver": ["sequential"]})) == "baselines: sequential. "
    assert solvers_line(pd.DataFrame({"solver": [None]})) == ""
