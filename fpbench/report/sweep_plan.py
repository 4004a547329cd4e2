"""The sweep's plan: what ``fpbench sweep`` runs, before it runs anything.

The ``--bench`` regular expressions of each ``asv run`` (one per ``backend:device`` target,
then the settings suite: :func:`sweep_chunks`), each run's short name (:func:`chunk_label`)
and the framework its fork server imports (:func:`preload`), the commit and asv's machine
entry (:func:`git_head`, :func:`ensure_machine`), and how many combinations each run has
(:func:`plan`, which discovers the suites as asv does).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

from fpbench.grids import GRIDS

from .store import (
    ReportError,
)


class SweepError(ReportError):
    """The sweep cannot start (not a git checkout, no asv.conf.json, no asv, bad arguments)."""


def git_head(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        raise SweepError(
            f"{repo.resolve()} is not a git checkout with a commit: run the sweep from one"
        ) from e
    return out.stdout.strip()


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


def plan(conf_path: Path, commit: str, chunks: list[list[str]], env: dict[str, str]) -> list[dict[str, int]]:
    """Discover the suites (as ``asv run`` does) and count each run's combinations.

    Returns:
        For each chunk of ``--bench`` regular expressions: benchmark name -> how many of its
        parameter combinations the chunk selects (asv's own selection rule).

    Raises:
        SweepError: the suites cannot be imported.
    """
    from asv import environment
    from asv.benchmarks import Benchmarks
    from asv.config import Config
    from asv.repo import get_repo
    from asv.util import UserError

    saved, cwd = dict(os.environ), os.getcwd()
    try:
        os.chdir(conf_path.parent)  # asv resolves the configuration's paths from here, as `asv run` does
        conf = Config.load(str(conf_path))
        os.environ.clear()
        os.environ.update(env)  # the discovery process sees the sweep's FPBENCH_GRID
        envs = list(environment.get_environments(conf, [":same"]))
        found = Benchmarks._disc_benchmarks(conf, get_repo(conf), envs, [commit], False)
    except UserError as e:
        raise SweepError(f"asv could not import the benchmark suites of {conf_path}: {e}") from e
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
    found = list(found)
    plans = []
    for chunk in chunks:
        counts: dict[str, int] = {}
        for bench in found:
            name = bench["name"]
            if bench["params"]:
                combos = (f"{name}({', '.join(p)})" for p in itertools.product(*bench["params"]))
                n = sum(1 for c in combos if any(re.search(r, c) for r in chunk))
            else:
                n = int(any(re.search(r, name) for r in chunk))
            if n:
                counts[name] = n
        plans.append(counts)
    return plans


def gpu_driver_present() -> bool:
    """Whether this machine has a GPU driver (NVIDIA or ROCm): without one no framework has a
    GPU device (the check ``benchmarks/common.py`` makes before importing a framework)."""
    return (
        os.path.exists("/proc/driver/nvidia/version")
        or shutil.which("nvidia-smi") is not None
        or os.path.exists("/dev/kfd")
    )


def _suite_prefix(grid: str) -> str:
    """Regex prefix selecting the grid's suites (``Grid.suites``), or any benchmark."""
    suites = GRIDS[grid].suites
    return rf"^\w+\.(?:{'|'.join(map(re.escape, suites))})\.\w+" if suites else ""


def sweep_chunks(env: dict[str, str], grid: str = "default") -> list[list[str]]:
    """The ``--bench`` regular expressions of each ``asv run`` of a full sweep: one per
    ``backend:device`` target (every suite but the settings has the target as its first
    parameter, and asv matches ``--bench`` against ``name(param, ...)``) but the grid's
    ``sweep_skips`` and, on a machine without a GPU driver, the GPU targets; restricted to
    the grid's ``suites``; then the settings suite. Combinations of a target not run are
    missing from the results (the report lists them as n/a)."""
    from fpbench.registry import selected_targets

    skips = set(GRIDS[grid].sweep_skips)
    targets = [t for t in selected_targets(env.get("FPBENCH_BACKENDS", "")) if t not in skips]
    if not gpu_driver_present():  # their every combination would be n/a: not worth an asv run
        targets = [t for t in targets if t.partition(":")[2] == "cpu"]
    prefix = _suite_prefix(grid)
    return [[rf"{prefix}\('{re.escape(t)}'"] for t in targets] + [[r"^bench_settings\."]]


def chunk_label(chunk: list[str]) -> str:
    """A short name for one ``asv run`` of the sweep: its target, ``settings``, or its regexes."""
    if len(chunk) == 1:
        target = re.search(r"\\\('(.+?)'", chunk[0])
        if target:
            return target[1].replace("\\", "")
        if chunk[0] == r"^bench_settings\.":
            return "settings"
    text = " ".join(chunk)
    return text if len(text) <= 24 else text[:21] + "..."


PRELOAD_ENV = "FPBENCH_PRELOAD"
"""What asv's fork server imports before forking (``benchmarks/common.py``, which spells it
out too: the suites may come from another checkout than this package)."""


def preload(label: str) -> str:
    """The backends the fork server of the ``asv run`` called ``label`` (:func:`chunk_label`)
    imports: the one its target runs on (``"torch:cpu"`` -> ``"torch"``); none for another run.
    So no process measures with another framework imported (a peak memory holds the
    frameworks imported), and only the Numba run warms Numba's kernels."""
    backend, sep, _ = label.partition(":")
    return backend if sep and backend.isidentifier() else ""


__all__ = [
    "PRELOAD_ENV",
    "SweepError",
    "chunk_label",
    "ensure_machine",
    "git_head",
    "gpu_driver_present",
    "plan",
    "preload",
    "sweep_chunks",
]
