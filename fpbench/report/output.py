"""The report's output folder: it writes only inside it and deletes only what it wrote.

The report lists every file it writes in :data:`MANIFEST` (a small JSON file in the
folder) before writing it. A later report into the same folder replaces the files listed
there and deletes those it does not write again; it never touches another file, never
writes through a symbolic link, and refuses a non-empty folder that holds no earlier
report. Standard library only (the sweep imports :func:`safe_name`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .store import ReportError

MANIFEST = ".fpbench-report.json"
"""The list of files the report wrote into its folder."""

REPORT_FILES = ("index.html", "summary.md", "results.csv")
"""The report's own files besides ``figures/*.png``."""

LEGACY_MARKER = 'out.id = "image-check"'
"""What every ``index.html`` of a report written before manifests holds (its check script)."""

_FILE = re.compile(r"(?:figures/)?[A-Za-z0-9_][A-Za-z0-9_.-]*")


def safe_name(name: str) -> str:
    """``name`` as one plain file name: every run of characters other than letters, digits,
    ``_``, ``.`` and ``-`` becomes ``_``, and so does a leading dot (never ``..`` nor a hidden
    file, never a path)."""
    return re.sub(r"^\.|[^A-Za-z0-9_.-]+", "_", name) or "_"


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise ReportError(f"{path} is a symbolic link: the report does not write through links (remove it)")


class OutputFolder:
    """The folder a report is written into (created when missing).

    Raises:
        ReportError: ``root`` is a file or cannot be created, is not empty and holds no
            earlier report, or its ``figures/`` or manifest is a symbolic link.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        if root.exists() and not root.is_dir():
            raise ReportError(f"--out {root} is a file, not a folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            blocker = next((p for p in root.parents if p.exists() and not p.is_dir()), None)
            why = f"{blocker} is a file, not a folder" if blocker is not None else (e.strerror or str(e))
            raise ReportError(f"cannot create the output folder {root}: {why}") from e
        self.earlier = self._earlier_report()
        self.written: set[str] = set()

    def _earlier_report(self) -> set[str]:
        """The files an earlier report wrote here: its manifest's, or for a report written
        before manifests (its ``index.html`` holds :data:`LEGACY_MARKER`) its own files."""
        manifest = self.root / MANIFEST
        _refuse_link(manifest)
        _refuse_link(self.root / "figures")
        if manifest.exists():
            try:
                names = json.loads(manifest.read_text(encoding="utf-8"))["files"]
                return {n for n in names if isinstance(n, str) and _FILE.fullmatch(n)}
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
                raise ReportError(f"cannot read the report manifest {manifest}: {e}") from e
        index = self.root / "index.html"
        if index.is_file() and not index.is_symlink():
            if LEGACY_MARKER in index.read_text(encoding="utf-8", errors="replace"):
                own = [self.root / n for n in REPORT_FILES] + list((self.root / "figures").glob("*.png"))
                own = [p for p in own if p.is_file() and not p.is_symlink()]
                return {p.relative_to(self.root).as_posix() for p in own}
        if any(self.root.iterdir()):
            raise ReportError(
                f"--out {self.root} is not empty and holds no earlier report (no {MANIFEST}): the report "
                "writes only into an empty folder or over its own earlier report; choose another --out"
            )
        return set()

    def _save(self, names: set[str]) -> None:
        manifest = self.root / MANIFEST
        _refuse_link(manifest)
        manifest.write_text(json.dumps({"files": sorted(names)}, indent=1) + "\n", encoding="utf-8")

    def path(self, name: str) -> Path:
        """Where to write ``name`` (``index.html``, ``figures/x.png``), listed in the manifest
        before it is written.

        Raises:
            ReportError: it, or ``figures/``, is a symbolic link, or it exists and no earlier
                report wrote it.
        """
        if not _FILE.fullmatch(name):
            raise ValueError(f"not a report file name: {name!r}")
        path = self.root / name
        if path.parent != self.root:
            _refuse_link(path.parent)
            try:
                path.parent.mkdir(exist_ok=True)
            except OSError as e:
                raise ReportError(f"cannot create the folder {path.parent}: {e.strerror or e}") from e
        _refuse_link(path)
        if path.exists() and name not in self.earlier:
            raise ReportError(f"{path} exists and no earlier report wrote it: the report does not replace it")
        self.written.add(name)
        self._save(self.earlier | self.written)
        return path

    def finish(self) -> None:
        """Delete the files of the earlier report that this one did not write again."""
        for name in sorted(self.earlier - self.written):
            path = self.root / name
            if path.is_file() and not path.is_symlink():
                path.unlink()
        self._save(self.written)
