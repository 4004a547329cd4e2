"""The named benchmark grids: :mod:`fpbench.grids` of this checkout (their one definition).

The grids live in the ``fpbench`` package so that the report reads the values a run's grid
held fixed from the package it runs in. The suites load this checkout's
``fpbench/grids.py`` by path rather than importing ``fpbench.grids``: ``asv run A..B``
benchmarks older commits' installed ``fpbench`` with these suites, and those commits may
predate the module or some of its grids. The suites and their grids always come from the
same checkout.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "_fpbench_benchmark_grids"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _NAME, Path(__file__).resolve().parent.parent / "fpbench" / "grids.py"
    )
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module  # dataclasses look their module up here
    _spec.loader.exec_module(_module)
_grids = sys.modules[_NAME]

BASELINES = _grids.BASELINES
BATCH = _grids.BATCH
CELLS = _grids.CELLS
CHUNKED = _grids.CHUNKED
CHUNKED_SOLVERS = _grids.CHUNKED_SOLVERS
solver_fields = _grids.solver_fields
CONTRACTION = _grids.CONTRACTION
DTYPE = _grids.DTYPE
GRID_ENV = _grids.GRID_ENV
GRID_NAMES = _grids.GRID_NAMES
GRIDS = _grids.GRIDS
INPUT_SIZE = _grids.INPUT_SIZE
ITERATIVE = _grids.ITERATIVE
DAMPED = _grids.DAMPED
SEED = _grids.SEED
SOLVERS = _grids.SOLVERS
TOL = _grids.TOL
TOLERANCE = _grids.TOLERANCE
Budget = _grids.Budget
Grid = _grids.Grid
current = _grids.current
grid_name = _grids.grid_name

# gradients (bench_grad.py)
BACKWARDS = _grids.BACKWARDS
GRAD_GRIDS = _grids.GRAD_GRIDS
GradGrid = _grids.GradGrid
current_grad = _grids.current_grad

# training (bench_train.py, through train_grids.py)
TRAIN_CELL = _grids.TRAIN_CELL
TRAIN_INPUT_SIZE = _grids.TRAIN_INPUT_SIZE
TRAIN_BATCH = _grids.TRAIN_BATCH
TRAIN_TASK = _grids.TRAIN_TASK
TRAIN_TASK_SEED = _grids.TRAIN_TASK_SEED
TRAIN_TEXT_INPUT_SIZE = _grids.TRAIN_TEXT_INPUT_SIZE
TRAIN_LR = _grids.TRAIN_LR
TRAIN_DAMPING = _grids.TRAIN_DAMPING
TRAIN_METHODS = _grids.TRAIN_METHODS
TRAIN_BASELINES = _grids.TRAIN_BASELINES
TRAIN_GRIDS = _grids.TRAIN_GRIDS
TrainGrid = _grids.TrainGrid
current_train = _grids.current_train

# sharded scaling (bench_shard.py)
SHARDS = _grids.SHARDS
SHARD_GRIDS = _grids.SHARD_GRIDS
ShardGrid = _grids.ShardGrid
current_shard = _grids.current_shard
