"""Training (``fpbench.train``): the time of one training step over T and H, and the losses
after a fixed number of steps over the budget k and contraction rho, per target x method.

A method (``grids.TRAIN_METHODS``) is a solver and, for iterative ones, its backward mode;
each step's gradient is the one :func:`fpbench.grad` defines for it. A step is the forward
solve for the loss and its cotangent, ``fpbench.grad``, and one Adam update
(:class:`fpbench.train.Trainer`). Before any number, the gate: the first step's loss must be
the NumPy float64 reference's (the forward is checked; the gradient suites check the
backward), and training must stay finite. A backend without a backward for a method is n/a.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import fpbench
from fpbench.train import Trainer

from . import common, grids
from .bench_grad import grad_solver
from .common import TARGETS

TG = grids.current_train()
TRAIN_TARGETS: tuple[str, ...] = TARGETS if TG.targets is None else TG.targets
"""The targets of these suites: the grid's ``targets`` (``quick``: the NumPy oracle only, a
smoke test that keeps the CI sweep short), else every target ``FPBENCH_BACKENDS`` selects."""

TRAIN_STEP_SECONDS_NUMPY = 5.0
"""The NumPy target trains only where a step is expected to take at most this long."""


def method_solver(method: str, budget: grids.Budget, seq_len: int) -> fpbench.Solver:
    """The solver of ``method`` (``"jacobi:unrolled"``, ``"sequential"``) under ``budget``.

    Raises:
        NotImplementedError: a baseline under a budget other than ``"tol"``.
    """
    name, _, backward = method.partition(":")
    if name in grids.BASELINES and budget != grids.TOL:
        raise NotImplementedError(f"{name} does not iterate: see max_iters={grids.TOL!r}")
    return grad_solver(name, backward or "implicit", budget, seq_len)


def trainer(target: str, spec: fpbench.RNNSpec, solver: fpbench.Solver, lr: float) -> Trainer:
    """A :class:`Trainer` on the teacher task, after the gate (its first step).

    Raises:
        NotImplementedError: n/a (absent target, no backward, too slow for NumPy).
        AssertionError: the gate failed.
    """
    impl, _ = common.backend(target)
    common.check_fits(target, spec, solver)
    est = 4 * common.numpy_seconds(spec, solver)
    if impl.name == "numpy" and est > TRAIN_STEP_SECONDS_NUMPY:
        raise NotImplementedError(f"{target}: a NumPy training step of {solver} would take ~{est:.0f} s")
    try:
        t = Trainer(spec, solver, target, task="teacher", lr=lr)
        first = t.step()
    except fpbench.UnsupportedError as e:
        raise NotImplementedError(str(e)) from e
    ref_solver = fpbench.Sequential() if solver.name == "native" else solver
    f64 = dataclasses.replace(spec, dtype="float64")
    expected = Trainer(f64, ref_solver, "numpy", task="teacher", lr=lr).loss()
    rtol = 1e-9 if spec.dtype == "float64" else 1e-3
    if not (np.isfinite(first) and abs(first - expected) <= rtol * abs(expected)):
        raise AssertionError(
            f"correctness gate failed, no number is recorded: {target} {solver} first training loss "
            f"{first:.6g}, the float64 reference's {expected:.6g}"
        )
    return t


class _TrainStep(common.Timed):
    """Base: ``time_train_step`` of one (target, cell, method, axis value)."""

    def case(self, *params):
        raise NotImplementedError

    def setup(self, *params):
        target, spec, solver = self.case(*params)
        self.trainer = trainer(target, spec, solver, TG.lr)

    def time_train_step(self, *params):
        self.trainer.step()


class TrainStepSeqLen(_TrainStep):
    """Wall time of one training step against T at H = ``seq_lens_hidden``."""

    params = (TRAIN_TARGETS, TG.cells, grids.TRAIN_METHODS, TG.seq_lens)
    param_names = ("target", "cell", "method", "seq_len")

    def case(self, target, cell, method, seq_len):
        spec = common.spec(cell, seq_len, TG.seq_lens_hidden)
        return target, spec, method_solver(method, TG.step_budget, seq_len)


class TrainStepHidden(_TrainStep):
    """Wall time of one training step against H at T = ``hidden_seq_len``."""

    params = (TRAIN_TARGETS, TG.cells, grids.TRAIN_METHODS, TG.hidden_sizes)
    param_names = ("target", "cell", "method", "hidden_size")

    def case(self, target, cell, method, hidden_size):
        spec = common.spec(cell, TG.hidden_seq_len, hidden_size)
        return target, spec, method_solver(method, TG.step_budget, TG.hidden_seq_len)


class Training:
    """``track_steps`` Adam steps on the teacher task per (target, cell, method, budget k,
    contraction rho) at (T, H) = (``track_seq_len``, ``track_hidden``): the final training loss,
    the held-out loss with the exact forward (``eval_loss``) and the train/inference gap
    (``eval_loss_solver - eval_loss``). A run that diverged is n/a."""

    params = (TRAIN_TARGETS, TG.cells, grids.TRAIN_METHODS, TG.budgets, TG.contractions)
    param_names = ("target", "cell", "method", "max_iters", "contraction")
    timeout = 600.0

    def setup(self, target, cell, method, max_iters, contraction):
        spec = common.spec(cell, TG.track_seq_len, TG.track_hidden, contraction)
        t = trainer(target, spec, method_solver(method, max_iters, spec.seq_len), TG.lr)
        loss = np.nan
        for _ in range(TG.track_steps - 1):
            loss = t.step()
            if not np.isfinite(loss):
                break
        self.diverged = not np.isfinite(loss)
        if not self.diverged:
            self.loss = loss
            self.eval_loss, self.eval_loss_solver = t.evaluate()

    def _value(self, v):
        if self.diverged:
            common.skip("training diverged")
        return v

    def track_final_loss(self, *params):
        return self._value(self.loss)

    track_final_loss.unit = "loss"

    def track_eval_loss(self, *params):
        return self._value(self.eval_loss)

    track_eval_loss.unit = "loss"

    def track_consistency_gap(self, *params):
        return self._value(self.eval_loss_solver - self.eval_loss)

    track_consistency_gap.unit = "loss"
