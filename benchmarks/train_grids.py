"""The grids of the training suites (``bench_train``), by the name ``FPBENCH_GRID`` picks
(:func:`grids.grid_name`; ``quick`` when unset). Kept apart from :mod:`grids` so that the
training suites can grow without touching the solve suites' grids.

**Append-only**, like every grid: each value is an asv parameter and a report key.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import grids

CELL = "gru"
INPUT_SIZE = 4
BATCH = 8
TASK = "teacher"
TASK_SEED = 0
LR = 1e-2
DAMPING = 0.1
"""Fixed settings of every training suite: the teacher task (needs no optional package)."""

METHODS: tuple[str, ...] = (
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
"""Training methods: a solver and its backward mode (:func:`bench_train.method_solver`)."""

BASELINES: tuple[str, ...] = ("sequential", "native")


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
        methods: the methods this grid trains; the others of :data:`METHODS` (the suites'
            asv parameter, unchanged) are n/a in it.
    """

    seq_lens: tuple[int, ...]
    seq_lens_hidden: int
    hidden_sizes: tuple[int, ...]
    hidden_seq_len: int
    step_budget: grids.Budget
    budgets: tuple[grids.Budget, ...]
    contractions: tuple[float, ...]
    track_seq_len: int
    track_hidden: int
    track_steps: int
    targets: tuple[str, ...] | None = None
    methods: tuple[str, ...] = METHODS


TRAIN_GRIDS: dict[str, TrainGrid] = {
    "quick": TrainGrid(
        seq_lens=(32, 128),
        seq_lens_hidden=8,
        hidden_sizes=(8, 32),
        hidden_seq_len=32,
        step_budget=grids.TOL,
        budgets=(2, grids.TOL),
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
        step_budget=grids.TOL,
        budgets=(2, 8, grids.TOL),
        contractions=(0.5, 0.9, 1.2),
        track_seq_len=64,
        track_hidden=16,
        track_steps=100,
    ),
    "full": TrainGrid(
        seq_lens=(256, 1024, 4096, 16384),
        seq_lens_hidden=64,
        hidden_sizes=(32, 128, 256),
        hidden_seq_len=1024,
        step_budget=grids.TOL,
        budgets=(2, 8, 32, grids.TOL),
        contractions=(0.5, 0.9, 1.2),
        track_seq_len=256,
        track_hidden=32,
        track_steps=300,
    ),
    # The main job: time per step against T, and the loss after a few steps per method.
    "main": TrainGrid(
        seq_lens=(256,),
        seq_lens_hidden=8,
        hidden_sizes=(8,),
        hidden_seq_len=256,
        step_budget=grids.TOL,
        budgets=(4, grids.TOL),
        contractions=(0.9,),
        track_seq_len=64,
        track_hidden=8,
        track_steps=20,
        # Full ELK's training step compiles for 20-33 s in JAX and takes seconds a step in
        # torch: about 2 1/2 of the main job's minutes (measured); `default` trains it.
        methods=tuple(m for m in METHODS if m != "elk"),
    ),
}


def current() -> TrainGrid:
    """The training grid of ``FPBENCH_GRID`` (a grid without a training sweep: ``quick``)."""
    return TRAIN_GRIDS.get(grids.grid_name(), TRAIN_GRIDS["quick"])
