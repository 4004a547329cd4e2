"""How much memory a solve needs, and the check that refuses one that cannot fit.

:func:`estimate_memory` is a rough model of a solve's working set, the same for every
backend (benchmarks use it too, to mark too-large combinations n/a). With ``N = T*B``
time-batch rows, ``g`` gate blocks, ``S`` the state size (``H``; ``2H`` for ``lstm``) and
``itemsize`` the bytes of the dtype computed in:

- every solver: the inputs ``x (N, I)``, the input projection ``(N, gH)`` and about four
  state-sized ``(N, S)`` buffers (iterates, differences, gate work):
  ``N * (I + g*H + 4*S)`` items;
- a full transition (Newton, ELK): plus its ``(T, B, S, S)`` Jacobians, several of which
  are alive at once in the parallel scan: ``4 * N * S * S`` items (``8 * N * S * S`` with
  damping: the Kalman smoother's covariances too). This term dominates: T = 4096, B = 8,
  H = 256 in float32 is 32 GiB;
- Chunked: plus its first iteration's windows folded into a batch (inputs, projections
  and states of ``window * chunks * B`` rows);
- iterative solvers: plus one float64 residual per iteration that can run
  (:func:`~fpbench.solvers.iteration_cap`).

It is a rough estimate (framework temporaries and the imported frameworks themselves are
not counted), used to refuse solves that clearly cannot fit.
"""

from __future__ import annotations

import numpy as np

from .solvers import Solver, iteration_cap
from .spec import Problem, RNNSpec


class InsufficientMemoryError(MemoryError):
    """A solve whose estimated memory (:func:`estimate_memory`) exceeds what is available;
    raised before anything is allocated."""


def estimate_memory(problem: Problem | RNNSpec, solver: Solver, dtype: str | None = None) -> int:
    """Rough bytes a solve of ``problem`` (or of a spec) with ``solver`` needs (module docstring).

    Args:
        problem: the problem, or just its :class:`~fpbench.RNNSpec`.
        solver: the solver configuration.
        dtype: the dtype computed in; default the spec's (the NumPy reference computes
            in float64 whatever the spec says).
    """
    spec = problem.spec if isinstance(problem, Problem) else problem
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"problem must be an fpbench.Problem or RNNSpec, got {type(problem).__name__}")
    T, B, H, I, g, S = (
        spec.seq_len,
        spec.batch,
        spec.hidden_size,
        spec.input_size,
        spec.gates,
        spec.state_size,
    )
    N = T * B
    items = N * (I + g * H + 4 * S)
    if solver.transition == "full":
        items += (8 if solver.damping else 4) * N * S * S
    if solver.transition == "window":  # Chunked: the windows folded into a batch, and their outputs
        lay = solver.layout(T)
        items += lay.window * lay.chunks * B * (I + g * H + 2 * S)
    itemsize = np.dtype(dtype or spec.dtype).itemsize
    return items * itemsize + 8 * iteration_cap(solver, T)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable`` of
    ``/proc/meminfo``, Linux), or None where it cannot be read (then nothing is checked)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_memory(
    problem: Problem | RNNSpec, solver: Solver, dtype: str | None = None, where: str = ""
) -> None:
    """Refuse a solve whose :func:`estimate_memory` exceeds :func:`available_memory`.

    Args:
        where: the ``backend:device`` for the message.
    Raises:
        InsufficientMemoryError: with the estimate and the available memory.
    """
    have = available_memory()
    if have is None:
        return
    need = estimate_memory(problem, solver, dtype)
    if need > have:
        spec = problem.spec if isinstance(problem, Problem) else problem
        on = f" on {where}" if where else ""
        raise InsufficientMemoryError(
            f"{solver}{on} needs about {_gib(need)} (estimate, fpbench.estimate_memory) for "
            f"{spec.cell} T={spec.seq_len} B={spec.batch} H={spec.hidden_size} I={spec.input_size} "
            f"in {dtype or spec.dtype}, but only {_gib(have)} of memory is available; "
            f"use a shorter sequence, a smaller batch or hidden size, or another solver"
        )
