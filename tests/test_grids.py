"""The grids (``fpbench.grids``, which ``benchmarks/grids.py`` loads) and the sweep's plan:
append-only grids, the main grid's shape, progress counting, chunks per target."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import sys
from pathlib import Path

import pytest

from fpbench import grids, suite_problems
from fpbench import train_grids as package_train_grids

REPO = Path(__file__).resolve().parent.parent


def test_existing_grids_keep_their_values():
    """Append-only: the values results were recorded under never change."""
    d = grids.GRIDS["default"]
    assert d.seq_lens == (256, 1024, 4096, 16384) and d.seq_lens_hidden == 64
    assert d.hidden_sizes == (16, 64, 256) and d.hidden_seq_len == 1024
    assert d.budgets == (1, 4, 16, 64, grids.TOL) and d.contractions == (0.5, 0.9, 1.2)
    q = grids.GRIDS["quick"]
    assert q.seq_lens == (128, 1024) and q.hidden_sizes == (16, 64) and q.cells == ("gru",)
    assert grids.GRIDS["full"].seq_lens[-1] == 1048576
    assert grids.GRID_NAMES[:3] == ("quick", "default", "full")  # indices are the Settings ids
    assert (grids.BATCH, grids.INPUT_SIZE, grids.DTYPE, grids.CONTRACTION) == (8, 32, "float32", 0.9)


def test_chunked_configurations_build_their_solvers():
    """A named Chunked configuration is its solver under every budget; one that fixes its
    own budget (``_k1``) runs it under "tol" and is n/a under any other budget."""
    from benchmarks import common

    assert grids.CHUNKED["chunked_p8_o64"] == {"chunks": 8, "overlap": 64}  # append-only
    s = common.solver("chunked_p8_o64", 3, 4096)
    assert (s.name, s.max_iters, s.tol, s.chunks, s.overlap) == ("chunked", 3, None, 8, 64)
    s = common.solver("chunked_p8_o64", grids.TOL, 4096)
    assert (s.max_iters, s.tol) == (4096, grids.TOLERANCE["float32"])
    s = common.solver("chunked_p2_o64_k1", grids.TOL, 4096)
    assert (s.max_iters, s.tol, s.chunks, s.overlap) == (1, None, 2, 64)
    with pytest.raises(NotImplementedError, match="runs its own budget"):
        common.solver("chunked_p2_o64_k1", 4, 4096)
    for name in grids.CHUNKED:
        assert name.startswith("chunked_p") and grids.solver_fields(name)[0] == "chunked"


def test_main_grid_covers_t_h_and_b():
    m = grids.GRIDS["main"]
    assert len(m.product_seq_lens) >= 3 and len(m.product_hidden_sizes) >= 3
    assert min(m.product_seq_lens) >= 1000 and m.product_batch == 16 and m.product_cells == ("gru",)
    assert set(m.batch_sizes) >= {1, 4, 16, 64}
    assert set(m.suites) >= {"Product", "Batch"}
    for grid in grids.GRIDS.values():  # every grid gives the new suites values
        assert grid.product_seq_lens and grid.product_hidden_sizes and grid.batch_sizes


def test_main_grid_sweeps_t_h_and_the_budget_of_every_parallel_solver():
    """Issue 21: time against T and H (the product's slices), and time and error against the
    budget k for every parallel solver of the main grid, Chunked's iterations among them
    (its overlap: ChunkedOverlap), besides B, the backward pass and training."""
    from fpbench.solvers import SOLVERS

    m = grids.GRIDS["main"]
    assert {"Product", "Batch", "Budget", "ChunkedOverlap", "GradSeqLen", "TrainLoss"} <= set(m.suites)
    assert len(m.product_seq_lens) >= 3 and len(m.product_hidden_sizes) >= 3
    ks = [k for k in m.budgets if k != grids.TOL]
    assert len(ks) >= 3 and max(ks) >= 16 * min(ks) and min(ks) == 1
    parallel = {grids.solver_fields(s)[0] for s in m.solvers if SOLVERS[grids.solver_fields(s)[0]].iterative}
    budget_solvers = m.budget_solvers or m.solvers
    assert parallel <= {grids.solver_fields(s)[0] for s in budget_solvers}
    chunked = [s for s in budget_solvers if grids.solver_fields(s)[0] == "chunked"]
    assert chunked and all("max_iters" not in grids.solver_fields(s)[1] for s in chunked)  # runs every k
    if grids.TOL not in m.budgets:  # a baseline runs only under "tol": no process for nothing
        assert not set(grids.BASELINES) & set(budget_solvers)
    assert m.budget_cells == ("elman",)  # the cell the bound rho^k is about
    for name in ("quick", "default", "full"):  # the other grids' Budget is unchanged
        g = grids.GRIDS[name]
        assert (g.budget_cells, g.budget_solvers, g.budget_peakmem) == (None, None, True)


def test_budget_suite_follows_the_grid():
    """``Budget`` takes the grid's budget cells and solvers; under the main grid it times only
    (asv collects no ``peakmem_solve``, so the sweep runs no process for it)."""
    import os
    import subprocess

    code = (
        "import benchmarks.bench_solve as b; "
        "print(hasattr(b.Budget, 'peakmem_solve'), b.Budget.params[1], b.Budget.params[2])"
    )
    out = {}
    for name in ("main", "default"):
        env = {**os.environ, grids.GRID_ENV: name}
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
        )
        out[name] = run.stdout.strip()
    m, d = grids.GRIDS["main"], grids.GRIDS["default"]
    assert out["main"] == f"False {m.budget_cells} {m.budget_solvers}"
    assert out["default"] == f"True {d.cells} {d.solvers}"


def test_suite_problem_is_what_the_suites_build():
    """The report's whole problem of a row (``suite_problem``) is the spec, solver and budget
    the suite's ``case`` builds, for every combination of the solve, gradient and training
    time suites (the grid the suites imported here: quick unless ``FPBENCH_GRID`` says)."""
    import fpbench
    from benchmarks import bench_diag, bench_grad, bench_solve, bench_train

    name = grids.grid_name()
    suites = [
        bench_solve.SeqLen,
        bench_solve.Hidden,
        bench_solve.Budget,
        bench_solve.Product,
        bench_solve.Batch,
        bench_diag.DiagNewton,
        bench_grad.GradSeqLen,
        bench_grad.GradHidden,
        bench_grad.GradBudget,
        bench_train.TrainSeqLen,
        bench_train.TrainHidden,
    ]
    checked = 0
    for suite in suites:
        params = [("numpy:cpu",), *suite.params[1:]]
        for combo in itertools.product(*params):
            try:
                _, spec, solver = suite().case(*combo)
            except NotImplementedError:
                continue
            given = dict(zip(suite.param_names, combo, strict=True))
            got = suite_problems.suite_problem(name, suite.__name__, given)
            want = {f: getattr(spec, f) for f in ("cell", "seq_len", "hidden_size", "batch", "input_size")}
            want.update(dtype=spec.dtype, contraction=spec.contraction)
            assert {k: got[k] for k in want} == want, (suite.__name__, combo)
            budget = got["budget"] if suite.__name__.startswith("Train") else got["max_iters"]
            if solver.iterative and "max_iters" not in grids.solver_fields(got["solver"])[1]:
                if budget == grids.TOL:  # to tolerance, or (unrolled training) the exact budget
                    exact = fpbench.iteration_cap(solver, spec.seq_len) == solver.exact_after(spec.seq_len)
                    assert solver.tol is not None or exact, (suite.__name__, combo)
                else:
                    assert (solver.max_iters, solver.tol) == (budget, None), (suite.__name__, combo)
            if suite.__name__.startswith(("Grad", "Train")):
                assert got["backward"] == getattr(solver, "backward", "implicit"), (suite.__name__, combo)
            checked += 1
    assert checked > 50
    assert suite_problems.suite_problem("quick", "Settings", {"setting": "cpu_count"}) == {}
    assert suite_problems.suite_problem("no such grid", "SeqLen", {}) == {}


def test_training_grids_live_in_the_package():
    """The report reads a training suite's fixed settings from ``fpbench.train_grids``; the
    suites' ``train_grids`` is the same definition."""
    sys.path.insert(0, str(REPO))
    try:
        train_grids = importlib.import_module("benchmarks.train_grids")
    finally:
        sys.path.remove(str(REPO))
    assert list(train_grids.TRAIN_GRIDS) == list(package_train_grids.TRAIN_GRIDS)
    for name, grid in package_train_grids.TRAIN_GRIDS.items():
        assert dataclasses.asdict(train_grids.TRAIN_GRIDS[name]) == dataclasses.asdict(grid)
    assert (
        train_grids.METHODS == package_train_grids.TRAIN_METHODS
        and train_grids.CELL == package_train_grids.TRAIN_CELL
    )
    main = package_train_grids.TRAIN_GRIDS["main"]  # append-only: the values its results were recorded under
    assert (main.seq_lens, main.seq_lens_hidden, main.track_seq_len, main.track_hidden) == ((256,), 8, 64, 8)
    assert (
        package_train_grids.TRAIN_INPUT_SIZE,
        package_train_grids.TRAIN_BATCH,
        package_train_grids.TRAIN_TASK,
    ) == (4, 8, "teacher")


def test_benchmarks_load_the_same_grids():
    sys.path.insert(0, str(REPO))
    try:
        bench_grids = importlib.import_module("benchmarks.grids")
    finally:
        sys.path.remove(str(REPO))
    assert list(bench_grids.GRIDS) == list(grids.GRIDS)
    for name, grid in grids.GRIDS.items():
        assert dataclasses.asdict(bench_grids.GRIDS[name]) == dataclasses.asdict(grid)
    assert bench_grids.SOLVERS == grids.SOLVERS and bench_grids.CELLS == grids.CELLS


def test_report_does_not_load_files_by_path():
    """The report reads grids from the package, never from the repository's benchmarks/."""
    sections = [p.name for p in (REPO / "fpbench" / "report").glob("*_section*.py")]
    for name in ("build.py", "load.py", "analysis.py", *sections):
        text = (REPO / "fpbench" / "report" / name).read_text()
        assert "spec_from_file_location" not in text and "benchmarks/grids" not in text, name


def test_report_package_has_no_import_cycle():
    """store <- load <- build <- sweep: the sweep may use the report, never the other way."""
    sections = [p.name for p in (REPO / "fpbench" / "report").glob("*_section*.py")]
    for name in ("store.py", "load.py", "analysis.py", "figures.py", "page.py", "build.py", *sections):
        text = (REPO / "fpbench" / "report" / name).read_text()
        assert "from .sweep" not in text and "import sweep" not in text, name
    assert "from .build" not in (REPO / "fpbench" / "report" / "store.py").read_text()


def test_gate_prefix_matches():
    pytest.importorskip("pandas")
    from fpbench.report.store import GATE_PREFIX, parse_log

    text = (REPO / "benchmarks" / "common.py").read_text()
    assert f'GATE_PREFIX = "{GATE_PREFIX}"' in text
    log = (
        "[50.00%] ··· bench_solve.Product.time_solve                 ok\n"
        "             For parameters: 'numba:cpu', 'gru', 'jacobi', 1024, 8\n"
        f"             {GATE_PREFIX} max_abs=1.5e-04 rel_rms=5.4e-05 (vs exact)\n"
    )
    reasons, gates = parse_log(log)
    key = ("bench_solve.Product.time_solve", "'numba:cpu', 'gru', 'jacobi', 1024, 8")
    assert gates[key] == {"max_abs": 1.5e-4, "rel_rms": 5.4e-5}
    assert key not in reasons


def test_sweep_chunks_follow_the_grid(monkeypatch):
    from fpbench.report import sweep_plan

    monkeypatch.setattr(sweep_plan, "gpu_driver_present", lambda: False)
    chunks = sweep_plan.sweep_chunks({}, "main")
    flat = [c[0] for c in chunks]
    assert not any("numpy" in c for c in flat)  # the main grid's sweep_skips
    assert not any("cuda" in c or "gpu" in c for c in flat)  # no GPU driver here
    assert all("Product|Batch" in c for c in flat[:-1]) and flat[-1] == r"^bench_settings\."
    monkeypatch.setattr(sweep_plan, "gpu_driver_present", lambda: True)
    assert any("torch:cuda" in c[0] for c in sweep_plan.sweep_chunks({}, "quick"))


def test_progress_counts_combinations(tmp_path):
    from fpbench.report.sweep_display import Progress

    ticks = tmp_path / "ticks"
    ticks.write_text("")
    p = Progress([{"bench_solve.Product.time_solve": 10, "bench_solve.Batch.time_solve": 4}, {"x.Y.z": 2}])
    p.tick_file = ticks
    assert p.total == 16 and p.live() is not None and p.live() is None  # prints only on change
    ticks.write_text("1\n" * 3)
    assert p.live().startswith("fpbench sweep: 2/16 combinations")
    assert p.line("[ 50.00%] ··· bench_solve.Batch.time_solve         ok").startswith(
        "fpbench sweep: 4/16 combinations (25%)"
    )
    assert "left" in p.status()
    assert p.line("[ 50.00%] ··· ======= =====") is None
    p.next_run()
    # a run that ended early (killed) drops its unfinished combinations from the total
    assert p.line("[100.00%] ··· x.Y.z    ok").startswith("fpbench sweep: 6/6")


def test_progress_never_counts_backwards(tmp_path):
    """A benchmark's setup can tick more than once per combination, so the count read from
    the ticks once ran ahead of the benchmark that then finished, and the next line counted
    fewer combinations than the last (the main job printed 115/277, then 104/277)."""
    from fpbench.report.sweep_display import Progress

    ticks = tmp_path / "ticks"
    ticks.write_text("")
    p = Progress([{"a.B.time_x": 10, "d.E.time_y": 2}])
    p.tick_file = ticks
    ticks.write_text("1\n" * 9)
    assert p.live().startswith("fpbench sweep: 8/12")
    shown = [8]
    for text in ("[ 50.00%] ··· d.E.time_y    ok", "[100.00%] ··· a.B.time_x    ok"):
        line = p.line(text)
        shown.append(int(line.split()[2].split("/")[0]))
    assert shown == sorted(shown) and shown[-1] == 12, shown


def test_grid_tables_match_the_registries():
    """fpbench/grids.py is loaded by path and append-only, so it spells its names out; they
    must still be the package's tables (cells, the registry's solvers and baselines), never a
    drifting copy."""
    import fpbench
    from fpbench.report.store import BASELINES
    from fpbench.solvers import SOLVERS

    assert set(grids.CELLS) <= set(fpbench.CELLS)  # (a new cell joins the grids when chosen)
    assert set(grids.BASELINES) == set(BASELINES) == {n for n, c in SOLVERS.items() if not c.iterative}
    for grid in grids.GRIDS.values():
        assert set(grid.cells) <= set(fpbench.CELLS), grid
        for name in (*grid.solvers, *grid.accuracy_solvers):
            assert grids.solver_fields(name)[0] in SOLVERS, name
