"""Reliability and security, round 2: a report that cannot be steered by its data.

asv results may come from other machines, so every field in them is untrusted: it must not
choose where the report writes, make it delete or overwrite files it did not write, inject
markup into its pages or formulas into its CSV, abort it, hang it, or skew its numbers.
Each test builds a one-machine copy of the fixture with one hostile field.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("seaborn")
pytest.importorskip("asv")

from fpbench.cli import main  # noqa: E402
from fpbench.report import analysis  # noqa: E402
from fpbench.report.build import build_report  # noqa: E402
from fpbench.report.load import load_results  # noqa: E402
from fpbench.report.output import LEGACY_MARKER, MANIFEST, OutputFolder, safe_name  # noqa: E402

FIXTURE = Path(__file__).parent / "data" / "asv_results"
REPO = Path(__file__).resolve().parent.parent
EVIL = '=HYPERLINK("http://x")$x^$<script>alert(1)</script>|"><img src=x onerror=alert(1)>'


def make_results(dest: Path, machine: str = "m", edit: Callable[[dict], None] | None = None) -> Path:
    """``dest``: the fixture's ``fixture-a`` run alone, its machine renamed and ``edit`` applied
    to its asv result JSON; returns the result file."""
    shutil.copytree(FIXTURE / "fixture-a", dest / "run")
    shutil.copy(FIXTURE / "benchmarks.json", dest)
    (path,) = [p for p in (dest / "run").glob("*.json") if p.name != "machine.json"]
    data = json.loads(path.read_text())
    data["params"]["machine"] = machine
    if edit:
        edit(data)
    path.write_text(json.dumps(data))
    return path


def _fails(capsys, argv: list[str], *needles: str) -> str:
    """Run ``fpbench argv``: exit status 2, one ``fpbench: error:`` line naming ``needles``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fpbench: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# 1. The default output folder is always inside reports/.


def test_safe_name_is_one_plain_file_name():
    for name in ("/some/dir", "../../x", "..", ".", "", "a b/c", EVIL):
        safe = safe_name(name)
        assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", safe), (name, safe)
    assert safe_name("fixture-a") == "fixture-a"


@pytest.mark.parametrize("machine", ["../../x", "ABSOLUTE"])
def test_default_out_stays_inside_reports(tmp_path, monkeypatch, capsys, machine):
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    machine = str(tmp_path / "abs") if machine == "ABSOLUTE" else machine
    make_results(tmp_path / "results", machine=machine)
    monkeypatch.chdir(work)
    assert main(["report", "--results", str(tmp_path / "results")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "results"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["work"]
    (folder,) = (work / "reports").iterdir()
    assert (folder / "index.html").is_file() and folder.name == safe_name(machine)


# 2. The report deletes and replaces only files it wrote, and never writes through a link.


def test_out_refuses_a_folder_without_an_earlier_report(tmp_path, capsys):
    make_results(tmp_path / "results")
    out = tmp_path / "mine"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "holiday.png").write_bytes(b"photo")
    (out / "index.html").write_text("my page")
    _fails(
        capsys, ["report", "--results", str(tmp_path / "results"), "--out", str(out)], str(out), "not empty"
    )
    assert (out / "figures" / "holiday.png").read_bytes() == b"photo"
    assert (out / "index.html").read_text() == "my page"


def test_out_refuses_a_symlinked_figures_folder(tmp_path, capsys):
    make_results(tmp_path / "results")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.png").write_bytes(b"keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "figures").symlink_to(elsewhere)
    argv = ["report", "--results", str(tmp_path / "results"), "--out", str(out)]
    _fails(capsys, argv, str(out / "figures"), "symbolic link")
    assert [p.name for p in elsewhere.iterdir()] == ["keep.png"]


def test_out_refuses_a_symlinked_output_file(tmp_path, capsys):
    make_results(tmp_path / "results")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"files": ["results.csv", "index.html"]}))
    (out / "results.csv").symlink_to(victim)
    argv = ["report", "--results", str(tmp_path / "results"), "--out", str(out)]
    _fails(capsys, argv, str(out / "results.csv"), "symbolic link")
    assert victim.read_text() == "precious"


def test_rerun_replaces_only_its_own_files(tmp_path):
    out = tmp_path / "out"
    build_report(FIXTURE, out)
    first = json.loads((out / MANIFEST).read_text())["files"]
    assert any("fixture-a" in f for f in first) and "index.html" in first
    (out / "notes.txt").write_text("mine")
    (out / "figures" / "mine.png").write_bytes(b"mine")
    build_report(FIXTURE, out, machines=["fixture-b"])
    files = json.loads((out / MANIFEST).read_text())["files"]
    assert not any("fixture-a" in f for f in files)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == {*files, MANIFEST, "notes.txt", "figures/mine.png"}
    assert (out / "figures" / "mine.png").read_bytes() == b"mine"


def test_a_report_from_before_manifests_is_replaced(tmp_path):
    out = tmp_path / "old"
    (out / "figures").mkdir(parents=True)
    (out / "index.html").write_text(f"<script>{LEGACY_MARKER}</script>")
    (out / "figures" / "old.png").write_bytes(b"png")
    (out / "speed_ratios.md").write_text("kept")
    folder = OutputFolder(out)
    assert folder.earlier == {"index.html", "figures/old.png"}
    folder.path("index.html").write_text("new")
    folder.finish()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        MANIFEST,
        "index.html",
        "speed_ratios.md",
    ]


# 3 and 4. Every field is escaped for its format; a `$` is text, not mathtext.


def _hostile(data: dict) -> None:
    data["params"]["cpu"] = "AMD\r\n| x | y |\n<script>cpu()</script>"
    data["env_vars"] = {"EVIL": '"><img src=x onerror=env()>', "FPBENCH_GRID": "quick"}
    data["results"]["bench_accuracy.Accuracy.track_iterations"][1][1] = ["'<img src=x onerror=cell()>'"]


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    """The report of a run whose machine, cpu, env vars, parameters and versions are markup."""
    root = tmp_path_factory.mktemp("hostile")
    make_results(root / "results", machine=EVIL, edit=_hostile)
    (sweeps,) = (root / "results" / "run").glob("fpbench-*.sweeps")
    records = json.loads(sweeps.read_text())
    records[-1]["versions"]["torch"] = "<script>version()</script>|"
    sweeps.write_text(json.dumps(records))
    return build_report(root / "results", root / "out")


def test_dollar_in_a_machine_name_is_plain_text(hostile_report):
    assert "$x^$" in EVIL and (hostile_report / "index.html").is_file()
    assert len(list((hostile_report / "figures").glob("*.png"))) >= 5


def test_summary_md_escapes_result_fields(hostile_report):
    summary = (hostile_report / "summary.md").read_text()
    assert "<script" in summary  # in code spans, where it is text
    text = "\n".join(line for line in summary.splitlines() if not line.startswith("!["))  # own images
    outside_code = re.sub(r"`[^`]*`", "", text)
    assert re.search(r"(?<!\\)[<\[]", outside_code) is None  # no HTML, no link or image
    lines = summary.splitlines()
    cells = re.compile(r"(?<!\\)\|")
    for i, line in enumerate(lines):  # a table row has as many cells as its header
        if line.startswith("|---"):
            width = len(cells.findall(lines[i - 1]))
            for row in _table_rows(lines[i + 1 :]):
                assert len(cells.findall(row)) == width, row
    assert "\r" not in summary


def _table_rows(lines: list[str]) -> list[str]:
    """The rows of a Markdown table: the lines up to the first that does not start with ``|``."""
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_results_csv_neutralises_formulas(hostile_report):
    with (hostile_report / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["machine"] for r in rows} == {"'" + EVIL}
    for row in rows:
        for value in row.values():
            if value.startswith(("=", "+", "-", "@", "\t", "\r")):
                float(value)  # only a number may start like a formula


def test_html_escapes_result_fields(hostile_report):
    page = (hostile_report / "index.html").read_text()
    for markup in ("<script>alert", "<script>cpu", "<script>version", "<img src=x"):
        assert markup not in page, markup


# 5. A FIFO among the results is skipped, never opened.


@pytest.mark.parametrize("skip_unreadable", [False, True])
def test_fifo_result_file_is_skipped(tmp_path, skip_unreadable):
    make_results(tmp_path / "results")
    fifo = tmp_path / "results" / "run" / "zz-fifo.json"
    os.mkfifo(fifo)
    code = (
        "import sys; from fpbench.report.load import load_results; "
        "r = load_results(sys.argv[1], skip_unreadable=sys.argv[2] == 'True'); print(r.skipped)"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "results"), str(skip_unreadable)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the report hung on a FIFO named *.json")
    assert done.returncode == 0, done.stderr
    assert str(fifo) in done.stdout and "not a regular file" in done.stdout


# 6. Unknown names, impossible numbers and duplicated files are gaps, not numbers.


def _newer(data: dict) -> None:
    results = data["results"]
    results["bench_accuracy.Accuracy.track_max_abs_error"][1][1] = ["'newcell'"]
    seqlen = results["bench_solve.SeqLen.time_solve"]
    seqlen[1][2] = ["'sequential'", "'warp'", "'newton'"]
    seqlen[0][0:3] = [-1.0, 0.0, float("inf")]


@pytest.fixture(scope="module")
def newer_report(tmp_path_factory) -> tuple[Path, Path]:
    """(report, results) of a run naming an unknown cell and solver, with impossible times,
    whose result file is there twice."""
    root = tmp_path_factory.mktemp("newer")
    path = make_results(root / "results", edit=_newer)
    shutil.copy(path, path.with_name("copy.json"))
    return build_report(root / "results", root / "out"), root / "results"


def test_unknown_names_and_impossible_times_are_gaps(newer_report):
    out, _ = newer_report
    frame = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    unknown = frame[frame["cell"].eq("newcell") | frame["solver"].eq("warp")]
    assert len(unknown) and set(unknown["status"]) == {"n/a"}
    assert unknown["reason"].str.startswith("unknown ").all() and unknown["value"].isna().all()
    seqlen = frame[frame["benchmark"].eq("bench_solve.SeqLen.time_solve")]
    bad = seqlen[seqlen["reason"].str.startswith("invalid result")]
    assert len(bad) == 3 and set(bad["status"]) == {"failed"} and bad["value"].isna().all()
    ok = frame[frame["status"].eq("ok")]
    assert (ok.loc[ok["type"].isin(["time", "peakmem"]), "value"] > 0).all()
    gaps = (out / "summary.md").read_text().split("## Missing, n/a and failed")[1]
    assert "unknown cell" in gaps and "unknown solver" in gaps and "invalid result" in gaps


def test_speedups_of_impossible_times_are_not_numbers(newer_report):
    _, results = newer_report
    frame = load_results(results).frame
    sp = analysis.speedups(analysis.solve_rows(frame))
    assert (sp["speedup"].dropna() > 0).all() and sp["speedup"].map(lambda v: v != float("inf")).all()


def test_duplicated_result_file_counts_once(newer_report):
    out, _ = newer_report
    frame = pd.read_csv(out / "results.csv")
    assert not frame.duplicated(["machine", "commit", "benchmark", "params"]).any()
    gaps = (out / "summary.md").read_text().split("## Missing, n/a and failed")[1]
    assert "copy.json" in gaps and "duplicate of" in gaps


# 7 and 8. Clear errors for an unknown machine and an impossible --out.


def test_unknown_machine_among_known_ones(tmp_path, capsys):
    argv = ["report", "--results", str(FIXTURE), "--out", str(tmp_path / "o")]
    _fails(
        capsys, [*argv, "--machine", "fixture-a", "--machine", "nosuch"], "nosuch", "fixture-a", "fixture-b"
    )
    assert not (tmp_path / "o").exists()


def test_out_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "file.txt" / "sub"
    _fails(capsys, ["report", "--results", str(FIXTURE), "--out", str(out)], str(out))
