"""The sharded scaling suites' grids (``benchmarks/bench_shard.py``): their sweep within each
named grid of :data:`fpbench.grids.GRIDS`.

**Append-only**, like every grid (:mod:`fpbench.grids`): each value is an asv parameter and a
report key. Standard library only, and the other grid modules only by relative import:
``benchmarks/grids.py`` loads the grid modules of its own checkout by path.
"""

from __future__ import annotations

from dataclasses import dataclass

from .grids import grid_name

SHARDS: tuple[int, ...] = (1, 2, 4)
"""The numbers of shards N the scaling suites sweep."""


@dataclass(frozen=True)
class ShardGrid:
    """The scaling suites' sweep within one named grid (same names as :data:`fpbench.grids.GRIDS`): the
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
