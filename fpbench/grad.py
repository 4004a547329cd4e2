"""Gradients: the backward pass through a solve, ``fpbench.grad``.

The loss is ``L = sum(cotangent * states)`` over the returned states ``h_t`` (a
vector-Jacobian product, so any loss reduces to it). ``grad`` returns ``dL/dparams`` (torch
layout), ``dL/dx``, ``dL/dh0`` (and ``dL/dc0`` for ``lstm``), with the diagnostics of the
forward and the backward pass.

Semantics, per solver (docs/design.md, "Gradients"):

- ``Sequential``: BPTT, the adjoint recurrence run backwards in time (exact).
- ``Native``: the framework's autograd through ``torch.nn.RNN/GRU/LSTM`` / ``lax.scan`` (exact).
- iterative, ``backward="unrolled"``: the exact gradient of the iterations that ran (for
  ``Jacobi(k)`` the gradient of the k-truncated model).
- iterative, ``backward="implicit"``: the implicit-function-theorem gradient at the
  returned states: the adjoint ``lambda_t = g_t + J_{t+1}^T lambda_{t+1}`` solved backwards
  in time in parallel, then the parameter gradients as batched products over all t.

Backend contract (:mod:`fpbench.backend`): :meth:`fpbench.Backend.prepare_grad` returns a
``Prepared`` whose ``to_host`` gives a :class:`~fpbench.backend.GradHost` (host NumPy arrays,
full states ``(T, B, S)``). The
implicit backward of each solver, as the NumPy reference (:mod:`fpbench.reference_grad`, the
oracle) computes it and every backend must match:

- ``transition == "full"`` (Newton, ELK): the adjoint solved exactly (a reverse scan);
  no backward residuals;
- ``transition == "none"`` (Jacobi): Jacobi iterations on the adjoint,
  ``Lambda <- G + shift(J^T Lambda)``; ``transition == "diagonal"`` (QuasiNewton,
  QuasiELK): iterations preconditioned by the diagonal of J (one elementwise reverse scan
  each). Both start from ``Lambda = 0``, report ``max |Lambda_new - Lambda_old|`` per
  iteration, stop after the first residual ``<= tol`` (or a non-finite one), and run at most
  ``min(max_iters, T)`` iterations (T iterations are exact).

Unrolled differentiates the iterations that ran (with ``tol``, the stopping decision is not
differentiated). Validation lives in :func:`grad`: backends receive a checked cotangent.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .backend import GradHost
from .registry import checked_target, run_timed
from .result import DivergenceWarning, make_result
from .solvers import Solver
from .spec import Problem, RNNSpec


@dataclass(frozen=True)
class PassDiagnostics:
    """Diagnostics of one pass (forward or backward) of :func:`grad`.

    Attributes:
        method: what ran, e.g. ``"jacobi"``, ``"bptt"``, ``"implicit: jacobi on the adjoint"``.
        iterations: iterations that ran (0 for a direct pass: a sequential forward, BPTT,
            autograd, an unrolled backward, a reverse scan).
        residuals: per-iteration ``max |new - old|`` (empty for a direct pass).
        converged: True when the pass reached its fixed point (forward: as
            :attr:`fpbench.Result.converged`; backward: a direct pass is exact, adjoint
            iterations converge when their last residual is ``<= tol``, when they ran ``T``
            times (exact), or when the last update was 0). Never True when ``diverged``.
        diverged: True when this pass produced NaN or Inf.
    """

    method: str
    iterations: int
    residuals: list[float]
    converged: bool
    diverged: bool


@dataclass(frozen=True, eq=False)
class GradResult:
    """What :func:`grad` returns: the forward states and ``dL/d(inputs)`` for
    ``L = sum(cotangent * states)``, every array in the spec's dtype.

    Attributes:
        states: ``(T, B, H)`` forward states ``h_t``, as :func:`fpbench.solve` returns them.
        cell_states: ``(T, B, H)`` forward cell states for ``lstm``; None otherwise.
        params: ``dL/dparam`` for ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``
            (torch layout, the shapes of ``problem.params``).
        x: ``(T, B, I)`` ``dL/dx``.
        h0: ``(B, H)`` ``dL/dh0``.
        c0: ``(B, H)`` ``dL/dc0`` for ``lstm``; None otherwise.
        loss: ``L = sum(cotangent * states)`` (float64 sum of the returned states).
        forward, backward: :class:`PassDiagnostics` of each pass.
        backend, device, solver: where and how it was computed.
    """

    states: np.ndarray
    params: dict[str, np.ndarray]
    x: np.ndarray
    h0: np.ndarray
    forward: PassDiagnostics
    backward: PassDiagnostics
    loss: float = float("nan")
    cell_states: np.ndarray | None = None
    c0: np.ndarray | None = None
    backend: str = ""
    device: str = ""
    solver: str = ""

    @property
    def diverged(self) -> bool:
        """True when either pass produced NaN or Inf."""
        return self.forward.diverged or self.backward.diverged

    def arrays(self) -> dict[str, np.ndarray]:
        """Every gradient by name: ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``,
        ``x``, ``h0`` (and ``c0`` for ``lstm``), e.g. to compare two results."""
        out = {**self.params, "x": self.x, "h0": self.h0}
        if self.c0 is not None:
            out["c0"] = self.c0
        return out


COTANGENT_STREAM = 0x67726164  # "grad": the default cotangent's own random stream


def default_cotangent(spec: RNNSpec) -> np.ndarray:
    """The cotangent ``grad`` uses when none is given: standard normal ``(T, B, H)``,
    deterministic in ``spec.seed`` (a stream of its own, independent of the problem's
    arrays), drawn in float64 and cast to ``spec.dtype``.

    Raises:
        TypeError: ``spec`` is not an :class:`~fpbench.RNNSpec` (for a problem, pass
            ``problem.spec``).
    """
    if not isinstance(spec, RNNSpec):
        hint = " (for a Problem, pass problem.spec)" if isinstance(spec, Problem) else ""
        raise TypeError(f"spec must be an fpbench.RNNSpec{hint}, got {type(spec).__name__}")
    rng = np.random.default_rng([spec.seed, COTANGENT_STREAM])
    return rng.standard_normal((spec.seq_len, spec.batch, spec.hidden_size)).astype(spec.dtype)


def full_cotangent(problem: Problem, cotangent: np.ndarray | None) -> np.ndarray:
    """Validate ``cotangent (T, B, H)`` (None: :func:`default_cotangent`) and return it on
    the full state ``(T, B, S)`` in the spec's dtype, as backends receive it: for ``lstm``
    the c part is zero (the loss is on ``h`` only).

    Raises:
        ValueError: not an array of the spec's shape and dtype, or holding NaN/Inf.
    """
    spec = problem.spec
    if cotangent is None:
        cotangent = default_cotangent(spec)
    shape = (spec.seq_len, spec.batch, spec.hidden_size)
    if not isinstance(cotangent, np.ndarray):
        raise ValueError(
            f"cotangent must be a NumPy array of shape {shape} (T, B, H) and dtype {spec.dtype}, "
            f"got {type(cotangent).__name__}"
        )
    if cotangent.shape != shape:
        raise ValueError(
            f"cotangent has shape {cotangent.shape}, but the states of the spec "
            f"({spec.cell}, T={spec.seq_len}, B={spec.batch}, H={spec.hidden_size}) are {shape} (T, B, H)"
        )
    if cotangent.dtype != np.dtype(spec.dtype):
        raise ValueError(f"cotangent has dtype {cotangent.dtype}, but the spec's dtype is {spec.dtype}")
    if not np.isfinite(cotangent).all():
        raise ValueError("cotangent contains NaN or Inf; the loss sum(cotangent * states) would be undefined")
    full = np.zeros((*shape[:2], spec.state_size), dtype=spec.dtype)
    full[..., : spec.hidden_size] = cotangent
    return full


def backward_converged(residuals: list[float], tol: float | None, exact_after: int) -> bool:
    """Whether adjoint iterations with these residuals reached the adjoint's solution (see
    :class:`PassDiagnostics`); a direct backward (no residuals) is exact, and so are
    ``exact_after`` adjoint iterations (T; a Chunked solver's chunks)."""
    if not residuals:
        return True
    last = residuals[-1]
    return (tol is not None and last <= tol) or len(residuals) >= exact_after or last == 0.0


def make_grad_result(
    host: GradHost, problem: Problem, solver: Solver, cotangent: np.ndarray, backend: str, device: str
) -> GradResult:
    """Build a :class:`GradResult` from what a backend returned, casting every array to the
    spec's dtype and deriving the diagnostics of both passes; warns
    (:class:`fpbench.DivergenceWarning`) when either pass diverged.

    Args:
        cotangent: the full ``(T, B, S)`` cotangent the backend received.
    """
    spec = problem.spec
    dt, H, S = spec.dtype, spec.hidden_size, spec.state_size
    T, B, I = spec.seq_len, spec.batch, spec.input_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)  # warned once, below, for both passes
        fwd = make_result(host.states, host.residuals, solver, problem, backend, device)
    params = {k: np.asarray(host.params[k], dtype=dt) for k in problem.params}
    for k, v in params.items():
        if v.shape != problem.params[k].shape:
            raise ValueError(f"{backend}: dL/d{k} has shape {v.shape}, expected {problem.params[k].shape}")
    x = np.asarray(host.x, dtype=dt)
    s0 = np.asarray(host.s0, dtype=dt)
    if x.shape != (T, B, I) or s0.shape != (B, S):
        raise ValueError(f"{backend}: dL/dx {x.shape} or dL/ds0 {s0.shape} has the wrong shape")
    res_b = [float(r) for r in np.asarray(host.backward_residuals, dtype=np.float64).ravel()]
    grads_finite = all(np.isfinite(a).all() for a in (x, s0, *params.values())) and all(
        np.isfinite(r) for r in res_b
    )
    b_diverged = fwd.diverged or not grads_finite
    tol = getattr(solver, "tol", None)
    backward = PassDiagnostics(
        method=host.backward_method,
        iterations=len(res_b),
        residuals=res_b,
        converged=not b_diverged and backward_converged(res_b, tol, solver.exact_after(T) or T),
        diverged=b_diverged,
    )
    forward = PassDiagnostics(str(solver), fwd.iterations, fwd.residuals, fwd.converged, fwd.diverged)
    full_states = np.asarray(host.states, dtype=np.float64)
    loss = float(np.sum(np.asarray(cotangent, dtype=np.float64) * full_states))
    if b_diverged:
        warnings.warn(
            f"{backend}:{device} {solver} gradient diverged (non-finite states, gradients or residuals)",
            DivergenceWarning,
            stacklevel=3,
        )
    return GradResult(
        states=fwd.states,
        params=params,
        x=x,
        h0=s0[:, :H],
        forward=forward,
        backward=backward,
        loss=loss,
        cell_states=fwd.cell_states,
        c0=s0[:, H:] if spec.model.has_cell_state else None,
        backend=backend,
        device=device,
        solver=str(solver),
    )


def grad(
    problem: Problem,
    solver: Solver,
    backend: str = "numpy",
    device: str | None = None,
    cotangent: np.ndarray | None = None,
) -> GradResult:
    """The forward solve of ``problem`` with ``solver`` on ``backend`` and its backward pass:
    the gradients of ``L = sum(cotangent * states)`` (module docstring for the semantics of
    each solver and backward mode).

    Args:
        cotangent: ``(T, B, H)`` in the spec's dtype, on the states ``h_t``; None:
            :func:`default_cotangent` (deterministic in the spec's seed).
    Returns:
        A :class:`GradResult`, every array in the spec's dtype.
    Raises:
        TypeError: ``problem`` / ``solver`` are not fpbench objects.
        ValueError: a cotangent of the wrong shape or dtype, or holding NaN/Inf.
        BackendUnavailableError: unknown or unavailable backend or device.
        UnsupportedError: the backend has no backward pass for this combination.
        InsufficientMemoryError: on a CPU device, :func:`fpbench.estimate_grad_memory`
            (the forward, the backward and what an unrolled backward keeps of every
            iteration) exceeds the available memory; checked before anything is allocated.
    """
    return timed_grad(problem, solver, backend, device, cotangent)[0]


def timed_grad(
    problem: Problem,
    solver: Solver,
    backend: str = "numpy",
    device: str | None = None,
    cotangent: np.ndarray | None = None,
    repeats: int = 1,
) -> tuple[GradResult, float, list[float]]:
    """:func:`grad`, also returning the seconds spent preparing (transfer + compile) and the
    seconds of each of ``repeats`` runs of the prepared forward + backward pass."""
    impl, dev = checked_target(problem, solver, backend, device, repeats, grad=True)
    full = full_cotangent(problem, cotangent)
    full.flags.writeable = False
    prepared, out, prepare_s, run_s = run_timed(
        lambda: impl.prepare_grad(problem, solver, dev, full), repeats
    )
    host = prepared.to_host(out)
    return make_grad_result(host, problem, solver, full, impl.name, dev), prepare_s, run_s
