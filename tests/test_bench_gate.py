"""The correctness gate's float64 references (benchmarks/sweep_state.py: ``gate_reference``): computed
once per problem and solver, shared by every process of a sweep through its memo folder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fpbench
from benchmarks import common, costs, sweep_state


@pytest.fixture
def memo(tmp_path, monkeypatch):
    """A sweep's memo folder, and a fresh process's empty in-memory cache."""
    monkeypatch.setenv(sweep_state.MEMO_ENV, str(tmp_path))
    monkeypatch.setattr(sweep_state, "_references", {})
    return tmp_path


def fresh_process(monkeypatch) -> None:
    """What asv's next process starts with: nothing computed in memory."""
    monkeypatch.setattr(sweep_state, "_references", {})


def spec(**kw) -> fpbench.RNNSpec:
    return dataclasses.replace(common.spec("elman", 64, 4), **kw)


def test_exact_states_are_computed_once_per_spec(memo, monkeypatch):
    prob = common.problem(spec())
    first = common.exact_states(prob)
    np.testing.assert_array_equal(first, fpbench.reference.sequential(prob))
    assert len(list(memo.glob(f"{sweep_state.REFERENCE_PREFIX}*.npz"))) == 1

    def not_again(problem):
        raise AssertionError("the exact states were computed again")

    fresh_process(monkeypatch)
    monkeypatch.setattr(fpbench.reference, "sequential", not_again)
    again = common.exact_states(prob)  # another process of the sweep: read back, bit for bit
    assert again.dtype == np.float64 and np.array_equal(again, first)
    with pytest.raises(AssertionError, match="computed again"):  # another problem is another key
        common.exact_states(common.problem(spec(contraction=0.5)))


def test_solver_reference_is_shared_by_targets_and_backward_modes(memo, monkeypatch):
    prob = common.problem(spec())
    solv = common.solver("jacobi", 3, 64)
    calls = []
    real = fpbench.reference.fixed_point

    def counted(problem, solver):
        calls.append(solver)
        return real(problem, solver)

    monkeypatch.setattr(fpbench.reference, "fixed_point", counted)
    first = common.solver_reference(prob, solv)
    fresh_process(monkeypatch)
    unrolled = dataclasses.replace(solv, backward="unrolled")  # the same forward iterations
    np.testing.assert_array_equal(common.solver_reference(prob, unrolled), first)
    assert len(calls) == 1
    common.solver_reference(prob, common.solver("jacobi", 4, 64))  # another budget: computed
    assert len(calls) == 2
    np.testing.assert_array_equal(first, real(prob, solv)[0])


def test_gate_of_every_target_reads_one_reference(memo, monkeypatch):
    """``verify`` of the same solve in three processes (three targets) computes the exact
    states and the same solver's NumPy run once, and passes or fails as before."""
    prob = common.problem(spec())
    solv = common.solver("jacobi", 3, 64)
    states, residuals = fpbench.reference.fixed_point(prob, solv)
    counts = {"sequential": 0, "fixed_point": 0}
    for name in counts:
        real = getattr(fpbench.reference, name)

        def counted(*args, _name=name, _real=real):
            counts[_name] += args[0].spec == prob.spec  # (not numpy_seconds' short timed probes)
            return _real(*args)

        monkeypatch.setattr(fpbench.reference, name, counted)
    for target in ("torch:cpu", "jax:cpu", "numba:cpu"):
        fresh_process(monkeypatch)
        what = common.verify(target, prob, solv, states.astype(np.float32), residuals)
        assert "vs NumPy reference of the same solver" in what
    assert counts == {"sequential": 1, "fixed_point": 1}
    fresh_process(monkeypatch)
    with pytest.raises(AssertionError, match="correctness gate failed"):
        common.verify("torch:cpu", prob, solv, states.astype(np.float32) + 0.1, residuals)


def test_without_a_memo_folder_each_process_computes(tmp_path, monkeypatch):
    """A plain ``asv run`` (no sweep): computed once per process, nothing written."""
    monkeypatch.delenv(sweep_state.MEMO_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep_state, "_references", {})
    prob = common.problem(spec())
    np.testing.assert_array_equal(common.exact_states(prob), fpbench.reference.sequential(prob))
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_reference_is_recomputed(memo, monkeypatch):
    prob = common.problem(spec())
    first = common.exact_states(prob)
    (path,) = memo.glob(f"{sweep_state.REFERENCE_PREFIX}*.npz")
    path.write_bytes(b"not a zip file")
    fresh_process(monkeypatch)
    np.testing.assert_array_equal(common.exact_states(prob), first)
    fresh_process(monkeypatch)
    np.testing.assert_array_equal(common.exact_states(prob), first)  # rewritten whole


def test_a_failed_computation_stores_nothing(memo):
    def fails():
        raise fpbench.UnsupportedError("no reference backward")

    with pytest.raises(fpbench.UnsupportedError):
        sweep_state.gate_reference("gradient", (spec(),), fails)
    assert list(memo.iterdir()) == []


def test_a_problem_of_its_own_is_never_shared(memo):
    """A reference keyed by the spec stands only for the problem the suites make of it
    (``common.problem``); another problem with the same spec is computed, not looked up."""
    prob = common.problem(spec())
    own = dataclasses.replace(prob, x=prob.x + np.float32(0.5))
    assert own.spec == prob.spec
    np.testing.assert_array_equal(common.exact_states(own), fpbench.reference.sequential(own))
    assert list(memo.iterdir()) == []
    assert not np.array_equal(common.exact_states(prob), common.exact_states(own))


def test_numpy_seconds_is_measured(monkeypatch):
    """The estimate that decides which NumPy combinations are n/a comes from a timed run of
    the reference on this machine, not from constants: a slower reference, a larger estimate."""
    import time

    import fpbench.reference_backend as rb

    s = fpbench.RNNSpec(cell="gru", input_size=4, hidden_size=4, seq_len=800, batch=2)
    monkeypatch.setattr(costs, "_probes", {})
    fast = costs.numpy_seconds(s, fpbench.Sequential())
    real = rb.sequential

    def slow(problem):
        time.sleep(0.02)
        return real(problem)

    monkeypatch.setattr(rb, "sequential", slow)
    monkeypatch.setattr(costs, "_probes", {})
    slowed = costs.numpy_seconds(s, fpbench.Sequential())
    assert slowed >= 0.02 / costs.PROBE_STEPS * s.seq_len > fast
    assert costs.numpy_seconds(dataclasses.replace(s, seq_len=1600), fpbench.Sequential()) == 2 * slowed
    assert costs.numpy_seconds(s, fpbench.Native()) == slowed  # a baseline's reference: the recurrence
