"""Cold-start cost: ``Backend.prepare`` (transfer, JIT compilation, warm-up) in a fresh process.

asv's ``timeraw_`` runs the returned code in a new interpreter per sample: the setup
part (imports, the framework, the problem) is not timed, the statement is. On-disk
compilation caches (Numba's, JAX's persistent cache) are the backends' business, so
this is the first call of a new process, with whatever those caches hold.
"""

from __future__ import annotations

import dataclasses

from . import common, sweep_state
from .common import GRID, TARGETS


class ColdStart:
    """Seconds of the first ``prepare`` in a fresh process, per target x cell x solver, on
    the problem (T, H) = (``grid.cold_seq_len``, ``grid.cold_hidden``); iterative solvers
    use the grid's ``solve_budget``."""

    params = (TARGETS, GRID.cells, GRID.solvers)
    param_names = ("target", "cell", "solver")
    number = 1
    repeat = (1, 3, 20.0)
    min_run_count = 1
    warmup_time = 0.0
    rounds = 1
    timeout = 300.0

    def setup(self, target, cell, solver):
        sweep_state.tick()
        self.spec = common.spec(cell, GRID.cold_seq_len, GRID.cold_hidden)
        self.solver = common.solver(solver, GRID.solve_budget, GRID.cold_seq_len)
        # The gate here (warm, in this process) vouches for what the fresh process prepares.
        common.gate(target, self.spec, self.solver)

    def timeraw_prepare(self, target, cell, solver):
        # Rebuilt from plain values: the statement runs in a new interpreter.
        solver = self.solver
        setup = (
            "import fpbench\n"
            "from fpbench.registry import resolve\n"
            f"impl, device = resolve({target!r})\n"
            f"problem = fpbench.make_problem(fpbench.RNNSpec(**{dataclasses.asdict(self.spec)!r}))\n"
            f"solver = fpbench.make_solver({solver.name!r}, **{solver.fields()!r})\n"
        )
        return "impl.prepare(problem, solver, device)", setup
