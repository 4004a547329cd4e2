"""The package's layering: no import cycle among fpbench's modules (counting the registry's
``"module:Class"`` strings as imports), the backend contract in one module, and every
module importable on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "fpbench"


def _module_imports(path: Path) -> set[str]:
    """The fpbench modules ``path`` imports (``from .x import``, ``from fpbench.x import``),
    as dotted names, at module level or inside a function: a lazy import only hides a cycle."""
    package = "fpbench" + "".join("." + p for p in path.parent.relative_to(PACKAGE).parts)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.startswith("fpbench"):
                target = node.module
            else:
                continue
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)  # (`from . import cells`)
    return out


def _graph() -> dict[str, set[str]]:
    files = {
        "fpbench" + "".join("." + p for p in f.relative_to(PACKAGE).with_suffix("").parts): f
        for f in PACKAGE.rglob("*.py")
    }
    files = {(k[: -len(".__init__")] if k.endswith(".__init__") else k): f for k, f in files.items()}
    graph = {name: {m for m in _module_imports(f) if m in files and m != name} for name, f in files.items()}
    from fpbench.registry import BACKENDS

    graph["fpbench.registry"] |= {t.split(":")[0] for t in BACKENDS.values() if t.startswith("fpbench.")}
    return graph


LAZY_BY_DESIGN = {("fpbench.memory", "fpbench.registry")}
"""Lazy imports allowed to close a cycle: ``estimate_grad_memory(backend="torch")`` looks the
backend's ``backward_kept`` up by name, while the registry checks memory before a solve."""


def test_no_import_cycle():
    graph = _graph()
    for a, b in LAZY_BY_DESIGN:
        graph[a].discard(b)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == "fpbench" or nxt.startswith("fpbench.__init__"):
                continue
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node != "fpbench" and node not in state:
            visit(node, [node])


def test_grad_host_lives_with_the_backend_contract():
    import importlib

    backend, grad = (importlib.import_module(f"fpbench.{m}") for m in ("backend", "grad"))
    assert grad.GradHost is backend.GradHost and backend.GradHost.__module__ == "fpbench.backend"
    assert "fpbench.grad" not in _module_imports(PACKAGE / "reference_grad.py")


@pytest.mark.parametrize(
    "module", ["fpbench.reference", "fpbench.reference_grad", "fpbench.grad", "fpbench.backend"]
)
def test_module_imports_alone(module):
    """Imported first, in a fresh interpreter (a cycle shows up as a partially initialised
    module)."""
    code = f"import {module}"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
