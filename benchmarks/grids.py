"""The named benchmark grids: :mod:`fpbench.grids` of this checkout, with the gradient,
training and sharded suites' grids (:mod:`fpbench.grad_grids`, :mod:`fpbench.train_grids`,
:mod:`fpbench.shard_grids`): their one definition.

The grids live in the ``fpbench`` package so that the report reads the values a run's grid
held fixed from the package it runs in. The suites load this checkout's grid modules by
path rather than importing ``fpbench``: ``asv run A..B`` benchmarks older commits'
installed ``fpbench`` with these suites, and those commits may predate the modules or some
of their grids. The suites and their grids always come from the same checkout. The modules
are loaded as a package of their own (:data:`_PACKAGE`, whose path is this checkout's
``fpbench/`` folder, and whose ``__init__`` never runs), so their relative imports of each
other resolve there too.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

_PACKAGE = "_fpbench_benchmark_grids"
if _PACKAGE not in sys.modules:
    _package = types.ModuleType(_PACKAGE)
    _package.__path__ = [str(Path(__file__).resolve().parent.parent / "fpbench")]
    sys.modules[_PACKAGE] = _package  # dataclasses look their module up under it
_grids = importlib.import_module(f"{_PACKAGE}.grids")
_grad = importlib.import_module(f"{_PACKAGE}.grad_grids")
_train = importlib.import_module(f"{_PACKAGE}.train_grids")
_shard = importlib.import_module(f"{_PACKAGE}.shard_grids")

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
DIAGONAL_PAIRS = _grids.DIAGONAL_PAIRS
SEED = _grids.SEED
SOLVERS = _grids.SOLVERS
TOL = _grids.TOL
TOLERANCE = _grids.TOLERANCE
Budget = _grids.Budget
Grid = _grids.Grid
current = _grids.current
grid_name = _grids.grid_name

# gradients (bench_grad.py)
BACKWARDS = _grad.BACKWARDS
GRAD_GRIDS = _grad.GRAD_GRIDS
GradGrid = _grad.GradGrid
current_grad = _grad.current_grad

# training (bench_train.py, through train_grids.py)
TRAIN_CELL = _train.TRAIN_CELL
TRAIN_INPUT_SIZE = _train.TRAIN_INPUT_SIZE
TRAIN_BATCH = _train.TRAIN_BATCH
TRAIN_TASK = _train.TRAIN_TASK
TRAIN_TASK_SEED = _train.TRAIN_TASK_SEED
TRAIN_TEXT_INPUT_SIZE = _train.TRAIN_TEXT_INPUT_SIZE
TRAIN_LR = _train.TRAIN_LR
TRAIN_DAMPING = _train.TRAIN_DAMPING
TRAIN_METHODS = _train.TRAIN_METHODS
TRAIN_BASELINES = _train.TRAIN_BASELINES
TRAIN_GRIDS = _train.TRAIN_GRIDS
TrainGrid = _train.TrainGrid
current_train = _train.current_train

# sharded scaling (bench_shard.py)
SHARDS = _shard.SHARDS
SHARD_GRIDS = _shard.SHARD_GRIDS
ShardGrid = _shard.ShardGrid
current_shard = _shard.current_shard
