"""Training tasks for :func:`fpbench.train`: local data, no download at run time.

A task holds its data in float64 NumPy, time-major (``x`` is ``(T, N, I)``), split into a
training set and a held-out set, and the loss of a linear readout of the RNN states
``h_t`` (:func:`readout_loss`). Tasks (:data:`TASKS`):

- ``"teacher"``: a random *teacher* RNN of the spec's cell, input and hidden size, with
  contraction ``rho = spec.contraction`` (so Miller & Hardt's stability condition is a
  parameter), maps standard-normal inputs ``(T, B, I)`` to its exact states (float64
  recurrence from a zero state); a random readout ``y_t = W h_t + b`` with
  :data:`TEACHER_OUTPUTS` outputs makes the targets at every step. Loss: the mean squared
  error over all ``(t, b, o)``. Training set: ``spec.batch`` sequences (one full batch,
  the same every step); held-out set: another ``spec.batch`` sequences of the same teacher.
- ``"digits"``: the 8x8 handwritten digits that scikit-learn ships *inside its package*
  (``sklearn.datasets.load_digits``: 1797 images, 10 classes, pixel values 0..16, a copy
  of the UCI "Optical Recognition of Handwritten Digits" test set; it reads a file under
  ``sklearn/datasets/data``, never the network). Pixels are scaled to [0, 1] and read as
  a sequence: row by row (``seq_len=8, input_size=8``) or pixel by pixel in row-major
  order (``seq_len=64, input_size=1``); the class is predicted from the *last* state,
  loss: softmax cross-entropy (mean over the batch). A seeded permutation holds out
  :data:`DIGITS_HELDOUT` of the images; each training step takes the next ``spec.batch``
  images of a seeded shuffle of the rest (epoch after epoch). Needs the optional
  dependency: ``pip install 'fpbench[train]'`` (scikit-learn).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .reference import sequential
from .spec import Problem, RNNSpec, make_problem

TASKS: tuple[str, ...] = ("teacher", "digits")
"""The task names :func:`make_task` knows."""

TEACHER_OUTPUTS = 4
"""Outputs of the teacher's readout (the regression targets per step)."""

DIGITS_HELDOUT = 0.2
"""Share of the digits images held out (never trained on)."""

DIGITS_IMAGES = 1797
"""Images in scikit-learn's bundled digits: the task's size before it is loaded (the
memory estimate of :func:`fpbench.train.estimate_train_memory`)."""

DIGITS_CLASSES = 10
"""Classes of the digits task (its readout's outputs)."""

DIGITS_LAYOUTS: dict[tuple[int, int], str] = {(8, 8): "row by row", (64, 1): "pixel by pixel"}
"""``(seq_len, input_size)`` -> how an 8x8 digit is read as a sequence."""

TASK_STREAM = 0x7461736B  # "task": the task's own random stream, independent of the spec's


class MissingDependencyError(ImportError):
    """A task needs an optional package that is not installed; the message says what to install."""


@dataclass(frozen=True, eq=False)
class Task:
    """A task's data (float64) and loss.

    Attributes:
        name: ``"teacher"`` or ``"digits"``.
        kind: ``"regression"`` (targets ``(T, N, O)`` at every step, MSE) or
            ``"classification"`` (labels ``(N,)`` from the last state, cross-entropy).
        x_train, y_train: training inputs ``(T, N, I)`` and targets.
        x_heldout, y_heldout: held-out inputs and targets.
        output_size: O, outputs of the readout.
        batch: sequences per training step (``spec.batch``).
        description: where the data comes from, one line.
    """

    name: str
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_heldout: np.ndarray
    y_heldout: np.ndarray
    output_size: int
    batch: int
    description: str
    seed: int = 0

    @property
    def train_size(self) -> int:
        return self.x_train.shape[1]

    def batch_indices(self, step: int) -> np.ndarray:
        """Indices into the training set of training step ``step`` (0-based): the whole
        set when it is one batch, else the next ``batch`` of a seeded shuffle, epoch after
        epoch (each epoch reshuffled; deterministic in the task's seed)."""
        n, b = self.train_size, self.batch
        if n == b:
            return np.arange(n)
        per_epoch = n // b
        epoch, i = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, TASK_STREAM, epoch]).permutation(n)
        return order[i * b : (i + 1) * b]

    def targets(self, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """The targets of sequences ``idx`` (the batch axis is 1 for regression, 0 for labels)."""
        return y[:, idx] if self.kind == "regression" else y[idx]


def readout_loss(
    kind: str, states: np.ndarray, y: np.ndarray, w_out: np.ndarray, b_out: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The loss of the linear readout ``o = W_out h + b_out`` of ``states (T, B, H)`` and its
    gradients, in float64.

    Returns:
        ``(loss, dL/dstates (T, B, H), dL/dW_out (O, H), dL/db_out (O,), outputs)``;
        ``dL/dstates`` is the cotangent :func:`fpbench.grad` takes.
    """
    h = np.asarray(states, dtype=np.float64)
    if kind == "regression":
        out = h @ w_out.T + b_out  # (T, B, O)
        diff = out - y
        loss = float(np.mean(diff**2))
        d_out = 2.0 * diff / diff.size
        dh = d_out @ w_out
        dw = np.einsum("tbo,tbh->oh", d_out, h)
        db = d_out.sum((0, 1))
        return loss, dh, dw, db, out
    last = h[-1]  # (B, H)
    logits = last @ w_out.T + b_out  # (B, O)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    B = last.shape[0]
    loss = float(-np.mean(logp[np.arange(B), y]))
    d_logits = np.exp(logp)
    d_logits[np.arange(B), y] -= 1.0
    d_logits /= B
    dh = np.zeros_like(h)
    dh[-1] = d_logits @ w_out
    return loss, dh, d_logits.T @ last, d_logits.sum(0), logits


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``labels`` that ``argmax(logits)`` gets right."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def zero_state_problem(spec: RNNSpec, x: np.ndarray, params) -> Problem:
    """The problem of running the RNN ``params`` on ``x (T, N, I)`` from a zero state, in
    ``spec.dtype`` with ``batch = N``."""
    dt = spec.dtype
    s = dataclasses.replace(spec, batch=x.shape[1])
    h0 = np.zeros((x.shape[1], spec.hidden_size), dtype=dt)
    c0 = h0.copy() if spec.model.has_cell_state else None
    cast = {k: np.asarray(v, dtype=dt) for k, v in params.items()}
    return Problem(s, np.asarray(x, dtype=dt), h0, cast, c0)


def _teacher(spec: RNNSpec, seed: int) -> Task:
    rng = np.random.default_rng([seed, TASK_STREAM])
    teacher_seed = int(rng.integers(2**31))
    teacher = make_problem(dataclasses.replace(spec, dtype="float64", seed=teacher_seed))
    H, O = spec.hidden_size, TEACHER_OUTPUTS
    w = rng.standard_normal((O, H)) / math.sqrt(H)
    b = 0.1 * rng.standard_normal(O)
    xs, ys = [], []
    for _ in range(2):  # training set, held-out set
        x = rng.standard_normal((spec.seq_len, spec.batch, spec.input_size))
        h = sequential(zero_state_problem(teacher.spec, x, teacher.params))[..., :H]
        xs.append(x)
        ys.append(h @ w.T + b)
    return Task(
        "teacher",
        "regression",
        xs[0],
        ys[0],
        xs[1],
        ys[1],
        O,
        spec.batch,
        f"random {spec.cell} teacher (rho={spec.contraction:g}, seed {teacher_seed}) on N(0, 1) inputs, "
        f"{O} linear outputs per step",
        seed,
    )


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: ``(images (N, 8, 8) in [0, 1], labels (N,))``.

    Raises:
        MissingDependencyError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise MissingDependencyError(
            "task 'digits' needs scikit-learn (its bundled 8x8 digits data set): "
            "pip install 'fpbench[train]'  (or: pip install scikit-learn)"
        ) from e
    data = load_digits()
    return np.asarray(data.images, dtype=np.float64) / 16.0, np.asarray(data.target, dtype=np.int64)


def _digits(spec: RNNSpec, seed: int) -> Task:
    layout = DIGITS_LAYOUTS.get((spec.seq_len, spec.input_size))
    if layout is None:
        raise ValueError(
            f"task 'digits' reads each 8x8 image as a sequence: set seq_len=8, input_size=8 (row by row) "
            f"or seq_len=64, input_size=1 (pixel by pixel); got seq_len={spec.seq_len}, "
            f"input_size={spec.input_size}"
        )
    images, labels = load_digits_images()
    N = len(labels)
    x = images.reshape(N, spec.seq_len, spec.input_size).transpose(1, 0, 2)  # (T, N, I)
    order = np.random.default_rng([seed, TASK_STREAM]).permutation(N)
    n_held = round(DIGITS_HELDOUT * N)
    held, train = order[:n_held], order[n_held:]
    if spec.batch > len(train):
        raise ValueError(
            f"task 'digits' has {len(train)} training images; RNNSpec.batch={spec.batch} is larger"
        )
    return Task(
        "digits",
        "classification",
        x[:, train],
        labels[train],
        x[:, held],
        labels[held],
        DIGITS_CLASSES,
        spec.batch,
        f"scikit-learn's bundled 8x8 digits (sklearn.datasets.load_digits, {N} images), {layout}, "
        f"{len(train)} train / {n_held} held out",
        seed,
    )


def task_sizes(name: str, spec: RNNSpec) -> tuple[int, int, int]:
    """``(training sequences, held-out sequences, outputs)`` of the task ``name`` for
    ``spec``, known without building it (nothing is allocated or loaded).

    Raises:
        ValueError: an unknown task.
    """
    if name == "teacher":
        return spec.batch, spec.batch, TEACHER_OUTPUTS
    if name == "digits":
        held = round(DIGITS_HELDOUT * DIGITS_IMAGES)
        return DIGITS_IMAGES - held, held, DIGITS_CLASSES
    raise ValueError(f"unknown task {name!r}; choose one of {list(TASKS)}")


def make_task(name: str, spec: RNNSpec, seed: int = 0) -> Task:
    """The task ``name`` for ``spec``, deterministic in ``seed`` (module docstring).

    Raises:
        ValueError: an unknown task, or a spec the task cannot use.
        MissingDependencyError: the task's optional package is not installed (the message
            names it).
    """
    if name == "teacher":
        return _teacher(spec, seed)
    if name == "digits":
        return _digits(spec, seed)
    raise ValueError(f"unknown task {name!r}; choose one of {list(TASKS)}")
