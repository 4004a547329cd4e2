"""Issue 25 item 4 (sweeps lose nothing) and issue 21 item 2 (the sweep's terminal).

A sweep holds a lock on its results directory, so a second sweep there is refused, naming
the first; SIGINT and SIGTERM stop a sweep with one line, keep what asv had measured (the
targets it finished and the finished combinations of the one it was in), record the stop in
the sweep record, remove the temporary folders and leave no asv process behind; the report
says the run was interrupted. The terminal shows progress and failures, not asv's tables.

The end-to-end tests run the real ``run_sweep`` and asv on a tiny suite in a throwaway git
repository (two asv runs, a few seconds each), with ``HOME`` and ``TMPDIR`` inside the test's
folder.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("asv")

from fpbench.report import sweep, sweep_display, sweep_plan, sweep_stop
from fpbench.report.store import interrupted_note, parse_log

REPO = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "data" / "asv_results"

TINY_SUITE = """
import os
import time


def _mark(text):
    with open(os.environ["TINY_MARKS"], "a") as f:
        f.write(text + "\\n")


class A:
    rounds = 1

    def track_first(self):
        return 1.0

    def track_fails(self):
        raise ValueError("boom: the gate failed")


class B:
    rounds = 1
    params = [list(range(40))]
    param_names = ["i"]

    def track_slow(self, i):
        time.sleep(0.4)
        _mark(f"B {i}")
        return float(i)
"""

ASV_CONF = {
    "version": 1,
    "project": "tiny",
    "project_url": "",
    "repo": ".",
    "branches": ["HEAD"],
    "environment_type": "virtualenv",
    "benchmark_dir": "benchmarks",
    "env_dir": ".asv/env",
    "results_dir": ".asv/results",
    "html_dir": ".asv/html",
    "build_command": [],
    "install_command": [],
    "uninstall_command": [],
    "launch_method": "forkserver",
}

# run_sweep with one asv run per class of the tiny suite (as the real sweep has one per target)
DRIVER = """
import sys
from fpbench.report import sweep
sweep.sweep_chunks = lambda env, grid: [[r"^bench_tiny\\.A"], [r"^bench_tiny\\.B"]]
sys.exit(sweep.run_sweep(grid="quick", machine="m1", config=sys.argv[1], report=False))
"""


@pytest.fixture
def tiny(tmp_path: Path, request: pytest.FixtureRequest) -> dict:
    """A git repository holding the tiny suite, and the environment a sweep of it runs in."""
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "benchmarks" / "__init__.py").write_text("")
    (repo / "benchmarks" / "bench_tiny.py").write_text(TINY_SUITE.lstrip())
    (repo / "asv.conf.json").write_text(json.dumps(ASV_CONF))
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    (tmp_path / "home").mkdir()
    # a short TMPDIR: the sweep gives asv a folder in it, where asv's fork server makes a socket
    tmp = Path(tempfile.mkdtemp(prefix="fps-", dir="/tmp" if os.path.isdir("/tmp") else None))
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp),
        "TINY_MARKS": str(tmp_path / "marks"),
        "PYTHONUNBUFFERED": "1",
    }
    env.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))  # matplotlib's font cache
    env.pop("FPBENCH_GRID", None)
    return {"repo": repo, "env": env, "marks": tmp_path / "marks", "tmp": tmp, "root": tmp_path}


def _start(tiny: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tiny["repo"] / "asv.conf.json")],
        cwd=tiny["repo"],
        env=tiny["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_marks(tiny: dict, proc: subprocess.Popen, n: int, timeout: float = 90.0) -> None:
    """Until the slow benchmark has finished ``n`` combinations."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        marks = tiny["marks"].read_text().splitlines() if tiny["marks"].exists() else []
        if len(marks) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended early: {proc.stdout.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the slow benchmark did not reach {n} combinations: {proc.stdout.read()}")


def _results(tiny: dict) -> tuple[dict, dict]:
    """(benchmark name -> asv result list, the last sweep record)."""
    machine_dir = tiny["repo"] / ".asv" / "results" / "m1"
    (path,) = [p for p in machine_dir.glob("*.json") if p.name != "machine.json"]
    results = {name: value[0] for name, value in json.loads(path.read_text())["results"].items()}
    (record_path,) = machine_dir.glob("fpbench-*.sweeps")
    return results, json.loads(record_path.read_text())[-1]


def _leftovers(tiny: dict) -> list[str]:
    """Processes whose command line names the test's folder (asv, its fork server, benchmarks)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(tiny["root"]) in text and "pytest" not in text:
            found.append(f"{cmdline.parent.name}: {text}")
    return found


def _assert_stopped_cleanly(tiny: dict, proc: subprocess.Popen, signame: str) -> tuple[str, dict]:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, signame), out
    assert "Traceback" not in out, out
    assert out.count(f"fpbench sweep: {signame}: stopping") == 1, out  # one line, at once
    assert f"interrupted by {signame}" in out, out
    results, record = _results(tiny)
    # the first asv run's results kept, failure included; the interrupted run's finished
    # combinations kept (three had started before the signal, so two had finished; the
    # third and a fourth may have too)
    assert results["bench_tiny.A.track_first"] == [1.0]
    assert "bench_tiny.A.track_fails" in results and results["bench_tiny.A.track_fails"] is None  # failed
    slow = results["bench_tiny.B.track_slow"]
    assert slow[:2] == [0.0, 1.0], slow
    assert any(v != v for v in slow), slow  # NaN: not reached
    kept = 2 + sum(v == v for v in slow)
    assert record["interrupted"] is True and record["signal"] == signame
    assert record["planned"] == 42 and record["measured"] == kept
    assert [r["complete"] for r in record["runs"]] == [True, False]
    assert record["runs"][1]["measured"] == kept - 2
    assert f"{kept} of 42 combinations kept" in out
    # the combinations not reached carry a reason in the log, for the report's gaps
    (log,) = (tiny["repo"] / ".asv" / "results" / "m1").glob("fpbench-*.log")
    reasons, _ = parse_log(log.read_text())
    assert reasons[("bench_tiny.B.track_slow", "39")] == "not run: the sweep was interrupted"
    assert not list(tiny["tmp"].iterdir()), list(tiny["tmp"].iterdir())  # no temporary folder left
    assert not _leftovers(tiny)
    return out, record


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_sigint_stops_cleanly_and_keeps_what_was_measured(tiny):
    """Ctrl-C: one line, exit 130, both runs' measured combinations kept, the record says so,
    no temporary folder and no asv process left. The terminal shows failures as they come
    (name and reason) and never asv's tables; asv's output is in the log the sweep names."""
    proc = _start(tiny)
    _wait_for_marks(tiny, proc, 3)
    proc.send_signal(signal.SIGINT)
    out, _ = _assert_stopped_cleanly(tiny, proc, "SIGINT")
    assert "FAILED bench_tiny.A.track_fails: ValueError: boom: the gate failed" in out, out
    assert "===" not in out and "For parameters" not in out  # asv's tables and output: the log only
    log = next((tiny["repo"] / ".asv" / "results" / "m1").glob("fpbench-*.log"))
    assert f"asv's output: {log}" in out
    assert "boom: the gate failed" in log.read_text() and "===" in log.read_text()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_second_sweep_is_refused_and_sigterm_stops_cleanly(tiny, capsys, monkeypatch):
    """While a sweep runs, a second one on the same results directory is refused (exit 2,
    naming the first's pid) and writes nothing; SIGTERM then stops the first as cleanly as
    Ctrl-C."""
    from fpbench.cli import main

    proc = _start(tiny)
    _wait_for_marks(tiny, proc, 3)
    assert proc.poll() is None  # still running
    for var in ("HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, tiny["env"][var])
    config = str(tiny["repo"] / "asv.conf.json")
    assert main(["sweep", "--config", config, "--machine", "m1", "--grid", "quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fpbench: error: another fpbench sweep (pid ") and f"pid {proc.pid}," in err, err
    assert "Traceback" not in err
    proc.send_signal(signal.SIGTERM)
    _, record = _assert_stopped_cleanly(tiny, proc, "SIGTERM")
    records = json.loads(
        next((tiny["repo"] / ".asv" / "results" / "m1").glob("fpbench-*.sweeps")).read_text()
    )
    assert records == [record]  # the refused sweep recorded nothing


def test_results_lock_names_the_holder(tmp_path):
    """The lock is held by a process until it ends, however it ends; meanwhile it is refused
    with the holder's pid; a lock whose holder died is free."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from fpbench.report.sweep_stop import results_lock\n"
            "with results_lock(Path(sys.argv[1]), 'grid main'):\n"
            "    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            sweep_plan.SweepError, match=rf"another fpbench sweep \(pid {holder.pid}, started .*grid main\)"
        ):
            with sweep_stop.results_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with sweep_stop.results_lock(tmp_path) as path:  # killed: the lock went with it
        assert f"pid {os.getpid()}," in path.read_text()


def test_stop_forwards_to_asv_and_raises_outside_it(monkeypatch):
    """The handler: no asv running -> SweepInterrupted (before the runs, while reporting);
    asv running -> SIGINT to its process group once, a second signal kills it."""
    sent = []
    monkeypatch.setattr(sweep_stop.os, "killpg", lambda pgid, sig: sent.append((pgid, sig)))
    monkeypatch.setattr(sweep_stop, "kill_tree", lambda pid: sent.append((pid, "tree")))
    stop = sweep_stop.Stop()
    with pytest.raises(sweep_stop.SweepInterrupted):
        stop(signal.SIGTERM, None)
    stop = sweep_stop.Stop(raising=False)
    stop(signal.SIGINT, None)  # between asv runs: noted, the loop stops before the next
    assert stop.signum == signal.SIGINT and not sent
    stop.pgid = 4242
    stop.forward()
    stop(signal.SIGINT, None)
    assert sent == [(4242, signal.SIGINT), (4242, "tree")]
    assert stop.message().startswith("fpbench sweep: SIGINT: stopping") and stop.message() is None


def test_atomic_writes_never_leave_half_a_file(tmp_path):
    """asv's JSON writer (patched by the launcher) and the sweep record: a write that fails
    midway leaves the old file whole and no temporary file."""
    from fpbench.report.asv_child import atomic_write_json

    target = tmp_path / "result.json"
    target.write_text('{"old": 1}')

    def failing(path, data, api_version=None, compact=False):
        Path(path).write_text('{"half')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(failing)(str(target), {"new": 2})
    assert target.read_text() == '{"old": 1}' and [p.name for p in tmp_path.iterdir()] == ["result.json"]

    from asv.util import write_json

    atomic_write_json(write_json)(str(target), {"new": 2})
    assert json.loads(target.read_text()) == {"new": 2}
    sweep._write_atomic(tmp_path / "x.sweeps", "[]\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json", "x.sweeps"]


ASV_OUTPUT = """\
[ 10.00%] ··· bench_solve.Product.time_solve                                  ok
[ 10.00%] ··· ============ =====
              target        x
             ============ =====
[ 10.00%] ··· For parameters: 'numpy:cpu', 'jacobi', 64
              fpbench gate passed: max_abs=1e-07 rel_rms=1e-08

              For parameters: 'torch:cuda', 'jacobi', 64
              asv: skipped: NotImplementedError('no CUDA device')

              For parameters: 'torch:cpu', 'newton', 64
              Traceback (most recent call last):
                File "x.py", line 1, in <module>
              AssertionError: gate failed: max_abs=0.5

              For parameters: 'jax:cpu', 'newton', 64
              asv: benchmark timed out (timeout 300s)
              asv: benchmark failed (exit status 1)
[ 20.00%] ··· bench_cold.ColdStart.track_prepare_seconds                   failed
[ 20.00%] ··· asv: benchmark failed (exit status -9)
"""


def test_failure_watch_names_each_failure_and_its_reason():
    watch = sweep_display.FailureWatch()
    seen = [m for line in ASV_OUTPUT.splitlines() for m in watch.feed(line)] + watch.flush()
    assert seen == [
        "fpbench sweep: FAILED bench_solve.Product.time_solve('torch:cpu', 'newton', 64): "
        "AssertionError: gate failed: max_abs=0.5",
        "fpbench sweep: FAILED bench_solve.Product.time_solve('jax:cpu', 'newton', 64): "
        "asv: benchmark timed out (timeout 300s)",
        "fpbench sweep: FAILED bench_cold.ColdStart.track_prepare_seconds: "
        "asv: benchmark failed (exit status -9)",
    ]
    assert watch.count == 3


def test_display_plain_lines_off_a_terminal_and_a_live_line_on_one():
    progress = sweep_display.Progress([{"a.B.c": 10}, {"x.Y.z": 2}])
    plain = io.StringIO()
    display = sweep_display.Display(progress, stream=plain, live=False)
    display.start("torch:cpu", [r"\('torch:cpu'"])
    progress.line("[ 50.00%] ··· a.B.c    ok")
    display.update(force=True)
    display.finish(0)
    text = plain.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert "fpbench sweep: asv run --bench \\('torch:cpu' (torch:cpu: 10 combinations)" in text
    assert "fpbench sweep: torch:cpu 10/10; sweep 10/12" in text
    assert "torch:cpu: 10/10 combinations in" in text

    pytest.importorskip("tqdm")
    live = io.StringIO()
    display = sweep_display.Display(progress, stream=live, live=True)
    progress.next_run()
    display.start("settings", [r"^bench_settings\."])
    display.note("fpbench sweep: FAILED x.Y.z: boom")
    progress.line("[100.00%] ··· x.Y.z    ok")
    display.update()
    display.finish(0)
    text = live.getvalue()
    assert "settings: 100%" in text and "2/2" in text and "sweep 12/12" in text
    assert "fpbench sweep: FAILED x.Y.z: boom\n" in text


def test_chunk_labels():
    chunks = sweep_plan.sweep_chunks({"FPBENCH_BACKENDS": "torch,numba"}, "quick")
    labels = [sweep_plan.chunk_label(c) for c in chunks]
    assert labels[-1] == "settings" and "torch:cpu" in labels and "numba:cpu" in labels
    # each run's fork server imports its own framework only; the settings run none
    assert [sweep_plan.preload(label) for label in labels] == [
        label.partition(":")[0] for label in labels[:-1]
    ] + [""]


def test_interrupted_note():
    full = {"bench": [], "interrupted": False}
    stopped = {"bench": [], "interrupted": True, "signal": "SIGINT", "measured": 83, "planned": 466}
    subset = {"bench": ["Settings"], "interrupted": False}
    assert interrupted_note({("m", "c" * 40): [full]}) == ""
    assert interrupted_note({("m", "c" * 40): [stopped, full]}) == ""  # a full sweep ran since
    note = interrupted_note({("m", "c" * 40): [full, stopped, subset]})  # a subset does not repair it
    assert note.startswith("**Interrupted:**") and "`m`" in note and "SIGINT after 83 of its 466" in note


def test_report_says_the_run_was_interrupted(tmp_path):
    pytest.importorskip("pandas")
    from fpbench.report.build import build_report

    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    (sidecar,) = (results / "fixture-a").glob("fpbench-*.sweeps")
    records = json.loads(sidecar.read_text())
    records[-1].update(interrupted=True, signal="SIGTERM", planned=40, measured=12)
    sidecar.write_text(json.dumps(records))
    out = build_report(results, tmp_path / "out", machines=["fixture-a"])
    summary = (out / "summary.md").read_text().splitlines()
    top = "\n".join(summary[:3])
    assert "**Interrupted:**" in top and "`fixture-a`" in top and "SIGTERM after 12 of its 40" in top
    page = (out / "index.html").read_text()
    assert "<strong>Interrupted:</strong>" in page[: page.index("<nav>")]


def test_headline_lines_reuse_the_report_headline():
    pytest.importorskip("pandas")
    out = io.StringIO()
    sweep.print_headline(FIXTURE, "fixture-a", stream=out)
    text = out.getvalue()
    assert text.startswith(
        "Headline (fixture-a): where each parallel solver beats the best sequential baseline"
    )
    lines = text.splitlines()[1:]
    assert lines and all("best " in line and "x with " in line and "(T, H, B) = (" in line for line in lines)
    assert any("max |error|" in line for line in lines)
