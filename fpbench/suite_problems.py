"""One combination's whole problem (the report's rows): what each asv suite holds fixed under
a named grid, beside the parameters it sweeps (:func:`suite_problem`), from the grids'
definitions (:mod:`fpbench.grids`, :mod:`fpbench.grad_grids`, :mod:`fpbench.train_grids`,
:mod:`fpbench.shard_grids`)."""

from __future__ import annotations

from typing import Any

from .grad_grids import GRAD_GRIDS
from .grids import BATCH, CONTRACTION, DTYPE, GRIDS, INPUT_SIZE, TOL
from .shard_grids import SHARD_GRIDS
from .train_grids import TRAIN_BATCH, TRAIN_CELL, TRAIN_GRIDS, TRAIN_INPUT_SIZE, TRAIN_TEXT_INPUT_SIZE

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
        "DiagNewton": {"seq_len": g.diag_seq_len, "batch": g.diag_batch, "max_iters": TOL},
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
