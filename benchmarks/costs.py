"""What a combination costs before it runs: the NumPy reference's estimated wall time
(:func:`numpy_seconds`, from a short timed probe on this machine) and whether the solve and
its gate's float64 reference fit in memory (:func:`check_fits`). A combination over either
limit is n/a (``NotImplementedError`` in setup).

A helper of the suites: no benchmark class or function here (asv imports every module of
``benchmarks/`` to discover the suites).
"""

from __future__ import annotations

import dataclasses
import os
import time

import fpbench
from fpbench.registry import parse_target

NUMPY_TARGET_SECONDS = 10.0
"""The ``numpy:cpu`` target is the float64 oracle (Python loops over T), not a contender:
a combination :func:`numpy_seconds` expects to take longer is n/a."""


MEMORY_FRACTION = 0.7
"""Largest share of the device's (and the host's) memory a combination may plan to use."""


PROBE_STEPS = 8
"""Time steps of the short timed run :func:`numpy_seconds` measures the reference on."""
PROBE_MAX_HIDDEN = 32
"""Above this hidden size the probe runs at this size and its time is scaled up by the
step's arithmetic (:func:`_step_work`), so an estimate never costs more than a few seconds."""
TOL_ITERATIONS = 32
"""The iterations a ``"tol"`` run is assumed to take."""


def _step_work(spec: fpbench.RNNSpec, solver: fpbench.Solver) -> float:
    """The arithmetic of one step of one iteration of the reference, up to a constant: what
    scales a probe at a smaller hidden size up to ``spec``'s."""
    B, H, I, g, S = spec.batch, spec.hidden_size, spec.input_size, spec.gates, spec.state_size
    work = B * g * H * (H + I)  # the cell's products: every solver evaluates the cell
    if solver.iterative and solver.transition == "full":
        work += B * g * S * S  # the Jacobian, and its products
        if solver.damping:
            work += B * S**3  # the smoother's S x S solves
    return float(work)


def _probe_seconds_per_step(spec: fpbench.RNNSpec, solver: fpbench.Solver) -> float:
    """Seconds of one step of one iteration of the NumPy reference running ``solver`` on
    ``spec``'s sizes, measured on a short run (:data:`PROBE_STEPS` steps, one iteration),
    scaled from :data:`PROBE_MAX_HIDDEN` above it (:func:`_step_work`); once per process for
    each probe (:func:`_timed_probe`)."""
    hidden = min(spec.hidden_size, PROBE_MAX_HIDDEN)
    probe = dataclasses.replace(spec, seq_len=PROBE_STEPS, hidden_size=hidden, dtype="float64", seed=0)
    probe = dataclasses.replace(probe, input_size=min(spec.input_size, probe.hidden_size))
    if not solver.iterative:  # a baseline's reference is the recurrence, step by step
        solver = fpbench.Sequential()
    else:
        fields = {"max_iters": 1, "tol": None}
        if solver.transition == "window":  # Chunked's iteration is the recurrence: Sequential's step
            solver, fields = fpbench.Sequential(), {}
        solver = dataclasses.replace(solver, **fields) if fields else solver
    seconds = _timed_probe(probe, solver) / PROBE_STEPS
    return seconds * _step_work(spec, solver) / _step_work(probe, solver)


_probes: dict[tuple[fpbench.RNNSpec, fpbench.Solver], float] = {}


def _timed_probe(spec: fpbench.RNNSpec, solver: fpbench.Solver) -> float:
    """The best of three timed runs of the reference (the first also warms up), cached."""
    key = (spec, dataclasses.replace(solver, backward="implicit") if solver.iterative else solver)
    if key not in _probes:
        problem = fpbench.make_problem(spec)
        run = fpbench.get_backend("numpy").prepare(problem, key[1], "cpu").run
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
        _probes[key] = best
    return _probes[key]


def numpy_seconds(spec: fpbench.RNNSpec, solver: fpbench.Solver) -> float:
    """Estimated wall time of the NumPy reference running ``solver`` on ``spec``: the
    seconds per step and iteration measured on a short run of the reference on this machine
    (:func:`_probe_seconds_per_step`), times the steps and iterations of the real run (a
    ``"tol"`` run: :data:`TOL_ITERATIONS`; Chunked: the steps of its windows)."""
    T = spec.seq_len
    per_step = _probe_seconds_per_step(spec, solver)
    if not solver.iterative:
        return T * per_step
    if solver.transition == "window":  # Chunked: the recurrence over its windows, each iteration
        lay = solver.layout(T)
        return fpbench.iteration_cap(solver, T) * (T + lay.chunks * lay.overlap) * per_step
    iters = min(T, TOL_ITERATIONS) if solver.tol is not None else fpbench.iteration_cap(solver, T)
    return iters * T * per_step


def host_memory() -> int:
    """Physical memory of this machine in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_memory(target: str) -> int | None:
    """Total memory of the target's device in bytes (None where it cannot be asked)."""
    name, device = parse_target(target)
    if device == "cpu":
        return host_memory()
    try:
        if name == "torch":
            import torch

            return int(torch.cuda.mem_get_info()[1])
        if name == "jax":
            import jax

            stats = jax.devices("gpu")[0].memory_stats() or {}
            return stats.get("bytes_limit")
    except Exception:  # a framework that cannot say: no memory guard
        return None
    return None


def check_fits(target: str, spec: fpbench.RNNSpec, solver: fpbench.Solver) -> None:
    """n/a when the solve, or the float64 reference the gate needs, cannot fit.

    Raises:
        NotImplementedError: with the estimate and the memory available.
    """
    name, device = parse_target(target)
    # the library's one estimate (fpbench.memory); the NumPy reference computes in float64
    need = fpbench.estimate_memory(spec, solver, "float64" if name == "numpy" else None)
    host_need = 3 * spec.seq_len * spec.batch * (spec.input_size + spec.gates * spec.hidden_size) * 8
    if device == "cpu":
        host_need += need
    else:
        have = device_memory(target)
        if have is not None and need > MEMORY_FRACTION * have:
            raise NotImplementedError(
                f"{target} {solver} on {spec}: needs ~{need / 2**30:.1f} GiB, "
                f"the device has {have / 2**30:.1f} GiB"
            )
    host = host_memory()
    if host_need > MEMORY_FRACTION * host:
        raise NotImplementedError(
            f"{target} {solver} on {spec}: needs ~{host_need / 2**30:.1f} GiB of host memory, "
            f"the machine has {host / 2**30:.1f} GiB"
        )
