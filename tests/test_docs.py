"""The project's own files stand alone: every reference to the design notes resolves to a
section of docs/design.md, and no file points at design notes outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = [p for d in ("fpbench", "backends", "benchmarks", "tools") for p in (REPO / d).rglob("*.py")]


def test_design_references_resolve():
    design = (REPO / "docs" / "design.md").read_text()
    headings = set(re.findall(r"^#+ (.+)$", design, flags=re.M))
    refs = []
    for path in [*SOURCES, REPO / "README.md"]:
        text = path.read_text()
        assert "DESIGN §" not in text, f"{path}: a reference to design notes outside the repository"
        refs += [
            (path, title) for title in re.findall(r'docs/design\.md, "([^"]+)"', text.replace("\n", " "))
        ]
    assert refs, "the code cites docs/design.md"
    for path, title in refs:
        assert title in headings, f"{path.relative_to(REPO)} cites docs/design.md, {title!r}: no such section"


def test_no_measured_ratios_in_code():
    """Measured speed ratios go in reports/, never in docstrings or comments, where every
    optimisation would make them stale."""
    pattern = re.compile(r"\b\d+\.\d+x\b|\b\d+(\.\d+)?x (as long|slower|faster)|measured on \d+ cores")
    for path in SOURCES:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.relative_to(REPO)}:{n}: {line.strip()}"
