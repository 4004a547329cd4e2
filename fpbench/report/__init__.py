"""Comparative reports from asv results: ``fpbench report`` and the main job ``fpbench sweep``.

The report needs the ``report`` extra (pandas, seaborn, matplotlib) and asv. This package
imports none of them at import time, so ``fpbench.cli`` can always register the commands and
give a clear message when the extra is missing; the public functions below load lazily.

- :func:`load_results` — asv results directory -> :class:`ResultSet` (tidy DataFrame + provenance)
- :func:`build_report` — results directory -> ``index.html``, ``summary.md``, ``results.csv``, figures
- :func:`run_sweep` — run the asv suites here, publish, and build the report
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ReportError": "store",
    "ResultSet": "load",
    "load_results": "load",
    "build_report": "build",
    "run_sweep": "sweep",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
