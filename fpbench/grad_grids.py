"""The gradient suites' grids (``benchmarks/bench_grad.py``): their sweep within each named
grid of :data:`fpbench.grids.GRIDS`.

**Append-only**, like every grid (:mod:`fpbench.grids`): each value is an asv parameter and a
report key. Standard library only, and the other grid modules only by relative import:
``benchmarks/grids.py`` loads the grid modules of its own checkout by path.
"""

from __future__ import annotations

from dataclasses import dataclass

from .grids import DAMPED, ITERATIVE, TOL, Budget, grid_name

BACKWARDS: tuple[str, ...] = ("implicit", "unrolled")
"""The ``backward`` parameter of the gradient suites (:attr:`fpbench.Iterative.backward`). The
baselines (``sequential`` = BPTT, ``native`` = the framework's autograd) have one, exact,
backward: they appear under ``"implicit"`` and are n/a under ``"unrolled"``."""


@dataclass(frozen=True)
class GradGrid:
    """The gradient suites' sweep within one named grid (same names as :data:`fpbench.grids.GRIDS`).

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


GRAD_GRIDS["smoke"] = GradGrid(
    cells=("gru",),
    solve_budget=TOL,
    seq_lens=(64,),
    seq_lens_hidden=8,
    hidden_sizes=(8,),
    hidden_seq_len=64,
    budgets=(2,),
    budget_seq_len=64,
    budget_hidden=8,
    accuracy_cells=("elman",),
    accuracy_budgets=(TOL,),
    contractions=(0.5,),
    accuracy_seq_len=64,
    accuracy_hidden=8,
    targets=("numpy:cpu",),
    unrolled=("jacobi",),
)
"""The ``smoke`` grid's (:data:`fpbench.grids.GRIDS`): one tiny point of each gradient suite."""


def current_grad() -> GradGrid:
    """The gradient sweep of the grid ``FPBENCH_GRID`` selects (``quick``'s for a grid that
    has none)."""
    return GRAD_GRIDS.get(grid_name(), GRAD_GRIDS["quick"])
