"""``fpbench sweep``: run the asv suites in this Python, publish, and build the report.

Beside asv's own results the sweep leaves two files in ``<results>/<machine>/`` (asv reads
only ``*.json`` there, so it ignores them):

- ``fpbench-<commit8>.log``: asv's console output, appended per sweep. asv does not store
  why a benchmark was skipped or failed; the report reads the reasons from here.
- ``fpbench-<commit8>.sweeps``: JSON list, one entry per sweep: grid, benchmark filter,
  thread settings, package versions, asv's exit status.

asv writes a commit's results file only when its ``asv run`` ends, so the sweep runs asv
once per target (and once for the settings suite): a sweep stopped part-way keeps every
target it finished, and the next ``asv run`` of the same commit adds to that file.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from fpbench.backend import THREAD_VARS

SIDE_LOG = "fpbench-{commit}.log"
SIDE_SWEEPS = "fpbench-{commit}.sweeps"

RECORDED_VARS = ("FPBENCH_GRID", "FPBENCH_BACKENDS", *THREAD_VARS, "CUDA_VISIBLE_DEVICES")
"""Environment variables that change what or how the suites measure."""

VERSIONED = ("fpbench", "numpy", "torch", "jax", "jaxlib", "numba", "asv", "asv_runner")


class SweepError(RuntimeError):
    """The sweep cannot start (not a git checkout, no asv.conf.json, no asv)."""


def _git_head(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        raise SweepError(
            f"{repo.resolve()} is not a git checkout with a commit: run the sweep from one"
        ) from e
    return out.stdout.strip()


def _asv(args: list[str]) -> list[str]:
    # the asv of this Python, whatever `asv` on PATH is
    return [sys.executable, "-m", "asv", *args]


def ensure_machine(machine: str | None) -> str:
    """Make sure asv's machine file (``~/.asv-machine.json``) describes the machine; return its name.

    This is what ``asv machine --yes`` does, done through asv's API because asv's command
    line drops some fields (cpu, arch) when ``--machine`` names the machine: the report's
    provenance section needs them.
    """
    from asv.machine import Machine, MachineCollection
    from asv.util import UserError

    lookup = machine or Machine.get_unique_machine_name()
    try:
        return MachineCollection.load(lookup)["machine"]
    except UserError:  # not described yet
        MachineCollection.save(lookup, {**Machine.get_defaults(), "machine": lookup})
        return lookup


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _stream(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> int:
    """Run ``cmd``, echoing its output to the terminal line by line and appending it to ``log_path``."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n#### fpbench sweep {datetime.datetime.now().isoformat(timespec='seconds')}: {cmd}\n")
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
        return proc.wait()


def sweep_chunks(env: dict[str, str]) -> list[list[str]]:
    """The ``--bench`` regular expressions of each ``asv run`` of a full sweep: one per
    ``backend:device`` target (every suite but the settings has the target as its first
    parameter, and asv matches ``--bench`` against ``name(param, ...)``), then the
    settings suite."""
    from fpbench.registry import selected_targets

    targets = selected_targets(env.get("FPBENCH_BACKENDS", ""))
    return [[rf"\('{re.escape(t)}'"] for t in targets] + [[r"^bench_settings\."]]


def run_sweep(
    grid: str = "default",
    bench: list[str] | None = None,
    out: Path | str | None = None,
    machine: str | None = None,
    config: Path | str = "asv.conf.json",
    report: bool = True,
) -> int:
    """Run the asv suites on the checked-out commit, publish asv's HTML, build the report.

    Args:
        grid: ``FPBENCH_GRID`` for the suites (``quick``, ``default``, ``full``).
        bench: asv ``--bench`` regular expressions (all benchmarks when None).
        out: report folder; default ``<repo>/reports/<machine>``.
        machine: asv machine name; default this host's entry in ``~/.asv-machine.json``.
        config: the asv configuration file; its folder is the repository root.
        report: build the fpbench report after publishing.

    Returns:
        0 when asv ran every benchmark without a failure, else asv's exit status; the
        report is built from whatever asv saved either way.

    Raises:
        SweepError: not a git checkout, no asv configuration, or asv missing.
    """
    config = Path(config).resolve()
    if not config.is_file():
        raise SweepError(f"no asv configuration at {config}: run from the fpbench checkout root")
    conf_dir = config.parent
    try:
        from asv.config import Config
    except ImportError as e:
        raise SweepError("asv is not installed: pip install 'fpbench[bench]'") from e
    conf = Config.load(str(config))
    commit = _git_head((conf_dir / conf.repo).resolve())
    results_dir = conf_dir / conf.results_dir
    html_dir = conf_dir / conf.html_dir

    name = ensure_machine(machine)
    side_dir = results_dir / name
    side_dir.mkdir(parents=True, exist_ok=True)

    env = {**os.environ, "FPBENCH_GRID": grid, "PYTHONUNBUFFERED": "1"}
    run_args = ["run", "--config", str(config), "--python=same", "--set-commit-hash", commit]
    # --show-stderr: asv prints why a combination was skipped only with it (the report lists reasons)
    run_args += ["--machine", name, "--show-stderr"]
    started = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"fpbench sweep: grid={grid} machine={name} commit={commit[:8]}", flush=True)
    rc = 0
    for chunk in [bench] if bench else sweep_chunks(env):
        print(f"fpbench sweep: asv run --bench {' --bench '.join(chunk)}", flush=True)
        args = run_args + [arg for regex in chunk for arg in ("--bench", regex)]
        t0 = time.monotonic()
        status = _stream(_asv(args), conf_dir, env, side_dir / SIDE_LOG.format(commit=commit[:8]))
        print(f"fpbench sweep: asv run exited {status} after {time.monotonic() - t0:.0f} s", flush=True)
        rc = rc or status
        if status < 0 or status in (130, 137, 143):  # asv was interrupted or killed: stop here
            break

    record = {
        "started": started,
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "grid": grid,
        "bench": bench or [],
        "asv_exit_status": rc,
        "env": {var: env[var] for var in RECORDED_VARS if var in env},
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
    }
    sweeps_path = side_dir / SIDE_SWEEPS.format(commit=commit[:8])
    sweeps = json.loads(sweeps_path.read_text()) if sweeps_path.is_file() else []
    sweeps_path.write_text(json.dumps([*sweeps, record], indent=1) + "\n")

    if rc != 0:
        print(
            f"fpbench sweep: asv run exited with status {rc} (a benchmark failed or the run stopped); "
            "building the report from the results asv saved",
            flush=True,
        )
    pub = subprocess.run(_asv(["publish", "--config", str(config)]), cwd=conf_dir, env=env)
    if pub.returncode != 0:
        print(f"fpbench sweep: asv publish exited with status {pub.returncode}", flush=True)

    if report:
        from .build import build_report

        out_dir = build_report(
            results_dir, Path(out) if out else conf_dir / "reports" / name, machines=[name]
        )
        print(f"report:   {out_dir / 'index.html'}")
        print(f"summary:  {out_dir / 'summary.md'}")
    print(f"asv html: {html_dir / 'index.html'}")
    return rc or pub.returncode
