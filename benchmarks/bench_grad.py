"""Gradients (``fpbench.grad``): forward + backward time and peak memory over T, H and the
iteration budget, and gradient error over the budget k and contraction rho.

The suites sweep target x cell x solver x backward mode (``grids.BACKWARDS``); the
sequential baselines (``sequential`` = BPTT, ``native`` = the framework's autograd through
``torch.nn`` / ``lax.scan``) have one exact backward and appear under
``backward="implicit"`` (n/a under ``"unrolled"``). The timed call is the prepared,
synchronised forward + backward pass (:meth:`fpbench.Backend.prepare_grad`), and only after
it passed the correctness gate (:func:`verify_grad`). A backend without a backward pass for
a combination is n/a (its ``UnsupportedError``).
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
from typing import Any

import numpy as np

import fpbench
from fpbench.grad import GradHost, full_cotangent, make_grad_result
from fpbench.registry import parse_target
from fpbench.solvers import SOLVERS
from fpbench.testing import check_grad_close, grad_errors

from . import common, costs, grids, sweep_state
from .common import TARGETS

GG = grids.current_grad()
GRAD_TARGETS: tuple[str, ...] = TARGETS if GG.targets is None else GG.targets
"""The targets of these suites: the grid's ``targets`` (``quick``: the NumPy oracle only, a
smoke test that keeps the CI sweep short), else every target ``FPBENCH_BACKENDS`` selects."""

NUMPY_BACKWARD_FACTOR = 3.0
"""The NumPy reference's forward + backward takes about this many times its forward
(:func:`costs.numpy_seconds`): the adjoint loop, or the adjoint iterations, plus the
batched products."""


def grad_solver(name: str, backward: str, budget: grids.Budget, seq_len: int) -> fpbench.Solver:
    """The solver ``name`` under ``budget`` with backward mode ``backward``.

    Raises:
        NotImplementedError: a baseline under ``"unrolled"``, or a budget above T.
    """
    if not SOLVERS[grids.solver_fields(name)[0]].iterative:
        if backward != "implicit":
            raise NotImplementedError(f"{name} has one exact backward: see backward='implicit'")
        return common.solver(name, budget, seq_len)
    return dataclasses.replace(common.solver(name, budget, seq_len), backward=backward)


def numpy_grad_seconds(spec: fpbench.RNNSpec, solver: fpbench.Solver) -> float:
    """Rough wall time of the NumPy reference's forward + backward."""
    return NUMPY_BACKWARD_FACTOR * costs.numpy_seconds(spec, solver)


def iterations_kept(target: str, spec: fpbench.RNNSpec, solver: fpbench.Solver) -> int:
    """How many iterations' intermediates an unrolled backward of ``solver`` keeps at once.

    JAX's is a scan of checkpointed chunks (``backends.jax.grad.unrolled_chunks``): the chunks'
    input states plus one chunk, whatever ran. torch's autograd graph and Numba's recorded
    sweeps hold the iterations that ran: the cap for a fixed budget, and to tolerance the
    iterations a forward solve of the same solver takes (run here, on the target).
    """
    cap = fpbench.iteration_cap(solver, spec.seq_len)
    name, _ = parse_target(target)
    if name == "jax":
        try:
            chunks = importlib.import_module("backends.jax.grad").unrolled_chunks
        except ImportError:  # an fpbench from before backends/jax/ (asv runs older commits)
            chunks = getattr(importlib.import_module("backends.jax"), "unrolled_chunks", None)
        return cap if chunks is None else sum(chunks(cap))  # an older fpbench kept every iteration
    if solver.tol is None:
        return cap
    prepared = common.prepare(target, spec, solver)
    _, residuals = prepared.to_host(prepared.run())
    return min(cap, np.asarray(residuals).size)


def check_unrolled(solver: fpbench.Solver) -> None:
    """n/a for an unrolled backward the grid does not run (``GradGrid.unrolled``).

    Raises:
        NotImplementedError: naming the solvers the grid unrolls.
    """
    if getattr(solver, "backward", None) == "unrolled" and solver.name not in GG.unrolled:
        ran = ", ".join(GG.unrolled)
        raise NotImplementedError(f"the {grids.grid_name()} grid runs only {ran} unrolled")


def check_fits_grad(target: str, spec: fpbench.RNNSpec, solver: fpbench.Solver) -> None:
    """n/a when the forward (:func:`costs.check_fits`) or an unrolled backward cannot fit:
    unrolled keeps, for each of :func:`iterations_kept`, the iterate and what the iteration
    computed (the cell's gates, the scan's levels, the Jacobians for Newton, the Kalman
    smoother's covariances and their eliminations for ELK), per (t, b) row about
    ``4 S + 2 gH`` items (Jacobi), ``16 S + 4 gH`` (quasi-Newton), ``32 S + 4 gH``
    (quasi-ELK), ``4 S^2 + 16 S + 4 gH`` (Newton) or ``8 S^3 + 16 S + 4 gH`` (ELK).
    Calibrated on XLA's memory plans for JAX (GRU, B = 8, H = 8): 232 items per row and
    iteration for quasi-Newton at T = 2048 (31.2 GB before its backward was checkpointed,
    where an earlier ``8 S`` estimate of 8.6 GB let it run out of memory on a 24 GiB
    machine); at T = 256, 68 (Jacobi), 147 (quasi-Newton), 268 (Newton), 311 (quasi-ELK) and
    3431 (ELK, whose eliminations kept ``S`` steps of ``S x 2S`` matrices). Since JAX's
    solve has its own VJP, ELK's is 1527 (S = 8) and 5669 (S = 16), about ``21 S^2``; the
    estimate keeps ``8 S^3``, an over-estimate, until torch's ELK backward is measured too.

    Raises:
        NotImplementedError: with the estimate and the memory available.
    """
    costs.check_fits(target, spec, solver)
    if not (solver.iterative and solver.backward == "unrolled"):
        return
    T, B, S, gH = spec.seq_len, spec.batch, spec.state_size, spec.gates * spec.hidden_size
    per_iter = {
        ("none", False): 4 * S + 2 * gH,
        ("diagonal", False): 16 * S + 4 * gH,
        ("diagonal", True): 32 * S + 4 * gH,
        ("full", False): 4 * S * S + 16 * S + 4 * gH,
        ("full", True): 8 * S**3 + 16 * S + 4 * gH,
        ("window", False): 4 * S + 2 * gH,
    }[solver.transition, solver.damping > 0]
    kept = iterations_kept(target, spec, solver)
    need = kept * T * B * per_iter * np.dtype(spec.dtype).itemsize
    _, device = parse_target(target)
    have = costs.host_memory() if device == "cpu" else costs.device_memory(target)
    if have is not None and need > costs.MEMORY_FRACTION * have:
        raise NotImplementedError(
            f"{target} {solver} on {spec}: the unrolled backward keeps {kept} iterations, "
            f"~{need / 2**30:.1f} GiB; the device has {have / 2**30:.1f} GiB"
        )


_prepared: dict[tuple[str, fpbench.RNNSpec, fpbench.Solver], fpbench.Prepared] = {}
_verdicts: dict[tuple[str, fpbench.RNNSpec, fpbench.Solver], str] = {}


def cotangent(spec: fpbench.RNNSpec) -> np.ndarray:
    """The full-state default cotangent the suites differentiate (``fpbench.default_cotangent``)."""
    return full_cotangent(common.problem(spec), None)


def prepare_grad(target: str, spec: fpbench.RNNSpec, solver: fpbench.Solver) -> fpbench.Prepared:
    """``Backend.prepare_grad`` once per process: data on the device, JIT compiled and warmed.

    Raises:
        NotImplementedError: absent target, no backward for the combination, too large,
            or too slow for the NumPy oracle (n/a).
    """
    key = (target, spec, solver)
    if key not in _prepared:
        impl, device = common.backend(target)
        check_fits_grad(target, spec, solver)
        if impl.name == "numpy" and (est := numpy_grad_seconds(spec, solver)) > costs.NUMPY_TARGET_SECONDS:
            raise NotImplementedError(
                f"{target} is the float64 oracle, not a contender: {solver} on T={spec.seq_len}, "
                f"H={spec.hidden_size} would take ~{est:.0f} s (limit {costs.NUMPY_TARGET_SECONDS:g} s)"
            )
        try:
            _prepared[key] = impl.prepare_grad(common.problem(spec), solver, device, cotangent(spec))
        except fpbench.UnsupportedError as e:
            raise NotImplementedError(str(e)) from e
    return _prepared[key]


def _arrays(host: GradHost, spec: fpbench.RNNSpec) -> dict[str, np.ndarray]:
    """A host gradient's arrays by name, as ``GradResult.arrays()`` names them (float64)."""
    H = spec.hidden_size
    s0 = np.asarray(host.s0, dtype=np.float64)
    out = {k: np.asarray(v, dtype=np.float64) for k, v in host.params.items()}
    out.update(x=np.asarray(host.x, dtype=np.float64), h0=s0[:, :H])
    if spec.model.has_cell_state:
        out["c0"] = s0[:, H:]
    return out


def exact_gradient(spec: fpbench.RNNSpec) -> dict[str, np.ndarray]:
    """The exact float64 gradient (BPTT of the reference) of the suites' loss, once per spec
    (:func:`sweep_state.gate_reference`)."""
    return reference_gradient(spec, fpbench.Sequential())


def reference_gradient(spec: fpbench.RNNSpec, solver: fpbench.Solver) -> dict[str, np.ndarray]:
    """The NumPy reference's float64 gradient of the suites' loss through ``solver`` (its
    backward mode included), once per spec and solver (:func:`sweep_state.gate_reference`).

    Raises:
        fpbench.UnsupportedError: the reference has no such backward (nothing is stored).
    """
    from fpbench.reference_grad import backward

    def compute() -> dict[str, np.ndarray]:
        return _arrays(backward(common.problem(spec), solver, cotangent(spec)), spec)

    return sweep_state.gate_reference("gradient", (spec, solver), compute)


def directional_error(result: fpbench.GradResult, prob: fpbench.Problem, solver: fpbench.Solver) -> float:
    """Relative error of ``<gradient, v>`` against a central difference of the reference
    forward of the same solver along one random direction ``v`` (float64)."""
    rng = np.random.default_rng(1)
    base = {**prob.params, "x": prob.x, "h0": prob.h0}
    if prob.c0 is not None:
        base["c0"] = prob.c0
    base = {k: np.asarray(v, dtype=np.float64) for k, v in base.items()}
    v = {k: rng.standard_normal(a.shape) for k, a in base.items()}
    p64 = prob.astype("float64")
    ct = cotangent(prob.spec).astype(np.float64)
    eps = 1e-6

    def loss(sign: float) -> float:
        a = {k: base[k] + sign * eps * v[k] for k in base}
        p = fpbench.Problem(p64.spec, a["x"], a["h0"], {k: a[k] for k in p64.params}, a.get("c0"))
        return float(np.sum(ct * fpbench.reference.fixed_point(p, solver)[0]))

    fd = (loss(1.0) - loss(-1.0)) / (2 * eps)
    an = sum(float(np.sum(np.asarray(g, np.float64) * v[k])) for k, g in result.arrays().items())
    return abs(an - fd) / max(1.0, abs(fd))


def verify_grad(label: str, spec: fpbench.RNNSpec, solver: fpbench.Solver, result: Any) -> str:
    """The correctness gate of one gradient; returns what it compared.

    - Both passes finite; the forward's iterations follow :func:`common.check_iterations`.
    - Exact solvers, ``"tol"`` runs and budgets >= T: every gradient against the exact
      float64 gradient by :func:`fpbench.testing.check_grad_close` (``"tol"`` runs at the
      float32 tolerance, whatever the dtype: the solve is only exact to ``tol``).
    - A budget k < T: against the NumPy reference of the same solver and backward mode when
      that is cheap (:data:`common.GATE_REFERENCE_SECONDS`); for an unrolled Newton-type
      solver (no reference backward) ``<gradient, v>`` against a central difference of the
      reference forward; otherwise n/a.

    Raises:
        AssertionError: the gate failed.
        NotImplementedError: nothing affordable vouches for this gradient.
    """
    if result.diverged:
        raise AssertionError(f"{label}: the gradient is not finite (diverged)")
    T = spec.seq_len
    if solver.iterative:
        common.check_iterations(label, solver, np.asarray(result.forward.residuals), T)
    exact_budget = solver.iterative and solver.tol is None and solver.exact_steps(solver.max_iters, T) == T
    if not solver.iterative or solver.tol is not None or exact_budget:
        dtype = "float32" if solver.iterative and solver.tol is not None else spec.dtype
        ok, msg = check_grad_close(f"{label} vs exact", result.arrays(), exact_gradient(spec), dtype)
        if not ok:
            raise AssertionError(f"correctness gate failed, no number is recorded: {msg}")
        return "vs exact gradient"
    if label.startswith("numpy:"):
        return "the reference itself"
    if numpy_grad_seconds(spec, solver) > common.GATE_REFERENCE_SECONDS:
        raise NotImplementedError(f"{label}: no affordable correctness gate for a budget k < T")
    prob = common.problem(spec)
    try:
        ref = reference_gradient(spec, solver)
    except fpbench.UnsupportedError:
        err = directional_error(result, prob, solver)
        tol = 1e-6 if spec.dtype == "float64" else 2e-3
        if not err <= tol:
            raise AssertionError(
                f"correctness gate failed, no number is recorded: {label} directional derivative "
                f"vs finite differences of the reference forward: rel error {err:.2g} (tol {tol:g})"
            ) from None
        return "directional derivative vs finite differences"
    ok, msg = check_grad_close(f"{label} vs NumPy reference", result.arrays(), ref, spec.dtype)
    if not ok:
        raise AssertionError(f"correctness gate failed, no number is recorded: {msg}")
    return "vs NumPy reference of the same solver"


def run_to_result(target: str, spec: fpbench.RNNSpec, solver: fpbench.Solver) -> fpbench.GradResult:
    """Run the prepared gradient once and build its :class:`fpbench.GradResult` (host side)."""
    import warnings

    prepared = prepare_grad(target, spec, solver)
    name, device = parse_target(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fpbench.DivergenceWarning)  # reported by the result
        return make_grad_result(
            prepared.to_host(prepared.run()), common.problem(spec), solver, cotangent(spec), name, device
        )


def gate_grad(target: str, spec: fpbench.RNNSpec, solver: fpbench.Solver) -> None:
    """Run and :func:`verify_grad` once per process."""
    key = (target, spec, solver)
    if key in _verdicts:
        return
    result = run_to_result(target, spec, solver)
    _verdicts[key] = verify_grad(f"{target} {solver}", spec, solver, result)
    del result
    gc.collect()


class _Grad(common.Timed):
    """Base of the timed gradient suites: ``time_grad`` and ``peakmem_grad``. Subclasses set
    ``params``/``param_names`` and ``case``. (No ``time_``/``peakmem_`` of its own name is
    collected: asv collects classes by their methods, and this one has no ``params``.)"""

    def case(self, *params: Any) -> tuple[str, fpbench.RNNSpec, fpbench.Solver]:
        raise NotImplementedError

    def setup(self, *params: Any) -> None:
        sweep_state.tick()
        self.target, self.spec, self.solver = self.case(*params)
        check_unrolled(self.solver)
        self.prepared = prepare_grad(self.target, self.spec, self.solver)
        gate_grad(self.target, self.spec, self.solver)
        common.reset_peak_memory()

    def time_grad(self, *params: Any) -> None:
        self.prepared.run()

    def peakmem_grad(self, *params: Any) -> None:
        self.prepared.run()


class GradSeqLen(_Grad):
    """Forward + backward time and peak memory against T at H = ``seq_lens_hidden``;
    iterative solvers run with the grid's ``solve_budget``."""

    params = (GRAD_TARGETS, GG.cells, grids.SOLVERS + grids.CHUNKED_SOLVERS, grids.BACKWARDS, GG.seq_lens)
    param_names = ("target", "cell", "solver", "backward", "seq_len")

    def case(self, target, cell, solver, backward, seq_len):
        spec = common.spec(cell, seq_len, GG.seq_lens_hidden)
        return target, spec, grad_solver(solver, backward, GG.solve_budget, seq_len)


class GradHidden(_Grad):
    """Forward + backward time and peak memory against H at T = ``hidden_seq_len``."""

    params = (GRAD_TARGETS, GG.cells, grids.SOLVERS + grids.CHUNKED_SOLVERS, grids.BACKWARDS, GG.hidden_sizes)
    param_names = ("target", "cell", "solver", "backward", "hidden_size")

    def case(self, target, cell, solver, backward, hidden_size):
        spec = common.spec(cell, GG.hidden_seq_len, hidden_size)
        return target, spec, grad_solver(solver, backward, GG.solve_budget, GG.hidden_seq_len)


class GradBudget(_Grad):
    """Forward + backward time and peak memory against the budget ``max_iters`` at
    (T, H) = (``budget_seq_len``, ``budget_hidden``): the memory of unrolled against
    implicit. The baselines appear once, under ``max_iters="tol"``."""

    params = (GRAD_TARGETS, GG.cells, grids.SOLVERS + grids.CHUNKED_SOLVERS, grids.BACKWARDS, GG.budgets)
    param_names = ("target", "cell", "solver", "backward", "max_iters")

    def case(self, target, cell, solver, backward, max_iters):
        if solver in grids.BASELINES and max_iters != grids.TOL:
            raise NotImplementedError(f"{solver} does not iterate: see max_iters={grids.TOL!r}")
        spec = common.spec(cell, GG.budget_seq_len, GG.budget_hidden)
        return target, spec, grad_solver(solver, backward, max_iters, GG.budget_seq_len)


class GradAccuracy:
    """The gradient's relative L2 error against the exact float64 gradient (the largest over
    ``weight_ih, ..., x, h0``, and ``weight_hh``'s own), and the iterations of both passes,
    per (target, cell, solver, backward, budget, contraction) at (T, H) =
    (``accuracy_seq_len``, ``accuracy_hidden``): the truncated gradient's error against
    ``rho^k`` (Miller & Hardt), measured.

    The gate does not depend on the error it measures: the forward's iteration count and the
    states t <= k that k iterations make exact. A diverged pass has no error (n/a) while the
    iteration tracks still record where it stopped.
    """

    params = (
        GRAD_TARGETS,
        GG.accuracy_cells,
        grids.ITERATIVE,
        grids.BACKWARDS,
        GG.accuracy_budgets,
        GG.contractions,
    )
    param_names = ("target", "cell", "solver", "backward", "max_iters", "contraction")
    timeout = 300.0

    def setup(self, *params) -> None:
        sweep_state.tick()
        found = sweep_state.memo("GradAccuracy", params, lambda: self.measure(*params))
        self.forward_iterations = found["forward_iterations"]
        self.backward_iterations = found["backward_iterations"]
        self.diverged, self.errors = found["diverged"], found["errors"]

    @staticmethod
    def measure(target, cell, solver, backward, max_iters, contraction) -> dict:
        """Run, gate and measure one combination: the iterations of both passes,
        ``"diverged"`` and the relative ``"errors"`` per gradient."""
        T = GG.accuracy_seq_len
        spec = common.spec(cell, T, GG.accuracy_hidden, contraction)
        solv = grad_solver(solver, backward, max_iters, T)
        check_unrolled(solv)
        result = run_to_result(target, spec, solv)
        found = {
            "forward_iterations": int(result.forward.iterations),
            "backward_iterations": int(result.backward.iterations),
            "diverged": bool(result.diverged),
            "errors": {},
        }
        if result.diverged:
            return found
        label = f"{target} {solv}"
        common.check_iterations(label, solv, np.asarray(result.forward.residuals), T)
        exact_states = common.exact_states(common.problem(spec))[..., : spec.hidden_size]
        n = min(result.forward.iterations, T)
        common.assert_close(
            f"{label} states t<={n} vs exact", result.states[:n], exact_states[:n], spec.dtype
        )
        errs = grad_errors(result.arrays(), exact_gradient(spec))
        return {**found, "errors": {k: float(v) for k, v in errs.items()}}

    def _error(self, key: str | None) -> float:
        if self.diverged:
            common.skip("diverged: the forward or backward pass produced NaN or Inf")
        return max(self.errors.values()) if key is None else self.errors[key]

    def track_grad_rel_error(self, *params) -> float:
        return self._error(None)

    track_grad_rel_error.unit = "rel error"

    def track_weight_hh_rel_error(self, *params) -> float:
        return self._error("weight_hh")

    track_weight_hh_rel_error.unit = "rel error"

    def track_forward_iterations(self, *params) -> int:
        return self.forward_iterations

    track_forward_iterations.unit = "iterations"

    def track_backward_iterations(self, *params) -> int:
        return self.backward_iterations

    track_backward_iterations.unit = "iterations"
