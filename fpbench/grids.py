"""The named benchmark grids: what the asv suites (``benchmarks/``) sweep.

``FPBENCH_GRID`` picks one (``quick`` when unset): ``quick`` is the CI smoke sweep,
``default`` the README's long CPU sweep, ``full`` the paper-scale GPU sweep, ``main`` the
main job's sweep (``make report``: minutes on 2 cores), ``shard`` the sharded solve's
scaling, ``smoke`` one tiny point of every suite (the sweep's end-to-end test). This module is the one place
grids are defined, with the gradient, training and sharded suites' grids beside it
(:mod:`fpbench.grad_grids`, :mod:`fpbench.train_grids`, :mod:`fpbench.shard_grids`;
``benchmarks/grids.py`` loads them); it needs only the standard
library, so the report, the sweep and the tests import it without asv or any framework.

**Append-only.** A grid's name and the meaning of every value in it are asv parameters
and report keys: results from different commits and machines are only comparable while
they stay fixed. Add new values (or a new grid) at the end; never change or remove one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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

DIAGONAL_PAIRS: dict[str, str] = {"gru_diag": "gru", "lstm_cifg_diag": "lstm"}
"""Each diagonal cell (ParaRNN's, :mod:`fpbench.cells`) and the dense cell it is compared with
in ``DiagNewton`` and the report's diagonal-cell section."""
DIAG_SOLVERS: tuple[str, ...] = ("sequential", "native", "newton", "quasi_newton", "chunked_p8_o64_k1")
"""The solvers of ``DiagNewton`` in the grids that run it at full size (``Native`` is n/a on
the diagonal cells: no fused library kernel)."""

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
        diag_cells / diag_solvers / diag_hidden_sizes / diag_seq_len / diag_batch:
            ``DiagNewton`` (``benchmarks/bench_diag.py``) times ``diag_solvers`` (iterative ones
            to tolerance) on dense cells and their diagonal counterparts
            (:data:`DIAGONAL_PAIRS`) against H at T = ``diag_seq_len``, B = ``diag_batch``: where
            a diagonal recurrence lets Newton's O(T H) scan win where the dense O(T H^3) cannot.

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
    diag_cells: tuple[str, ...] = ("gru", "gru_diag")
    diag_solvers: tuple[str, ...] = ("sequential", "newton")
    diag_hidden_sizes: tuple[int, ...] = (4, 16)
    diag_seq_len: int = 128
    diag_batch: int = BATCH


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
        diag_cells=("gru", "gru_diag", "lstm", "lstm_cifg_diag"),
        diag_solvers=DIAG_SOLVERS,
        diag_hidden_sizes=(8, 32, 128),
        diag_seq_len=1024,
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
        diag_cells=("gru", "gru_diag", "lstm", "lstm_cifg_diag"),
        diag_solvers=DIAG_SOLVERS,
        diag_hidden_sizes=(16, 64, 256, 1024),
        diag_seq_len=16384,
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
    # per sweep (benchmarks/sweep_state.py: gate_reference). The other suites have small values for
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
            "DiagNewton",
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
        # Dense against diagonal cells over H (ParaRNN's cells: Newton's scan O(T H) on them,
        # O(T H^3) on the dense ones), at one T and B: the GRU pair and the solvers the question
        # is about, to stay within the main job's minutes (dense Newton's O(T H^3) work on the
        # LSTM's 2H state is the costliest); `default` adds the LSTM pair and Chunked.
        diag_cells=("gru", "gru_diag"),
        diag_solvers=("sequential", "native", "newton", "quasi_newton"),
        diag_hidden_sizes=(8, 64),  # `default` goes to H = 128, where dense Newton's H^3 dominates
        diag_seq_len=1024,
    ),
}

# The sharded solve's scaling (benchmarks/bench_shard.py, fpbench/shard_grids.py), on its own: its
# torch ranks start a process each, so it stays out of `main`'s minutes (`fpbench sweep --grid
# shard`). Its other suites' values are quick's; `fpbench sweep` runs only the two below.
GRIDS["shard"] = Grid(**{**GRIDS["quick"].__dict__, "name": "shard", "suites": ("ShardStrong", "ShardWeak")})

# The sweep's own end-to-end test (tests/test_report.py): every suite of `quick` at one tiny
# point each, a few solvers, so that the whole sweep (one asv run per target, publish, the
# report) runs in a few minutes; the suites' solvers are tested by tests/test_asv.py and
# tests/test_bench_*.py. Its gradient, training and sharded suites are `smoke`'s of their grids.
GRIDS["smoke"] = Grid(
    name="smoke",
    cells=("gru",),
    solve_budget=TOL,
    seq_lens=(128,),
    seq_lens_hidden=8,
    hidden_sizes=(8,),
    hidden_seq_len=128,
    budgets=(2,),
    budget_seq_len=128,
    budget_hidden=8,
    accuracy_cells=("elman",),
    accuracy_budgets=(TOL,),
    contractions=(0.5,),
    accuracy_seq_len=128,
    accuracy_hidden=8,
    cold_seq_len=128,
    cold_hidden=8,
    floor_seq_lens=(128,),
    floor_hidden=8,
    product_seq_lens=(128,),
    product_hidden_sizes=(4,),
    batch_sizes=(4,),
    batch_seq_len=128,
    batch_hidden=8,
    solvers=("sequential", "native", "newton", "chunked_p8_o64_k1"),
    accuracy_solvers=("jacobi", "elk"),
    overlaps=(16,),
    budget_solvers=("jacobi",),
    budget_peakmem=False,
    diag_hidden_sizes=(4,),
)

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
