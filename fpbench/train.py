"""Training: ``fpbench.train``, the spec's RNN plus a linear readout trained with Adam.

The model is the RNN of ``spec`` (parameters in torch layout, from a zero initial state)
and a linear readout ``o_t = W_out h_t + b_out`` (``W_out (O, H)``, ``b_out (O,)``) on a
task of :mod:`fpbench.tasks`. The RNN is initialised as :func:`fpbench.make_problem` draws
it (``spec.seed``, contraction ``spec.contraction``); the readout with
``U(-1/sqrt(H), 1/sqrt(H))`` weights (``spec.seed``) and zero biases. ``seed`` seeds the
task (its teacher, its data, its batches).

One training step (the gradient is exactly what :func:`fpbench.grad` defines for the
solver and its ``backward`` mode):

1. *forward*: the backend's prepared forward solve (:meth:`Backend.prepare`) of the batch
   gives the states ``h_t`` the solver returns;
2. *readout* (host, float64): the loss of the readout of those states, its gradient wrt
   the readout and wrt the states: the cotangent ``dL/dh_t``;
3. *gradient*: the backend's prepared gradient (:meth:`Backend.prepare_grad`) with that
   cotangent: its forward solve (the same deterministic solve as step 1: checked) and its
   backward pass give the RNN's gradient;
4. *update*: Adam on every parameter.

``fpbench.grad`` needs the cotangent before its forward pass, so the forward runs twice.
A device-resident training loop would run it once. So :attr:`TrainResult.step_seconds`
times what such a loop pays: the prepared gradient run (forward + backward, synchronised),
the readout (step 2) and the update. Nothing else is hidden: the extra forward (step 1)
is :attr:`TrainResult.forward_seconds`, and everything else in the step
(``prepare``/``prepare_grad``: host-to-device transfer and any compilation; device-to-host
copies; building the problem) is :attr:`TrainResult.overhead_seconds`. Their sum is the
step's wall time.

Adam. The same hyper-parameters in every backend (:data:`ADAM_BETAS`, :data:`ADAM_EPS`,
``lr``); master weights and optimiser state are float64 on the host, cast to the spec's
dtype for each step's problem. The torch backend updates with ``torch.optim.Adam`` (float64
CPU tensors, its default single-tensor/foreach implementation); numpy, numba and jax use
:class:`Adam`, a float64 NumPy transcription of the same update (optax, JAX's optimiser
library, is not a dependency of fpbench, so JAX uses it too).

Evaluation. After the last step, the trained model's loss on the training data is
computed twice: with the training solver on the training backend
(:attr:`TrainResult.train_loss`: what training saw) and with the *exact* sequential
forward of the float64 reference (:attr:`TrainResult.eval_loss`: what inference with the
recurrence gives). Their difference :attr:`TrainResult.gap` is the train/inference
consistency gap. :attr:`TrainResult.heldout_loss` is the exact loss on the task's held-out
data.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .grad import full_cotangent, make_grad_result
from .memory import estimate_grad_memory, estimate_memory, refuse_over_limit
from .reference import exact_states
from .registry import get_backend, parse_target, resolve
from .result import DivergenceWarning, make_result
from .solvers import Solver
from .spec import PARAM_NAMES, RNNSpec, make_problem
from .tasks import (
    Task,
    accuracy,
    make_task,
    readout_loss,
    task_sizes,
    text_split_sizes,
    zero_state_problem,
)
from .testing import check_close

ADAM_BETAS: tuple[float, float] = (0.9, 0.999)
ADAM_EPS = 1e-8
DEFAULT_LR = 1e-2
DEFAULT_STEPS = 100
NUMPY_EVAL_CHUNK = 256
"""Sequences per chunk when the NumPy reference evaluates the final training loss (at
most the training set; bounds the memory of Newton's ``(T, chunk, S, S)`` Jacobians, and
:func:`estimate_train_memory` counts it)."""
READOUT_STREAM = 0x72656164  # "read": the readout's initialisation stream


class Adam:
    """Adam (Kingma & Ba) in float64 NumPy, step for step the update of ``torch.optim.Adam``
    (no weight decay, no amsgrad): ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
    ``p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, betas=ADAM_BETAS, eps: float = ADAM_EPS):
        self.params = params
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Update ``self.params`` in place with ``grads`` (float64)."""
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        for k, p in self.params.items():
            g = grads[k]
            self.m[k] = b1 * self.m[k] + (1.0 - b1) * g
            self.v[k] = b2 * self.v[k] + (1.0 - b2) * g * g
            denom = np.sqrt(self.v[k]) / math.sqrt(bc2) + self.eps
            p -= (self.lr / bc1) * self.m[k] / denom


class TorchAdam:
    """``torch.optim.Adam`` over float64 CPU tensors that share memory with ``params``."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, betas=ADAM_BETAS, eps: float = ADAM_EPS):
        import torch

        self.torch = torch
        self.tensors = {k: torch.from_numpy(v) for k, v in params.items()}  # views of the arrays
        for t in self.tensors.values():
            t.requires_grad_(True)
        self.opt = torch.optim.Adam(list(self.tensors.values()), lr=lr, betas=betas, eps=eps)

    def step(self, grads: dict[str, np.ndarray]) -> None:
        for k, t in self.tensors.items():
            t.grad = self.torch.from_numpy(np.ascontiguousarray(grads[k], dtype=np.float64))
        self.opt.step()


def make_optimizer(backend: str, params: dict[str, np.ndarray], lr: float):
    """The optimiser of ``backend``: ``torch.optim.Adam`` for torch, :class:`Adam` otherwise."""
    return TorchAdam(params, lr) if backend == "torch" else Adam(params, lr)


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What :func:`train` returns (module docstring for what each time covers).

    Attributes:
        losses: ``(steps,)`` the training loss at each step, before its update, from the
            states the solver returned (NaN after a diverged step).
        step_seconds: ``(steps,)`` the prepared gradient run (forward + backward,
            synchronised), the readout and the optimiser update.
        forward_seconds: ``(steps,)`` the extra forward solve that makes the cotangent
            (not in ``step_seconds``).
        overhead_seconds: ``(steps,)`` the rest of the step's wall time: ``prepare`` /
            ``prepare_grad`` (transfer, compilation), device-to-host copies, building the
            problem (not in ``step_seconds``); step 0's includes the probe that checks, before
            anything runs, that the backend has this gradient.
        forward_iterations, backward_iterations: ``(steps,)`` iterations of the gradient
            run's forward solve and of its backward pass (0 for a direct pass).
        forward_converged, backward_converged: ``(steps,)`` whether each pass reached its
            fixed point (:class:`fpbench.PassDiagnostics`; a fixed budget k < T of an
            unrolled Jacobi is the truncated model, not converged by design).
        params: the trained parameters, float64: ``weight_ih``, ``weight_hh``, ``bias_ih``,
            ``bias_hh`` (torch layout), ``W_out (O, H)``, ``b_out (O,)``.
        train_loss: the trained model's loss on the training data with the training
            solver and backend.
        eval_loss: the same with the exact sequential forward (float64 reference).
        heldout_loss: the exact forward's loss on the held-out data.
        metrics: extra measures, e.g. ``eval_accuracy`` / ``heldout_accuracy`` for digits.
        diverged: True when a step produced NaN or Inf (training stopped there).
        loss_unit: what every loss above measures (:data:`fpbench.tasks.KINDS`): ``"bits
            per character"`` for the ``text`` task.
    """

    spec: RNNSpec
    solver: str
    backend: str
    device: str
    task: str
    task_description: str
    lr: float
    seed: int
    losses: np.ndarray
    step_seconds: np.ndarray
    forward_seconds: np.ndarray
    overhead_seconds: np.ndarray
    forward_iterations: np.ndarray
    backward_iterations: np.ndarray
    forward_converged: np.ndarray
    backward_converged: np.ndarray
    params: dict[str, np.ndarray]
    train_loss: float
    eval_loss: float
    heldout_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    diverged: bool = False
    loss_unit: str = "loss"

    @property
    def gap(self) -> float:
        """``eval_loss - train_loss``: what exact inference loses (or gains) against the
        fixed point the model was trained with."""
        return self.eval_loss - self.train_loss

    @property
    def steps(self) -> int:
        return len(self.losses)

    def steps_to(self, loss: float) -> int | None:
        """Steps until the training loss first reaches ``<= loss`` (1-based: the step whose
        loss it is counts; None if never)."""
        hit = np.flatnonzero(self.losses <= loss)
        return int(hit[0]) + 1 if hit.size else None


def trailing_mean(losses: np.ndarray, window: int = 1) -> np.ndarray:
    """The mean of the last ``window`` losses at each step (fewer at the start), ``(steps,)``:
    minibatch losses are noisy, so a first dip below a stated loss would say little."""
    losses = np.asarray(losses, dtype=np.float64)
    if window <= 1:
        return losses
    c = np.concatenate([[0.0], np.cumsum(losses)])
    i = np.arange(1, len(losses) + 1)
    lo = np.maximum(i - window, 0)
    return (c[i] - c[lo]) / (i - lo)


def steps_to_loss(
    losses: np.ndarray, step_seconds: np.ndarray, target: float, window: int = 1
) -> tuple[int | None, float | None]:
    """``(steps, timed seconds)`` until the training loss (its :func:`trailing_mean` over
    ``window`` steps) is first ``<= target``; ``(None, None)`` if it never is."""
    hit = np.flatnonzero(trailing_mean(losses, window) <= target)
    if not hit.size:
        return None, None
    n = int(hit[0]) + 1
    return n, float(np.sum(np.asarray(step_seconds, dtype=np.float64)[:n]))


def init_params(spec: RNNSpec, output_size: int) -> dict[str, np.ndarray]:
    """The model's initial parameters, float64 (module docstring)."""
    # the parameters are drawn before the inputs, so a one-step, one-sequence problem has them
    rnn = make_problem(dataclasses.replace(spec, dtype="float64", seq_len=1, batch=1)).params
    H = spec.hidden_size
    k = 1.0 / math.sqrt(H)
    rng = np.random.default_rng([spec.seed, READOUT_STREAM])
    params = {name: np.array(rnn[name]) for name in PARAM_NAMES}
    params["W_out"] = rng.uniform(-k, k, size=(output_size, H))
    params["b_out"] = np.zeros(output_size)
    return params


def _rnn(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: params[k] for k in PARAM_NAMES}


def _chunks(n: int, b: int) -> list[np.ndarray]:
    """Index chunks of size ``b`` covering ``0..n-1``, the last one padded by wrapping
    (so every chunk has the compiled batch size); callers drop the padding."""
    return [np.arange(i, i + b) % n for i in range(0, n, b)]


def solver_loss(task: Task, spec: RNNSpec, solver: Solver, impl, device: str, params) -> tuple[float, dict]:
    """The loss (and, for classification, accuracy) of ``params`` on the whole training set
    under the training solver and backend, batch by batch of ``spec.batch`` (the NumPy
    reference: :data:`NUMPY_EVAL_CHUNK` sequences at a time)."""
    n = task.train_size
    b = eval_batch(spec, impl.name, n)
    parts, weights, correct = [], [], 0.0
    for idx in _chunks(n, b):
        keep = min(b, n - int(idx[0]))
        prob = zero_state_problem(spec, task.x_train[:, idx], _rnn(params))
        prepared = impl.prepare(prob, solver, device)
        states, residuals = prepared.to_host(prepared.run())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)
            h = make_result(states, residuals, solver, prob, impl.name, device).states
        y = task.targets(task.y_train, idx)
        sl = slice(None, keep)
        h, y = h[:, sl], (y[sl] if task.batch_axis == 0 else y[:, sl])
        loss, *_, out = readout_loss(task.kind, h, y, params["W_out"], params["b_out"])
        parts.append(loss)
        weights.append(keep)
        if task.kind == "classification":
            correct += accuracy(out, y) * keep
    loss = float(np.average(parts, weights=weights))
    return loss, ({"train_accuracy": correct / n} if task.kind == "classification" else {})


def eval_batch(spec: RNNSpec, backend: str, train_size: int) -> int:
    """Sequences per chunk of :func:`solver_loss`: a compiled backend keeps the spec's batch;
    the NumPy reference takes :data:`NUMPY_EVAL_CHUNK` (at least the batch, at most the
    training set)."""
    return min(max(spec.batch, NUMPY_EVAL_CHUNK), train_size) if backend == "numpy" else spec.batch


def exact_loss(task: Task, spec: RNNSpec, params, x: np.ndarray, y: np.ndarray) -> tuple[float, float | None]:
    """The loss (and accuracy, for classification) with the exact float64 recurrence."""
    prob = zero_state_problem(dataclasses.replace(spec, dtype="float64"), x, _rnn(params))
    h = exact_states(prob)
    loss, *_, out = readout_loss(task.kind, h, y, params["W_out"], params["b_out"])
    return loss, (accuracy(out, y) if task.kind == "classification" else None)


def estimate_train_memory(
    spec: RNNSpec, solver: Solver, backend: str = "numpy", task: str = "teacher", device: str = "cpu"
) -> int:
    """Bytes :func:`train` needs, known before anything is built. With ``n`` the training
    and ``n'`` the held-out sequences (:func:`fpbench.tasks.task_sizes`), ``O`` outputs:

    - the task (float64, on the host): inputs and targets of both sets,
      ``T (n + n') (I + O)`` items; building the teacher also holds its problem, input
      projection, exact states and outputs, ``T B (I + gH + S + O)``; the ``text`` task
      also its corpus and the corpus's int64 character indices, 12 bytes a character;
    - the exact evaluation (float64, on the host): one set at once, its inputs,
      projection, states and readout, ``T max(n, n') (I + gH + S + H + 2 O)`` (the larger of
      this and the teacher's building counts);
    - on a CPU device, a step: the forward (:func:`fpbench.estimate_memory`), the gradient
      (:func:`fpbench.estimate_grad_memory`), the batch's problem ``T B (I + S)`` in the
      spec's dtype and its readout ``T B (S + 2 H + 2 O)`` in float64; and the evaluation with
      the training solver: a forward at :func:`eval_batch` sequences ``b`` plus its
      readout ``T b (I + S + H + O)``.

    Args:
        backend: the backend name.
        task: a name in :data:`fpbench.tasks.TASKS`.
        device: ``"cpu"``, or a GPU (then only the host's part counts).
    Raises:
        ValueError: an unknown task.
        BackendUnavailableError: an unknown or unavailable backend.
    """
    impl = get_backend(parse_target(backend)[0])
    n_train, n_held, O = task_sizes(task, spec)
    T, B, H, I, S = spec.seq_len, spec.batch, spec.hidden_size, spec.input_size, spec.state_size
    gH, f8 = spec.gates * H, 8
    data = T * (n_train + n_held) * (I + O) * f8
    if task == "text":  # the corpus (at most 4 bytes a character) and its int64 indices
        data += (4 + f8) * sum(text_split_sizes())
    build = T * B * (I + gH + S + O) * f8 if task == "teacher" else 0
    exact = T * max(n_train, n_held) * (I + gH + S + H + 2 * O) * f8
    host = data + max(build, exact)
    if device != "cpu":
        return host
    dt = impl.compute_dtype
    step = (
        estimate_memory(spec, solver, dt)
        + estimate_grad_memory(spec, solver, dt, impl.name)
        + T * B * ((I + S) * np.dtype(spec.dtype).itemsize + (S + 2 * H + 2 * O) * f8)
    )
    b = eval_batch(spec, impl.name, n_train)
    evaluation = (
        estimate_memory(dataclasses.replace(spec, batch=b), solver, dt) + T * b * (I + S + H + O) * f8
    )
    return host + step + evaluation


ProgressFn = Callable[[int, float, float], None]
"""``progress(step, loss, step_seconds)``, called after each step (0-based step)."""


def train(
    spec: RNNSpec,
    solver: Solver,
    backend: str = "numpy",
    device: str | None = None,
    steps: int = DEFAULT_STEPS,
    task: str = "teacher",
    seed: int = 0,
    lr: float = DEFAULT_LR,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train the spec's RNN plus a linear readout on ``task`` with Adam (module docstring).

    Args:
        spec: the RNN (cell, sizes, dtype, contraction) and the batch per step; its seed
            initialises the model.
        solver: how the forward solve and its gradient run (``fpbench.grad`` semantics,
            including the solver's ``backward`` mode).
        backend, device: where (as :func:`fpbench.solve`).
        steps: optimiser steps.
        task: a name in :data:`fpbench.tasks.TASKS`.
        seed: the task's seed (teacher, data, batches).
        lr: Adam's learning rate.
        progress: called after every step.

    NumPy integer and float scalars are accepted wherever Python numbers are.

    A step whose states, loss or gradient is NaN or Inf (a learning rate far too large)
    stops training: the result is ``diverged`` (and warns ``DivergenceWarning``).

    Raises:
        TypeError: ``spec`` is not an :class:`~fpbench.RNNSpec`, or ``solver`` not a solver.
        ValueError: bad ``steps`` / ``seed`` / ``lr``, an unknown task or a spec it cannot use.
        MissingDependencyError: the task's optional package is missing.
        BackendUnavailableError, UnsupportedError: as :func:`fpbench.grad`.
        InsufficientMemoryError: :func:`estimate_train_memory` exceeds the available
            memory; checked before the task is built or anything else is allocated.
    """
    seed, lr = _checked_args(spec, solver, steps, seed, lr)
    impl, dev = resolve(backend, device)
    need = estimate_train_memory(spec, solver, impl.name, task, dev)  # before the task is built
    where = f"training with {solver} on {impl.name}:{dev}"
    refuse_over_limit(need, where, "fpbench.train.estimate_train_memory", spec, impl.compute_dtype)
    the_task = make_task(task, spec, seed)
    params = init_params(spec, the_task.output_size)
    opt = make_optimizer(impl.name, params, lr)
    probe_s = _probe_gradient(the_task, spec, solver, impl, dev, params)

    log, diverged = _run_steps(int(steps), the_task, spec, solver, impl, dev, params, opt, probe_s, progress)
    if diverged:
        train_loss = eval_loss = heldout_loss = float("nan")
        metrics: dict[str, float] = {}
    else:
        train_loss, eval_loss, heldout_loss, metrics = _evaluate(the_task, spec, solver, impl, dev, params)
    return TrainResult(
        spec=spec,
        solver=str(solver),
        backend=impl.name,
        device=dev,
        task=task,
        task_description=the_task.description,
        lr=float(lr),
        seed=seed,
        **log,
        params={k: np.array(v) for k, v in params.items()},
        train_loss=train_loss,
        eval_loss=eval_loss,
        heldout_loss=heldout_loss,
        metrics=metrics,
        diverged=diverged,
        loss_unit=the_task.loss_unit,
    )


def _run_steps(
    n: int,
    task: Task,
    spec: RNNSpec,
    solver: Solver,
    impl,
    device: str,
    params,
    opt,
    probe_s: float,
    progress: ProgressFn | None,
) -> tuple[_StepLog, bool]:
    """:func:`train`'s ``n`` steps (:func:`_train_step`), each timed; step 0's overhead
    includes the gradient probe's ``probe_s``. Stops at the first step that diverges, with a
    ``DivergenceWarning`` to :func:`train`'s caller. Returns the log and whether it diverged."""
    log = _planned_log(n)
    for i in range(n):
        t_start = time.perf_counter()
        if _train_step(i, task, spec, solver, impl, device, params, opt, log):
            warnings.warn(
                f"{impl.name}:{device} {solver}: training diverged at step {i} (NaN or Inf); stopped there",
                DivergenceWarning,
                stacklevel=3,
            )
            return log, True
        elapsed = time.perf_counter() - t_start
        log["overhead_seconds"][i] = (
            elapsed - log["step_seconds"][i] - log["forward_seconds"][i] + (probe_s if i == 0 else 0.0)
        )
        if progress is not None:
            progress(i, float(log["losses"][i]), float(log["step_seconds"][i]))
    return log, False


def _checked_args(spec: RNNSpec, solver: Solver, steps: int, seed: int, lr: float) -> tuple[int, float]:
    """:func:`train`'s arguments checked (its ``Raises``); the seed as an int and ``lr`` as a float."""
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an fpbench.RNNSpec such as fpbench.RNNSpec(cell='gru'), got {spec!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (the task's seed), got {seed!r}")
    if (
        isinstance(lr, bool)
        or not isinstance(lr, (int, float, np.integer, np.floating))
        or not (math.isfinite(lr) and lr > 0)
    ):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not isinstance(solver, Solver) or type(solver) is Solver:
        raise TypeError(f"solver must be an fpbench solver such as fpbench.Jacobi(...), got {solver!r}")
    return int(seed), float(lr)


def _probe_gradient(task: Task, spec: RNNSpec, solver: Solver, impl, device: str, params) -> float:
    """Fail fast (before any forward is compiled or run) where the backend has no gradient
    for this combination: prepare one on the first minibatch. Returns its seconds (step 0's
    overhead)."""
    t_probe = time.perf_counter()
    probe = zero_state_problem(spec, task.minibatch(0)[0], _rnn(params))
    zero = np.zeros((spec.seq_len, spec.batch, spec.hidden_size), dtype=spec.dtype)
    impl.prepare_grad(probe, solver, device, full_cotangent(probe, zero))
    return time.perf_counter() - t_probe


_StepLog = dict[str, np.ndarray]
"""What each step recorded, by step, under :class:`TrainResult`'s field names (``losses``,
``step_seconds``, ...); a step not run keeps a NaN loss and zeros."""


def _planned_log(n: int) -> _StepLog:
    """The log of ``n`` steps, none run yet."""
    log = {"losses": np.full(n, np.nan)}
    log.update({k: np.zeros(n) for k in ("step_seconds", "forward_seconds", "overhead_seconds")})
    log.update({f"{p}_iterations": np.zeros(n, dtype=np.int64) for p in ("forward", "backward")})
    log.update({f"{p}_converged": np.zeros(n, dtype=bool) for p in ("forward", "backward")})
    return log


def _forward(problem, solver: Solver, impl, device: str, log: _StepLog, i: int) -> np.ndarray:
    """Step 1: the prepared forward solve of the batch, timed into ``log``; its states ``(T, B, H)``."""
    fwd = impl.prepare(problem, solver, device)
    t0 = time.perf_counter()
    out = fwd.run()
    log["forward_seconds"][i] = time.perf_counter() - t0
    states, residuals = fwd.to_host(out)
    del out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)  # train warns once
        return make_result(states, residuals, solver, problem, impl.name, device).states


def _readout(task: Task, h: np.ndarray, y: np.ndarray, params, dtype: str) -> tuple | None:
    """Step 2: the readout's loss and its gradients, ``(loss, dL/dh in dtype, dW_out, db_out,
    seconds)``; None when the states, the loss or the cotangent is NaN or Inf."""
    if not np.isfinite(h).all():
        return None
    t0 = time.perf_counter()
    loss, dh, dw, db, _ = readout_loss(task.kind, h, y, params["W_out"], params["b_out"])
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        cot = dh.astype(dtype)
    seconds = time.perf_counter() - t0
    if not (np.isfinite(loss) and np.isfinite(cot).all()):
        return None
    return loss, cot, dw, db, seconds


def _train_step(
    i: int, task: Task, spec: RNNSpec, solver: Solver, impl, device: str, params, opt, log: _StepLog
) -> bool:
    """One training step ``i`` (module docstring: forward, readout, gradient, update), recorded
    in ``log``; ``params`` updated in place by ``opt``. Returns whether it diverged (NaN or Inf).

    Raises:
        RuntimeError: the gradient run's forward differs from the forward's states.
    """
    x, y = task.minibatch(i)
    problem = zero_state_problem(spec, x, _rnn(params))
    h = _forward(problem, solver, impl, device, log, i)
    readout = _readout(task, h, y, params, spec.dtype)
    if readout is None:
        return True
    loss, cot, dw, db, readout_s = readout
    full = full_cotangent(problem, cot)
    full.flags.writeable = False
    prepared = impl.prepare_grad(problem, solver, device, full)
    t0 = time.perf_counter()
    gout = prepared.run()
    run_s = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        g = make_grad_result(prepared.to_host(gout), problem, solver, full, impl.name, device)
    del gout
    if g.diverged or not np.isfinite(loss):
        return True
    ok, msg = check_close("gradient run's forward vs the forward", g.states, h, spec.dtype)
    if not ok:
        raise RuntimeError(
            f"{impl.name}:{device} {solver}: the forward inside prepare_grad differs from "
            f"prepare's, so the cotangent was computed for other states: {msg}"
        )
    grads = {k: np.asarray(v, dtype=np.float64) for k, v in g.params.items()}
    grads["W_out"], grads["b_out"] = dw, db
    t0 = time.perf_counter()
    opt.step(grads)
    update_s = time.perf_counter() - t0
    log["losses"][i] = loss
    log["step_seconds"][i] = run_s + readout_s + update_s
    log["forward_iterations"][i], log["backward_iterations"][i] = g.forward.iterations, g.backward.iterations
    log["forward_converged"][i], log["backward_converged"][i] = g.forward.converged, g.backward.converged
    return False


def _evaluate(
    task: Task, spec: RNNSpec, solver: Solver, impl, device: str, params
) -> tuple[float, float, float, dict]:
    """The trained model's losses (module docstring, "Evaluation"): ``(train_loss, eval_loss,
    heldout_loss, metrics)``, with the accuracies of a classification task in ``metrics``."""
    train_loss, metrics = solver_loss(task, spec, solver, impl, device, params)
    eval_loss, eval_acc = exact_loss(task, spec, params, task.x_train, task.y_train)
    heldout_loss, held_acc = exact_loss(task, spec, params, task.x_heldout, task.y_heldout)
    if eval_acc is not None:
        metrics.update(eval_accuracy=eval_acc, heldout_accuracy=held_acc)
    return train_loss, eval_loss, heldout_loss, metrics
