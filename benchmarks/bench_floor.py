"""The per-iteration floor: one Jacobi iteration against the framework's bare batched
product plus the cell's elementwise work (``Backend.iteration_floor``).

The ratio ``time_jacobi_iteration / time_floor`` is the overhead fpbench's Jacobi adds
per iteration over what the framework itself needs.
"""

from __future__ import annotations

from . import common, sweep_state
from .common import GRID, TARGETS


class IterationFloor(common.Timed):
    """``time_floor`` and ``time_jacobi_iteration`` (a Jacobi solve with a budget of one
    iteration, gated like every solve) against T at H = ``grid.floor_hidden``."""

    params = (TARGETS, GRID.cells, GRID.floor_seq_lens)
    param_names = ("target", "cell", "seq_len")

    def setup(self, target, cell, seq_len):
        sweep_state.tick()
        self.spec = common.spec(cell, seq_len, GRID.floor_hidden)
        self.solver = common.solver("jacobi", 1, seq_len)
        self.jacobi = common.prepare(target, self.spec, self.solver)
        common.gate(target, self.spec, self.solver)
        impl, device = common.backend(target)
        try:
            self.floor = impl.iteration_floor(common.problem(self.spec), device)
        except (NotImplementedError, AttributeError) as e:  # AttributeError: commits before the floor
            self.floor = None
            self.floor_missing = f"{target} has no iteration floor: {e}"

    def time_floor(self, target, cell, seq_len):
        if self.floor is None:
            common.skip(self.floor_missing)
        self.floor()

    def time_jacobi_iteration(self, target, cell, seq_len):
        self.jacobi.run()
