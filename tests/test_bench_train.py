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
