"""Fixtures: the backend:device targets under test, each skipped cleanly when absent."""

import json
import os
from pathlib import Path

import pytest

# Under pytest-xdist (`make test`: a worker per core) the workers share the cores: each
# worker's backends take their share of threads, unless FPBENCH_THREADS says otherwise.
# Set before any backend starts (they read it when a solve is prepared).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "FPBENCH_THREADS" not in os.environ:
    os.environ["FPBENCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

# JAX: the tests compile several hundred small programs and run each once or twice, so XLA's
# compiling is most of their JAX time. They compile without LLVM's optimisation passes
# (``jax_disable_most_optimizations``, read from this variable when JAX is imported; XLA's
# HLO passes, fusion and buffer assignment still run, so the programs' operations and the
# memory they allocate are the ones a benchmark compiles). Benchmarks and ``make report``
# compile with XLA's defaults; JAX's persistent cache keys a program by these options, so
# neither loads the other's. Subprocesses the tests start (asv, the sweep) inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import fpbench  # noqa: E402
from fpbench.registry import parse_target, selected_targets  # noqa: E402

try:  # a typo in FPBENCH_BACKENDS stops the run with the valid names, never an all-skip run
    TARGETS = [t for t in selected_targets() if not t.startswith("numpy:")]
except ValueError as e:
    raise pytest.UsageError(str(e)) from None


def _runs_numba(item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    mark = item.get_closest_marker("backend")
    target = params.get("target") or (mark.args[0] if mark else "")
    return str(target).startswith("numba") or item.path.name == "test_numba_backend.py"


def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist with ``--dist loadgroup`` (``make test``), every Numba test goes to
    one worker: Numba compiles a kernel the first time a process calls it with new types
    (cached on disk afterwards, so a fresh clone compiles every kernel once), and two
    workers starting on the Numba tests together would each compile the same kernels."""
    for item in items:
        if _runs_numba(item):
            item.add_marker(pytest.mark.xdist_group("numba"))


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


@pytest.fixture(autouse=True)
def _backend_implements_cell(request) -> None:
    """Skip a test of a (backend, cell) pair whose backend does not implement the cell yet
    (:attr:`fpbench.Backend.recurrences`: every backend here runs the diagonal cells too, so
    this guards a backend that lists only ``"dense"``). The backend is the test's ``target``
    parameter, or its (or its module's) ``backend`` mark; the cell its ``cell`` parameter."""
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec else {}
    cell = params.get("cell")
    mark = request.node.get_closest_marker("backend")
    backend = params.get("target") or (mark.args[0] if mark else None)
    if cell not in fpbench.CELLS or backend is None:
        return
    name = parse_target(backend)[0]
    try:
        impl = fpbench.get_backend(name)
    except fpbench.BackendUnavailableError:
        return  # the target fixture (or the module's importorskip) says why
    recurrence = fpbench.CELLS[cell].recurrence
    if recurrence not in impl.recurrences:
        pytest.skip(f"backend {name!r} does not implement the {recurrence} cell {cell!r} yet")


ASV_MACHINE = "fpbench-test"


@pytest.fixture
def asv_sandbox(tmp_path):
    """``(env, config)`` for running asv on this checkout without touching the user's
    state: ``HOME`` is temporary (asv's machine file lives there), ``FPBENCH_GRID=quick``,
    and ``config`` is a copy of asv.conf.json whose results, html and environments go
    under ``tmp_path``. Caches (Numba's, JAX's, pip's) stay where they were.
    """
    asv_util = pytest.importorskip("asv.util")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    env.update(HOME=str(tmp_path / "home"), FPBENCH_GRID="quick", PYTHONUNBUFFERED="1")
    (tmp_path / "home").mkdir()
    conf = asv_util.load_json(str(root / "asv.conf.json"), js_comments=True)
    conf.update(
        repo=str(root),
        benchmark_dir=str(root / "benchmarks"),
        results_dir=str(tmp_path / "results"),
        html_dir=str(tmp_path / "html"),
        env_dir=str(tmp_path / "env"),
    )
    config = tmp_path / "asv.conf.json"
    config.write_text(json.dumps(conf))
    return env, config
