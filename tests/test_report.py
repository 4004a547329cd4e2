"""The comparative report (``fpbench report``) and the main job (``fpbench sweep``).

The fixture ``tests/data/asv_results`` is a real asv run (``tests/data/make_asv_fixture.py``)
of a tiny contract-shaped suite on two machines, with n/a (torch:cuda) and failed
(correctness gate) entries.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("seaborn")
pytest.importorskip("asv")

from conftest import ASV_MACHINE  # noqa: E402

from fpbench.report import analysis  # noqa: E402
from fpbench.report.build import build_report  # noqa: E402
from fpbench.report.load import load_results, parse_reasons  # noqa: E402

FIXTURE = Path(__file__).parent / "data" / "asv_results"
REPO = Path(__file__).resolve().parent.parent
SECTIONS = (
    "Headline: where does a parallel solver beat the best sequential baseline?",
    "Speedup over the T × H product (heatmap)",
    "Time vs sequence length",
    "Time vs hidden size",
    "Speedup over the best sequential baseline (T and H sweeps)",
    "Speedup vs batch size",
    "Accuracy: error vs iteration budget, iterations to tolerance",
    "Peak memory vs sequence length",
    "Compile and cold-start costs",
    "Missing, n/a and failed combinations",
    "Provenance",
)
"""The sections of the fixture's report, in the order a reader asks: the answer, the T and H
sweeps, batch, accuracy, costs, gaps, provenance (the fixture has no budget, gradient or
training results, and one backend: those sections are not drawn)."""

EMPTY_SECTION = re.compile(r"\bNo\b[^.]{0,120}\bresults\b")
"""What a section without data used to say (``No `Budget.time_solve` results in these results``)."""

FLOAT = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d+(?:e[-+]?\d+)?|\d+e[-+]?\d+)(?![\w.])")
"""A float as a table cell may print it (a version such as ``2.13.0`` is none)."""


def too_precise(cells: list[str]) -> list[str]:
    """The cells that print a float with more than 4 significant digits (``2048.0``,
    ``0.01765907967349243``)."""

    def digits(token: str) -> int:
        return len(token.split("e")[0].lstrip("+-").replace(".", "").lstrip("0"))

    return [c for c in cells if any(digits(t) > 4 for t in FLOAT.findall(c))]


def html_cells(page: str) -> list[str]:
    """The text of every table cell of an HTML page."""
    import html

    return [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", page, re.S)]


def html_text(page: str) -> str:
    """An HTML page's text, without its tags (a ``code`` span joins its sentence)."""
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", page))


@pytest.fixture(scope="module")
def results():
    return load_results(FIXTURE)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return build_report(FIXTURE, tmp_path_factory.mktemp("report"))


def _raw_results() -> dict[str, dict]:
    """machine -> that machine's asv results JSON, read without asv."""
    raw = {}
    for path in FIXTURE.glob("*/*.json"):
        if path.name != "machine.json":
            data = json.loads(path.read_text())
            raw[data["params"]["machine"]] = data
    return raw


def test_frame_matches_asv_json(results):
    frame = results.frame
    assert sorted(frame["machine"].unique()) == ["fixture-a", "fixture-b"]
    assert set(frame["status"]) == {"ok", "n/a", "failed"}
    for machine, data in _raw_results().items():
        assert data["result_columns"][:2] == ["result", "params"]
        for name, columns in data["results"].items():
            values, params = columns[0], columns[1]
            rows = frame[(frame["machine"] == machine) & (frame["benchmark"] == name)].set_index("params")
            assert len(rows) == len(values)
            # asv stores values in the order of the product of the parameter lists
            for value, combo in zip(values, itertools.product(*params), strict=True):
                row = rows.loc[", ".join(combo)]
                if value is None:
                    assert row["status"] == "failed" and math.isnan(row["value"])
                elif math.isnan(value):
                    assert row["status"] == "n/a" and math.isnan(row["value"])
                else:
                    assert row["status"] == "ok" and row["value"] == value


def test_frame_columns_and_reasons(results):
    frame = results.frame
    cuda = frame[frame["target"] == "torch:cuda"]
    assert set(cuda["backend"]) == {"torch"} and set(cuda["device"]) == {"cuda"}
    assert set(cuda["status"]) == {"n/a"}
    failed = frame[frame["status"] == "failed"]
    assert failed["reason"].str.contains("correctness gate failed").all()
    assert set(failed["solver"]) <= {"jacobi", "quasi_newton"}
    ok = frame[(frame["status"] == "ok") & frame["type"].eq("time")]
    assert (ok["q25"] <= ok["value"]).all() and (ok["value"] <= ok["q75"]).all()
    assert set(frame["grid"]) == {"quick"}
    assert set(frame.loc[frame["machine"] == "fixture-b", "threads"]) == {"1"}
    assert results.machines["fixture-a"]["cpu"]


def test_parse_reasons():
    log = (
        "[50.00%] ··· bench_solve.SeqLen.time_solve                 1/4 failed\n"
        "[50.00%] ···· For parameters: 'numpy:cpu', 64\n"
        "             Traceback (most recent call last):\n"
        "             AssertionError: gate failed\n"
        "             \n"
        "             For parameters: 'torch:cuda', 64\n"
        "             asv: skipped: NotImplementedError('no GPU')\n"
        "[75.00%] ··· bench_cold.ColdStart.timeraw_prepare          ok\n"
    )
    reasons = parse_reasons(log)
    assert reasons[("bench_solve.SeqLen.time_solve", "'numpy:cpu', 64")] == "AssertionError: gate failed"
    assert reasons[("bench_solve.SeqLen.time_solve", "'torch:cuda', 64")] == "NotImplementedError('no GPU')"


def test_newest_commit_only_by_default(results):
    assert results.frame.groupby("machine")["commit"].nunique().max() == 1


def test_speedup_and_crossover(results):
    times = analysis.solve_rows(results.frame)
    sp = analysis.speedups(times)
    assert not sp["solver"].isin(["sequential", "native"]).any()
    ok = sp[sp["status"] == "ok"]
    expected = ok["baseline_s"] / ok["time_s"]
    assert (ok["speedup"] == expected).all() and (ok["speedup"] > 0).all()
    # a failed gate has no speedup
    assert sp.loc[sp["status"] == "failed", "speedup"].isna().all()
    assert analysis.is_grid(sp)
    cross = analysis.crossovers(sp)
    for _, c in cross.dropna(subset=["crossover_T"]).iterrows():
        pts = ok[(ok["machine"] == c["machine"]) & (ok["label"] == c["label"])]
        pts = pts[pts["hidden_size"] == c["hidden_size"]]
        assert pts.loc[pts["seq_len"] < c["crossover_T"], "speedup"].le(1).all()
    # a single H measured at several T is no grid: the report falls back to lines
    assert not analysis.is_grid(sp[sp["hidden_size"] == 4])


def test_backend_table_names_the_faster_backend(results):
    times = analysis.solve_rows(results.frame)
    slower = times[times["backend"] == "numpy"].assign(backend="other", value=lambda d: d["value"] * 2)
    table = analysis.backend_table(pd.concat([times, slower]))
    assert not table.empty
    assert set(table["fastest"]) == {"numpy"}
    assert table["ratio"].round(9).eq(2).all()


def test_report_files(report, results):
    assert {p.name for p in report.iterdir()} >= {"index.html", "summary.md", "results.csv", "figures"}
    pngs = sorted((report / "figures").glob("*.png"))
    assert len(pngs) >= 8
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    csv = pd.read_csv(report / "results.csv", keep_default_na=False, na_values=[""])
    assert len(csv) == len(results.frame)
    assert set(csv["status"]) == {"ok", "n/a", "failed"}

    page = (report / "index.html").read_text()
    for title in SECTIONS:
        assert f"<h2>{title}" in page
    assert page.count('src="data:image/png;base64,') == len(pngs)
    assert not re.search(r'(src|href)="(https?:)?//', page), (
        "the page must not load anything from the network"
    )
    assert "correctness gate failed" in page

    summary = (report / "summary.md").read_text()
    for title in SECTIONS:
        assert f"## {title}" in summary
    linked = re.findall(r"\]\((figures/[^)]+\.png)\)", summary)
    assert sorted(linked) == sorted(f"figures/{p.name}" for p in pngs)


def test_report_says_nothing_empty_and_names_the_suites_not_run(report):
    """Issue 21 item 3: a section without data is not drawn; one line at the end names the
    suites this grid did not run (the fixture's ``quick`` run has no Budget, gradient or
    training results) and how to run them."""
    summary = (report / "summary.md").read_text()
    assert not EMPTY_SECTION.search(summary), EMPTY_SECTION.search(summary)[0]
    assert not EMPTY_SECTION.search(html_text((report / "index.html").read_text()))
    titles = re.findall(r"^## (.+)$", summary, re.M)
    for title in titles:  # every drawn section holds a table or a figure
        body = summary.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        assert "| " in body or "![" in body, title
    last = summary.rstrip().splitlines()[-1]
    assert "did not run" in last and "`Budget`" in last and "`GradSeqLen`" in last and "`TrainLoss`" in last
    assert "`SeqLen`" not in last  # it ran
    assert "fpbench sweep --grid quick --bench" in last


def test_sections_come_in_the_order_a_reader_asks(report):
    """The answer first, then the T and H sweeps, batch, accuracy, costs, gaps, provenance."""
    titles = re.findall(r"^## (.+)$", (report / "summary.md").read_text(), re.M)
    assert titles == list(SECTIONS)


def test_report_tables_print_numbers_for_reading(report):
    """No table cell of the page holds a float with more than 4 significant digits."""
    cells = html_cells((report / "index.html").read_text())
    assert len(cells) > 100
    assert too_precise(cells) == []
    assert too_precise(["2048.0", "0.01765907967349243", "2.322692385647862e-11"]) == [
        "2048.0",
        "0.01765907967349243",
        "2.322692385647862e-11",
    ]
    assert too_precise(["2048", "0.0177", "2.32e-11", "2.3e-07", "torch 2.13.0+cpu", "1.24×"]) == []


def test_gaps_are_grouped_and_a_missing_target_is_one_line(report):
    """The fixture has no GPU: every ``torch:cuda`` combination is n/a, said in one line per
    machine, not in a row per solver and benchmark; the failures are grouped by reason."""
    summary = (report / "summary.md").read_text()
    gaps = summary.split("## Missing, n/a and failed combinations", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in gaps.splitlines() if line.startswith("| ")]
    assert not any("torch:cuda" in row for row in rows)
    one_line = [line for line in gaps.splitlines() if "torch:cuda" in line]
    assert len(one_line) == 2 and all("No result at all" in line for line in one_line)
    assert "83 combinations" in one_line[0]
    assert "Failed: 16 combinations" in gaps
    header = next(row for row in rows if "reason" in row)
    assert "count" in header


def test_one_machine_report_states_its_provenance_once(tmp_path):
    """A one-machine report names its commit, grid and versions once, in the provenance, not
    in every row of the headline nor in every figure caption; its tables have no machine
    column, and its page leads with the verdict, the table and the one figure."""
    out = build_report(FIXTURE, tmp_path / "a", machines=["fixture-a"])
    summary = (out / "summary.md").read_text()
    assert summary.count("e28a0c0b") == 1
    assert summary.count("torch 2.13.0") == 0 and "| torch | 2.13.0+cpu |" in summary
    assert "| machine |" not in summary and "| run |" not in summary.split("## Provenance")[0]
    head = summary.split("\n## ", 2)[1]
    assert head.startswith("Headline") and "![" in head and "| solver |" in head
    assert re.search(r"\(figures/headline-fixture-a-cpu-gru\.png\)", head)
    page = (out / "index.html").read_text()
    first = page[page.index("<section") : page.index("</section>")]
    assert "<figure>" in first and "<table>" in first and "gate passed" in first
    assert page.index("</section>") < page.index("<nav>")  # the contents follow the answer


def test_report_machine_filter_and_cli(tmp_path):
    from fpbench.cli import main

    out = tmp_path / "b"
    assert main(["report", "--results", str(FIXTURE), "--out", str(out), "--machine", "fixture-b"]) == 0
    csv = pd.read_csv(out / "results.csv")
    assert set(csv["machine"]) == {"fixture-b"}
    assert all("fixture-a" not in p.name for p in (out / "figures").iterdir())


def test_report_missing_results(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "nothing", tmp_path / "out")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (CI installs it)")
def test_html_renders_in_headless_chromium(report, tmp_path):
    """Every embedded figure decodes in a real browser, every section is there, and the page
    leads with a non-empty headline section (verdicts and the where-it-wins table)."""
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        (report / "index.html").resolve().as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    check = re.search(r'<div id="image-check" data-images="(\d+)" data-broken="([^"]*)"', dom)
    assert check, "the page's load handler did not run"
    assert int(check[1]) == len(list((report / "figures").glob("*.png"))) > 0
    assert check[2] == "", f"images that did not load: {check[2]}"
    for title in SECTIONS:
        assert title in dom
    # the page leads with the answer: the headline section first, with verdicts and a table
    head = re.search(r'data-first-section="([^"]*)" data-first-text="(\d+)" data-first-rows="(\d+)"', dom)
    assert head, "the page's load handler did not describe its first section"
    assert head[1].startswith("headline"), head[1]
    assert int(head[2]) > 200 and int(head[3]) > 0
    section = dom[dom.index(f'<section id="{head[1]}"') :]
    section = section[: section.index("</section>")]
    assert "beats the best sequential baseline" in section and "gate passed" in section
    assert "<figure>" in section  # the one figure that shows the answer
    # no section says it has nothing, and every number in a table is formatted for reading
    assert not EMPTY_SECTION.search(html_text(dom)), EMPTY_SECTION.search(html_text(dom))[0]
    cells = html_cells(dom)
    assert len(cells) > 100 and too_precise(cells) == []


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "asv.conf.json").is_file(), reason="no asv.conf.json in this checkout")
def test_sweep_end_to_end(asv_sandbox, tmp_path):
    """The main job's command, ``fpbench sweep``, end to end on the ``smoke`` grid (every
    suite at one tiny point): one asv run per target and one for the settings suite,
    publish, report; no benchmark may fail. In the asv sandbox, so the user's results and
    machine file are not touched."""
    from fpbench.report.sweep_plan import sweep_chunks

    env, config = asv_sandbox
    # Two targets keep this a test of the sweep (runs per target, kept results, publish,
    # report) in minutes; every backend's suites are exercised by test_asv and test_bench_*.
    env["FPBENCH_BACKENDS"] = "numpy,torch"
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "fpbench.cli", "sweep", "--grid", "smoke", "--config", str(config)]
    cmd += ["--machine", ASV_MACHINE, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    runs = proc.stdout.count("fpbench sweep: asv run --bench")
    assert runs == len(sweep_chunks(env, "smoke"))
    assert "report:" in proc.stdout and "asv html:" in proc.stdout
    assert (tmp_path / "html" / "index.html").is_file()
    csv = pd.read_csv(out / "results.csv")
    assert set(csv["grid"].dropna()) == {"smoke"}
    assert not (csv["status"] == "failed").any()
    # each target's asv run kept the results of the runs before it
    ok = csv[csv["status"] == "ok"]
    assert {"numpy:cpu", "torch:cpu"} <= set(ok["target"].dropna())
    for suite in ("SeqLen", "Hidden", "Budget", "Accuracy", "ColdStart", "IterationFloor", "Settings"):
        assert (csv["benchmark"].str.contains(rf"\.{suite}\.") & (csv["status"] == "ok")).any(), suite
    assert (out / "index.html").is_file() and (out / "summary.md").is_file()
    # the TrainLoss runs' curves, kept beside asv's results, drawn in the training section
    (curves,) = (config.parent / "results" / ASV_MACHINE).glob("fpbench-*.curves")
    assert curves.read_text().count("\n") >= 2
    page = (out / "index.html").read_text()
    assert "train-curve-step" in page and "train-curve-seconds" in page and "steps to loss" in page


def test_headline_answers_with_gate_errors(results):
    """The headline: per machine, device, cell and parallel solver, where it wins, its best
    speedup and the error its correctness gate measured for that very solve."""
    frame = build_fill(results.frame)
    sp = analysis.family_speedups(frame)
    assert {"T and H sweeps", "T x H product", "batch"} <= set(sp["family"])
    head = analysis.headline(sp)
    assert set(head["machine"]) == {"fixture-a", "fixture-b"} and set(head["cell"]) == {"elman", "gru"}
    assert (head["best speedup"] > 0).all()
    product = head[head["cell"] == "gru"]
    assert product["max |error| vs exact"].notna().all()  # the fixture's gate prints its error
    assert (product["max |error| vs exact"] <= 1e-4).all()
    ok = sp[sp["status"] == "ok"]
    for _, row in head.iterrows():
        g = ok[
            (ok["machine"] == row["machine"]) & (ok["cell"] == row["cell"]) & (ok["solver"] == row["solver"])
        ]
        assert row["best speedup"] == g["speedup"].max()
        assert (row["wins"] == "nowhere measured") == (g["speedup"] <= 1).all()
    text = analysis.verdict(head, sp, "fixture-a", "cpu", "gru")
    assert "gate passed" in text and "fixture-a" in text


def build_fill(frame):
    from fpbench.report.build import fill_fixed_shapes

    return fill_fixed_shapes(frame)


def test_fixed_shapes_come_from_the_package_grids(results):
    frame = build_fill(results.frame)
    assert frame.loc[frame["group"].eq("Batch"), "batch"].notna().all()
    assert set(frame.loc[frame["group"].eq("Batch"), "seq_len"]) == {128.0}  # quick's batch_seq_len
    assert set(frame.loc[frame["group"].eq("SeqLen"), "batch"]) == {8.0}


def test_panels_have_at_most_six_lines_and_fixed_colours(results):
    import matplotlib.pyplot as plt

    from fpbench.report import figures

    frame = analysis.with_labels(
        results.frame[results.frame["group"].eq("SeqLen") & results.frame["metric"].eq("time_solve")],
        ("max_iters", "hidden_size"),
    )
    fig = figures.lines(frame, "seq_len", "time", "t", row="cell", col="solver")
    for ax in fig.axes:
        assert len(ax.get_lines()) <= 6
        for line in ax.get_lines():
            assert line.get_color() == figures.BACKEND_COLOURS["numpy"]
    assert [ax.get_title().split("solver=")[-1] for ax in fig.axes] == ["sequential", "jacobi", "newton"]
    plt.close(fig)


def test_product_heatmap_draws_the_break_even_contour(results):
    import matplotlib.pyplot as plt
    from matplotlib.contour import QuadContourSet

    from fpbench.report import figures

    frame = build_fill(results.frame)
    sp = analysis.speedups(analysis.solve_rows(frame, groups=("Product",)))
    g = sp[sp["machine"] == "fixture-a"]
    fig = figures.speedup_heatmaps(g, analysis.crossovers(g), "t")
    contours = [c for ax in fig.axes for c in ax.collections if isinstance(c, QuadContourSet)]
    crosses = g.groupby("label")["speedup"].agg(lambda s: s.min() < 1 < s.max())
    assert len(contours) == int(crosses.sum())
    plt.close(fig)


def test_accuracy_section_shows_the_lyapunov_exponent():
    """Issue 13 item 11: the accuracy section says which problems are chaotic."""
    from fpbench.report.accuracy_sections import lyapunov_table

    rows = pd.DataFrame(
        {"grid": ["quick", "quick", "quick"], "cell": ["elman"] * 3, "contraction": [0.5, 1.2, 0.5]}
    )
    table = lyapunov_table(rows)
    assert list(table["ρ"]) == [0.5, 1.2]
    lam = table["λ per step"].astype(float)
    assert lam.iloc[0] <= math.log(0.5) + 1e-3  # contractive elman: at most log(rho) (3 decimals)
