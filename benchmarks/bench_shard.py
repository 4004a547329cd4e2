"""Scaling of the sharded solve (:func:`fpbench.sharding.solve_sharded`): T split over N
devices (jax: XLA host devices on a CPU) or processes (torch: ``gloo`` ranks).

``ShardStrong`` holds T fixed (``strong_seq_len``: T / N steps a shard), ``ShardWeak`` the
steps a shard (``weak_steps``: T = N * weak_steps), for N in the grid's ``shards``, every
solver of :func:`fpbench.shard_grids.current_shard` to tolerance. ``track_solve_seconds`` is the
median of :data:`REPEATS` synchronised solves, timed by the engine: for jax around the
compiled program, for torch inside the ranks between barriers, so the ranks' process start-up
(seconds) is never inside it; both take the same shape of measurement, so the suite records a
number, not an asv timing of a process launch. Every number passed the correctness gate
(``common.verify``) on the states of the same solves.

Runs on its own (``fpbench sweep --grid shard``, or ``FPBENCH_GRID=shard asv run --bench
Shard``), not in ``main``. On a machine with C cores, N > C shards share the cores: past that
the suite measures only the overhead of sharding.
"""

from __future__ import annotations

import statistics
from abc import ABC, abstractmethod
from typing import Any

from . import common, grids, sweep_state

SG = grids.current_shard()

REPEATS = 3
"""Solves a combination times (the median is recorded)."""


class _Scaling(ABC):
    """Base of the scaling suites (abstract, so asv does not collect it)."""

    params = (SG.targets, SG.solvers, SG.shards)
    param_names = ("target", "solver", "shards")
    unit = "seconds"
    timeout = 600.0

    @abstractmethod
    def seq_len(self, shards: int) -> int:
        """T at ``shards`` shards."""

    def setup(self, target: str, solver: str, shards: int) -> None:
        from fpbench.backend import BackendUnavailableError, UnsupportedError
        from fpbench.registry import parse_target, resolve
        from fpbench.sharding import check_sharded, prepare_sharded

        sweep_state.tick()
        name, device = parse_target(target)
        T = self.seq_len(shards)
        spec = common.spec(SG.cell, T, SG.hidden_size, batch=SG.batch)
        solv = common.solver(solver, grids.TOL, T)
        prob = common.problem(spec)
        try:
            if name == "jax":
                try:
                    from backends.jax.sharded import use_host_devices
                except ImportError:  # an fpbench from before backends/jax/ (asv runs older commits)
                    from backends._jax_sharded import use_host_devices

                use_host_devices(max(SG.shards))  # before JAX's CPU client exists
            plan = check_sharded(prob, solv, target, shards)
            _, dev = resolve(name, device)
            prepared = prepare_sharded(prob, solv, name, dev, plan)
        except (BackendUnavailableError, UnsupportedError, ValueError) as e:
            raise NotImplementedError(str(e)) from None
        out, seconds = prepared.timed(REPEATS)
        states, residuals = prepared.to_host(out)
        common.verify(f"{target} x{shards} {solv}", prob, solv, states, residuals)
        self.seconds = statistics.median(seconds)

    def track_solve_seconds(self, *params: Any) -> float:
        return self.seconds


class ShardStrong(_Scaling):
    """Strong scaling: T = ``strong_seq_len`` over N shards."""

    def seq_len(self, shards: int) -> int:
        return SG.strong_seq_len


class ShardWeak(_Scaling):
    """Weak scaling: ``weak_steps`` steps a shard, T = N * weak_steps."""

    def seq_len(self, shards: int) -> int:
        return SG.weak_steps * shards
