"""What ``fpbench sweep`` writes beside asv's results and ``fpbench report`` reads back.

Both sides import this module and nothing of each other: the sweep (:mod:`.sweep`) is
orchestration (git, asv runs, publish), the report (:mod:`.load`, :mod:`.build`) only reads
results. Standard library only.

Beside asv's own results the sweep leaves two files in ``<results>/<machine>/`` (asv reads
only ``*.json`` there, so it ignores them):

- ``fpbench-<commit8>.log``: asv's console output, appended per sweep. asv does not store
  why a benchmark was skipped or failed, nor what the correctness gate measured; the
  report reads both from here (:func:`parse_log`).
- ``fpbench-<commit8>.sweeps``: JSON list, one entry per sweep: grid, benchmark filter,
  thread settings, package versions, asv's exit status, whether a signal stopped it
  (``interrupted``, ``signal``) and what each asv run planned and measured
  (:func:`read_sweeps`; :func:`interrupted_note`).
- ``fpbench-<commit8>.curves``: JSON lines, one per training run of the ``TrainLoss`` suite:
  its parameters and its loss and seconds per step (asv keeps one number per benchmark,
  the report draws the curves from these; :func:`read_curves`). The suite appends to the
  file :data:`CURVES_ENV` names, which the sweep sets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..solvers import SOLVERS

SIDE_LOG = "fpbench-{commit}.log"
SIDE_SWEEPS = "fpbench-{commit}.sweeps"
SIDE_CURVES = "fpbench-{commit}.curves"
CURVES_ENV = "FPBENCH_CURVES_FILE"

BASELINES: tuple[str, ...] = tuple(name for name, cls in SOLVERS.items() if not cls.iterative)
"""The baselines' names (the registry's solvers of a baseline kind): what a parallel
solver's speedup is measured against."""

GATE_PREFIX = "fpbench gate passed:"
"""How the benchmarks' correctness gate reports a passed check on stderr (asv's
``--show-stderr`` copies it into the log): ``fpbench gate passed: max_abs=… rel_rms=…``."""


class ReportError(Exception):
    """The report or the sweep cannot go on: the message says why and names the file."""


class ResultsNotFound(ReportError, FileNotFoundError):
    """No asv results where the report looked (missing or empty directory, unknown machine)."""


def read_sweeps(path: Path) -> list[dict[str, Any]]:
    """The sweep records in ``path`` (``[]`` when it does not exist).

    Raises:
        ReportError: the file is not a JSON list of objects (names the file).
    """
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"cannot read the sweep record {path}: {e}") from e
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ReportError(f"cannot read the sweep record {path}: expected a JSON list of objects")
    return records


def interrupted_note(sweeps: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    """A sentence for the top of the report when a run's results come from an interrupted sweep.

    ``sweeps`` maps ``(machine, commit)`` to that run's sweep records (:func:`read_sweeps`).
    A run counts as interrupted when, reading its records from the newest, an interrupted
    sweep (``"interrupted": true``, written by ``fpbench sweep`` after SIGINT or SIGTERM)
    comes before any full sweep (one without ``--bench``) that ran to its end: a later sweep
    of a subset does not fill what the interrupted one missed.

    Returns:
        ``"**Interrupted:** …"`` naming each such run, the signal and how many combinations
        the sweep kept, ending in a space; ``""`` when no run was interrupted.
    """
    parts = []
    for (machine, commit), records in sorted(sweeps.items()):
        stopped = None
        for record in reversed(records):
            if record.get("interrupted") is True:
                stopped = record
                break
            if not record.get("bench"):
                break
        if stopped is None:
            continue
        kept = ""
        if isinstance(stopped.get("measured"), int) and isinstance(stopped.get("planned"), int):
            kept = f" after {stopped['measured']} of its {stopped['planned']} combinations"
        parts.append(
            f"`{machine}` (commit `{commit[:8]}`, started {str(stopped.get('started', '?'))[:32]}) was "
            f"stopped by {str(stopped.get('signal') or 'a signal')[:16]}{kept}"
        )
    if not parts:
        return ""
    return (
        "**Interrupted:** the sweep of "
        + "; the sweep of ".join(parts)
        + ". What it did not reach is missing from this report, or n/a. "
    )


CURVE_KEYS = ("target", "method", "budget", "contraction", "losses", "step_seconds")
"""What every line of a curves file holds (it may hold more)."""


def read_curves(path: Path) -> list[dict[str, Any]]:
    """The training curves in ``path`` (``[]`` when it does not exist), in file order.

    Raises:
        ReportError: a line is not a JSON object with :data:`CURVE_KEYS` (names the file and line).
    """
    if not path.is_file():
        return []
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"cannot read the training curves {path}: {e}") from e
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReportError(f"cannot read the training curves {path}, line {number}: {e}") from e
        if not isinstance(record, dict) or not all(k in record for k in CURVE_KEYS):
            raise ReportError(
                f"cannot read the training curves {path}, line {number}: expected an object with "
                f"{', '.join(CURVE_KEYS)}"
            )
        records.append(record)
    return records


ANSI = re.compile(r"\x1b\[[0-9;]*m")
HEADER = re.compile(r"^\[\s*[\d.]+%\]\s+·+\s+(?P<name>[\w]+(?:\.[\w]+)+)\b(?P<rest>.*)$")
PARAMS = re.compile(r"^(?:\[\s*[\d.]+%\]\s+·+)?\s*For parameters: (?P<params>.*)$")
GATE = re.compile(re.escape(GATE_PREFIX) + r"\s*max_abs=(?P<max_abs>\S+)\s+rel_rms=(?P<rel_rms>\S+)")


def _tidy_reason(text: str) -> str:
    text = text.removeprefix("asv: skipped: ")
    return text if len(text) <= 240 else text[:237] + "..."


def parse_log(log_text: str) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], dict[str, float]]]:
    """What asv printed for each combination, from its console output.

    Returns:
        ``(reasons, gates)``: ``reasons`` maps ``(benchmark name, "'torch:cuda', 'jacobi', 64")``
        to the last line asv printed for it (the exception, e.g. ``NotImplementedError('no CUDA
        device')``); ``gates`` maps the same keys to the errors the correctness gate measured
        (``{"max_abs", "rel_rms"}``) where it printed them. Later sweeps in the log override
        earlier ones. Unparameterised benchmarks use ``""`` as params.
    """
    reasons: dict[tuple[str, str], str] = {}
    gates: dict[tuple[str, str], dict[str, float]] = {}
    bench, params, last = None, "", ""

    def close() -> None:
        if bench is not None and last:
            reasons[(bench, params)] = last

    for raw in log_text.splitlines():
        line = ANSI.sub("", raw).rstrip()
        header = HEADER.match(line)
        found = PARAMS.match(line)
        if header or found or line.startswith("#### fpbench sweep"):
            close()
            last = ""
            if header:
                bench, params = header["name"], ""
            elif found:
                params = found["params"].strip()
            else:
                bench = None
        elif line.strip():
            gate = GATE.search(line)
            if gate and bench is not None:
                try:
                    gates[(bench, params)] = {k: float(gate[k]) for k in ("max_abs", "rel_rms")}
                except ValueError:
                    pass
                continue
            if last and line.strip().startswith("asv: benchmark failed"):
                continue  # asv's summary after the exception: keep the exception, it says why
            last = line.strip()
    close()
    return {key: _tidy_reason(text) for key, text in reasons.items()}, gates


def parse_reasons(log_text: str) -> dict[tuple[str, str], str]:
    """The ``reasons`` of :func:`parse_log`."""
    return parse_log(log_text)[0]
