"""Issue 13, items 1 and 8: ``fpbench report`` and ``fpbench sweep`` fail with
``fpbench: error: …`` naming what is wrong, never with a traceback or a silently partial
report; ``--skip-unreadable`` is the explicit opt-in to skip damaged result files, which the
report then lists in its missing section.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("pandas")
pytest.importorskip("seaborn")
pytest.importorskip("asv")

from conftest import ASV_MACHINE

from fpbench.cli import main

FIXTURE = Path(__file__).parent / "data" / "asv_results"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def results(tmp_path) -> Path:
    """A writable copy of the asv fixture."""
    dest = tmp_path / "results"
    shutil.copytree(FIXTURE, dest)
    return dest


def _result_file(results: Path, machine: str) -> Path:
    (path,) = [p for p in (results / machine).glob("*.json") if p.name != "machine.json"]
    return path


def _fails(capsys, argv: list[str], *needles: str) -> str:
    """Run ``fpbench argv``: exit status 2, one ``fpbench: error:`` line naming ``needles``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fpbench: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize("damage", ["truncated", "empty object", "not json"])
def test_report_fails_on_a_damaged_result_file(results, tmp_path, capsys, damage):
    path = _result_file(results, "fixture-b")
    text = path.read_text()
    path.write_text(
        {"truncated": text[: len(text) // 2], "empty object": "{}", "not json": "garbage"}[damage]
    )
    _fails(capsys, ["report", "--results", str(results), "--out", str(tmp_path / "out")], str(path))
    assert not (tmp_path / "out" / "index.html").exists()


def test_report_skip_unreadable_lists_the_file(results, tmp_path, capsys):
    import pandas as pd

    path = _result_file(results, "fixture-b")
    path.write_text("{}")
    out = tmp_path / "out"
    argv = ["report", "--results", str(results), "--out", str(out), "--skip-unreadable"]
    assert main(argv) == 0
    csv = pd.read_csv(out / "results.csv")
    assert set(csv["machine"]) == {"fixture-a"}
    for page in ("index.html", "summary.md"):
        text = (out / page).read_text()
        missing = text[text.index("Missing, n/a and failed") :]
        assert str(path) in missing and "could not be read" in missing


def test_report_missing_results_dir(tmp_path, capsys):
    _fails(
        capsys, ["report", "--results", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], "nowhere"
    )


def test_report_empty_results_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(
        capsys,
        ["report", "--results", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
        "no asv results",
    )


def test_report_unknown_machine(tmp_path, capsys):
    argv = ["report", "--results", str(FIXTURE), "--out", str(tmp_path / "o"), "--machine", "nosuch"]
    _fails(capsys, argv, "nosuch", "fixture-a", "fixture-b")


def test_report_out_is_a_file(tmp_path, capsys):
    out = tmp_path / "file.txt"
    out.write_text("x")
    _fails(capsys, ["report", "--results", str(FIXTURE), "--out", str(out)], str(out), "is a file")


def test_report_damaged_benchmarks_json(results, tmp_path, capsys):
    (results / "benchmarks.json").write_text("{not json")
    argv = ["report", "--results", str(results), "--out", str(tmp_path / "o")]
    _fails(capsys, argv, str(results / "benchmarks.json"))


@pytest.mark.parametrize("content", ["[{broken", '{"a": 1}'])
def test_report_damaged_sweep_record(results, tmp_path, capsys, content):
    (sidecar,) = (results / "fixture-a").glob("fpbench-*.sweeps")
    sidecar.write_text(content)
    _fails(capsys, ["report", "--results", str(results), "--out", str(tmp_path / "o")], str(sidecar))


@pytest.fixture
def sweep_sandbox(asv_sandbox, monkeypatch):
    """The asv sandbox, applied to this process (the sweep runs in it)."""
    env, config = asv_sandbox
    for key in ("HOME", "FPBENCH_GRID"):
        monkeypatch.setenv(key, env[key])
    return config


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout


@pytest.mark.skipif(not _head(), reason="not a git checkout")
def test_sweep_bench_matching_nothing(sweep_sandbox, tmp_path, capsys):
    argv = ["sweep", "--config", str(sweep_sandbox), "--machine", ASV_MACHINE, "--out", str(tmp_path / "o")]
    _fails(
        capsys, [*argv, "--grid", "quick", "--bench", "NoSuchSuite"], "NoSuchSuite", "matches no benchmark"
    )


@pytest.mark.skipif(not _head(), reason="not a git checkout")
def test_sweep_out_is_a_file(sweep_sandbox, tmp_path, capsys):
    out = tmp_path / "file.txt"
    out.write_text("x")
    argv = ["sweep", "--config", str(sweep_sandbox), "--machine", ASV_MACHINE, "--out", str(out)]
    _fails(capsys, [*argv, "--grid", "quick", "--bench", "Settings"], str(out), "is a file")


@pytest.mark.skipif(not _head(), reason="not a git checkout")
def test_sweep_damaged_sweep_record(sweep_sandbox, tmp_path, capsys):
    results = sweep_sandbox.parent / "results" / ASV_MACHINE
    results.mkdir(parents=True)
    sidecar = results / f"fpbench-{_head().strip()[:8]}.sweeps"
    sidecar.write_text("[{broken")
    argv = ["sweep", "--config", str(sweep_sandbox), "--machine", ASV_MACHINE, "--out", str(tmp_path / "o")]
    _fails(capsys, [*argv, "--grid", "quick", "--bench", "Settings"], str(sidecar))
    assert sidecar.read_text() == "[{broken"  # left for the user to inspect, not overwritten


def test_sidecar_json_roundtrip(results):
    from fpbench.report.store import read_sweeps

    (sidecar,) = (results / "fixture-a").glob("fpbench-*.sweeps")
    assert read_sweeps(sidecar) == json.loads(sidecar.read_text())
