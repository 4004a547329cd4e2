"""Training (``fpbench.train``): the spec's RNN plus a linear readout, trained with Adam on a
local task, each step's gradient being the one :func:`fpbench.grad` defines for the solver and
its backward mode.

The model: ``y_hat_t = W_o h_t + b_o`` on the states ``h_t`` of the solve; the loss of a step
is the mean squared error over ``(B, O)`` and the time steps the task weighs (``Task.weights``:
every step, or the last only), ``L = sum_t w_t |y_hat_t - y_t|^2 / (B O sum_t w_t)``. Its gradient
with respect to the states is the cotangent ``dL/dh_t = 2 w_t (y_hat_t - y_t) W_o / (B O sum w)``,
so every step is

1. the forward solve (:func:`fpbench.solve`), for the loss and the cotangent;
2. :func:`fpbench.grad` with that cotangent (its forward is the same computation), for the
   RNN's gradients; the readout's gradients are formed on the host;
3. one Adam update.

Tasks (generated locally, nothing downloaded):

- ``"teacher"``: a random teacher RNN of the same cell and contraction ``spec.contraction``
  (Miller & Hardt's stability condition is a parameter), with a random linear readout of
  ``TEACHER_OUTPUTS`` outputs, maps standard normal inputs to targets; the student (the
  spec's RNN, initialised from ``seed``) learns them. The training inputs are the problem's
  ``x`` (seeded by ``spec.seed``), the evaluation inputs a held-out draw.
- ``"digits"``: sequential digit classification on the 1,797 8x8 handwritten digits that
  scikit-learn ships on disk (``sklearn.datasets.load_digits``, a copy of the UCI "Optical
  Recognition of Handwritten Digits" test set): each image is read as a sequence of
  ``spec.seq_len`` steps of ``spec.input_size`` pixels (``seq_len * input_size`` must be 64:
  ``(64, 1)`` pixel by pixel, the small cousin of sequential MNIST, or ``(8, 8)`` row by
  row), pixels scaled to [0, 1]; the target is the one-hot class (10 outputs) and the loss
  is taken at the last step only. ``spec.batch`` training images and as many held-out
  ones are drawn by ``spec.seed``. Needs scikit-learn (``pip install fpbench[train]``).

The optimiser is Adam with the same hyper-parameters everywhere (``lr``, ``betas=(0.9,
0.999)``, ``eps=1e-8``, no weight decay): ``torch.optim.Adam`` when the optimiser is torch,
otherwise :class:`NumpyAdam`, a float64 Adam with the same update formula, whose master
weights are float64 and cast to the spec's dtype for each step's problem.

``eval_loss`` is the trained model on the held-out inputs with the **exact** sequential
forward (the float64 reference); ``eval_loss_solver`` the same model and inputs with the
training solver: their difference (``consistency_gap``) is the train/inference consistency
of training with an approximate fixed point (Wang & Ragni's question), measured.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backend import UnsupportedError
from .grad import grad
from .reference import exact_states
from .registry import parse_target, solve
from .solvers import Solver
from .spec import PARAM_NAMES, Problem, RNNSpec, make_problem

TASKS: tuple[str, ...] = ("teacher", "digits")
"""Training tasks :func:`train` knows."""

OPTIMIZERS: tuple[str, ...] = ("numpy", "torch")

TEACHER_OUTPUTS = 2
"""Outputs O of the teacher's (and the student's) readout."""

TEACHER_SEED_OFFSET = 1_000_003
"""The teacher RNN is ``make_problem(spec)`` with ``seed + TEACHER_SEED_OFFSET``: its own
weights, independent of the student's."""

BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass(frozen=True)
class Task:
    """A generated task: training and held-out inputs (``(T, B, I)``, the spec's dtype) with
    their targets ``(T, B, O)`` (float64), the weight of each step in the loss ``(T,)``, and
    the fixed initial states."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    h0: np.ndarray
    c0: np.ndarray | None
    weights: np.ndarray

    @property
    def outputs(self) -> int:
        """O, the readout's outputs."""
        return self.y_train.shape[-1]


def make_task(spec: RNNSpec, task: str = "teacher") -> Task:
    """Generate ``task`` for ``spec``, deterministic in ``spec.seed``.

    Raises:
        ValueError: an unknown task; the message lists the known ones.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    if task == "digits":
        return _digits(spec)
    data = make_problem(spec)
    teacher = make_problem(dataclasses.replace(spec, seed=spec.seed + TEACHER_SEED_OFFSET))
    rng = np.random.default_rng([spec.seed, TEACHER_SEED_OFFSET])
    H = spec.hidden_size
    w_out = rng.standard_normal((TEACHER_OUTPUTS, H)) / np.sqrt(H)
    b_out = 0.1 * rng.standard_normal(TEACHER_OUTPUTS)
    x_eval = rng.standard_normal(data.x.shape).astype(spec.dtype)

    def targets(x: np.ndarray) -> np.ndarray:
        p = dataclasses.replace(teacher, x=x, h0=data.h0, c0=data.c0)
        return exact_states(p) @ w_out.T + b_out

    weights = np.ones(spec.seq_len)
    return Task(task, data.x, targets(data.x), x_eval, targets(x_eval), data.h0, data.c0, weights)


DIGIT_PIXELS = 64
DIGIT_CLASSES = 10


def _digits(spec: RNNSpec) -> Task:
    """The ``"digits"`` task (module docstring)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "task 'digits' reads the digits scikit-learn ships: install scikit-learn "
            "(pip install 'fpbench[train]')"
        ) from e
    T, I, B = spec.seq_len, spec.input_size, spec.batch
    if T * I != DIGIT_PIXELS:
        raise ValueError(
            f"task 'digits' reads each 8x8 image as seq_len x input_size = 64 pixels; got "
            f"seq_len={T}, input_size={I} (use 64 x 1 or 8 x 8)"
        )
    digits = load_digits()
    n = digits.images.shape[0]
    if 2 * B > n:
        raise ValueError(f"task 'digits' has {n} images: batch must be at most {n // 2}, got {B}")
    order = np.random.default_rng(spec.seed).permutation(n)
    pixels = digits.images.reshape(n, T, I) / 16.0
    onehot = np.eye(DIGIT_CLASSES)[digits.target]

    def split(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(pixels[idx].transpose(1, 0, 2)).astype(spec.dtype)
        return x, np.broadcast_to(onehot[idx], (T, len(idx), DIGIT_CLASSES)).copy()

    x_train, y_train = split(order[:B])
    x_eval, y_eval = split(order[B : 2 * B])
    zero = np.zeros((B, spec.hidden_size), dtype=spec.dtype)  # every sequence starts from rest
    weights = np.zeros(T)
    weights[-1] = 1.0  # the class is read out at the last step
    c0 = zero if spec.model.parts == 2 else None
    return Task("digits", x_train, y_train, x_eval, y_eval, zero, c0, weights)


class NumpyAdam:
    """Adam in float64 NumPy, the update of ``torch.optim.Adam`` (no weight decay, no
    amsgrad): ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)``."""

    def __init__(self, params: dict[str, np.ndarray], lr: float):
        self.params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        self.lr = lr
        self.t = 0
        self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        b1, b2 = BETAS
        self.t += 1
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for k, p in self.params.items():
            g = np.asarray(grads[k], dtype=np.float64)
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            p -= self.lr / bc1 * self.m[k] / (np.sqrt(self.v[k]) / np.sqrt(bc2) + EPS)

    def values(self) -> dict[str, np.ndarray]:
        return self.params


class TorchAdam:
    """``torch.optim.Adam`` on torch tensors in the spec's dtype (on the CPU: the gradients
    arrive as host arrays from :func:`fpbench.grad`)."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, dtype: str):
        import torch

        self.torch = torch
        self.tensors = {k: torch.tensor(np.asarray(v, dtype=dtype)) for k, v in params.items()}
        self.opt = torch.optim.Adam(list(self.tensors.values()), lr=lr, betas=BETAS, eps=EPS)

    def step(self, grads: dict[str, np.ndarray]) -> None:
        for k, t in self.tensors.items():
            t.grad = self.torch.tensor(np.asarray(grads[k], dtype=t.numpy().dtype))
        self.opt.step()

    def values(self) -> dict[str, np.ndarray]:
        return {k: t.detach().numpy().copy() for k, t in self.tensors.items()}


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        losses: ``(steps,)`` training loss of each step (before its update); NaN after a
            diverged step.
        step_seconds: ``(steps,)`` wall time of each step (forward solve, forward + backward,
            update).
        grad_seconds: ``(steps,)`` the timed forward + backward run of each step alone.
        params: the trained parameters: the RNN's (torch layout) and ``readout_weight (O, H)``,
            ``readout_bias (O,)``.
        eval_loss: the trained model on the held-out inputs with the exact sequential forward.
        eval_loss_solver: the same with the training solver.
        diverged: a step's forward or backward produced NaN/Inf (training stopped there).
    """

    losses: np.ndarray
    step_seconds: np.ndarray
    grad_seconds: np.ndarray
    params: dict[str, np.ndarray]
    eval_loss: float
    eval_loss_solver: float
    diverged: bool = False
    spec: RNNSpec | None = None
    solver: str = ""
    backend: str = ""
    device: str = ""
    task: str = ""
    optimizer: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def consistency_gap(self) -> float:
        """``eval_loss_solver - eval_loss``: what the training solver's approximation costs
        at inference against the exact recurrence."""
        return self.eval_loss_solver - self.eval_loss


def _model_problem(spec: RNNSpec, task: Task, x: np.ndarray, params: dict[str, np.ndarray]) -> Problem:
    rnn = {k: np.asarray(params[k], dtype=spec.dtype) for k in PARAM_NAMES}
    return Problem(spec, np.asarray(x, dtype=spec.dtype), task.h0, rnn, task.c0)


def _mse(
    states: np.ndarray, params: dict[str, np.ndarray], y: np.ndarray, weights: np.ndarray
) -> tuple[float, np.ndarray]:
    """``(loss, dL/d(readout output) (T, B, O))`` of the readout of ``states`` against ``y``
    with the per-step ``weights`` (float64)."""
    w = np.asarray(params["readout_weight"], np.float64)
    b = np.asarray(params["readout_bias"], np.float64)
    r = np.asarray(states, np.float64) @ w.T + b - y
    scale = weights[:, None, None] / (weights.sum() * r.shape[1] * r.shape[2])
    return float(np.sum(scale * r * r)), 2.0 * scale * r


class Trainer:
    """One training run, a step at a time (:func:`train` drives it; the asv ``Training``
    suite times :meth:`step`). Arguments as :func:`train`.

    Raises:
        ValueError: unknown task or optimiser, or bad ``lr`` / ``seed``.
    """

    def __init__(
        self,
        spec: RNNSpec,
        solver: Solver,
        backend: str = "numpy",
        device: str | None = None,
        task: str = "teacher",
        seed: int = 0,
        lr: float = 1e-2,
        optimizer: str | None = None,
    ):
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not isinstance(spec, RNNSpec):
            raise TypeError(f"spec must be an fpbench.RNNSpec, got {type(spec).__name__}")
        self.spec, self.solver, self.task_name = spec, solver, task
        self.backend, self.device = parse_target(backend, device)
        if optimizer is None:
            optimizer = "torch" if self.backend == "torch" else "numpy"
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
        self.optimizer = optimizer
        self.task = make_task(spec, task)
        student = make_problem(dataclasses.replace(spec, seed=seed))
        rng = np.random.default_rng([seed, TEACHER_SEED_OFFSET + 1])
        k = 1.0 / np.sqrt(spec.hidden_size)
        init = {key: np.asarray(v, np.float64) for key, v in student.params.items()}
        init["readout_weight"] = rng.uniform(-k, k, (self.task.outputs, spec.hidden_size))
        init["readout_bias"] = np.zeros(self.task.outputs)
        self.opt: NumpyAdam | TorchAdam
        self.opt = NumpyAdam(init, lr) if optimizer == "numpy" else TorchAdam(init, lr, spec.dtype)
        self.last_grad_seconds = float("nan")

    def step(self) -> float:
        """One Adam step; returns the loss before it (NaN, and no update, when the forward or
        the backward produced NaN/Inf)."""
        spec, data = self.spec, self.task
        params = self.opt.values()
        problem = _model_problem(spec, data, data.x_train, params)
        states = solve(problem, self.solver, self.backend, self.device).states
        loss, dy = _mse(states, params, data.y_train, data.weights)
        if not np.isfinite(loss):
            return float("nan")
        cot = dy @ np.asarray(params["readout_weight"], np.float64)  # dL/dh_t
        t1 = time.perf_counter()
        g = grad(problem, self.solver, self.backend, self.device, cotangent=cot.astype(spec.dtype))
        self.last_grad_seconds = time.perf_counter() - t1
        if g.diverged:
            return float("nan")
        grads = dict(g.params)
        grads["readout_weight"] = np.einsum("tbo,tbh->oh", dy, np.asarray(states, np.float64))
        grads["readout_bias"] = dy.sum((0, 1))
        self.opt.step(grads)
        return loss

    def loss(self) -> float:
        """The training loss of the current parameters (the forward solve only; no step)."""
        params = self.opt.values()
        problem = _model_problem(self.spec, self.task, self.task.x_train, params)
        states = solve(problem, self.solver, self.backend, self.device).states
        return _mse(states, params, self.task.y_train, self.task.weights)[0]

    def evaluate(self) -> tuple[float, float]:
        """``(eval_loss, eval_loss_solver)`` of the current parameters on the held-out inputs:
        with the exact sequential forward, and with the training solver (NaN where the
        backend has no forward for it)."""
        spec, data = self.spec, self.task
        final = self.opt.values()
        problem = _model_problem(spec, data, data.x_eval, final)
        exact = _mse(exact_states(problem), final, data.y_eval, data.weights)[0]
        try:
            states = solve(problem, self.solver, self.backend, self.device).states
        except UnsupportedError:
            return exact, float("nan")
        return exact, _mse(states, final, data.y_eval, data.weights)[0]


def train(
    spec: RNNSpec,
    solver: Solver,
    backend: str = "numpy",
    device: str | None = None,
    steps: int = 100,
    task: str = "teacher",
    seed: int = 0,
    lr: float = 1e-2,
    optimizer: str | None = None,
    progress: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Train the spec's RNN plus a linear readout on ``task`` with Adam (module docstring).

    Args:
        spec: the model and data sizes; ``spec.seed`` seeds the task's data and teacher.
        solver: the forward solver; its gradient is :func:`fpbench.grad`'s for its backward mode.
        backend, device: where every step's solve and gradient run.
        steps: Adam steps.
        task: ``"teacher"`` or ``"digits"`` (:data:`TASKS`).
        seed: seeds the student's initial parameters.
        lr: Adam's learning rate.
        optimizer: ``"numpy"`` (float64 Adam) or ``"torch"`` (``torch.optim.Adam``); default
            torch for the torch backend, numpy otherwise.
        progress: called after each step with ``(step index, loss, seconds)`` (a progress bar).
    Raises:
        ValueError: unknown task or optimiser, or bad ``steps`` / ``lr`` / ``seed``.
        ImportError: the task's optional package is missing (the message names it).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    trainer = Trainer(spec, solver, backend, device, task, seed, lr, optimizer)
    losses = np.full(steps, np.nan)
    step_s = np.full(steps, np.nan)
    grad_s = np.full(steps, np.nan)
    diverged = False
    for i in range(steps):
        t0 = time.perf_counter()
        loss = trainer.step()
        if not np.isfinite(loss):
            diverged = True
            break
        losses[i], step_s[i], grad_s[i] = loss, time.perf_counter() - t0, trainer.last_grad_seconds
        if progress is not None:
            progress(i, loss, step_s[i])
    eval_loss, eval_solver = trainer.evaluate()
    return TrainResult(
        losses=losses,
        step_seconds=step_s,
        grad_seconds=grad_s,
        params={key: np.asarray(v) for key, v in trainer.opt.values().items()},
        eval_loss=eval_loss,
        eval_loss_solver=eval_solver,
        diverged=diverged,
        spec=spec,
        solver=str(solver),
        backend=trainer.backend,
        device=trainer.device,
        task=task,
        optimizer=trainer.optimizer,
    )
