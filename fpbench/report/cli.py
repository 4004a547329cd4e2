"""The ``report`` and ``sweep`` subcommands of ``fpbench``.

Only the standard library is imported here, so ``fpbench`` can always register these
commands; pandas, seaborn, matplotlib and asv are imported when a command runs, and a
missing one gives a message naming the extra that provides it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from fpbench.grids import GRID_NAMES as GRIDS

DEFAULT_SWEEP_GRID = "main"

_EXTRA_OF = {"pandas": "report", "seaborn": "report", "matplotlib": "report", "asv": "bench"}


def require(*modules: str) -> None:
    """Import ``modules`` or exit with a message naming the extra to install.

    Raises:
        SystemExit: a module is missing (exit status 2).
    """
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        extras = sorted({_EXTRA_OF.get(m, "report") for m in missing})
        print(
            f"fpbench: error: this command needs {', '.join(missing)}: "
            f"pip install 'fpbench[{','.join(extras)}]'",
            file=sys.stderr,
        )
        raise SystemExit(2)


def _error(e: Exception) -> int:
    print(f"fpbench: error: {e}", file=sys.stderr)
    return 2


def cmd_report(args: argparse.Namespace) -> int:
    require("pandas", "seaborn", "matplotlib", "asv")
    from .build import build_report
    from .store import ReportError

    try:
        out = build_report(
            args.results,
            args.out,
            machines=args.machine,
            all_commits=args.all_commits,
            title=args.title,
            skip_unreadable=args.skip_unreadable,
        )
    except ReportError as e:
        return _error(e)
    print(f"report:  {out / 'index.html'}")
    print(f"summary: {out / 'summary.md'}")
    print(f"table:   {out / 'results.csv'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    require("pandas", "seaborn", "matplotlib", "asv")
    from .store import ReportError
    from .sweep import run_sweep

    try:
        return run_sweep(
            grid=args.grid, bench=args.bench, out=args.out, machine=args.machine, config=args.config
        )
    except ReportError as e:
        return _error(e)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``report`` and ``sweep`` on the ``fpbench`` subcommand parser."""
    p = sub.add_parser(
        "report",
        help="comparative report (HTML, Markdown, CSV) from asv results",
        description="Read asv results (any machines and commits) and write index.html, "
        "summary.md, results.csv and figures/ into --out.",
    )
    p.add_argument("--results", type=Path, default=Path(".asv/results"), help="asv results directory")
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: reports/<machine>, or reports/all)"
    )
    p.add_argument(
        "--machine", action="append", default=None, help="only this asv machine (repeatable; default: all)"
    )
    p.add_argument("--all-commits", action="store_true", help="every commit, not only the newest per machine")
    p.add_argument("--title", default="fpbench: fixed-point RNN evaluation benchmarks")
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="skip asv result files that cannot be read (listed in the report's missing section) "
        "instead of failing",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "sweep",
        help="the main job: run the asv suites here, publish, and build the report",
        description="Run the asv suites in this Python (asv run --python=same) on the checked-out "
        "commit with FPBENCH_GRID set, then asv publish, then the report into reports/<machine>/.",
    )
    p.add_argument(
        "--grid",
        choices=GRIDS,
        default=DEFAULT_SWEEP_GRID,
        help=f"named grid (fpbench/grids.py; default {DEFAULT_SWEEP_GRID})",
    )
    p.add_argument(
        "--bench",
        action="append",
        default=None,
        metavar="REGEX",
        help="only benchmarks matching (repeatable)",
    )
    p.add_argument("--out", type=Path, default=None, help="report folder (default: reports/<machine>)")
    p.add_argument("--machine", default=None, help="asv machine name (default: this host's entry)")
    p.add_argument("--config", type=Path, default=Path("asv.conf.json"), help="asv configuration file")
    p.set_defaults(func=cmd_sweep)
