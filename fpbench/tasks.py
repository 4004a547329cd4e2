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
- ``"text"``: character-level language modelling on the English help text that ships with
  CPython itself (``pydoc_data.topics``, the text of ``help()``: every topic, in sorted
  order, joined; no download, no extra package). The last :data:`TEXT_HELDOUT` of the
  characters are held out. The vocabulary (:func:`text_vocabulary`) is the
  ``TEXT_VOCAB - 1`` most frequent characters of the training text (ties by code point)
  plus one symbol for every rarer character (index ``TEXT_VOCAB - 1``). Each character is
  fed one-hot, so the spec's ``input_size`` must be :data:`TEXT_VOCAB`; the readout has
  ``TEXT_VOCAB`` outputs, the logits of the next character, at every step. Loss: the
  next-character cross-entropy in **bits per character** (base-2 logarithm), the mean over
  every step of every sequence; an untrained model is near ``log2(TEXT_VOCAB)``. Each
  training step takes ``spec.batch`` windows of ``seq_len`` characters (and the
  ``seq_len`` characters that follow each by one, the targets) at start offsets drawn
  from the step's own seeded stream, from a zero state. The held-out set is the held-out
  text cut into consecutive windows of ``seq_len``; the training set that the final
  losses are measured on is as many windows, evenly spaced over the training text (the
  whole training text would be over a hundred MB of one-hot inputs).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import platform
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .reference import sequential
from .spec import Problem, RNNSpec, make_problem

TASKS: tuple[str, ...] = ("teacher", "digits", "text")
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

TEXT_VOCAB = 64
"""Characters of the ``text`` task's vocabulary, the rare-character symbol included (its
one-hot ``input_size`` and its readout's outputs)."""

TEXT_HELDOUT = 0.1
"""Share of the ``text`` corpus held out: its last characters."""

KINDS: dict[str, str] = {
    "regression": "mean squared error",
    "classification": "cross-entropy (nats)",
    "next_char": "bits per character",
}
"""A task's ``kind`` -> what its loss measures (the unit every reported loss of it has)."""

TASK_STREAM = 0x7461736B  # "task": the task's own random stream, independent of the spec's


class MissingDependencyError(ImportError):
    """A task needs an optional package that is not installed; the message says what to install."""


@dataclass(frozen=True, eq=False)
class Task:
    """A task's data (float64) and loss.

    Attributes:
        name: a name in :data:`TASKS`.
        kind: ``"regression"`` (targets ``(T, N, O)`` at every step, MSE),
            ``"classification"`` (labels ``(N,)`` from the last state, cross-entropy) or
            ``"next_char"`` (character indices ``(T, N)``, the next character at every
            step, cross-entropy in bits); :data:`KINDS`.
        x_train, y_train: training inputs ``(T, N, I)`` and targets: what the final
            training losses are measured on (and, without ``stream``, what the batches are
            drawn from).
        x_heldout, y_heldout: held-out inputs and targets.
        output_size: O, outputs of the readout.
        batch: sequences per training step (``spec.batch``).
        description: where the data comes from, one line.
        seed: the task's seed (its batches).
        stream: ``(L,)`` character indices of the whole training text (``text``): each
            training step draws its windows from it (:meth:`minibatch`); None for the others.
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
    stream: np.ndarray | None = None

    @property
    def train_size(self) -> int:
        return self.x_train.shape[1]

    @property
    def loss_unit(self) -> str:
        """What the task's loss measures (:data:`KINDS`)."""
        return KINDS[self.kind]

    def minibatch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x (T, B, I), targets)`` of training step ``step`` (0-based), deterministic in
        the task's seed: :meth:`batch_indices` into the training set, or (``stream``) the
        windows at :meth:`window_starts`."""
        if self.stream is None:
            idx = self.batch_indices(step)
            return self.x_train[:, idx], self.targets(self.y_train, idx)
        return text_windows(self.stream, self.window_starts(step), self.x_train.shape[0])

    def window_starts(self, step: int) -> np.ndarray:
        """``(B,)`` start offsets in ``stream`` of step ``step``'s windows: uniform over
        every window of ``T + 1`` characters, from the step's own seeded stream."""
        T = self.x_train.shape[0]
        rng = np.random.default_rng([self.seed, TASK_STREAM, step])
        return rng.integers(0, len(self.stream) - T, size=self.batch)

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

    @property
    def batch_axis(self) -> int:
        """The axis of the targets that indexes sequences: 0 for labels, else 1."""
        return 0 if self.kind == "classification" else 1

    def targets(self, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """The targets of sequences ``idx`` (along :attr:`batch_axis`)."""
        return y[idx] if self.batch_axis == 0 else y[:, idx]


def readout_loss(
    kind: str, states: np.ndarray, y: np.ndarray, w_out: np.ndarray, b_out: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The loss of the linear readout ``o = W_out h + b_out`` of ``states (T, B, H)`` and its
    gradients, in float64. ``kind`` (:data:`KINDS`): ``"regression"``, targets ``y (T, B,
    O)``, mean squared error; ``"classification"``, labels ``y (B,)`` from the last state,
    mean cross-entropy in nats; ``"next_char"``, labels ``y (T, B)`` at every step, mean
    cross-entropy in bits (``-log2`` of the softmax probability of the label).

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
    if kind == "next_char":
        logits = h @ w_out.T + b_out  # (T, B, O)
        z = logits - logits.max(axis=2, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
        picked = np.take_along_axis(logp, y[..., None], axis=2)[..., 0]  # (T, B)
        loss = float(-np.mean(picked) / math.log(2.0))
        d_logits = np.exp(logp)
        np.put_along_axis(d_logits, y[..., None], np.take_along_axis(d_logits, y[..., None], 2) - 1.0, 2)
        d_logits /= y.size * math.log(2.0)
        dh = d_logits @ w_out
        return loss, dh, np.einsum("tbo,tbh->oh", d_logits, h), d_logits.sum((0, 1)), logits
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


@functools.cache
def text_corpus() -> str:
    """The ``text`` task's corpus: CPython's English help text (``pydoc_data.topics``),
    every topic in sorted order, joined.

    Raises:
        MissingDependencyError: this Python was installed without ``pydoc_data`` (some
            distributions split the standard library).
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as e:
        raise MissingDependencyError(
            "task 'text' reads the help text that ships with CPython (pydoc_data.topics), "
            f"which this Python ({sys.version.split()[0]}) lacks; install its full standard library"
        ) from e
    return "".join(topics[k] for k in sorted(topics))


def text_split_sizes() -> tuple[int, int]:
    """``(training characters, held-out characters)`` of the ``text`` corpus."""
    n = len(text_corpus())
    held = round(TEXT_HELDOUT * n)
    return n - held, held


@functools.cache
def text_vocabulary() -> str:
    """The ``text`` task's vocabulary, ``TEXT_VOCAB - 1`` characters: the most frequent of
    the training text, most frequent first (ties by code point); index ``TEXT_VOCAB - 1``
    (beyond the string) stands for every other character."""
    n_train, _ = text_split_sizes()
    counts = Counter(text_corpus()[:n_train])
    ranked = sorted(counts, key=lambda ch: (-counts[ch], ch))
    return "".join(ranked[: TEXT_VOCAB - 1])


def encode_text(text: str) -> np.ndarray:
    """``(len(text),)`` int64 indices of ``text`` in :func:`text_vocabulary` (rarer
    characters: ``TEXT_VOCAB - 1``)."""
    table = {ch: i for i, ch in enumerate(text_vocabulary())}
    rare = TEXT_VOCAB - 1
    return np.fromiter((table.get(ch, rare) for ch in text), dtype=np.int64, count=len(text))


def text_windows(codes: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows of ``codes (L,)`` at ``starts (N,)``: one-hot inputs ``x (T, N, V)``
    (float64, the characters ``start .. start + T - 1``) and targets ``y (T, N)`` (the
    characters one later), ``T = seq_len``, ``V = TEXT_VOCAB``."""
    pos = np.asarray(starts)[None, :] + np.arange(seq_len)[:, None]  # (T, N)
    x = np.zeros((seq_len, pos.shape[1], TEXT_VOCAB))
    np.put_along_axis(x, codes[pos][..., None], 1.0, axis=2)
    return x, codes[pos + 1]


def _text_windows_count(spec: RNNSpec) -> int:
    """Held-out windows of ``spec.seq_len`` (and the training windows measured at the end).

    Raises:
        ValueError: ``input_size`` is not :data:`TEXT_VOCAB`, or the held-out text is too
            short for one window.
    """
    if spec.input_size != TEXT_VOCAB:
        raise ValueError(
            f"task 'text' feeds each character one-hot: set input_size={TEXT_VOCAB} (its vocabulary); "
            f"got input_size={spec.input_size}"
        )
    _, n_held = text_split_sizes()
    n = (n_held - 1) // spec.seq_len
    if n < 1:
        raise ValueError(
            f"task 'text' holds out {n_held} characters: seq_len must be at most {n_held - 1} "
            f"(one held-out window and its next character); got seq_len={spec.seq_len}"
        )
    return n


def _text(spec: RNNSpec, seed: int) -> Task:
    n = _text_windows_count(spec)
    T = spec.seq_len
    n_train, n_held = text_split_sizes()
    codes = encode_text(text_corpus())
    train, held = codes[:n_train], codes[n_train:]
    x_held, y_held = text_windows(held, np.arange(n) * T, T)
    x_train, y_train = text_windows(train, np.linspace(0, n_train - T - 1, n).round().astype(np.int64), T)
    rare = float(np.mean(codes == TEXT_VOCAB - 1))
    return Task(
        "text",
        "next_char",
        x_train,
        y_train,
        x_held,
        y_held,
        TEXT_VOCAB,
        spec.batch,
        f"CPython {platform.python_version()}'s help text (pydoc_data.topics, {len(codes)} characters), "
        f"{TEXT_VOCAB} symbols ({100 * rare:.2g} % of characters rarer: one symbol), "
        f"{n_train} train / {n_held} held out, {n} windows of {T} each measured; bits per character",
        seed,
        stream=train,
    )


def task_sizes(name: str, spec: RNNSpec) -> tuple[int, int, int]:
    """``(training sequences, held-out sequences, outputs)`` of the task ``name`` for
    ``spec``, known without building it (nothing is allocated; ``text`` reads its corpus's
    length, the corpus itself is under a MB).

    Raises:
        ValueError: an unknown task, or (``text``) a spec it cannot use.
    """
    if name == "teacher":
        return spec.batch, spec.batch, TEACHER_OUTPUTS
    if name == "digits":
        held = round(DIGITS_HELDOUT * DIGITS_IMAGES)
        return DIGITS_IMAGES - held, held, DIGITS_CLASSES
    if name == "text":
        n = _text_windows_count(spec)
        return n, n, TEXT_VOCAB
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
    if name == "text":
        return _text(spec, seed)
    raise ValueError(f"unknown task {name!r}; choose one of {list(TASKS)}")
