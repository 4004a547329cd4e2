"""Training (``fpbench.train``): the teacher task, the NumPy float64 reference training,
exact methods agreeing step for step, torch.optim.Adam against the float64 Adam, and every
backend's first steps against the reference."""

import numpy as np
import pytest

import fpbench
from fpbench.train import TASKS, make_task, train

SPEC = fpbench.RNNSpec(
    cell="gru", seq_len=24, batch=3, hidden_size=6, input_size=3, dtype="float64", contraction=0.8
)
STEPS = 12


@pytest.fixture(scope="module")
def bptt():
    return train(SPEC, fpbench.Sequential(), steps=STEPS, lr=0.02)


def test_teacher_task_is_deterministic_and_shaped():
    a, b = make_task(SPEC), make_task(SPEC)
    T, B, I = SPEC.seq_len, SPEC.batch, SPEC.input_size
    assert a.x_train.shape == a.x_eval.shape == (T, B, I) and a.y_train.shape[:2] == (T, B)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.allclose(a.x_train, a.x_eval)
    with pytest.raises(ValueError, match=r"unknown task 'ptb'; choose one of \['teacher', 'digits'\]"):
        make_task(SPEC, "ptb")
    assert TASKS == ("teacher", "digits")


def test_bptt_loss_falls(bptt):
    assert bptt.losses.shape == bptt.step_seconds.shape == (STEPS,)
    assert np.isfinite(bptt.losses).all() and not bptt.diverged
    assert bptt.losses[-1] < 0.5 * bptt.losses[0]
    assert bptt.eval_loss == pytest.approx(bptt.eval_loss_solver, rel=1e-12)  # exact method: no gap
    assert set(bptt.params) == {*SPEC.model.param_shapes(6, 3), "readout_weight", "readout_bias"}


@pytest.mark.parametrize(
    "solver",
    [
        fpbench.Jacobi(SPEC.seq_len, backward="unrolled"),
        fpbench.Jacobi(SPEC.seq_len),
        fpbench.Newton(SPEC.seq_len, tol=1e-11),
        fpbench.QuasiNewton(SPEC.seq_len, tol=1e-11),
    ],
    ids=str,
)
def test_exact_methods_give_the_bptt_loss_curve(bptt, solver):
    r = train(SPEC, solver, steps=STEPS, lr=0.02)
    np.testing.assert_allclose(r.losses, bptt.losses, rtol=1e-8)
    assert r.eval_loss == pytest.approx(bptt.eval_loss, rel=1e-7)


@pytest.mark.parametrize("solver", [fpbench.Jacobi(3, backward="unrolled"), fpbench.Jacobi(3)], ids=str)
def test_truncated_training_learns_and_reports_the_gap(solver):
    r = train(SPEC, solver, steps=STEPS, lr=0.02)
    assert r.losses[-1] < 0.7 * r.losses[0]
    assert np.isfinite(r.consistency_gap) and r.consistency_gap != 0


def test_torch_adam_equals_float64_adam(bptt):
    pytest.importorskip("torch")
    r = train(SPEC, fpbench.Sequential(), steps=STEPS, lr=0.02, optimizer="torch")
    assert r.optimizer == "torch"
    np.testing.assert_allclose(r.losses, bptt.losses, rtol=1e-10)
    for k, v in bptt.params.items():
        np.testing.assert_allclose(r.params[k], v, rtol=1e-9, atol=1e-12)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task"):
        train(SPEC, fpbench.Sequential(), steps=1, task="nope")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        train(SPEC, fpbench.Sequential(), steps=0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        train(SPEC, fpbench.Sequential(), steps=1, lr=-1.0)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        train(SPEC, fpbench.Sequential(), steps=1, optimizer="sgd")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "solver",
    [
        fpbench.Sequential(),
        fpbench.Native(),
        fpbench.Jacobi(24, backward="unrolled"),
        fpbench.Newton(24, tol=1e-6),
    ],
    ids=str,
)
def test_train_matches_reference(target, solver, dtype):
    """Every backend's first steps against the NumPy float64 reference training (skipped
    where the backend has no backward pass yet)."""
    import dataclasses

    spec = dataclasses.replace(SPEC, dtype=dtype)
    try:
        got = train(spec, solver, backend=target, steps=3, lr=0.02)
    except fpbench.UnsupportedError as e:
        pytest.skip(f"{target}: {e}")
    ref_solver = fpbench.Sequential() if solver.name == "native" else solver
    ref = train(dataclasses.replace(spec, dtype="float64"), ref_solver, steps=3, lr=0.02)
    np.testing.assert_allclose(got.losses, ref.losses, rtol=1e-9 if dtype == "float64" else 1e-4)


def test_digits_task_learns_and_checks_its_shape():
    pytest.importorskip("sklearn")
    spec = fpbench.RNNSpec(cell="elman", seq_len=8, batch=16, hidden_size=12, input_size=8, dtype="float64")
    task = make_task(spec, "digits")
    assert task.x_train.shape == (8, 16, 8) and task.y_train.shape == (8, 16, 10) and task.outputs == 10
    assert task.weights.tolist() == [0] * 7 + [1] and 0 <= task.x_train.min() and task.x_train.max() <= 1
    np.testing.assert_array_equal(task.y_train.sum(-1), 1.0)
    r = train(spec, fpbench.Sequential(), steps=15, lr=0.05, task="digits")
    assert r.losses[-1] < 0.7 * r.losses[0]
    assert r.params["readout_weight"].shape == (10, 12)
    with pytest.raises(ValueError, match="seq_len x input_size = 64 pixels"):
        make_task(fpbench.RNNSpec(seq_len=10, input_size=8), "digits")


def test_digits_without_sklearn_names_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    spec = fpbench.RNNSpec(seq_len=64, input_size=1, batch=2, hidden_size=4)
    with pytest.raises(ImportError, match=r"install scikit-learn \(pip install 'fpbench\[train\]'\)"):
        make_task(spec, "digits")
