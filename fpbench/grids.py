"""The named benchmark grids: what the asv suites (``benchmarks/``) sweep.

``FPBENCH_GRID`` picks one (``quick`` when unset): ``quick`` is the CI smoke sweep,
``default`` the README's long CPU sweep, ``full`` the paper-scale GPU sweep, ``main`` the
main job's sweep (``make report``: minutes on 2 cores). This module is the one place
grids are defined (``benchmarks/grids.py`` re-exports it); it needs only the standard
library, so the report, the sweep and the tests import it without asv or any framework.

**Append-only.** A grid's name and the meaning of every value in it are asv parameters
and report keys: results from different commits and machines are only comparable while
they stay fixed. Add new values (or a new grid) at the end; never change or remove one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

GRID_ENV = "FPBENCH_GRID"
DEFAULT_GRID = "quick"

BATCH = 8
INPUT_SIZE = 32
DTYPE = "float32"
CONTRACTION = 0.9
SEED = 0
"""Fixed problem settings of every suite (docs/design.md, "Benchmark protocol"): B, I,
dtype, rho, seed."""

TOL = "tol"
"""The ``max_iters`` value meaning: run to tolerance :data:`TOLERANCE` with a budget of T."""

TOLERANCE: dict[str, float] = {"float32": 1e-4, "float64": 1e-7}
"""Tolerance of a ``"tol"`` run, by dtype (float32 residuals stall near 1e-6)."""

CELLS: tuple[str, ...] = ("elman", "gru", "lstm")
SOLVERS: tuple[str, ...] = ("sequential", "native", "jacobi", "newton", "quasi_newton")
"""The solvers of every grid's solve suites (a grid's ``solvers`` default)."""
ITERATIVE: tuple[str, ...] = ("jacobi", "newton", "quasi_newton")
"""The solvers of every grid's accuracy suite (a grid's ``accuracy_solvers`` default)."""
DAMPED: tuple[str, ...] = ("elk", "quasi_elk")
"""The damped solvers (ELK), added later: a grid lists them in ``solvers`` /
``accuracy_solvers`` where it runs them (on a CPU, full ELK's S x S Kalman smoother at
the solve suites' sizes would take minutes per solve)."""
BASELINES: tuple[str, ...] = ("sequential", "native")

CHUNKED: dict[str, dict[str, int]] = {
    "chunked_p2_o64": {"chunks": 2, "overlap": 64},
    "chunked_p8_o64": {"chunks": 8, "overlap": 64},
    "chunked_p64_o16": {"chunks": 64, "overlap": 16},
    "chunked_p8_o256": {"chunks": 8, "overlap": 256},
    "chunked_p2_o64_k1": {"chunks": 2, "overlap": 64, "max_iters": 1},
    "chunked_p8_o64_k1": {"chunks": 8, "overlap": 64, "max_iters": 1},
}
"""The named :class:`fpbench.Chunked` configurations the suites sweep as solvers
(append-only, like every grid value): ``chunked_p{chunks}_o{overlap}``. P = 2 is one chunk
per core of a 2-core machine; P = 8 and 64 fold more of T into the batch (a GPU's lanes);
the overlaps span the warm-up a contraction of 0.9 needs for float32 (about 150 steps) and
less. A budget k runs k iterations (k = 1: the overlap-truncated model); ``"tol"`` runs
to the tolerance with a budget of its chunks (exact). A configuration with its own
``max_iters`` (``_k1``: one iteration, the fast approximate answer whose error the gate
measures and the report shows) runs that budget and sits, like a baseline, under ``"tol"``
only."""
CHUNKED_SOLVERS: tuple[str, ...] = ("chunked_p2_o64", "chunked_p8_o64")
"""The Chunked configurations the grids add to their solvers."""


def solver_fields(name: str) -> tuple[str, dict[str, int]]:
    """The registered solver name (:data:`fpbench.solvers.SOLVERS`) and extra fields of a
    grid's solver name: ``("chunked", {"chunks": 8, "overlap": 64})`` for a
    :data:`CHUNKED` name (with ``max_iters`` where the configuration fixes its budget),
    ``(name, {})`` for the others."""
    return ("chunked", dict(CHUNKED[name])) if name in CHUNKED else (name, {})


Budget = int | str
"""An iteration budget: a positive int (run exactly that many iterations) or :data:`TOL`."""


@dataclass(frozen=True)
class Grid:
    """One named sweep. Each suite sweeps one axis and holds the others fixed.

    Attributes:
        name: the grid's name (the value of ``FPBENCH_GRID``).
        cells: cells of the solve, cold-start and floor suites.
        solve_budget: the budget of every iterative solve in ``SeqLen`` and ``Hidden``.
        seq_lens / seq_lens_hidden: ``SeqLen`` sweeps T at H = ``seq_lens_hidden``.
        hidden_sizes / hidden_seq_len: ``Hidden`` sweeps H at T = ``hidden_seq_len``.
        budgets / budget_seq_len / budget_hidden: ``Budget`` sweeps ``max_iters`` at (T, H).
        accuracy_cells, accuracy_budgets, contractions, accuracy_seq_len, accuracy_hidden:
            ``Accuracy`` sweeps budget x contraction rho at (T, H).
        cold_seq_len / cold_hidden: the problem ``ColdStart`` prepares.
        floor_seq_lens / floor_hidden: ``IterationFloor`` sweeps T at H = ``floor_hidden``.
        product_cells, product_batch, product_seq_lens, product_hidden_sizes: ``Product``
            sweeps the product T x H at B = ``product_batch`` with input size I = H (DEER's
            protocol: GRU, B = 16), so the report can draw a T x H heatmap.
        batch_sizes / batch_seq_len / batch_hidden: ``Batch`` sweeps B at (T, H) for every
            cell of ``cells`` and every solver.
        suites: the asv classes ``fpbench sweep`` runs for this grid (``Settings`` always);
            empty: every suite. ``asv run`` by hand runs every suite whatever this says.
        sweep_skips: targets ``fpbench sweep`` does not run for this grid (their combinations
            stay in the asv params, as missing).
        solvers: the solvers of the solve suites (``SeqLen``, ``Hidden``, ``Budget``,
            ``Product``, ``Batch``, ``ColdStart``).
        accuracy_solvers: the solvers of ``Accuracy`` (iterative only).
        overlaps / overlap_chunks: ``ChunkedOverlap`` sweeps the overlap of one iteration of
            ``Chunked(chunks=overlap_chunks)`` x contraction rho at the accuracy (T, H).
        budget_cells / budget_solvers: the cells and solvers of ``Budget`` (None: ``cells`` /
            ``solvers``). Every timed solve's gate records its error against the exact
            states, so ``Budget`` on ``elman`` gives time and error against k on one problem,
            the error beside the bound rho^k.
        budget_peakmem: whether ``Budget`` has ``peakmem_solve`` beside ``time_solve`` (False:
            asv does not collect it for this grid, and the sweep runs no process for it).

    The fields after ``floor_hidden`` were added later (append-only): their defaults are
    the values the grids defined before them use.
    """

    name: str
    cells: tuple[str, ...]
    solve_budget: Budget
    seq_lens: tuple[int, ...]
    seq_lens_hidden: int
    hidden_sizes: tuple[int, ...]
    hidden_seq_len: int
    budgets: tuple[Budget, ...]
    budget_seq_len: int
    budget_hidden: int
    accuracy_cells: tuple[str, ...]
    accuracy_budgets: tuple[Budget, ...]
    contractions: tuple[float, ...]
    accuracy_seq_len: int
    accuracy_hidden: int
    cold_seq_len: int
    cold_hidden: int
    floor_seq_lens: tuple[int, ...]
    floor_hidden: int
    product_cells: tuple[str, ...] = ("gru",)
    product_batch: int = 16
    product_seq_lens: tuple[int, ...] = (128, 512)
    product_hidden_sizes: tuple[int, ...] = (4, 16)
    batch_sizes: tuple[int, ...] = (1, 16)
    batch_seq_len: int = 128
    batch_hidden: int = 16
    suites: tuple[str, ...] = ()
    sweep_skips: tuple[str, ...] = ()
    solvers: tuple[str, ...] = SOLVERS
    accuracy_solvers: tuple[str, ...] = ITERATIVE
    overlaps: tuple[int, ...] = (0, 4, 16, 64)
    overlap_chunks: int = 8
    budget_cells: tuple[str, ...] | None = None
    budget_solvers: tuple[str, ...] | None = None
    budget_peakmem: bool = True


GRIDS: dict[str, Grid] = {
    # CI smoke: every suite, solver and target once or twice, tiny problems. The cost is
    # one fresh process per benchmark x parameter combination (asv), so few combinations.
    "quick": Grid(
        name="quick",
        cells=("gru",),
        solve_budget=TOL,
        seq_lens=(128, 1024),
        seq_lens_hidden=32,
        hidden_sizes=(16, 64),
        hidden_seq_len=128,
        budgets=(2, TOL),
        budget_seq_len=128,
        budget_hidden=32,
        accuracy_cells=("elman",),
        accuracy_budgets=(2, TOL),
        contractions=(0.5, 1.2),
        accuracy_seq_len=128,
        accuracy_hidden=32,
        cold_seq_len=128,
        cold_hidden=32,
        floor_seq_lens=(1024,),
        floor_hidden=32,
        accuracy_solvers=ITERATIVE + DAMPED + CHUNKED_SOLVERS,
        product_seq_lens=(128,),
        product_hidden_sizes=(4, 16),
        solvers=SOLVERS + CHUNKED_SOLVERS,
    ),
    # The README's CPU sweep (2-core machine: see README for its wall time).
    "default": Grid(
        name="default",
        cells=("elman", "gru", "lstm"),
        solve_budget=TOL,
        seq_lens=(256, 1024, 4096, 16384),
        seq_lens_hidden=64,
        hidden_sizes=(16, 64, 256),
        hidden_seq_len=1024,
        budgets=(1, 4, 16, 64, TOL),
        budget_seq_len=1024,
        budget_hidden=64,
        accuracy_cells=("elman",),  # the cell the L^k bound is about; GRU is in "full"
        accuracy_budgets=(1, 4, 16, 64, TOL),
        contractions=(0.5, 0.9, 1.2),
        accuracy_seq_len=1024,
        accuracy_hidden=64,
        cold_seq_len=1024,
        cold_hidden=64,
        floor_seq_lens=(1024, 16384),
        floor_hidden=64,
        product_seq_lens=(1024, 4096, 16384),
        product_hidden_sizes=(4, 16, 64),
        batch_sizes=(1, 4, 16, 64),
        batch_seq_len=4096,
        batch_hidden=64,
        accuracy_solvers=ITERATIVE + DAMPED + CHUNKED_SOLVERS,
        solvers=SOLVERS + CHUNKED_SOLVERS,
    ),
    # The anchors' scales, for a GPU machine: T up to 10^6, H up to 1024. Combinations
    # that do not fit the device's memory are n/a (estimated in setup).
    "full": Grid(
        name="full",
        cells=("elman", "gru", "lstm"),
        solve_budget=TOL,
        seq_lens=(1024, 4096, 16384, 65536, 262144, 1048576),
        seq_lens_hidden=64,
        hidden_sizes=(16, 64, 256, 1024),
        hidden_seq_len=16384,
        budgets=(1, 2, 4, 8, 16, 32, 64, 128, TOL),
        budget_seq_len=65536,
        budget_hidden=64,
        accuracy_cells=("elman", "gru"),
        accuracy_budgets=(1, 2, 4, 8, 16, 32, 64, 128, TOL),
        contractions=(0.5, 0.8, 0.9, 0.95, 1.0, 1.1, 1.2),
        accuracy_seq_len=16384,
        accuracy_hidden=64,
        cold_seq_len=16384,
        cold_hidden=64,
        floor_seq_lens=(1024, 16384, 262144),
        floor_hidden=64,
        product_seq_lens=(1024, 4096, 16384, 65536, 262144),
        product_hidden_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        batch_sizes=(1, 4, 16, 64, 256),
        batch_seq_len=65536,
        batch_hidden=64,
        solvers=SOLVERS + DAMPED + CHUNKED_SOLVERS,
        accuracy_solvers=ITERATIVE + DAMPED + CHUNKED_SOLVERS,
    ),
    # The main job (`make report`): <= 15 minutes from a fresh clone on the 2-core VM of
    # reports/vm. It answers "where does a parallel solver beat the best sequential baseline"
    # over T x H (Product, DEER's protocol: GRU, B = 16, I = H; its slices at one H and at
    # one T are the time-vs-T and time-vs-H sweeps, fpbench.report.analysis.axis_sweep), over
    # B (Batch) and over the iteration budget k (Budget, on elman: every timed solve's gate
    # records its error against the exact states, so time and error against k come from the
    # same solves, the error beside the bound rho^k), for every parallel solver including
    # Chunked, with the error of every timed solve, and the backward pass and training beside
    # them. Its cost is asv's fresh process per combination plus each one's compile and
    # correctness gate, whose float64 references are computed once per problem and solver
    # per sweep (benchmarks/common.py: gate_reference). The other suites have small values for
    # `asv run` by hand; `fpbench sweep` runs only `suites`.
    "main": Grid(
        name="main",
        cells=("gru",),
        solve_budget=TOL,
        seq_lens=(1024, 4096),
        seq_lens_hidden=32,
        hidden_sizes=(8, 32),
        hidden_seq_len=1024,
        budgets=(1, 4, 16),
        budget_seq_len=1024,
        budget_hidden=8,
        accuracy_cells=("elman",),
        accuracy_budgets=(TOL,),
        contractions=(0.9, 2.0),
        accuracy_seq_len=256,
        accuracy_hidden=8,
        cold_seq_len=1024,
        cold_hidden=32,
        floor_seq_lens=(1024,),
        floor_hidden=32,
        product_cells=("gru",),
        product_batch=16,
        product_seq_lens=(1024, 2048, 4096),
        product_hidden_sizes=(2, 8, 16),  # Newton's dense scan is O(T B H^3); `default` and `full`
        # go to H = 64 and 256
        batch_sizes=(1, 4, 16, 64),
        batch_seq_len=2048,
        batch_hidden=8,
        # Not Accuracy: Budget's gates measure the error against k of every timed solve, and
        # the damping study (rho = 2) is mostly ELK's compiles; `default` runs it.
        suites=(
            "Product",
            "Batch",
            "ChunkedOverlap",
            "GradSeqLen",
            "GradAccuracy",
            "TrainSeqLen",
            "TrainLoss",
            "Budget",
        ),
        # The float64 NumPy oracle is no contender, and costs minutes at these T; it still
        # checks every other target's solves (the correctness gate runs the reference).
        sweep_skips=("numpy:cpu",),
        # Damping on a problem where Newton overshoots (rho = 2): where it helps, where it
        # only costs iterations.
        accuracy_solvers=ITERATIVE + DAMPED + CHUNKED_SOLVERS,
        # One Chunked configuration, its fast answer (one iteration, its error shown), to stay
        # within the main job's minutes; `default` runs the others.
        solvers=(*SOLVERS, "chunked_p8_o64_k1"),
        # The budget sweep: every parallel solver, Chunked with its budget of iterations (its
        # overlap is ChunkedOverlap's axis), on the cell the bound rho^k is about; fixed
        # budgets only (runs to tolerance, and the baselines, which run only under "tol", are
        # Product's and Batch's), time only (no report section reads a budget's memory).
        budget_cells=("elman",),
        budget_solvers=(*ITERATIVE, "chunked_p8_o64"),
        budget_peakmem=False,
    ),
}

# The sharded solve's scaling (benchmarks/bench_shard.py, SHARD_GRIDS below), on its own: its
# torch ranks start a process each, so it stays out of `main`'s minutes (`fpbench sweep --grid
# shard`). Its other suites' values are quick's; `fpbench sweep` runs only the two below.
GRIDS["shard"] = Grid(**{**GRIDS["quick"].__dict__, "name": "shard", "suites": ("ShardStrong", "ShardWeak")})

GRID_NAMES: tuple[str, ...] = tuple(GRIDS)
"""Grid names in definition order (append-only: an index here is a stable grid id)."""


def grid_name() -> str:
    """The grid ``FPBENCH_GRID`` names (``quick`` when unset).

    Raises:
        ValueError: an unknown grid name.
    """
    name = os.environ.get(GRID_ENV, "").strip() or DEFAULT_GRID
    if name not in GRIDS:
        raise ValueError(f"{GRID_ENV}={name!r} is not a grid; choose one of {list(GRIDS)}")
    return name


def current() -> Grid:
    """The grid selected by ``FPBENCH_GRID``."""
    return GRIDS[grid_name()]


# -- Gradients (benchmarks/bench_grad.py): appended; append-only like everything above -----------

BACKWARDS: tuple[str, ...] = ("implicit", "unrolled")
"""The ``backward`` parameter of the gradient suites (:attr:`fpbench.Iterative.backward`). The
baselines (``sequential`` = BPTT, ``native`` = the framework's autograd) have one, exact,
backward: they appear under ``"implicit"`` and are n/a under ``"unrolled"``."""


@dataclass(frozen=True)
class GradGrid:
    """The gradient suites' sweep within one named grid (same names as :data:`GRIDS`).

    Attributes:
        cells: cells of ``GradSeqLen``, ``GradHidden``, ``GradBudget``.
        solve_budget: the budget of every iterative solve in ``GradSeqLen`` and ``GradHidden``.
        seq_lens / seq_lens_hidden: ``GradSeqLen`` sweeps T at H = ``seq_lens_hidden``.
        hidden_sizes / hidden_seq_len: ``GradHidden`` sweeps H at T = ``hidden_seq_len``.
        budgets / budget_seq_len / budget_hidden: ``GradBudget`` sweeps ``max_iters`` at (T, H).
        accuracy_cells, accuracy_budgets, contractions, accuracy_seq_len, accuracy_hidden:
            ``GradAccuracy`` sweeps budget x contraction rho at (T, H).
        targets: the ``backend:device`` targets of the gradient suites (None: every target,
            as the other suites). ``quick`` runs the NumPy oracle only: a smoke test of the
            suites that keeps the CI sweep short.
        unrolled: the iterative solvers (by registered name: ``"chunked"`` for every
            Chunked configuration) whose ``backward="unrolled"`` the gradient suites run;
            the others' are n/a (the suites' parameters are unchanged).
    """

    cells: tuple[str, ...]
    solve_budget: Budget
    seq_lens: tuple[int, ...]
    seq_lens_hidden: int
    hidden_sizes: tuple[int, ...]
    hidden_seq_len: int
    budgets: tuple[Budget, ...]
    budget_seq_len: int
    budget_hidden: int
    accuracy_cells: tuple[str, ...]
    accuracy_budgets: tuple[Budget, ...]
    contractions: tuple[float, ...]
    accuracy_seq_len: int
    accuracy_hidden: int
    targets: tuple[str, ...] | None = None
    unrolled: tuple[str, ...] = ITERATIVE + DAMPED + ("chunked",)


GRAD_GRIDS: dict[str, GradGrid] = {
    "quick": GradGrid(
        cells=("gru",),
        solve_budget=TOL,
        seq_lens=(128,),
        seq_lens_hidden=16,
        hidden_sizes=(16,),
        hidden_seq_len=64,
        budgets=(2, TOL),
        budget_seq_len=64,
        budget_hidden=16,
        accuracy_cells=("elman",),
        accuracy_budgets=(2, TOL),
        contractions=(0.5,),
        accuracy_seq_len=64,
        accuracy_hidden=16,
        targets=("numpy:cpu",),
    ),
    "default": GradGrid(
        cells=("elman", "gru"),
        solve_budget=TOL,
        seq_lens=(256, 1024, 4096, 16384),
        seq_lens_hidden=64,
        hidden_sizes=(16, 64, 256),
        hidden_seq_len=1024,
        budgets=(1, 4, 16, 64, TOL),
        budget_seq_len=1024,
        budget_hidden=64,
        accuracy_cells=("elman",),
        accuracy_budgets=(1, 2, 4, 8, 16, 32, 64, TOL),
        contractions=(0.5, 0.9, 1.2),
        accuracy_seq_len=1024,
        accuracy_hidden=64,
    ),
    "full": GradGrid(
        cells=("elman", "gru", "lstm"),
        solve_budget=TOL,
        seq_lens=(1024, 4096, 16384, 65536, 262144),
        seq_lens_hidden=64,
        hidden_sizes=(16, 64, 256, 1024),
        hidden_seq_len=16384,
        budgets=(1, 2, 4, 8, 16, 32, 64, 128, TOL),
        budget_seq_len=16384,
        budget_hidden=64,
        accuracy_cells=("elman", "gru"),
        accuracy_budgets=(1, 2, 4, 8, 16, 32, 64, 128, TOL),
        contractions=(0.5, 0.8, 0.9, 0.95, 1.0, 1.1, 1.2),
        accuracy_seq_len=16384,
        accuracy_hidden=64,
    ),
    # The main job: the backward pass's time against T (GradSeqLen) and its error against
    # the budget (GradAccuracy), small enough for minutes on 2 cores.
    "main": GradGrid(
        cells=("gru",),
        solve_budget=TOL,
        seq_lens=(2048,),
        seq_lens_hidden=8,
        hidden_sizes=(8,),
        hidden_seq_len=1024,
        budgets=(TOL,),
        budget_seq_len=1024,
        budget_hidden=8,
        accuracy_cells=("elman",),
        accuracy_budgets=(1, 4, TOL),
        contractions=(0.9,),
        accuracy_seq_len=128,
        accuracy_hidden=8,
        # Unrolled, the Newton-type solvers backpropagate through their parallel scans: to
        # tolerance at T = 2048 JAX compiles each for 15-90 s and torch's ELK takes 23 s a
        # run; even GradAccuracy's small problems cost JAX 7-9 s of compile each (40 s of the
        # main job). The truncated model (Jacobi) is the unrolled gradient training uses;
        # `default` runs them all.
        unrolled=("jacobi", "chunked"),
    ),
}


def current_grad() -> GradGrid:
    """The gradient sweep of the grid ``FPBENCH_GRID`` selects (``quick``'s for a grid that
    has none)."""
    return GRAD_GRIDS.get(grid_name(), GRAD_GRIDS["quick"])


# -- Training (benchmarks/bench_train.py): appended; append-only like everything above --------
# (moved here from benchmarks/train_grids.py, which re-exports it, so that the report reads a
# training suite's fixed settings from the package, as it reads the other grids')

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


def current_train() -> TrainGrid:
    """The training grid of ``FPBENCH_GRID`` (a grid without a training sweep: ``quick``'s)."""
    return TRAIN_GRIDS.get(grid_name(), TRAIN_GRIDS["quick"])


# -- One combination's whole problem (the report's rows): appended ------------------------------

PROBLEM_COLUMNS: tuple[str, ...] = (
    "cell",
    "seq_len",
    "hidden_size",
    "batch",
    "input_size",
    "dtype",
    "contraction",
    "solver",
    "backward",
    "max_iters",
    "budget",
)
"""What :func:`suite_problem` gives: the problem (cell, T, H, B, I, dtype, rho), the solver,
its backward mode (gradient and training suites) and its budget (``max_iters``; the training
suites' ``budget``)."""


def _train_solver(method: str) -> dict[str, str]:
    """The grid solver name and backward mode of a training method (``benchmarks/bench_train.py``:
    ``method_solver``): ``jacobi_unrolled`` -> ``jacobi``, unrolled; the baselines' one exact
    backward sits under ``"implicit"``, as in the gradient suites."""
    if method.endswith("_unrolled"):
        return {"solver": method.removesuffix("_unrolled"), "backward": "unrolled"}
    return {"solver": method, "backward": "implicit"}


# -- Sharding (benchmarks/bench_shard.py): appended; append-only like everything above ----------

SHARDS: tuple[int, ...] = (1, 2, 4)
"""The numbers of shards N the scaling suites sweep."""


@dataclass(frozen=True)
class ShardGrid:
    """The scaling suites' sweep within one named grid (same names as :data:`GRIDS`): the
    sharded solve (:func:`fpbench.sharding.solve_sharded`) on N = ``shards`` devices (jax:
    XLA host devices on a CPU) or processes (torch: ``gloo`` ranks), every iterative solver
    to tolerance (``"tol"``), input size, dtype, rho and seed as every suite's.

    Attributes:
        cell, hidden_size, batch: the problem.
        strong_seq_len: ``ShardStrong``'s T, whatever N (strong scaling: T / N steps a shard).
        weak_steps: ``ShardWeak``'s steps a shard (weak scaling: T = N * weak_steps).
        solvers: grid solver names with a sharded form (a Chunked configuration's chunks must
            be a multiple of every N and divide every T).
        shards: the N swept.
        targets: the ``backend:device`` targets.
    """

    cell: str
    hidden_size: int
    batch: int
    strong_seq_len: int
    weak_steps: int
    solvers: tuple[str, ...]
    shards: tuple[int, ...] = SHARDS
    targets: tuple[str, ...] = ("jax:cpu", "torch:cpu")


SHARD_GRIDS: dict[str, ShardGrid] = {
    # CI smoke: one solver, one engine, N = 1 and 2.
    "quick": ShardGrid(
        cell="gru",
        hidden_size=8,
        batch=4,
        strong_seq_len=256,
        weak_steps=128,
        solvers=("newton",),
        shards=(1, 2),
        targets=("jax:cpu",),
    ),
    "shard": ShardGrid(
        cell="gru",
        hidden_size=8,
        batch=8,
        strong_seq_len=2048,
        weak_steps=512,
        solvers=("jacobi", "newton", "quasi_newton", "chunked_p8_o64"),
    ),
}


def current_shard() -> ShardGrid:
    """The scaling sweep of the grid ``FPBENCH_GRID`` selects (``quick``'s for a grid that has
    none)."""
    return SHARD_GRIDS.get(grid_name(), SHARD_GRIDS["quick"])


def suite_problem(grid: str, suite: str, params: dict[str, Any]) -> dict[str, Any]:
    """The whole problem, solver and budget of one combination of the asv suite ``suite`` run
    under the named grid: its asv parameters ``params`` (which win), and what the suite holds
    fixed, from this module's definition of the grid (:data:`PROBLEM_COLUMNS`).

    This is the one statement of what each suite holds fixed, as the suites build their
    specs (``benchmarks/common.py``: ``spec``; ``bench_train.py``: ``train_spec``): B, I,
    dtype and rho are the module's constants unless the suite sweeps them (``Product``: B =
    ``product_batch``, I = H); a solve or gradient suite that does not sweep the budget runs
    to tolerance or the grid's ``solve_budget``. A grid's values are append-only, but the
    ``main`` grid's fields select what the main job runs and may change between commits: its
    results from another commit are described by this commit's definition.

    Args:
        grid: a name of :data:`GRIDS` (the ``FPBENCH_GRID`` the results were recorded under).
        suite: the asv class (``SeqLen``, ``GradSeqLen``, ``TrainLoss``, ...).
        params: the combination's asv parameters by name (values as asv gives them).
    Returns:
        The columns of :data:`PROBLEM_COLUMNS` this suite has (a parameter the suite sweeps
        keeps its value); ``{}`` for an unknown grid or a suite that solves nothing
        (``Settings``).
    """
    g = GRIDS.get(grid)
    if g is None:
        return {}
    gg = GRAD_GRIDS.get(grid, GRAD_GRIDS["quick"])
    tg = TRAIN_GRIDS.get(grid, TRAIN_GRIDS["quick"])
    base = {"batch": BATCH, "input_size": INPUT_SIZE, "dtype": DTYPE, "contraction": CONTRACTION}
    fixed: dict[str, dict[str, Any]] = {
        "SeqLen": {"hidden_size": g.seq_lens_hidden, "max_iters": g.solve_budget},
        "Hidden": {"seq_len": g.hidden_seq_len, "max_iters": g.solve_budget},
        "Budget": {"seq_len": g.budget_seq_len, "hidden_size": g.budget_hidden},
        "Accuracy": {"seq_len": g.accuracy_seq_len, "hidden_size": g.accuracy_hidden},
        "ChunkedOverlap": {
            "seq_len": g.accuracy_seq_len,
            "hidden_size": g.accuracy_hidden,
            "solver": "chunked",
            "max_iters": 1,
        },
        "ColdStart": {"seq_len": g.cold_seq_len, "hidden_size": g.cold_hidden, "max_iters": g.solve_budget},
        "IterationFloor": {"hidden_size": g.floor_hidden, "solver": "jacobi", "max_iters": 1},
        "Product": {"batch": g.product_batch, "max_iters": TOL},
        "Batch": {"seq_len": g.batch_seq_len, "hidden_size": g.batch_hidden, "max_iters": TOL},
        "GradSeqLen": {"hidden_size": gg.seq_lens_hidden, "max_iters": gg.solve_budget},
        "GradHidden": {"seq_len": gg.hidden_seq_len, "max_iters": gg.solve_budget},
        "GradBudget": {"seq_len": gg.budget_seq_len, "hidden_size": gg.budget_hidden},
        "GradAccuracy": {"seq_len": gg.accuracy_seq_len, "hidden_size": gg.accuracy_hidden},
    }
    train: dict[str, dict[str, Any]] = {
        "TrainSeqLen": {"hidden_size": tg.seq_lens_hidden, "budget": tg.step_budget},
        "TrainHidden": {"seq_len": tg.hidden_seq_len, "budget": tg.step_budget},
        "TrainLoss": {"seq_len": tg.track_seq_len, "hidden_size": tg.track_hidden},
        "TrainText": {
            "seq_len": tg.text_seq_len,
            "hidden_size": tg.text_hidden,
            "input_size": TRAIN_TEXT_INPUT_SIZE,
        },
    }
    sg = SHARD_GRIDS.get(grid, SHARD_GRIDS["quick"])
    shard = {"cell": sg.cell, "hidden_size": sg.hidden_size, "batch": sg.batch, "max_iters": TOL}
    fixed["ShardStrong"] = {**shard, "seq_len": sg.strong_seq_len}
    shards = params.get("shards")  # an int, or a float in a frame column with gaps
    if isinstance(shards, (int, float)) and not isinstance(shards, bool) and shards == int(shards):
        fixed["ShardWeak"] = {**shard, "seq_len": sg.weak_steps * int(shards)}
    given = {k: v for k, v in params.items() if k in PROBLEM_COLUMNS and v is not None}
    if suite in fixed:
        out = {**base, **fixed[suite], **given}
        if suite == "Product" and "input_size" not in given and "hidden_size" in out:
            out["input_size"] = out["hidden_size"]  # DEER's protocol: I = H
        return out
    if suite in train:
        base = {**base, "cell": TRAIN_CELL, "batch": TRAIN_BATCH, "input_size": TRAIN_INPUT_SIZE}
        method = params.get("method")
        solver = _train_solver(method) if isinstance(method, str) else {}
        return {**base, **train[suite], **solver, **given}
    return {}
