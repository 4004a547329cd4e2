"""Fixtures: the backend:device targets under test, each skipped cleanly when absent."""

import pytest

import fpbench
from fpbench.registry import parse_target, selected_targets

TARGETS = [t for t in selected_targets() if not t.startswith("numpy:")]


def _marks(target: str):
    return [pytest.mark.gpu] if parse_target(target)[1] != "cpu" else []


@pytest.fixture(params=[pytest.param(t, marks=_marks(t), id=t) for t in TARGETS])
def target(request) -> str:
    """A ``backend:device`` string that is available here (others are skipped with the reason)."""
    name, device = parse_target(request.param)
    try:
        devices = fpbench.get_backend(name).devices()
    except fpbench.BackendUnavailableError as e:
        pytest.skip(str(e))
    if device not in devices:
        pytest.skip(f"{request.param}: no {device} device on this machine")
    return request.param
