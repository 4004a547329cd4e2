"""Regenerate ``tests/data/asv_results/``: a real asv run of a tiny suite on two machines.

    python tests/data/make_asv_fixture.py

The suite below follows the benchmark contract (class names, parameter names and order,
NotImplementedError -> n/a, a failed correctness gate -> failure) but runs the NumPy
backend only and tiny shapes, so it finishes in about a minute. It goes through the real
``fpbench sweep`` code path (``run_sweep``) with two asv machine names, in a throwaway git
repository and with HOME pointed at a temporary folder (the user's ``~/.asv-machine.json``
is left alone). The ``fixture-b`` run sets ``OMP_NUM_THREADS=1`` so that the two machines'
settings differ.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

ASV_CONF = {
    "version": 1,
    "project": "fpbench-fixture",
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
}

COMMON = '''
import sys

import numpy as np

import fpbench
from fpbench.solvers import make_solver
from fpbench.testing import errors

TARGETS = ["numpy:cpu", "torch:cuda"]
BASELINES = ("sequential", "native")


def prepare(
    target, cell, solver, seq_len, hidden_size, max_iters, contraction=0.6, tol=None, batch=2, input_size=4
):
    """(prepared solve, problem); NotImplementedError outside the numpy backend."""
    backend, device = target.split(":")
    if backend != "numpy":
        raise NotImplementedError(f"the fixture suite runs the numpy backend only, not {target}")
    spec = fpbench.RNNSpec(
        cell=cell,
        input_size=input_size,
        hidden_size=hidden_size,
        seq_len=seq_len,
        batch=batch,
        contraction=contraction,
    )
    problem = fpbench.make_problem(spec)
    budget = None if solver in BASELINES else max_iters
    prepared = fpbench.get_backend(backend).prepare(problem, make_solver(solver, budget, tol), device)
    return prepared, problem


def gate(prepared, problem):
    """The correctness gate: a timing only counts if the solve matches the exact states."""
    states, _ = prepared.to_host(prepared.run())
    err = errors(states, fpbench.reference_states(problem))
    assert err["max_abs"] <= 1e-4, f"correctness gate failed: max abs error {err['max_abs']:.2e} > 1e-4"
    print(f"fpbench gate passed: max_abs={err['max_abs']:.3e} rel_rms={err['rel_rms']:.3e}", file=sys.stderr)
'''

BENCH_SOLVE = """
from .common import TARGETS, gate, prepare

BUDGET = 8


class _Time:
    repeat = 3
    number = 1
    rounds = 1
    warmup_time = 0.0

    def setup(self, target, cell, solver, seq_len, hidden_size):
        self.prepared, problem = prepare(target, cell, solver, seq_len, hidden_size, BUDGET)
        gate(self.prepared, problem)

    def time_solve(self, *params):
        self.prepared.run()


class _Solve(_Time):
    def peakmem_solve(self, *params):
        self.prepared.run()


class SeqLen(_Solve):
    params = [TARGETS, ["elman"], ["sequential", "jacobi", "newton"], [8, 32, 128], [4, 16]]
    param_names = ["target", "cell", "solver", "seq_len", "hidden_size"]


class Hidden(_Solve):
    params = [TARGETS, ["elman"], ["sequential", "quasi_newton"], [32], [4, 8, 16]]
    param_names = ["target", "cell", "solver", "seq_len", "hidden_size"]


class Product(_Time):
    # T x H at B = 4 with I = H, to tolerance (the contract of the main grid's suite)

    params = [TARGETS, ["gru"], ["sequential", "jacobi", "newton"], [16, 64, 256], [2, 4, 8]]
    param_names = ["target", "cell", "solver", "seq_len", "hidden_size"]

    def setup(self, target, cell, solver, seq_len, hidden_size):
        self.prepared, problem = prepare(
            target, cell, solver, seq_len, hidden_size, seq_len, tol=1e-6, batch=4, input_size=hidden_size
        )
        gate(self.prepared, problem)


class Batch(_Time):
    # batch size B at (T, H) = (64, 4), to tolerance

    params = [TARGETS, ["elman"], ["sequential", "jacobi"], [1, 4, 16]]
    param_names = ["target", "cell", "solver", "batch"]

    def setup(self, target, cell, solver, batch):
        self.prepared, problem = prepare(target, cell, solver, 64, 4, 64, tol=1e-6, batch=batch)
        gate(self.prepared, problem)
"""

BENCH_ACCURACY = """
import math

from fpbench.testing import errors

import fpbench

from .common import prepare


class Accuracy:
    params = [["numpy:cpu"], ["elman"], ["jacobi", "newton"], [1, 2, 4, 8, "tol"], [0.5, 0.9]]
    param_names = ["target", "cell", "solver", "max_iters", "contraction"]

    def setup(self, target, cell, solver, max_iters, contraction):
        seq_len = 32
        budget, tol = (seq_len, 1e-4) if max_iters == "tol" else (max_iters, None)
        prepared, problem = prepare(target, cell, solver, seq_len, 8, budget, contraction, tol)
        states, residuals = prepared.to_host(prepared.run())
        self.err = errors(states, fpbench.reference_states(problem))
        self.iterations = len(residuals)

    def track_max_abs_error(self, *params):
        return self.err["max_abs"]

    track_max_abs_error.unit = "abs error"

    def track_iterations(self, *params):
        return self.iterations

    track_iterations.unit = "iterations"
"""

BENCH_COLD = """
import time

from .common import TARGETS, prepare


class ColdStart:
    params = [TARGETS, ["jacobi", "newton"]]
    param_names = ["target", "solver"]

    def setup(self, target, solver):
        if not target.startswith("numpy:"):
            raise NotImplementedError(f"the fixture suite runs the numpy backend only, not {target}")

    def track_prepare_seconds(self, target, solver):
        start = time.perf_counter()
        prepare(target, "elman", solver, 32, 8, 8)
        return time.perf_counter() - start

    track_prepare_seconds.unit = "seconds"
"""


def _git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": "2025-01-01T00:00:00",
        "GIT_COMMITTER_DATE": "2025-01-01T00:00:00",
    }
    subprocess.run(["git", *args], cwd=repo, check=True, env=env, capture_output=True)


def main() -> None:
    from fpbench.report.sweep import run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / "benchmarks").mkdir(parents=True)
        (repo / "asv.conf.json").write_text(json.dumps(ASV_CONF, indent=1))
        files = {
            "__init__.py": "",
            "common.py": COMMON,
            "bench_solve.py": BENCH_SOLVE,
            "bench_accuracy.py": BENCH_ACCURACY,
            "bench_cold.py": BENCH_COLD,
        }
        for name, text in files.items():
            (repo / "benchmarks" / name).write_text(text.lstrip())
        _git(repo, "init", "-q")
        _git(repo, "add", "-A")
        _git(
            repo,
            "-c",
            "user.name=fixture",
            "-c",
            "user.email=fixture@example.org",
            "commit",
            "-qm",
            "fixture",
        )

        saved = dict(os.environ)
        try:
            os.environ["HOME"] = tmp  # asv's machine file goes to $HOME/.asv-machine.json
            for machine, threads in (("fixture-a", None), ("fixture-b", "1")):
                if threads:
                    os.environ["OMP_NUM_THREADS"] = threads
                run_sweep(grid="quick", machine=machine, config=repo / "asv.conf.json", report=False)
        finally:
            os.environ.clear()
            os.environ.update(saved)

        dest = HERE / "asv_results"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(repo / ".asv" / "results", dest)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
