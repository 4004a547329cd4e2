"""The grids of the training suites (``bench_train``), by the name ``FPBENCH_GRID`` picks
(:func:`grids.grid_name`; ``quick`` when unset): the training section of
:mod:`fpbench.train_grids` (their one definition, where the report reads a run's fixed settings
from), loaded by path with the other grids (``benchmarks/grids.py`` says why).

**Append-only**, like every grid: each value is an asv parameter and a report key.
"""

from __future__ import annotations

from . import grids

CELL = grids.TRAIN_CELL
INPUT_SIZE = grids.TRAIN_INPUT_SIZE
BATCH = grids.TRAIN_BATCH
TASK = grids.TRAIN_TASK
TASK_SEED = grids.TRAIN_TASK_SEED
LR = grids.TRAIN_LR
DAMPING = grids.TRAIN_DAMPING
"""Fixed settings of every training suite: the teacher task (needs no optional package)."""

METHODS: tuple[str, ...] = grids.TRAIN_METHODS
"""Training methods: a solver and its backward mode (:func:`bench_train.method_solver`)."""

BASELINES: tuple[str, ...] = grids.TRAIN_BASELINES

TrainGrid = grids.TrainGrid
TRAIN_GRIDS = grids.TRAIN_GRIDS


def current() -> grids.TrainGrid:
    """The training grid of ``FPBENCH_GRID`` (a grid without a training sweep: ``quick``)."""
    return grids.current_train()
