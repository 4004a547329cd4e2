"""Training: the time of one training step, and the losses a fixed number of steps reach.

Every combination trains the spec's RNN plus a linear readout on the ``teacher`` task
(:mod:`fpbench.tasks`; no optional package) with a *method*: a solver and its backward
mode (:data:`train_grids.METHODS`, :func:`method_solver`).

- ``TrainSeqLen`` / ``TrainHidden``: ``time_train_step``, one training step as
  :attr:`fpbench.TrainResult.step_seconds` defines it: the prepared gradient run (forward
  + backward, synchronised), the readout's loss and gradient on the host, and the Adam
  update (``torch.optim.Adam`` for torch, the float64 NumPy Adam otherwise), on the first
  batch of the task with the initial parameters. Over T and over H, per target x method.
- ``TrainLoss``: ``track_train_loss`` (the trained model's loss under the method it was
  trained with), ``track_eval_loss`` (the same model under the exact recurrence) and
  ``track_gap`` (their difference) after ``track_steps`` steps of :func:`fpbench.train`,
  per target x method x budget k x contraction rho.
- ``TrainText``: the same for the ``text`` task (character-level language modelling on
  CPython's help text, losses in bits per character), plus ``track_heldout_bpc`` (the
  exact recurrence on the held-out text), after ``text_steps`` steps per target x method
  x budget k, in the grids that train it (``text_steps > 0``; n/a in the others).

Before any number, the first step passes a gate (:func:`first_step`): its loss, the RNN's
gradient and the readout's gradient match the NumPy float64 reference of the same method
(``native``: of BPTT) within the dtype's tolerance (:func:`fpbench.testing.check_close`).
A backend without a gradient for the combination (``UnsupportedError``), an older
fpbench without ``fpbench.train``, and a NumPy run too slow to be worth it are n/a.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

import fpbench
from fpbench.solvers import ELK, Jacobi, Native, Sequential

from . import common, costs, grids, sweep_state, train_grids
from .common import TARGETS
from .train_grids import METHODS

TG = train_grids.current()
TRAIN_TARGETS: tuple[str, ...] = TARGETS if TG.targets is None else TG.targets
"""The targets of the training suites: the grid's ``targets``, else every target."""

NUMPY_TRAIN_SECONDS = 60.0
"""A ``TrainLoss`` run on the ``numpy:cpu`` oracle expected to take longer is n/a."""


def _train_api():
    """``(fpbench.train module, fpbench.tasks module)``, or n/a on an fpbench without them
    (``asv run`` over older commits benchmarks their installed fpbench with these suites)."""
    try:
        train_module = importlib.import_module("fpbench.train")
        tasks = importlib.import_module("fpbench.tasks")
    except ImportError as e:
        raise NotImplementedError(f"this fpbench has no training API: {e}") from e
    return train_module, tasks


def method_solver(method: str, budget: grids.Budget, seq_len: int) -> fpbench.Solver:
    """The solver of ``method`` under ``budget``: ``"tol"`` runs to the dtype's tolerance
    with a budget of T (``jacobi_unrolled``: T unrolled iterations, the exact model);
    an integer k runs exactly k iterations (``jacobi_unrolled``: the k-truncated model;
    the others: the implicit gradient at the k-th iterate).

    Raises:
        NotImplementedError: a method the grid does not train, a baseline under a budget
            (it does not iterate), or k > T.
    """
    if method not in TG.methods:
        raise NotImplementedError(f"the {grids.grid_name()} grid does not train {method}")
    if method in train_grids.BASELINES:
        if budget != grids.TOL:
            raise NotImplementedError(f"{method} does not iterate: see budget {grids.TOL!r}")
        return Sequential() if method == "sequential" else Native()
    if budget != grids.TOL and budget > seq_len:
        raise NotImplementedError(f"budget {budget} > T={seq_len} is the same training as budget T")
    if method == "jacobi_unrolled":
        return Jacobi(seq_len if budget == grids.TOL else budget, backward="unrolled")
    tol = grids.TOLERANCE[grids.DTYPE] if budget == grids.TOL else None
    k = seq_len if budget == grids.TOL else budget
    if method.endswith("_unrolled"):  # a Chunked configuration, unrolled: exact at "tol"
        name, fields = grids.solver_fields(method.removesuffix("_unrolled"))
        return fpbench.make_solver(name, max_iters=k, backward="unrolled", **fields)
    if method in grids.CHUNKED:
        return fpbench.make_solver("chunked", max_iters=k, tol=tol, **grids.CHUNKED[method])
    if method == "elk":
        return ELK(k, tol, damping=train_grids.DAMPING)
    return fpbench.make_solver(method, max_iters=k, tol=tol)


def train_spec(seq_len: int, hidden_size: int, contraction: float = grids.CONTRACTION) -> fpbench.RNNSpec:
    return fpbench.RNNSpec(
        cell=train_grids.CELL,
        input_size=train_grids.INPUT_SIZE,
        hidden_size=hidden_size,
        seq_len=seq_len,
        batch=train_grids.BATCH,
        dtype=grids.DTYPE,
        contraction=contraction,
        seed=grids.SEED,
    )


def text_spec() -> fpbench.RNNSpec:
    """The ``TrainText`` spec: :func:`train_spec` at the grid's ``text_seq_len`` and
    ``text_hidden``, one-hot characters in."""
    spec = train_spec(TG.text_seq_len, TG.text_hidden)
    return dataclasses.replace(spec, input_size=grids.TRAIN_TEXT_INPUT_SIZE)


_steps: dict[tuple[str, fpbench.RNNSpec, fpbench.Solver, str], Callable[[], Any]] = {}


def first_step(
    target: str, spec: fpbench.RNNSpec, solver: fpbench.Solver, task_name: str = train_grids.TASK
) -> Callable[[], Any]:
    """Prepare, gate and return the timed training step of ``(target, spec, solver)`` on
    the task ``task_name`` (module docstring), once per process.

    Raises:
        NotImplementedError: n/a (absent target, no gradient for the combination, too slow
            on the NumPy oracle, no training API).
        AssertionError: the gate failed.
    """
    key = (target, spec, solver, task_name)
    if key in _steps:
        return _steps[key]
    train_mod, tasks = _train_api()
    from fpbench.grad import full_cotangent

    impl, dev = common.backend(target)
    _check_step_cost(target, impl.name, spec, solver)
    if task_name not in tasks.TASKS:
        raise NotImplementedError(f"this fpbench has no task {task_name!r}")
    task = tasks.make_task(task_name, spec, train_grids.TASK_SEED)
    params = train_mod.init_params(spec, task.output_size)
    problem, y = _first_batch(tasks, task, spec, params)
    try:  # a backend without this gradient is n/a before any forward is compiled
        zero = np.zeros((spec.seq_len, spec.batch, spec.hidden_size), dtype=spec.dtype)
        impl.prepare_grad(problem, solver, dev, full_cotangent(problem, zero))
        loss, grads, h, prepared, diverged = _loss_and_grads(task, params, y, impl.name, dev, problem, solver)
    except fpbench.UnsupportedError as e:
        raise NotImplementedError(f"{target}: {e}") from e
    label = f"{target} {solver} first training step"
    if diverged or not np.isfinite(loss):
        raise AssertionError(f"{label}: non-finite loss or gradient")
    if impl.name != "numpy":
        _gate_first_step(label, task, params, y, spec, problem, solver, task_name, loss, grads)
    opt = train_mod.make_optimizer(impl.name, {k: np.array(v) for k, v in params.items()}, train_grids.LR)
    w_out, b_out = params["W_out"], params["b_out"]

    def step() -> None:
        prepared.run()
        tasks.readout_loss(task.kind, h, y, w_out, b_out)
        opt.step(grads)

    _steps[(target, spec, solver, task_name)] = step
    return step


def _check_step_cost(target: str, backend: str, spec: fpbench.RNNSpec, solver: fpbench.Solver) -> None:
    """n/a when the step does not fit in memory, or on the NumPy oracle would take too long.

    Raises:
        NotImplementedError: with the estimate.
    """
    costs.check_fits(target, spec, solver)
    est = 3 * costs.numpy_seconds(spec, Sequential() if solver.kind == "native" else solver)
    if backend == "numpy" and est > costs.NUMPY_TARGET_SECONDS:
        raise NotImplementedError(f"{target} is the float64 oracle, not a contender: ~{est:.0f} s per step")


def _first_batch(tasks: Any, task: Any, spec: fpbench.RNNSpec, params: dict[str, np.ndarray]) -> tuple:
    """The first step's problem (the task's first minibatch under the initial RNN, zero
    initial state) and its targets ``y``."""
    from fpbench.spec import PARAM_NAMES

    rnn = {k: params[k] for k in PARAM_NAMES}
    if hasattr(task, "minibatch"):
        x, y = task.minibatch(0)
    else:  # an fpbench from before Task.minibatch (asv runs older commits with these suites)
        idx = task.batch_indices(0)
        x, y = task.x_train[:, idx], task.targets(task.y_train, idx)
    return tasks.zero_state_problem(spec, x, rnn), y


def _loss_and_grads(
    task: Any,
    params: dict[str, np.ndarray],
    y: np.ndarray,
    backend: str,
    device: str,
    prob: fpbench.Problem,
    solv: fpbench.Solver,
) -> tuple:
    """The first step's ``(loss, grads, states h (T, B, H), prepared gradient, diverged)`` on
    one backend: its forward, the readout's loss and cotangent, and its prepared gradient run."""
    from fpbench.grad import full_cotangent, make_grad_result

    _, tasks = _train_api()
    b = fpbench.get_backend(backend)
    fwd = b.prepare(prob, solv, device)
    states, _ = fwd.to_host(fwd.run())
    h = np.asarray(states, dtype=np.float64)[..., : prob.spec.hidden_size]  # LSTM: (h, c)
    loss, dh, dw, db, _ = tasks.readout_loss(task.kind, h, y, params["W_out"], params["b_out"])
    full = full_cotangent(prob, dh.astype(prob.spec.dtype))
    prepared = b.prepare_grad(prob, solv, device, full)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fpbench.DivergenceWarning)
        g = make_grad_result(prepared.to_host(prepared.run()), prob, solv, full, backend, device)
    grads = {**{k: np.asarray(v, np.float64) for k, v in g.params.items()}, "W_out": dw, "b_out": db}
    return loss, grads, h, prepared, g.diverged


def _gate_first_step(
    label: str,
    task: Any,
    params: dict[str, np.ndarray],
    y: np.ndarray,
    spec: fpbench.RNNSpec,
    problem: fpbench.Problem,
    solver: fpbench.Solver,
    task_name: str,
    loss: float,
    grads: dict[str, np.ndarray],
) -> None:
    """The first step's loss and gradients against the float64 NumPy reference's (computed
    once for every target: the first step's data are the spec's, the task's and its seed's).

    Raises:
        AssertionError: the gate failed.
    """
    from fpbench.testing import check_close

    ref_solver = Sequential() if solver.kind == "native" else solver

    def numpy_step() -> dict[str, np.ndarray]:
        ref_loss, ref_grads, *_ = _loss_and_grads(
            task, params, y, "numpy", "cpu", problem.astype("float64"), ref_solver
        )
        return {"loss": np.array([ref_loss]), **{f"d{k}": v for k, v in ref_grads.items()}}

    key = (spec, ref_solver, task_name, train_grids.TASK_SEED)
    found = sweep_state.gate_reference("train-first-step", key, numpy_step)
    ref = (found["loss"][0], {k[1:]: v for k, v in found.items() if k != "loss"})
    common.assert_close(f"{label} loss", np.array([loss]), np.array([ref[0]]), spec.dtype)
    for k, v in ref[1].items():
        ok, msg = check_close(f"{label} d{k}", grads[k], v, spec.dtype)
        if not ok:
            raise AssertionError(f"correctness gate failed, no number is recorded: {msg}")


class TrainStep(common.Timed):
    """Base of the step-time suites (no ``time_`` of its own, so asv does not collect it)."""

    def case(self, *params: Any) -> tuple[str, fpbench.RNNSpec, fpbench.Solver]:
        raise NotImplementedError

    def setup(self, *params: Any) -> None:
        sweep_state.tick()
        target, spec, solver = self.case(*params)
        self.step = first_step(target, spec, solver)


class TrainSeqLen(TrainStep):
    """Seconds per training step against T at H = ``seq_lens_hidden`` (iterative methods:
    the grid's ``step_budget``)."""

    params = (TRAIN_TARGETS, METHODS, TG.seq_lens)
    param_names = ("target", "method", "seq_len")

    def case(self, target, method, seq_len):
        spec = train_spec(seq_len, TG.seq_lens_hidden)
        return target, spec, method_solver(method, TG.step_budget, seq_len)

    def time_train_step(self, *params):
        self.step()


class TrainHidden(TrainStep):
    """Seconds per training step against H at T = ``hidden_seq_len``."""

    params = (TRAIN_TARGETS, METHODS, TG.hidden_sizes)
    param_names = ("target", "method", "hidden_size")

    def case(self, target, method, hidden_size):
        spec = train_spec(TG.hidden_seq_len, hidden_size)
        return target, spec, method_solver(method, TG.step_budget, TG.hidden_seq_len)

    def time_train_step(self, *params):
        self.step()


CURVES_ENV = "FPBENCH_CURVES_FILE"
"""``fpbench sweep`` sets it to a file beside asv's results (``fpbench.report.store``'s
``SIDE_CURVES``, spelled out here because ``asv run A..B`` runs these suites against older
installed ``fpbench`` versions): ``TrainLoss`` appends each training run's loss and seconds
per step, which asv, one number per benchmark, does not keep."""


def record_curve(**record: Any) -> None:
    """Append one training run's curve to the sweep's curves file, if there is one."""
    path = os.environ.get(CURVES_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")  # one write: whole lines, whatever else appends


def gated_train(target: str, spec: fpbench.RNNSpec, solver: fpbench.Solver, task: str, steps: int):
    """:func:`fpbench.train` of ``steps`` steps on ``task``, after the first step's gate
    (:func:`first_step`).

    Raises:
        NotImplementedError: n/a (as :func:`first_step`; a NumPy run expected to take over
            :data:`NUMPY_TRAIN_SECONDS`).
    """
    first_step(target, spec, solver, task)  # n/a and the gate
    if target.startswith("numpy"):
        ref = Sequential() if solver.kind == "native" else solver
        est = 3 * steps * costs.numpy_seconds(spec, ref)
        if est > NUMPY_TRAIN_SECONDS:
            raise NotImplementedError(f"{target}: ~{est:.0f} s of float64 training")
    train_mod, _ = _train_api()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fpbench.DivergenceWarning)
        return train_mod.train(
            spec, solver, target, steps=steps, task=task, seed=train_grids.TASK_SEED, lr=train_grids.LR
        )


def final_losses(result) -> dict:
    """``"diverged"`` and the final ``train_loss``, ``eval_loss``, ``heldout_loss`` and ``gap``."""
    names = ("train_loss", "eval_loss", "heldout_loss", "gap")
    return {"diverged": bool(result.diverged), **{n: float(getattr(result, n)) for n in names}}


class TrainedLosses:
    """Base of the suites that train once per combination and track its final losses (no
    ``track_`` of its own, so asv does not collect it): ``measure(*params)`` trains, and
    every track reads its result (:func:`sweep_state.memo`: one training run per combination
    under a sweep). A run that diverged records no loss (n/a)."""

    @staticmethod
    def measure(*params) -> dict:
        raise NotImplementedError

    def setup(self, *params) -> None:
        sweep_state.tick()
        self.found = sweep_state.memo(type(self).__name__, params, lambda: self.measure(*params))

    def _value(self, name: str) -> float:
        if self.found["diverged"]:
            common.skip("diverged: training produced NaN or Inf")
        return self.found[name]


class TrainLoss(TrainedLosses):
    """The final training loss, the exact-inference loss and their gap after
    ``track_steps`` steps of :func:`fpbench.train` at (T, H) = (``track_seq_len``,
    ``track_hidden``), per method x budget k x contraction rho (the baselines only under
    ``"tol"``)."""

    params = (TRAIN_TARGETS, METHODS, TG.budgets, TG.contractions)
    param_names = ("target", "method", "budget", "contraction")
    timeout = 300.0

    @staticmethod
    def measure(target, method, budget, contraction) -> dict:
        """Gate the first step, train and measure: ``"diverged"`` and the three losses."""
        spec = train_spec(TG.track_seq_len, TG.track_hidden, contraction)
        solver = method_solver(method, budget, spec.seq_len)
        result = gated_train(target, spec, solver, train_grids.TASK, TG.track_steps)
        record_curve(
            target=target,
            method=method,
            budget=budget,
            contraction=contraction,
            seq_len=spec.seq_len,
            hidden_size=spec.hidden_size,
            losses=[float(v) for v in result.losses],
            step_seconds=[float(v) for v in result.step_seconds],
            diverged=bool(result.diverged),
        )
        return final_losses(result)

    def track_train_loss(self, *params) -> float:
        return self._value("train_loss")

    track_train_loss.unit = "loss"

    def track_eval_loss(self, *params) -> float:
        return self._value("eval_loss")

    track_eval_loss.unit = "loss"

    def track_gap(self, *params) -> float:
        return self._value("gap")

    track_gap.unit = "loss"


class TrainText(TrainedLosses):
    """The ``text`` task (character-level language modelling, bits per character): the final
    training loss under the method, the same model under the exact recurrence, their gap and
    the exact held-out loss after the grid's ``text_steps`` steps at (T, H) =
    (``text_seq_len``, ``text_hidden``), per method x budget k (the baselines only under
    ``"tol"``). n/a in a grid that does not train the text task. Its curves are not recorded
    (the curves file holds the ``TrainLoss`` runs)."""

    params = (TRAIN_TARGETS, METHODS, TG.text_budgets)
    param_names = ("target", "method", "budget")
    timeout = 600.0

    @staticmethod
    def measure(target, method, budget) -> dict:
        """Gate the first step, train the text task and measure its losses."""
        if TG.text_steps <= 0:
            raise NotImplementedError(f"the {grids.grid_name()} grid does not train the text task")
        spec = text_spec()
        solver = method_solver(method, budget, spec.seq_len)
        return final_losses(gated_train(target, spec, solver, "text", TG.text_steps))

    def track_train_bpc(self, *params) -> float:
        return self._value("train_loss")

    track_train_bpc.unit = "bits/char"

    def track_eval_bpc(self, *params) -> float:
        return self._value("eval_loss")

    track_eval_bpc.unit = "bits/char"

    def track_heldout_bpc(self, *params) -> float:
        return self._value("heldout_loss")

    track_heldout_bpc.unit = "bits/char"

    def track_gap(self, *params) -> float:
        return self._value("gap")

    track_gap.unit = "bits/char"
