"""How much memory a solve needs, and the check that refuses one that cannot fit.

:func:`estimate_memory` is a rough model of a solve's working set, the same for every
backend (benchmarks use it too, to mark too-large combinations n/a). With ``N = T*B``
time-batch rows, ``g`` gate blocks, ``S`` the state size (``H``; ``2H`` for ``lstm``) and
``itemsize`` the bytes of the dtype computed in:

- every solver: the inputs ``x (N, I)``, the input projection and the hidden one with
  the gates' temporaries (``4 gH``), and six state-sized ``(N, S)`` buffers (iterates,
  shifted states, differences, gate outputs): ``N * (I + 4*g*H + 6*S)`` items;
- a diagonal transition (quasi-Newton, quasi-ELK): plus the diagonal, the offsets and
  the elementwise scan's (or filter's) work, ``12 * N * S`` items;
- a full transition (Newton, ELK): plus its ``(T, B, S, S)`` Jacobians, several of which
  are alive at once in the parallel scan: ``4 * N * S * S`` items (``8 * N * S * S`` with
  damping: the Kalman smoother's covariances too). This term dominates: T = 4096, B = 8,
  H = 256 in float32 is 32 GiB. A diagonal cell's Jacobian is its per-unit ``P x P``
  blocks, ``S * P`` items a row instead of ``S * S`` (:func:`jacobian_items`);
- Chunked: plus its first iteration's windows folded into a batch (inputs, projections
  and states of ``window * chunks * B`` rows);
- iterative solvers: plus one float64 residual per iteration that can run
  (:func:`~fpbench.solvers.iteration_cap`).

It is a rough estimate (the imported frameworks themselves and JAX's compilation are not
counted), used to refuse solves that cannot fit; the tests check that it bounds the peak
measured at small sizes.

Gradients (:func:`estimate_grad_memory`, what :func:`fpbench.grad` checks):

- twice the forward's estimate (the forward, then a backward whose working set mirrors
  it: the adjoint is a linear recurrence with the forward's transition, solved while the
  forward's buffers are alive), plus the cotangent, the adjoint, ``dL/dx`` and the
  preactivations' gradients: ``N * (2*S + I + 2*g*H)`` items;
- plus what the backward keeps of the forward, as each backend says it
  (:meth:`fpbench.Backend.backward_kept`: passes times items per row; Chunked's rows are
  those of its first iteration's windows, ``window * chunks * B``). ``backward="unrolled"``
  keeps every iteration that can run (:func:`~fpbench.solvers.iteration_cap`): the NumPy
  reference and Numba keep the iterate, ``S`` items a row, and recompute the rest; torch's
  autodiff keeps what each iteration computed, :func:`unrolled_items` (the cell's saved
  inputs, gates and outputs; for the linearising solvers the Jacobians or their diagonals
  and every level of the parallel scan, ELK's Kalman elements and eliminations too); JAX
  checkpoints, keeping about ``2 sqrt(cap)`` iterations above 64, with 8 times torch's
  record for the linearising solvers (XLA keeps every level of its scans). Those
  coefficients are the resident memory measured per row and iteration with glibc's
  allocator (more than the live bytes for tensors below its mmap threshold), rounded
  up. Autodiff through a sequential solve keeps one pass of the cell over every step,
  and torch's Python loop also :data:`AUTOGRAD_STEP_BYTES` a step. An implicit backward
  keeps the transposed Jacobians of its reverse scan for a full transition (``4 S^2``
  items a row on torch; more on JAX, whose XLA programs also keep two passes of the
  cell's work for the adjoint iterations).

Training (:func:`fpbench.train.estimate_train_memory`) adds the task's data, a step and
the final evaluation, and is checked before the task is built.

The limit is :func:`available_memory` (``MemAvailable``); a refusal
(:class:`InsufficientMemoryError`, :func:`refuse_over_limit`) names the estimate, the limit
and how to raise it.
"""

from __future__ import annotations

import numpy as np

from .solvers import Jacobi, Solver, iteration_cap
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
    Raises:
        TypeError: ``problem`` is not a Problem or RNNSpec, or ``solver`` is not a solver
            configuration (a name such as ``"newton"``: use :func:`fpbench.make_solver`).
    """
    spec = problem.spec if isinstance(problem, Problem) else problem
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"problem must be an fpbench.Problem or RNNSpec, got {type(problem).__name__}")
    if not isinstance(solver, Solver) or type(solver) is Solver:
        raise TypeError(f"solver must be an fpbench solver such as fpbench.Jacobi(...), got {solver!r}")
    T, B, H, I, g, S = (
        spec.seq_len,
        spec.batch,
        spec.hidden_size,
        spec.input_size,
        spec.gates,
        spec.state_size,
    )
    N = T * B
    items = N * (I + 4 * g * H + 6 * S)
    if solver.transition == "full":
        items += (8 if solver.damping else 4) * N * jacobian_items(spec)
    if solver.transition == "diagonal":
        items += 12 * N * S
    if solver.transition == "window":  # Chunked: the windows folded into a batch, and their outputs
        lay = solver.layout(T)
        items += lay.window * lay.chunks * B * (I + g * H + 2 * S)
    itemsize = np.dtype(dtype or spec.dtype).itemsize
    return items * itemsize + 8 * iteration_cap(solver, T)


def jacobian_items(spec: RNNSpec) -> int:
    """Items per row of one step's full Jacobian as the solvers hold it: ``S^2`` for a dense
    cell, ``S * P`` for a diagonal one (its per-unit ``P x P`` blocks,
    :meth:`fpbench.Cell.unit_jacobian`)."""
    S = spec.state_size
    return S * (spec.model.parts if spec.model.recurrence == "diagonal" else S)


def unrolled_items(spec: RNNSpec, solver: Solver) -> int:
    """Items per row and kept iteration that autodiff records for an unrolled backward
    (module docstring, "Gradients"): ``8 S + 8 gH`` (Jacobi, Chunked, and one pass of a
    sequential BPTT), ``32 S + 12 gH`` (quasi-Newton), ``64 S + 16 gH`` (quasi-ELK),
    ``8 S^2 + 32 S + 8 gH`` (Newton), ``64 S^2 + 32 S + 8 gH`` (ELK), with ``S * P`` for
    ``S^2`` for a diagonal cell (:func:`jacobian_items`)."""
    S, gH = spec.state_size, spec.gates * spec.hidden_size
    damped = solver.damping > 0
    if solver.transition == "full":
        return (64 if damped else 8) * jacobian_items(spec) + 32 * S + 8 * gH
    if solver.transition == "diagonal":
        return 64 * S + 16 * gH if damped else 32 * S + 12 * gH
    return 8 * S + 8 * gH


AUTOGRAD_STEP_BYTES = 64 * 1024
"""What autograd keeps per time step of a sequential loop beyond the data it saves (torch's
BPTT: the graph's nodes and the allocator's overhead on many small tensors)."""


def autodiff_kept(spec: RNNSpec, solver: Solver) -> tuple[int, int]:
    """What autodiff that records every operation (torch) keeps for the backward, as
    :meth:`fpbench.Backend.backward_kept` (its default) says it: ``(passes, items per row)``.
    An unrolled backward keeps every iteration that can run, :func:`unrolled_items` each;
    a sequential solver one pass of the cell over every step, plus
    :data:`AUTOGRAD_STEP_BYTES` a step for a Python loop (``"sequential"``; counted in
    float32 items); an implicit backward the reverse scan's transposed Jacobians,
    ``4 S^2`` items a row, for a full transition, and nothing else."""
    if not solver.iterative:
        per_row = unrolled_items(spec, Jacobi(1))
        if solver.kind == "sequential":
            per_row += -(-AUTOGRAD_STEP_BYTES // (4 * spec.batch))
        return 1, per_row
    if solver.backward != "unrolled":
        return (1, 4 * jacobian_items(spec)) if solver.transition == "full" else (0, 0)
    return iteration_cap(solver, spec.seq_len), unrolled_items(spec, solver)


def estimate_grad_memory(
    problem: Problem | RNNSpec, solver: Solver, dtype: str | None = None, backend: str | None = None
) -> int:
    """Bytes :func:`fpbench.grad` of ``problem`` (or of a spec) with ``solver`` needs on
    ``backend`` (module docstring, "Gradients"): the forward, the backward's working set
    and, for ``backward="unrolled"``, what it keeps of every iteration.

    Args:
        problem: the problem, or just its :class:`~fpbench.RNNSpec`.
        solver: the solver configuration (its ``backward`` mode counts).
        dtype: the dtype computed in; default the backend's (the spec's; float64 for the
            NumPy reference).
        backend: a backend name (``"torch"``; a ``"backend:device"`` target is accepted),
            whose :meth:`~fpbench.Backend.backward_kept` says what its backward keeps of the
            forward; None: the default, autodiff recording every operation as torch does.
    Raises:
        TypeError: as :func:`estimate_memory`.
        BackendUnavailableError: ``backend`` is unknown or cannot be imported.
    """
    from .registry import get_backend, parse_target  # (the registry imports this module)

    spec = problem.spec if isinstance(problem, Problem) else problem
    kept_by = autodiff_kept
    if backend is not None:
        impl = get_backend(parse_target(backend)[0])
        kept_by, dtype = impl.backward_kept, dtype or impl.compute_dtype
    forward = estimate_memory(problem, solver, dtype)  # (validates problem and solver)
    T, B, I, S = spec.seq_len, spec.batch, spec.input_size, spec.state_size
    gH = spec.gates * spec.hidden_size
    N = T * B
    items = N * (2 * S + I + 2 * gH)  # the cotangent, the adjoint, dL/dx and the preactivations'
    rows = N
    if solver.transition == "window":  # every iteration runs at most its first's windows
        lay = solver.layout(T)
        rows = max(N, lay.window * lay.chunks * B)
    passes, per_row = kept_by(spec, solver)
    items += passes * rows * per_row
    return 2 * forward + items * np.dtype(dtype or spec.dtype).itemsize


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
    problem: Problem | RNNSpec,
    solver: Solver,
    dtype: str | None = None,
    where: str = "",
    grad: bool = False,
    backend: str | None = None,
) -> None:
    """Refuse a solve whose :func:`estimate_memory` (``grad``: a gradient whose
    :func:`estimate_grad_memory`) exceeds :func:`available_memory`.

    Args:
        where: the ``backend:device`` for the message.
        grad: check the gradient (forward and backward) instead of the solve.
        backend: with ``grad``, the backend name (None: autodiff recording every operation, as torch).
    Raises:
        InsufficientMemoryError: with the estimate, the available memory and how to raise it.
    """
    if available_memory() is None:
        return
    on = f" on {where}" if where else ""
    spec = problem.spec if isinstance(problem, Problem) else problem
    if grad:
        need = estimate_grad_memory(problem, solver, dtype, backend)
        refuse_over_limit(need, f"the gradient of {solver}{on}", "fpbench.estimate_grad_memory", spec, dtype)
    else:
        need = estimate_memory(problem, solver, dtype)
        refuse_over_limit(need, f"{solver}{on}", "fpbench.estimate_memory", spec, dtype)


def refuse_over_limit(need: int, what: str, estimate: str, spec: RNNSpec, dtype: str | None = None) -> None:
    """Raise :class:`InsufficientMemoryError` when ``need`` bytes exceed
    :func:`available_memory` (the limit; unknown: nothing is refused).

    Args:
        need: the estimated bytes.
        what: what needs them, e.g. ``"newton(max_iters=4) on numpy:cpu"``.
        estimate: the function that estimated them, named in the message.
        spec, dtype: the sizes and dtype named in the message.
    """
    have = available_memory()
    if have is None or need <= have:
        return
    raise InsufficientMemoryError(
        f"{what} needs about {_gib(need)} (estimate, {estimate}) for "
        f"{spec.cell} T={spec.seq_len} B={spec.batch} H={spec.hidden_size} I={spec.input_size} "
        f"in {dtype or spec.dtype}, but only {_gib(have)} of memory is available (the limit: "
        f"MemAvailable of /proc/meminfo; free memory to raise it); use a shorter sequence, a "
        f"smaller batch or hidden size, fewer iterations, or another solver"
    )
