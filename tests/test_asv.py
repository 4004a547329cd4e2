"""The asv suites: discovery (``asv check``) and a real run of a small quick-grid subset.

asv runs as a subprocess in this Python (``-E existing:same``, the development path of
the README) in the ``asv_sandbox`` of
conftest.py: a temporary HOME and results directory, so the user's are never touched.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ASV_MACHINE

asv_results = pytest.importorskip("asv.results")

ROOT = Path(__file__).resolve().parents[1]
MACHINE = ASV_MACHINE

# A quick-grid subset (asv matches --bench against "name(param reprs)"): numpy:cpu is
# always present, so something must produce a number; torch:cuda is n/a without a GPU;
# native is n/a on numpy; the other suites once each.
SUBSET = [
    r"bench_solve\.SeqLen\.\w+\('(numpy|torch):(cpu|cuda)', 'gru', '(sequential|jacobi)', 128\)",
    r"bench_solve\.Budget\.time_solve\('numpy:cpu', 'gru', '(native|newton)', 2\)",
    r"bench_solve\.Product\.time_solve\('numpy:cpu', 'gru', '(sequential|jacobi)', 128, 4\)",
    r"bench_solve\.Batch\.time_solve\('numpy:cpu', 'gru', 'jacobi', 1\)",
    r"bench_accuracy\.Accuracy\.track_\w+\('numpy:cpu', 'elman', 'quasi_newton', (2|'tol'), 1\.2\)",
    r"bench_cold\.ColdStart\.timeraw_prepare\('numpy:cpu', 'gru', 'jacobi'\)",
    r"bench_floor\.IterationFloor\.time_\w+\('numpy:cpu'",
    r"bench_settings\.Settings\.track_setting",
]


def asv(*args: str, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``python -m asv`` and fail with its output when it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "asv", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"asv {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def asv_env(asv_sandbox) -> tuple[dict[str, str], Path]:
    """:func:`conftest.asv_sandbox` with the test machine described."""
    env, config = asv_sandbox
    asv("machine", "--yes", "--machine", MACHINE, cwd=ROOT, env=env, timeout=60)
    return env, config


def test_asv_check(asv_env):
    env, config = asv_env
    proc = asv("check", "--python=same", "--config", str(config), cwd=ROOT, env=env, timeout=120)
    assert "No problems found" in proc.stdout + proc.stderr


def selected(name: str, params: list[list[str]]) -> list[int]:
    """Indices of ``name``'s parameter combinations the SUBSET selects (as asv does)."""
    from itertools import product

    combos = [f"{name}({', '.join(p)})" for p in product(*params)] if params else [name]
    return [i for i, c in enumerate(combos) if any(re.search(r, c) for r in SUBSET)]


@pytest.mark.slow
def test_asv_run_quick_subset(asv_env):
    env, config = asv_env
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    bench = []
    for regex in SUBSET:
        bench += ["--bench", regex]
    args = ["run", "-E", "existing:same", "--quick", "--set-commit-hash", head, "--machine", MACHINE, *bench]
    asv(*args, "--show-stderr", "--config", str(config), cwd=ROOT, env=env, timeout=600)

    results = list(asv_results.iter_results_for_machine(str(config.parent / "results"), MACHINE))
    assert len(results) == 1, "asv saved no results (or more than one file) for this commit"
    res = results[0]
    assert res.commit_hash == head
    numbers, na, failed, seen = 0, 0, [], set()
    for name in res.get_all_result_keys():
        params = res.get_result_params(name)
        values = res.get_result_value(name, params)
        for i in selected(name, params):
            seen.add(name.split(".")[0])
            v = values[i]
            if v is None:
                failed.append(f"{name}[{i}]: {res.stderr.get(name, '')[-2000:]}")
            elif isinstance(v, float) and math.isnan(v):
                na += 1
            else:
                numbers += 1
    assert not failed, "benchmarks failed:\n" + "\n".join(failed)
    assert seen == {"bench_solve", "bench_accuracy", "bench_cold", "bench_floor", "bench_settings"}
    assert numbers > 0, "nothing produced a number: the run benchmarked nothing"
    assert na > 0, "the subset's n/a combinations (torch:cuda, native on numpy) were not n/a"
