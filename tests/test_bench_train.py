"""The training asv suites (benchmarks/bench_train.py) run outside asv on the NumPy target:
n/a where they should be, a gated step, finite tracks."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_train as bt
from benchmarks import grids, train_grids


def test_method_solvers():
    assert bt.method_solver("jacobi_unrolled", 3, 16).fields() == {
        "max_iters": 3,
        "tol": None,
        "backward": "unrolled",
    }
    assert bt.method_solver("jacobi_unrolled", grids.TOL, 16).max_iters == 16
    assert bt.method_solver("newton", grids.TOL, 16).tol == grids.TOLERANCE[grids.DTYPE]
    assert bt.method_solver("elk", 2, 16).damping == train_grids.DAMPING
    with pytest.raises(NotImplementedError, match="does not iterate"):
        bt.method_solver("sequential", 2, 16)
    with pytest.raises(NotImplementedError, match="same training as budget T"):
        bt.method_solver("jacobi", 32, 16)
    assert set(train_grids.METHODS) >= {"sequential", "native", "jacobi_unrolled", "jacobi", "newton", "elk"}
    for g in train_grids.TRAIN_GRIDS.values():
        assert g.track_steps > 0 and grids.TOL in g.budgets


@pytest.mark.parametrize("method", ["sequential", "jacobi_unrolled", "quasi_newton"])
def test_train_step_suite_runs_on_numpy(method):
    suite = bt.TrainSeqLen()
    params = ("numpy:cpu", method, train_grids.TRAIN_GRIDS["quick"].seq_lens[0])
    suite.setup(*params)
    suite.time_train_step(*params)


def test_train_step_suite_na():
    with pytest.raises(NotImplementedError, match=r"does not implement solver 'native'|no backward"):
        bt.TrainHidden().setup("numpy:cpu", "native", 8)


def test_train_loss_suite_tracks_losses_and_gap():
    suite = bt.TrainLoss()
    suite.setup("numpy:cpu", "jacobi_unrolled", 2, 0.5)
    train, ev, gap = suite.track_train_loss(), suite.track_eval_loss(), suite.track_gap()
    assert np.isfinite([train, ev, gap]).all() and gap == pytest.approx(ev - train)
    with pytest.raises(NotImplementedError):
        suite.setup("numpy:cpu", "sequential", 2, 0.5)


def test_gate_rejects_a_wrong_gradient(monkeypatch, target):
    """A backend whose gradient is wrong fails the gate (AssertionError), not n/a."""
    import fpbench

    impl = fpbench.get_backend(target.split(":")[0])
    real = type(impl).prepare_grad

    def wrong(self, problem, solver, device, cotangent):
        return real(self, problem, solver, device, 2 * cotangent)

    spec = bt.train_spec(8, 4)
    solver = fpbench.Sequential()
    try:
        real(impl, fpbench.make_problem(spec), solver, target.split(":")[1], np.zeros((8, 8, 4), np.float32))
    except fpbench.UnsupportedError as e:
        pytest.skip(str(e))
    monkeypatch.setattr(type(impl), "prepare_grad", wrong)
    bt._steps.clear()
    with pytest.raises(AssertionError, match="correctness gate failed"):
        bt.first_step(target, spec, solver)


def test_memo_measures_once_per_sweep_and_never_stores_an_exception(monkeypatch, tmp_path):
    """asv runs each track_ method in its own process: under ``fpbench sweep`` (FPBENCH_MEMO_DIR)
    the first measures, the others read; an n/a or a failed gate is raised again, not stored."""
    from benchmarks import sweep_state

    calls = []

    def measure():
        calls.append(1)
        return {"loss": 0.25, "diverged": False, "errors": {"x": 1e-3}}

    monkeypatch.delenv(sweep_state.MEMO_ENV, raising=False)
    sweep_state.memo("S", (1, "a"), measure), sweep_state.memo("S", (1, "a"), measure)
    assert len(calls) == 2  # a plain asv run measures in every process

    monkeypatch.setenv(sweep_state.MEMO_ENV, str(tmp_path / "memo"))
    first = sweep_state.memo("S", (1, "a"), measure)
    assert sweep_state.memo("S", (1, "a"), measure) == first and len(calls) == 3
    sweep_state.memo("S", (2, "a"), measure), sweep_state.memo("T", (1, "a"), measure)
    assert len(calls) == 5  # another combination, another suite

    def na():
        calls.append(1)
        raise NotImplementedError("n/a")

    for _ in range(2):
        with pytest.raises(NotImplementedError):
            sweep_state.memo("S", (3, "a"), na)
    assert len(calls) == 7


def test_train_loss_trains_once_for_its_three_tracks(monkeypatch, tmp_path):
    """The three TrainLoss tracks of a combination share one training run under a sweep."""
    import importlib

    from benchmarks import sweep_state

    train_module = importlib.import_module("fpbench.train")  # fpbench.train is the function
    runs = []
    real = train_module.train
    monkeypatch.setattr(train_module, "train", lambda *a, **k: runs.append(1) or real(*a, **k))
    monkeypatch.setenv(sweep_state.MEMO_ENV, str(tmp_path))
    params = ("numpy:cpu", "jacobi_unrolled", 2, 0.5)
    values = []
    for track in ("track_train_loss", "track_eval_loss", "track_gap"):
        suite = bt.TrainLoss()  # a fresh instance per track, as asv's processes are
        suite.setup(*params)
        values.append(getattr(suite, track)(*params))
    assert len(runs) == 1
    assert np.isfinite(values).all() and values[2] == pytest.approx(values[1] - values[0])


def test_a_grid_trains_only_its_methods(monkeypatch):
    """The main grid leaves full ELK out (its JAX step compiles for 20-33 s), the smoke grid
    all but three; the suites' parameters stay every method, so the left-out ones are n/a,
    not missing."""
    main = train_grids.TRAIN_GRIDS["main"]
    assert "elk" not in main.methods and set(main.methods) < set(train_grids.METHODS)
    narrowed = {"main", "smoke"}  # smoke: the sweep's end-to-end test trains three methods
    others = [g for n, g in train_grids.TRAIN_GRIDS.items() if n not in narrowed]
    assert all(g.methods == train_grids.METHODS for g in others)
    assert set(train_grids.TRAIN_GRIDS["smoke"].methods) < set(train_grids.METHODS)
    monkeypatch.setattr(bt, "TG", main)
    monkeypatch.setenv(grids.GRID_ENV, "main")
    with pytest.raises(NotImplementedError, match="the main grid does not train elk"):
        bt.method_solver("elk", grids.TOL, 16)
    assert bt.method_solver("newton", grids.TOL, 16).name == "newton"
    assert bt.TrainLoss.params[1] == train_grids.METHODS


def test_first_step_is_prepared_and_gated_once_per_process(target):
    """The gated step is kept per (target, spec, solver, task): it was once stored under the
    gate reference's key, so every other target prepared and gated it again on each setup."""
    import fpbench

    spec, solver = bt.train_spec(8, 4), fpbench.Sequential()
    bt._steps.clear()
    try:
        step = bt.first_step(target, spec, solver)
    except NotImplementedError as e:
        pytest.skip(str(e))
    assert bt.first_step(target, spec, solver) is step
