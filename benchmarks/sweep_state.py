"""What the suites keep across asv's processes under ``fpbench sweep``: a tick per
combination for the sweep's live count (:func:`tick`), a combination's measurements shared by
its ``track_`` methods (:func:`memo`), and the gates' float64 references shared by every
target and timed method of a problem and solver (:func:`gate_reference`). Without the sweep's
variables each process computes its own.

A helper of the suites: no benchmark class or function here (asv imports every module of
``benchmarks/`` to discover the suites).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROGRESS_ENV = "FPBENCH_PROGRESS_FILE"
"""``fpbench sweep`` sets it to a file; every suite's setup appends one line per combination
(:func:`tick`), so the sweep can count combinations live (asv prints a benchmark's results
only once all its combinations have run)."""


def tick() -> None:
    """Count this combination in the sweep's progress file, if there is one."""
    path = os.environ.get(PROGRESS_ENV)
    if path:
        try:
            with open(path, "a", encoding="ascii") as f:
                f.write("1\n")
        except OSError:
            pass


MEMO_ENV = "FPBENCH_MEMO_DIR"
"""``fpbench sweep`` sets it to a folder of its own, fresh for every sweep (:func:`memo`)."""


def memo(suite: str, params: tuple, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()`` of one combination of a suite with several ``track_`` methods, measured
    once per sweep.

    asv runs every ``track_`` method of a combination in a fresh process after its own
    ``setup``, so a suite with three tracks would solve (or train) each combination three
    times. Under ``fpbench sweep`` (:data:`MEMO_ENV` set) the first process stores what it
    measured, after its gate passed, as JSON, and the others read it back. Without it (a
    plain ``asv run``) every process measures. An exception (n/a, a failed gate) is never
    stored: the next process raises it again.

    Args:
        suite: the suite's name.
        params: the combination's parameters (their ``repr`` is the key).
        measure: returns the measurements, a dict of JSON numbers, booleans and dicts of them.
    """
    folder = os.environ.get(MEMO_ENV)
    if not folder:
        return measure()
    key = hashlib.sha256(repr((suite, params)).encode()).hexdigest()[:32]
    path = Path(folder) / f"{key}.json"
    try:
        return json.loads(path.read_text(encoding="ascii"))
    except (OSError, ValueError):
        pass
    value = measure()
    Path(folder).mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(f".{os.getpid()}.part")
    part.write_text(json.dumps(value), encoding="ascii")
    os.replace(part, path)  # a reader sees the whole file or none
    return value


REFERENCE_PREFIX = "reference-"
"""File name prefix of the gates' float64 references in :data:`MEMO_ENV`'s folder."""

_references: dict[str, dict[str, np.ndarray]] = {}


def gate_reference(
    kind: str, key: tuple, compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """A gate's float64 reference, ``compute()``, computed once per problem and solver.

    The references a gate compares against (the exact states of a spec, the same solver's
    NumPy run, the exact gradient) depend on the problem and the solver, not on the target,
    the timed method or the suite, so every process that gates the same problem and solver
    shares one: kept per process and, under ``fpbench sweep`` (:data:`MEMO_ENV` set), as an
    ``.npz`` file in the sweep's memo folder, keyed by a hash of ``repr((kind, *key))``
    (frozen dataclasses: every field of the spec and the solver). Written whole or not at
    all; an unreadable file is recomputed. An exception in ``compute`` stores nothing.

    Args:
        kind: what is computed (a name per function, part of the key).
        key: what it depends on (specs, solvers, plain values), by ``repr``.
        compute: returns the arrays by name.
    """
    name = hashlib.sha256(repr((kind, *key)).encode()).hexdigest()[:32]
    if name in _references:
        return _references[name]
    folder = os.environ.get(MEMO_ENV)
    path = Path(folder) / f"{REFERENCE_PREFIX}{name}.npz" if folder else None
    value = None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                value = {k: stored[k] for k in stored.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            value = None
    if value is None:
        value = {k: np.asarray(v) for k, v in compute().items()}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_suffix(f".{os.getpid()}.part")
            with open(part, "wb") as f:
                np.savez(f, **value)
            os.replace(part, path)  # a reader sees the whole file or none
    _references[name] = value
    return value
