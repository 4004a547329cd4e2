"""The training suites' grids (``benchmarks/bench_train.py``): their fixed settings, their
methods, and their sweep within each named grid of :data:`fpbench.grids.GRIDS` (the report
reads a training suite's fixed settings from here, as it reads the other grids').

**Append-only**, like every grid (:mod:`fpbench.grids`): each value is an asv parameter and a
report key. Standard library only, and the other grid modules only by relative import:
``benchmarks/grids.py`` loads the grid modules of its own checkout by path.
"""

from __future__ import annotations

from dataclasses import dataclass

from .grids import TOL, Budget, grid_name

TRAIN_CELL = "gru"
TRAIN_INPUT_SIZE = 4
TRAIN_BATCH = 8
TRAIN_TASK = "teacher"
TRAIN_TASK_SEED = 0
TRAIN_LR = 1e-2
TRAIN_DAMPING = 0.1
"""Fixed settings of every training suite (``bench_train``): the teacher task (needs no
optional package)."""

TRAIN_METHODS: tuple[str, ...] = (
    "sequential",  # BPTT through the recurrence
    "native",  # the framework's autograd through its RNN (torch.nn, lax.scan)
    "jacobi_unrolled",  # Jacobi(k) with backward="unrolled": the k-truncated model
    "jacobi",  # the rest: backward="implicit" at the returned states
    "newton",
    "quasi_newton",
    "elk",
    "chunked_p8_o64",  # Chunked (grids.CHUNKED), implicit; to tolerance: exact after its chunks
    "chunked_p8_o64_unrolled",  # backward="unrolled"; budget 1: the overlap-truncated model
)
"""Training methods: a solver and its backward mode (``benchmarks/bench_train.py``: ``method_solver``)."""

TRAIN_BASELINES: tuple[str, ...] = ("sequential", "native")
"""The training methods that do not iterate (only under budget ``"tol"``)."""


@dataclass(frozen=True)
class TrainGrid:
    """One named training sweep.

    Attributes:
        seq_lens / seq_lens_hidden: ``TrainSeqLen`` times a step against T at this H.
        hidden_sizes / hidden_seq_len: ``TrainHidden`` times a step against H at this T.
        step_budget: the budget of the iterative methods in the time suites (``"tol"``:
            to tolerance; ``jacobi_unrolled`` then unrolls T iterations, the exact model).
        budgets, contractions, track_seq_len, track_hidden, track_steps: ``TrainLoss``
            trains ``track_steps`` steps per method x budget k x contraction rho.
        targets: the targets of the training suites (None: every target). ``quick``: the
            NumPy oracle only, a smoke test of the suites that keeps the CI sweep short (the
            backends' training is tested in-process by tests/test_train.py).
        methods: the methods this grid trains; the others of :data:`TRAIN_METHODS` (the suites'
            asv parameter, unchanged) are n/a in it.
        text_steps, text_seq_len, text_hidden, text_budgets: ``TrainText`` trains
            ``text_steps`` steps of the ``text`` task (character-level language modelling,
            :data:`TRAIN_TEXT_INPUT_SIZE` one-hot inputs) per method x budget k at (T, H) =
            (``text_seq_len``, ``text_hidden``); ``text_steps = 0``: the grid does not train it
            (n/a).
    """

    seq_lens: tuple[int, ...]
    seq_lens_hidden: int
    hidden_sizes: tuple[int, ...]
    hidden_seq_len: int
    step_budget: Budget
    budgets: tuple[Budget, ...]
    contractions: tuple[float, ...]
    track_seq_len: int
    track_hidden: int
    track_steps: int
    targets: tuple[str, ...] | None = None
    methods: tuple[str, ...] = TRAIN_METHODS
    text_steps: int = 0
    text_seq_len: int = 64
    text_hidden: int = 32
    text_budgets: tuple[Budget, ...] = (TOL,)


TRAIN_TEXT_INPUT_SIZE = 64
"""The ``text`` task's one-hot input size, its vocabulary (``fpbench.tasks.TEXT_VOCAB``,
spelled out here because this module needs only the standard library)."""


TRAIN_GRIDS: dict[str, TrainGrid] = {
    "quick": TrainGrid(
        seq_lens=(32, 128),
        seq_lens_hidden=8,
        hidden_sizes=(8, 32),
        hidden_seq_len=32,
        step_budget=TOL,
        budgets=(2, TOL),
        contractions=(0.5, 0.9),
        track_seq_len=16,
        track_hidden=8,
        track_steps=20,
        targets=("numpy:cpu",),
    ),
    "default": TrainGrid(
        seq_lens=(64, 256, 1024),
        seq_lens_hidden=32,
        hidden_sizes=(16, 64, 128),
        hidden_seq_len=256,
        step_budget=TOL,
        budgets=(2, 8, TOL),
        contractions=(0.5, 0.9, 1.2),
        track_seq_len=64,
        track_hidden=16,
        track_steps=100,
        text_steps=200,
        text_budgets=(2, 8, TOL),
    ),
    "full": TrainGrid(
        seq_lens=(256, 1024, 4096, 16384),
        seq_lens_hidden=64,
        hidden_sizes=(32, 128, 256),
        hidden_seq_len=1024,
        step_budget=TOL,
        budgets=(2, 8, 32, TOL),
        contractions=(0.5, 0.9, 1.2),
        track_seq_len=256,
        track_hidden=32,
        track_steps=300,
        text_steps=1000,
        text_seq_len=128,
        text_hidden=64,
        text_budgets=(2, 8, 32, TOL),
    ),
    # The main job: time per step against T, and the loss after a few steps per method.
    "main": TrainGrid(
        seq_lens=(256,),
        seq_lens_hidden=8,
        hidden_sizes=(8,),
        hidden_seq_len=256,
        step_budget=TOL,
        budgets=(4, TOL),
        contractions=(0.9,),
        track_seq_len=64,
        track_hidden=8,
        track_steps=20,
        # Full ELK's training step is the slowest to compile in JAX and to run in torch, a
        # large share of the main job's minutes; `default` trains it.
        methods=tuple(m for m in TRAIN_METHODS if m != "elk"),
    ),
}


TRAIN_GRIDS["smoke"] = TrainGrid(
    seq_lens=(32,),
    seq_lens_hidden=8,
    hidden_sizes=(8,),
    hidden_seq_len=32,
    step_budget=TOL,
    budgets=(TOL,),
    contractions=(0.5,),
    track_seq_len=16,
    track_hidden=8,
    track_steps=5,
    targets=("numpy:cpu",),
    methods=("sequential", "jacobi_unrolled", "newton"),
)
"""The ``smoke`` grid's (:data:`fpbench.grids.GRIDS`): one tiny point of each training suite."""


def current_train() -> TrainGrid:
    """The training grid of ``FPBENCH_GRID`` (a grid without a training sweep: ``quick``'s)."""
    return TRAIN_GRIDS.get(grid_name(), TRAIN_GRIDS["quick"])
