"""What every asv suite shares: targets, cached problems, prepared solves, the gate.

asv runs each benchmark x parameter combination in a fresh process and re-runs
``setup`` before every timing sample, so everything expensive (problem generation,
``Backend.prepare`` with its JIT warm-up, the correctness gate) is cached per process
here and computed once; the gate's float64 references, which every target and timed method
of a problem and solver share, once per sweep (:func:`.sweep_state.gate_reference`); what a
combination costs, and whether it is n/a for it, in :mod:`.costs`. Nothing imports a
framework at module level (asv imports every benchmark module to discover the suites):
``fpbench.registry.resolve`` imports one when a setup asks for it, except in asv's fork
server (:func:`_preload_in_fork_server`).

Outcomes, as the report reads them (``asv_contract``):

- ``NotImplementedError`` in ``setup``: n/a (missing framework or device, a solver the
  backend does not implement, a problem too large for the device, a pointless combination).
- ``AssertionError`` in ``setup``: failure. The gate failed, so no number is recorded
  for a wrong answer.

``peakmem_`` is the process's peak RSS during the solve: the gate's float64 reference
is freed and the peak mark reset (:func:`reset_peak_memory`) before it runs, so it
counts the interpreter, the imported frameworks, the problem and the solve.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import importlib.util
import os
import shutil
import sys
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

import fpbench
from fpbench.registry import parse_target, resolve, selected_targets
from fpbench.solvers import SOLVERS
from fpbench.testing import check_close, errors

from . import grids
from .costs import NUMPY_TARGET_SECONDS, check_fits, numpy_seconds
from .sweep_state import gate_reference, tick

TARGETS: tuple[str, ...] = tuple(selected_targets())
"""Every ``backend:device`` (restricted by ``FPBENCH_BACKENDS``); absent ones are n/a."""

GRID = grids.current()

GATE_REFERENCE_SECONDS = 2.0
"""The gate runs the NumPy reference of the same fixed-budget solver only when
:func:`numpy_seconds` expects it to take at most this; otherwise it checks the states
that a budget of k makes exact."""

GATE_PREFIX = "fpbench gate passed:"
"""The gate's stderr line (``fpbench.report.store.GATE_PREFIX``, spelled out here because
``asv run A..B`` runs these suites against older installed ``fpbench`` versions)."""


PRELOAD_ENV = "FPBENCH_PRELOAD"
"""Comma-separated backend names: what asv's fork server imports (:func:`_preload_in_fork_server`).
``fpbench sweep`` sets it to the one backend each of its ``asv run`` measures; unset, the
server imports every selected target's framework."""


def _preload_in_fork_server() -> None:
    """Import the frameworks once in asv's fork server, and only there.

    With ``launch_method: forkserver`` asv imports the suites in one server process and
    forks a process per benchmark x parameter combination; importing torch / JAX / Numba
    there spares each of those processes the import (seconds for torch). Import only, for
    torch and JAX: no device, thread pool or JAX backend is initialised before a fork
    (torch's ``_dynamo`` is imported too: ``torch.optim`` imports it on first use, seconds per
    training process; it adds to every torch process's peak memory). Numba's kernels are
    also compiled here (:func:`_warm_numba`), where its threading layer survives a fork.
    The backends of :data:`PRELOAD_ENV` only, when it is set. Discovery and ``spawn``
    processes (``sys.argv[1] != "run_server"``) import no framework.
    """
    if sys.argv[1:2] != ["run_server"]:
        return
    names = dict.fromkeys(parse_target(t)[0] for t in TARGETS)
    only = os.environ.get(PRELOAD_ENV)
    if only is not None:
        names = {n: None for n in names if n in only.split(",")}
    for name in names:
        if name != "numpy" and importlib.util.find_spec(name) is not None:
            try:
                importlib.import_module(name)
                fpbench.get_backend(name)
                if name == "torch":
                    # torch.optim's optimizers import torch._dynamo when the first one is
                    # built: seconds of every training combination (torch.optim.Adam), spared.
                    importlib.import_module("torch._dynamo")
                if name == "numba":
                    _warm_numba()
            except Exception:  # the benchmark's own setup reports why it is unavailable
                pass


FORK_SAFE_NUMBA_LAYERS = ("workqueue", "tbb")
"""Numba threading layers whose threads a forked process can use (GNU OpenMP's ``omp``
aborts a forked child that runs a parallel region once the parent started its threads)."""


def _warm_numba() -> None:
    """Compile, or load from Numba's on-disk cache, every kernel the grid's suites run on the
    Numba target, here in the fork server, so that no forked process loads them again (each
    would otherwise load a dozen kernels, a large share of a small combination's time).

    Tiny solves and gradients of every cell x solver (x backward mode) of the grid, in its
    dtype: a kernel's compiled signature depends on dtypes and array layouts, not on sizes.
    Only where the threading layer survives a fork (:data:`FORK_SAFE_NUMBA_LAYERS`, chosen by
    ``NUMBA_THREADING_LAYER``): on Numba's default choice nothing is run here.
    """
    import numba  # (imported by the preload)

    if numba.config.THREADING_LAYER not in FORK_SAFE_NUMBA_LAYERS:
        return  # (decided before any kernel starts the layer's threads in this process)
    grad_grid = grids.current_grad()
    cells = {
        *GRID.cells, *GRID.product_cells, *GRID.accuracy_cells, *(GRID.budget_cells or ()),
        *grad_grid.cells, *grad_grid.accuracy_cells, grids.TRAIN_CELL, *GRID.diag_cells,
    }  # fmt: skip
    names = {*GRID.solvers, *GRID.accuracy_solvers, *(GRID.budget_solvers or ()), *GRID.diag_solvers}
    for cell in sorted(cells & set(fpbench.CELLS)):
        for batch in (1, 2):
            problem = fpbench.make_problem(spec(cell, 256, 2, batch=batch, input_size=2))
            cotangent = fpbench.default_cotangent(problem.spec)
            for name in sorted(names):
                try:
                    solv = solver(name, grids.TOL, 256)
                    fpbench.solve(problem, solv, backend="numba")
                    backwards = ["implicit"]
                    if solv.iterative and grids.solver_fields(name)[0] in grad_grid.unrolled:
                        backwards.append("unrolled")
                    for backward in backwards:
                        if solv.iterative:
                            solv = dataclasses.replace(solv, backward=backward)
                        fpbench.grad(problem, solv, backend="numba", cotangent=cotangent)
                except Exception:  # n/a here: the benchmark's setup says why
                    continue


class Timed:
    """asv timing attributes shared by the time and peakmem suites.

    ``prepare`` has already compiled and warmed the solve, so no warm-up time; one round
    because a round re-runs the whole setup in a fresh process; at most 5 samples or 2 s
    of them, because a sweep runs thousands of combinations.
    """

    rounds = 1
    repeat = (1, 5, 2.0)
    min_run_count = 1
    warmup_time = 0.0
    timeout = 300.0


def _of_spec(prob: fpbench.Problem) -> bool:
    """Whether ``prob`` is its spec's problem as :func:`problem` made it (what a spec-keyed
    reference may stand for); any other problem's reference is computed, not shared."""
    return _problems.get(prob.spec) is prob


def exact_states(prob: fpbench.Problem) -> np.ndarray:
    """The exact float64 states ``(T, B, S)`` of ``prob``: the NumPy reference's recurrence
    (:func:`fpbench.reference.sequential`, O(T), independent of every backend), once per
    spec (:func:`gate_reference`) for the problem :func:`problem` makes."""
    if not _of_spec(prob):
        return fpbench.reference.sequential(prob)
    return gate_reference("exact", (prob.spec,), lambda: {"states": fpbench.reference.sequential(prob)})[
        "states"
    ]


def solver_reference(prob: fpbench.Problem, solv: fpbench.Solver) -> np.ndarray:
    """The float64 states ``(T, B, S)`` of the NumPy reference running ``solv`` (the same
    iterations under the same budget, :func:`fpbench.reference.fixed_point`), once per spec
    and solver (:func:`gate_reference`; the backward mode does not change a forward solve)
    for the problem :func:`problem` makes."""
    if not _of_spec(prob):
        return fpbench.reference.fixed_point(prob, solv)[0]
    if isinstance(solv, fpbench.Iterative):
        solv = dataclasses.replace(solv, backward="implicit")
    return gate_reference(
        "fixed_point", (prob.spec, solv), lambda: {"states": fpbench.reference.fixed_point(prob, solv)[0]}
    )["states"]


def skip(reason: str) -> None:
    """Mark the running benchmark n/a from inside a benchmark method (not ``setup``)."""
    try:
        from asv_runner.benchmarks.mark import SkipNotImplemented
    except ImportError:  # outside asv
        raise NotImplementedError(reason) from None
    raise SkipNotImplemented(reason)


def _gpu_driver_present() -> bool:
    # Learning that torch:cuda is absent by importing torch costs seconds in every
    # process; without a GPU driver there is no GPU device for any framework.
    return (
        os.path.exists("/proc/driver/nvidia/version")
        or shutil.which("nvidia-smi") is not None
        or os.path.exists("/dev/kfd")
    )


def backend(target: str) -> tuple[fpbench.Backend, str]:
    """The backend and device of ``target``.

    Raises:
        NotImplementedError: the framework or the device is absent here (n/a).
    """
    _, device = parse_target(target)
    if device != "cpu" and not _gpu_driver_present():
        raise NotImplementedError(f"{target}: no GPU driver on this machine")
    try:
        return resolve(target)
    except fpbench.BackendUnavailableError as e:
        raise NotImplementedError(str(e)) from e


def spec(
    cell: str,
    seq_len: int,
    hidden_size: int,
    contraction: float = grids.CONTRACTION,
    batch: int = grids.BATCH,
    input_size: int = grids.INPUT_SIZE,
) -> fpbench.RNNSpec:
    """The benchmark problem spec: the grid's fixed dtype and seed; B and I fixed unless a
    suite sweeps them."""
    return fpbench.RNNSpec(
        cell=cell,
        input_size=input_size,
        hidden_size=hidden_size,
        seq_len=seq_len,
        batch=batch,
        dtype=grids.DTYPE,
        contraction=contraction,
        seed=grids.SEED,
    )


def solver(name: str, budget: grids.Budget, seq_len: int, dtype: str = grids.DTYPE) -> fpbench.Solver:
    """The solver ``name`` under ``budget`` (:data:`grids.TOL`: to tolerance, budget T).

    Raises:
        NotImplementedError: a budget above T (it equals budget T, which the grid has), or a
            budget for a configuration that fixes its own (:data:`grids.CHUNKED`).
    """
    base, fields = grids.solver_fields(name)
    if not SOLVERS[base].iterative:
        return fpbench.make_solver(base)
    if "max_iters" in fields:  # a configuration with its own budget: under "tol" only
        if budget != grids.TOL:
            raise NotImplementedError(f"{name} runs its own budget: see max_iters={grids.TOL!r}")
        return fpbench.make_solver(base, **fields)
    if budget == grids.TOL:
        return fpbench.make_solver(base, max_iters=seq_len, tol=grids.TOLERANCE[dtype], **fields)
    if budget > seq_len:
        raise NotImplementedError(f"max_iters={budget} > T={seq_len} is the same solve as max_iters=T")
    return fpbench.make_solver(base, max_iters=budget, **fields)


_problems: dict[fpbench.RNNSpec, fpbench.Problem] = {}
_prepared: dict[tuple[str, fpbench.RNNSpec, fpbench.Solver], fpbench.Prepared] = {}
_verdicts: dict[tuple[str, fpbench.RNNSpec, fpbench.Solver], str] = {}


def problem(spec: fpbench.RNNSpec) -> fpbench.Problem:
    """The problem of ``spec``, generated once per process."""
    if spec not in _problems:
        _problems[spec] = fpbench.make_problem(spec)
    return _problems[spec]


def prepare(target: str, spec: fpbench.RNNSpec, solver: fpbench.Solver) -> fpbench.Prepared:
    """``Backend.prepare`` once per process: data on the device, JIT compiled and warmed.

    Raises:
        NotImplementedError: absent target, unsupported solver, or too large (n/a).
    """
    key = (target, spec, solver)
    if key not in _prepared:
        impl, device = backend(target)
        check_fits(target, spec, solver)
        if impl.name == "numpy" and (est := numpy_seconds(spec, solver)) > NUMPY_TARGET_SECONDS:
            raise NotImplementedError(
                f"{target} is the float64 oracle, not a contender: {solver} on T={spec.seq_len}, "
                f"H={spec.hidden_size} would take ~{est:.0f} s (limit {NUMPY_TARGET_SECONDS:g} s)"
            )
        _prepared[key] = impl.prepare(problem(spec), solver, device)
    return _prepared[key]


def check_iterations(label: str, solver: fpbench.Solver, residuals: np.ndarray, seq_len: int) -> None:
    """A fixed budget runs exactly ``max_iters`` iterations (at most T:
    :func:`fpbench.iteration_cap`); a ``tol`` run converges (its last residual is <= tol,
    or it used the budget T, which is exact).

    Raises:
        AssertionError: otherwise.
    """
    n, k = residuals.size, fpbench.iteration_cap(solver, seq_len)
    if solver.tol is None and n != k:
        raise AssertionError(f"{label}: ran {n} iterations with a fixed budget of {k}")
    needed = solver.exact_after(seq_len)
    exact = needed is not None and n >= needed
    if solver.tol is not None and not (exact or (n > 0 and residuals[-1] <= solver.tol)):
        raise AssertionError(f"{label}: did not converge to {solver.tol:g} in {n} iterations")


def assert_close(label: str, actual: np.ndarray, expected: np.ndarray, dtype: str) -> None:
    """:func:`fpbench.testing.check_close`, the one closeness check, as the gate.

    Raises:
        AssertionError: with both error measures.
    """
    ok, msg = check_close(label, actual, expected, dtype)
    if not ok:
        raise AssertionError(f"correctness gate failed, no number is recorded: {msg}")


def verify(label: str, prob: fpbench.Problem, solv: fpbench.Solver, states: Any, residuals: Any) -> str:
    """The correctness gate of one solve; returns what it compared.

    Every solve must be finite and match, by :func:`fpbench.testing.check_close`:

    - exact solvers, ``"tol"`` runs and (undamped) budgets >= T: the exact float64 states;
    - a budget k < T: the states t <= k (which k iterations of an undamped solver make
      exact) against the exact states, and all states against the NumPy reference run of
      the same solver when that is cheap (:data:`GATE_REFERENCE_SECONDS`).

    Both references are float64 NumPy runs computed once per problem and solver, whatever
    the target and the timed method (:func:`exact_states`, :func:`solver_reference`).

    States are the full state ``(T, B, S)`` (``[h, c]`` for ``lstm``).

    Iteration counts must follow :func:`check_iterations`.

    Raises:
        AssertionError: the gate failed.
        NotImplementedError: a damped solve with a budget k < T whose reference run is too
            slow to check (nothing else vouches for it, so it is n/a).
    """
    s = prob.spec
    states = np.asarray(states)
    residuals = np.asarray(residuals, dtype=np.float64).ravel()
    expected_shape = (s.seq_len, s.batch, s.state_size)
    if states.shape != expected_shape:
        raise AssertionError(f"{label}: states have shape {states.shape}, expected {expected_shape}")
    exact = exact_states(prob)
    checks = []
    if not solv.iterative:
        checks.append(("vs exact", states, exact))
    else:
        check_iterations(label, solv, residuals, s.seq_len)
        k = solv.max_iters
        n = solv.exact_steps(k, s.seq_len)
        if solv.tol is not None or n == s.seq_len:
            checks.append(("vs exact", states, exact))
        else:
            if n:
                checks.append((f"states t<={n} vs exact", states[:n], exact[:n]))
            if not label.startswith("numpy:") and numpy_seconds(s, solv) <= GATE_REFERENCE_SECONDS:
                ref = solver_reference(prob, solv)
                checks.append(("vs NumPy reference of the same solver", states, ref))
            elif not checks:
                raise NotImplementedError(f"{label}: no affordable correctness gate for a damped budget")
    for what, actual, expected in checks:
        assert_close(f"{label} {what}", actual, expected, s.dtype)
    err = errors(states, exact)
    # One line on stderr, which `fpbench sweep` (asv --show-stderr) keeps in its log: the report
    # shows this error beside the timing it vouches for.
    print(
        f"{GATE_PREFIX} max_abs={err['max_abs']:.3e} rel_rms={err['rel_rms']:.3e} "
        f"({'; '.join(what for what, _, _ in checks)})",
        file=sys.stderr,
        flush=True,
    )
    return "; ".join(what for what, _, _ in checks)


def gate(target: str, spec: fpbench.RNNSpec, solver: fpbench.Solver, out: Any = None) -> None:
    """Run the prepared solve (unless its output ``out`` is given) and :func:`verify` it,
    once per process.

    Raises:
        AssertionError: the gate failed.
    """
    key = (target, spec, solver)
    if key in _verdicts:
        return
    prepared = prepare(target, spec, solver)
    if out is None:
        out = prepared.run()
    states, residuals = prepared.to_host(out)
    _verdicts[key] = verify(f"{target} {solver}", problem(spec), solver, states, residuals)
    del out, states, residuals
    gc.collect()


def reset_peak_memory() -> None:
    """Reset the process's peak-RSS mark (Linux), so that a ``peakmem_`` benchmark
    measures the solve, not the setup before it (the gate's float64 reference).

    Where the kernel does not allow it, the mark keeps the setup's peak.
    """
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class SolveTime(Timed, ABC):
    """Base of the solve suites: ``time_solve`` of one gated combination.

    Subclasses set ``params`` / ``param_names`` and implement :meth:`case`, mapping their
    parameters to ``(target, spec, solver)``. (Abstract, so asv does not collect it.)
    """

    @abstractmethod
    def case(self, *params: Any) -> tuple[str, fpbench.RNNSpec, fpbench.Solver]:
        """The combination ``params`` name; raises ``NotImplementedError`` for a pointless one."""

    def setup(self, *params: Any) -> None:
        tick()
        self.target, self.spec, self.solver = self.case(*params)
        self.prepared = prepare(self.target, self.spec, self.solver)
        gate(self.target, self.spec, self.solver)
        reset_peak_memory()

    def time_solve(self, *params: Any) -> None:
        self.prepared.run()


class Solve(SolveTime):
    """:class:`SolveTime` plus ``peakmem_solve`` (process peak RSS during the solve)."""

    def peakmem_solve(self, *params: Any) -> None:
        self.prepared.run()


_preload_in_fork_server()
