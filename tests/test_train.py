"""fpbench.train: losses fall for every method, exact methods agree, backends agree with the
NumPy float64 training, the tasks and their errors."""

from __future__ import annotations

import builtins
import dataclasses
import sys

import numpy as np
import pytest

import fpbench
from fpbench import ELK, Chunked, Jacobi, Newton, QuasiNewton, RNNSpec, Sequential
from fpbench.registry import parse_target
from fpbench.tasks import MissingDependencyError, make_task, readout_loss
from fpbench.testing import TOLERANCES
from fpbench.train import Adam, TorchAdam, TrainResult, init_params, train

T = 10
SPEC = RNNSpec(cell="gru", input_size=3, hidden_size=5, seq_len=T, batch=4, dtype="float64", contraction=0.8)
STEPS = 25
LR = 2e-2

METHODS = {
    "bptt": Sequential(),
    "jacobi3_unrolled": Jacobi(3, backward="unrolled"),
    "jacobi_tol": Jacobi(T, tol=1e-9),
    "newton_tol": Newton(T, tol=1e-10),
    "quasi_newton_tol": QuasiNewton(T, tol=1e-9),
    "elk_tol": ELK(8 * T, tol=1e-9, damping=0.1),  # damped: not exact after T, so a larger budget
    "chunked1_unrolled": Chunked(1, chunks=3, overlap=2, backward="unrolled"),  # overlap-truncated
    "chunked_tol": Chunked(T, tol=1e-9, chunks=3, overlap=1),
}

EXACT = [
    Sequential(),
    Jacobi(T, backward="unrolled"),
    Newton(T, tol=1e-10),
    Chunked(3, chunks=3, overlap=1),  # a budget of its chunks: exact, both ways
    Chunked(3, chunks=3, overlap=1, backward="unrolled"),
]

_cache: dict = {}


def numpy_train(spec, solver, steps=STEPS, task="teacher") -> TrainResult:
    key = (spec, solver, steps, task)
    if key not in _cache:
        _cache[key] = train(spec, solver, "numpy", steps=steps, task=task, lr=LR)
    return _cache[key]


@pytest.mark.parametrize("name", list(METHODS))
def test_loss_falls_for_every_method(name):
    r = numpy_train(SPEC, METHODS[name])
    assert r.losses.shape == r.step_seconds.shape == (STEPS,)
    assert np.isfinite(r.losses).all() and not r.diverged
    assert r.losses[-1] < 0.5 * r.losses[0], r.losses
    assert r.train_loss < r.losses[0] and np.isfinite(r.eval_loss) and np.isfinite(r.heldout_loss)
    assert (r.step_seconds > 0).all() and (r.forward_seconds > 0).all() and (r.overhead_seconds >= 0).all()
    assert set(r.params) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh", "W_out", "b_out"}
    assert r.params["W_out"].shape == (fpbench.tasks.TEACHER_OUTPUTS, SPEC.hidden_size)
    if METHODS[name].iterative:
        assert (r.forward_iterations >= 1).all()
    if name == "jacobi3_unrolled":
        assert (r.forward_iterations == 3).all() and (r.backward_iterations == 0).all()
    if getattr(METHODS[name], "tol", None) is not None or not METHODS[name].iterative:
        assert r.forward_converged.all() and r.backward_converged.all()
    if name in ("jacobi_tol", "quasi_newton_tol"):  # adjoint iterations to tolerance
        assert (r.backward_iterations >= 1).all()


def test_exact_methods_give_the_same_loss_curve():
    ref = numpy_train(SPEC, Sequential())
    for solver in EXACT[1:]:
        r = numpy_train(SPEC, solver)
        np.testing.assert_allclose(r.losses, ref.losses, rtol=1e-8, err_msg=str(solver))
        for k, v in ref.params.items():
            np.testing.assert_allclose(r.params[k], v, rtol=1e-6, atol=1e-9, err_msg=f"{solver} {k}")
        assert abs(r.gap) < 1e-9 and r.eval_loss == pytest.approx(ref.eval_loss, rel=1e-8)


def test_truncated_model_gap_is_truncated_vs_exact_loss():
    """Jacobi(k) unrolled trains the k-truncated model: train_loss is the trained model's
    loss under the k-truncated states, eval_loss under the exact recurrence."""
    assert abs(numpy_train(SPEC, Sequential()).gap) < 1e-12
    k = 1
    r = numpy_train(SPEC, Jacobi(k, backward="unrolled"))
    task = make_task("teacher", SPEC, 0)
    rnn = {n: r.params[n] for n in fpbench.spec.PARAM_NAMES}
    prob = fpbench.tasks.zero_state_problem(SPEC, task.x_train, rnn)
    w, b = r.params["W_out"], r.params["b_out"]
    trunc = readout_loss("regression", fpbench.truncated_states(prob, k), task.y_train, w, b)[0]
    exact = readout_loss("regression", fpbench.reference_states(prob), task.y_train, w, b)[0]
    assert r.train_loss == pytest.approx(trunc, rel=1e-12)
    assert r.eval_loss == pytest.approx(exact, rel=1e-12)
    assert r.gap == pytest.approx(exact - trunc, rel=1e-9) and r.gap != 0.0


def test_first_step_is_the_grad_of_the_readout_loss():
    """Step 1's loss is the readout loss of the exact states with the initial parameters,
    and its RNN gradient is fpbench.grad with the readout's cotangent."""
    r1 = numpy_train(SPEC, Sequential(), steps=1)
    task = make_task("teacher", SPEC, 0)
    params = init_params(SPEC, task.output_size)
    prob = fpbench.tasks.zero_state_problem(
        SPEC, task.x_train, {k: params[k] for k in fpbench.spec.PARAM_NAMES}
    )
    h = fpbench.reference_states(prob)
    loss, dh, dw, db, _ = readout_loss("regression", h, task.y_train, params["W_out"], params["b_out"])
    assert r1.losses[0] == pytest.approx(loss, rel=1e-12)
    g = fpbench.grad(prob, Sequential(), "numpy", cotangent=dh)
    opt = Adam({k: np.array(v) for k, v in params.items()}, LR)
    opt.step({**g.params, "W_out": dw, "b_out": db})
    for k, v in opt.params.items():
        np.testing.assert_allclose(r1.params[k], v, rtol=1e-12, atol=1e-15, err_msg=k)


def test_numpy_adam_matches_torch_adam():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    mine = Adam({k: v.copy() for k, v in p.items()}, lr=0.05)
    theirs = TorchAdam({k: v.copy() for k, v in p.items()}, lr=0.05)
    for _ in range(6):
        g = {k: rng.standard_normal(v.shape) for k, v in p.items()}
        mine.step(g)
        theirs.step(g)
    for k in p:
        np.testing.assert_allclose(mine.params[k], theirs.tensors[k].detach().numpy(), rtol=1e-12, atol=1e-14)
    assert torch.is_tensor(theirs.tensors["a"])


CROSS_STEPS = 3
CROSS = [
    Sequential(),
    Jacobi(T, backward="unrolled"),
    Newton(T, tol=1e-5),
    Jacobi(3, backward="unrolled"),
    Chunked(1, chunks=3, overlap=2, backward="unrolled"),
]


@pytest.mark.parametrize("solver", CROSS, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backend_training_matches_numpy_float64(target, solver, dtype):
    """The first steps of every backend's training match the NumPy float64 training of
    the same method (Jacobi(3) unrolled: the same truncated model)."""
    spec = dataclasses.replace(SPEC, dtype=dtype)
    try:
        r = train(spec, solver, target, steps=CROSS_STEPS, lr=LR)
    except fpbench.UnsupportedError as e:
        pytest.skip(f"{target}: {e}")
    ref = numpy_train(SPEC, solver, steps=CROSS_STEPS)
    tol = TOLERANCES[dtype]
    rtol = 10 * tol["rel_rms"]
    np.testing.assert_allclose(r.losses, ref.losses, rtol=rtol, err_msg=f"{target} {solver}")
    for k, v in ref.params.items():
        np.testing.assert_allclose(r.params[k], v, rtol=rtol, atol=tol["max_abs"], err_msg=f"{target} {k}")
    assert r.eval_loss == pytest.approx(ref.eval_loss, rel=rtol)
    assert r.backend == parse_target(target)[0]


def test_native_training_matches_numpy_bptt(target):
    spec = dataclasses.replace(SPEC, dtype="float64")
    try:
        r = train(spec, fpbench.Native(), target, steps=CROSS_STEPS, lr=LR)
    except fpbench.UnsupportedError as e:
        pytest.skip(f"{target}: {e}")
    ref = numpy_train(SPEC, Sequential(), steps=CROSS_STEPS)
    np.testing.assert_allclose(r.losses, ref.losses, rtol=1e-8)


@pytest.mark.parametrize("layout", [(8, 8), (64, 1)])
def test_digits_task(layout):
    pytest.importorskip("sklearn")
    T_, I_ = layout
    spec = RNNSpec(cell="elman", input_size=I_, hidden_size=4, seq_len=T_, batch=16, dtype="float64")
    task = make_task("digits", spec, seed=1)
    assert task.kind == "classification" and task.output_size == 10
    assert task.x_train.shape[0] == T_ and task.x_train.shape[2] == I_
    assert task.train_size + task.x_heldout.shape[1] == 1797
    assert 0.0 <= task.x_train.min() and task.x_train.max() <= 1.0
    b0, b1 = task.batch_indices(0), task.batch_indices(1)
    assert len(b0) == 16 and not set(b0) & set(b1)
    if layout == (8, 8):
        r = train(spec, Sequential(), steps=15, task="digits", lr=0.05, seed=1)
        assert r.losses[-1] < r.losses[0] and "heldout_accuracy" in r.metrics
        assert r.metrics["eval_accuracy"] == r.metrics["train_accuracy"]  # exact = exact


def test_digits_rejects_a_shape_it_cannot_read():
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="seq_len=8, input_size=8"):
        make_task("digits", SPEC)


def test_unknown_task_is_a_clear_error():
    known = r"\['teacher', 'digits', 'text'\]"
    with pytest.raises(ValueError, match=rf"unknown task 'mnist'; choose one of {known}"):
        train(SPEC, Sequential(), steps=1, task="mnist")


def test_missing_dataset_package_names_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    spec = dataclasses.replace(SPEC, seq_len=8, input_size=8)
    with pytest.raises(MissingDependencyError, match=r"pip install 'fpbench\[train\]'"):
        train(spec, Sequential(), steps=1, task="digits")
    assert issubclass(MissingDependencyError, ImportError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"steps": 0}, "steps must be a positive integer"), ({"lr": -1.0}, "lr must be a finite number > 0")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train(SPEC, Sequential(), **kwargs)


def test_unsupported_combination_is_the_backend_error():
    with pytest.raises(fpbench.UnsupportedError, match="unrolled backward"):
        train(SPEC, Newton(3, backward="unrolled"), "numpy", steps=1)


def test_training_is_deterministic_in_seed():
    a = train(SPEC, Jacobi(2, backward="unrolled"), steps=3, seed=5, lr=LR)
    b = train(SPEC, Jacobi(2, backward="unrolled"), steps=3, seed=5, lr=LR)
    c = train(SPEC, Jacobi(2, backward="unrolled"), steps=3, seed=6, lr=LR)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert not np.array_equal(a.losses, c.losses)
    assert a.steps_to(a.losses[1]) <= 2 and a.steps_to(-1.0) is None
