"""Issue 13: no vacuous green runs, no unbounded resources, one divergence behaviour,
consistent NumPy scalars, clear errors, and the Lyapunov diagnostic."""

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from problems import spec

import fpbench
from fpbench.registry import selected_targets

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess that imports this checkout's fpbench."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, **extra}


# -- item 2: FPBENCH_BACKENDS typos fail loudly ------------------------------------------


@pytest.mark.parametrize("selection", ["nonsense", "torch:gpu", "TORCH", "torch:cpu,numbaa"])
def test_unknown_backend_selection_lists_valid_names(selection):
    with pytest.raises(ValueError, match=r"unknown backend or target.*valid backends: numpy, torch") as e:
        selected_targets(selection)
    assert "torch:cuda" in str(e.value) and "jax:gpu" in str(e.value)


def test_unknown_backend_in_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("FPBENCH_BACKENDS", "nonsense")
    with pytest.raises(
        ValueError, match=r"FPBENCH_BACKENDS='nonsense': unknown backend or target 'nonsense'"
    ):
        selected_targets()


def test_valid_backend_selection_still_works():
    assert selected_targets("torch:cpu, numba") == ["torch:cpu", "numba:cpu"]
    assert selected_targets("jax") == ["jax:cpu", "jax:gpu"]
    assert selected_targets("") == selected_targets(" , ")


def test_backend_typo_fails_the_test_run():
    """Not "161 skipped" and exit 0: the run stops with the valid names."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_backends.py",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=_env(FPBENCH_BACKENDS="nonsense"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "unknown backend or target 'nonsense'" in proc.stdout + proc.stderr


def test_backend_typo_fails_the_sweep():
    sweep_plan = pytest.importorskip("fpbench.report.sweep_plan")
    with pytest.raises(ValueError, match="unknown backend or target 'TORCH'"):
        sweep_plan.sweep_chunks({"FPBENCH_BACKENDS": "TORCH"})


# -- item 5: max_iters far beyond T --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Damped(fpbench.Iterative):
    """A solver that is not exact after T iterations (as a damped Newton, ELK, would be)."""

    name: ClassVar[str] = "damped"
    transition: ClassVar[str] = "full"
    exact_after_seq_len: ClassVar[bool] = False


def test_iteration_cap_is_one_rule():
    assert fpbench.iteration_cap(fpbench.Newton(10**9), 16) == 16
    assert fpbench.iteration_cap(fpbench.Jacobi(5), 16) == 5
    assert fpbench.iteration_cap(fpbench.QuasiNewton(16), 16) == 16
    assert fpbench.iteration_cap(fpbench.Sequential(), 16) == 0
    assert fpbench.iteration_cap(_Damped(max_iters=100), 16) == 100  # the trait, not the class name


TINY = spec("T7-B3-H5-I2", "gru", "float32")  # T = 7


@pytest.mark.parametrize("tol", [None, 1e-6])
@pytest.mark.parametrize(
    "solver_cls", [fpbench.Jacobi, fpbench.Newton, fpbench.QuasiNewton], ids=lambda c: c.name
)
def test_huge_budget_runs_at_most_T_in_the_reference(solver_cls, tol):
    p = fpbench.make_problem(dataclasses.replace(TINY, dtype="float64"))
    result = fpbench.solve(p, solver_cls(max_iters=10**9, tol=tol))
    assert result.iterations <= 7 and result.converged
    if tol is None:
        assert result.iterations == 7
    np.testing.assert_allclose(result.states, fpbench.reference_states(p), atol=1e-9)


def test_huge_budget_returns_quickly(target):
    """Newton(max_iters=10**9) on a 16x2x8 problem, in a subprocess with a time limit
    (an uncapped loop, or a 4 GB residual array, would never return in time)."""
    code = (
        "import fpbench\n"
        "p = fpbench.make_problem(fpbench.RNNSpec(cell='gru', seq_len=16, batch=2, hidden_size=8,"
        " input_size=3, dtype='float64'))\n"
        f"for tol in (None, 1e-9):\n"
        f"    r = fpbench.solve(p, fpbench.Newton(max_iters=10**9, tol=tol), backend={target!r})\n"
        "    assert r.converged and r.iterations <= 16, r.iterations\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def _residual_buffer(out) -> int:
    """Length of the residual buffer a backend's ``run()`` returned (torch and JAX return
    the whole buffer and a count, Numba a view of its buffer)."""
    res = out[1]
    if len(out) == 2 and isinstance(res, np.ndarray) and res.base is not None:
        res = res.base
    return int(res.shape[0])


def test_residual_buffer_is_sized_by_the_cap(target):
    """Stopped by tol after a few iterations, a budget of 10**6 allocates no 10**6 buffer: at
    most the cap (T = 7), which JAX rounds up to 64 slots so that budgets share a program."""
    p = fpbench.make_problem(TINY)
    name, device = target.split(":")
    solver = fpbench.Newton(max_iters=10**6, tol=1e-4)
    prepared = fpbench.get_backend(name).prepare(p, solver, device)
    out = prepared.run()
    assert _residual_buffer(out) <= (64 if name == "jax" else 7)
    _, residuals = prepared.to_host(out)
    assert 1 <= len(residuals) <= 7


def test_make_result_rejects_more_iterations_than_the_cap():
    states = np.zeros((3, 1, 2))
    spec = fpbench.RNNSpec(cell="elman", seq_len=3, batch=1, hidden_size=2, dtype="float64")
    with pytest.raises(RuntimeError, match="ran 5 iterations on T=3, more than its cap 3"):
        fpbench.result.make_result(
            states, [1.0] * 5, fpbench.Jacobi(10), fpbench.make_problem(spec), "x", "cpu"
        )


# -- item 6: a memory estimate before allocating ------------------------------------------


def test_memory_estimate_is_dominated_by_newton_jacobians():
    s = fpbench.RNNSpec(cell="gru", seq_len=4096, batch=8, hidden_size=256, input_size=32)
    newton = fpbench.estimate_memory(s, fpbench.Newton(4))
    jacobi = fpbench.estimate_memory(s, fpbench.Jacobi(4))
    assert newton - jacobi == 4 * 4096 * 8 * 256 * 256 * 4  # four (T, B, H, H) float32 arrays
    assert fpbench.estimate_memory(s, fpbench.Jacobi(4), "float64") > jacobi  # the reference's dtype
    p = fpbench.make_problem(dataclasses.replace(s, seq_len=8, hidden_size=4))
    assert fpbench.estimate_memory(p, fpbench.Sequential()) > 0  # a problem or a spec


def test_available_memory_is_read_on_linux():
    have = fpbench.memory.available_memory()
    if sys.platform.startswith("linux"):
        assert isinstance(have, int) and have > 0


def test_solve_refuses_what_cannot_fit(monkeypatch):
    p = fpbench.make_problem(TINY)
    monkeypatch.setattr(fpbench.memory, "available_memory", lambda: 1024)
    with pytest.raises(fpbench.InsufficientMemoryError, match=r"needs about .* GiB .* only .* GiB") as e:
        fpbench.solve(p, fpbench.Newton(4))
    assert isinstance(e.value, MemoryError)
    monkeypatch.setattr(fpbench.memory, "available_memory", lambda: None)  # unknown: no check
    assert fpbench.solve(p, fpbench.Newton(4)).iterations == 4


def test_huge_newton_is_refused_before_allocating():
    """17 TB of Jacobians: refused from the estimate, nothing allocated."""
    p = fpbench.make_problem(
        fpbench.RNNSpec(cell="elman", seq_len=2**16, batch=64, hidden_size=512, input_size=1)
    )
    with pytest.raises(fpbench.InsufficientMemoryError, match="newton"):
        fpbench.solve(p, fpbench.Newton(2), backend="numpy")


def test_cli_prints_the_memory_error(capsys):
    from fpbench.cli import main

    argv = ["solve", "--seq-len", "1000000", "--hidden", "1024", "--solver", "newton", "--max-iters", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("fpbench: error: newton(max_iters=2) on numpy:cpu needs about") and "available" in err
    )


# -- item 7: FPBENCH_THREADS bounded ------------------------------------------------------


def test_thread_count_is_bounded(monkeypatch):
    from fpbench.backend import THREADS_PER_CORE_LIMIT, requested_threads

    limit = THREADS_PER_CORE_LIMIT * (os.cpu_count() or 1)
    monkeypatch.setenv("FPBENCH_THREADS", str(limit))
    assert requested_threads() == limit
    monkeypatch.setenv("FPBENCH_THREADS", str(limit + 1))
    with pytest.raises(ValueError, match=rf"FPBENCH_THREADS={limit + 1} is too large: at most {limit}"):
        requested_threads()


def test_huge_thread_count_is_a_clear_cli_error():
    """Not an XLA abort: ``fpbench: error: ...`` and exit status 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "fpbench.cli", "info"],
        env=_env(FPBENCH_THREADS="100000"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "fpbench: error: FPBENCH_THREADS=100000 is too large" in proc.stderr


# -- item 9: NumPy scalars -----------------------------------------------------------------


def test_spec_normalises_numpy_scalars_and_dtypes():
    plain = fpbench.RNNSpec(hidden_size=8, seq_len=5, contraction=float(np.float32(0.9)), dtype="float32")
    for dtype in (np.dtype("float32"), np.float32):
        s = fpbench.RNNSpec(
            hidden_size=np.int64(8),
            seq_len=np.int32(5),
            contraction=np.float32(0.9),
            seed=np.uint8(0),
            dtype=dtype,
        )
        assert s == plain and hash(s) == hash(plain)
        assert type(s.hidden_size) is int and type(s.contraction) is float and s.dtype == "float32"
    with pytest.raises(ValueError, match=r"seq_len must be a positive integer, got 2\.5"):
        fpbench.RNNSpec(seq_len=np.float64(2.5))
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        fpbench.RNNSpec(dtype=np.float16)


@pytest.mark.parametrize("solver_cls", [fpbench.Jacobi, fpbench.Newton, fpbench.QuasiNewton])
def test_solver_accepts_numpy_scalars(solver_cls):
    s = solver_cls(max_iters=np.int64(5), tol=np.float32(1e-3))
    assert s == solver_cls(5, float(np.float32(1e-3))) and hash(s) == hash(
        solver_cls(5, float(np.float32(1e-3)))
    )
    assert type(s.max_iters) is int and type(s.tol) is float
    with pytest.raises(ValueError, match=r"max_iters must be an integer >= 1, got np\.float64"):
        solver_cls(max_iters=np.float64(5))


def test_numpy_dtype_spec_runs_natively(target):
    p = fpbench.make_problem(
        fpbench.RNNSpec(
            cell="gru", seq_len=5, batch=2, hidden_size=4, input_size=3, dtype=np.dtype("float32")
        )
    )
    try:
        result = fpbench.solve(p, fpbench.Native(), backend=target)
    except fpbench.UnsupportedError as e:
        pytest.skip(str(e))
    assert result.states.dtype == np.float32 and result.converged


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"backend": None}, "backend must be a string"), ({"device": 0}, "device must be None or a string")],
)
def test_backend_must_be_a_string(kwargs, match):
    p = fpbench.make_problem(TINY)
    with pytest.raises(TypeError, match=match):
        fpbench.solve(p, fpbench.Sequential(), **kwargs)


# -- item 10: one divergence behaviour ----------------------------------------------------


@pytest.mark.parametrize(
    "solver",
    [fpbench.Jacobi(50), fpbench.Jacobi(50, tol=1e-6), fpbench.Newton(5), fpbench.QuasiNewton(5)],
    ids=str,
)
def test_nonfinite_residual_is_nan_or_inf_and_stops(target, solver):
    # B = 8: large enough that XLA's CPU max reduction used to drop the NaNs (finite
    # residuals for a diverged solve); one NaN input: most differences stay finite
    good = fpbench.make_problem(
        fpbench.RNNSpec(cell="elman", seq_len=64, batch=8, hidden_size=8, input_size=3)
    )
    x = good.x.copy()
    x[40, 1, 0] = np.nan
    bad = fpbench.Problem(good.spec, x, good.h0, good.params)
    with pytest.warns(fpbench.DivergenceWarning):
        ref = fpbench.solve(bad, solver, backend="numpy")
    with pytest.warns(fpbench.DivergenceWarning):
        got = fpbench.solve(bad, solver, backend=target)
    last = got.residuals[-1]
    assert math.isnan(last) or last == math.inf, got.residuals
    assert all(math.isfinite(r) for r in got.residuals[:-1])
    assert got.iterations == ref.iterations == 1  # stops after the first non-finite residual
    assert got.diverged and not got.converged


# -- item 11: the Lyapunov exponent --------------------------------------------------------


def test_lyapunov_contractive_elman_is_below_log_rho():
    rho = 0.5
    p = fpbench.make_problem(
        fpbench.RNNSpec(cell="elman", seq_len=200, batch=4, hidden_size=16, input_size=4, contraction=rho)
    )
    lam = fpbench.lyapunov(p)
    assert lam < 0 and lam <= math.log(rho) + 1e-12


def test_lyapunov_chaotic_elman_is_positive():
    p = fpbench.make_problem(
        fpbench.RNNSpec(cell="elman", seq_len=400, batch=4, hidden_size=32, input_size=8, contraction=5.0)
    )
    assert fpbench.lyapunov(p) > 0.05
    assert fpbench.lyapunov(p, steps=300) > 0


def test_lyapunov_rejects_bad_steps():
    p = fpbench.make_problem(TINY)
    with pytest.raises(ValueError, match=r"steps must be None or an integer in \[1, T=7\]"):
        fpbench.lyapunov(p, steps=8)
    with pytest.raises(TypeError, match=r"problem must be an fpbench\.Problem"):
        fpbench.lyapunov(TINY)


def test_cli_solve_shows_lyapunov(capsys):
    from fpbench.cli import main

    argv = [
        "solve",
        "--cell",
        "elman",
        "--contraction",
        "5",
        "--hidden",
        "16",
        "--seq-len",
        "300",
        "--solver",
        "sequential",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "lyapunov:   lambda_max=+" in out and "chaotic" in out


def test_torch_cuda_check_interval_stops_on_nonfinite_without_tol():
    """The CUDA strategy (host reads every 8 iterations), run on CPU: a fixed budget still
    stops after the first non-finite residual, with the reference's count."""
    tb = pytest.importorskip("backends.torch")
    good = fpbench.make_problem(spec("T7-B3-H5-I2", "gru", "float32"))
    x = good.x.copy()
    x[2, 1, 0] = np.nan
    bad = fpbench.Problem(good.spec, x, good.h0, good.params)
    prepared = tb.TorchBackend(check_every=8).prepare(bad, fpbench.Jacobi(50), "cpu")
    _, residuals = prepared.to_host(prepared.run())
    assert len(residuals) == 1 and np.isnan(residuals[0])


# -- items 3 and 4: an immutable, validated problem; non-contiguous input -----------------


def _small(cell: str = "gru", dtype: str = "float32") -> fpbench.Problem:
    return fpbench.make_problem(
        fpbench.RNNSpec(cell=cell, input_size=3, hidden_size=8, seq_len=16, batch=2, dtype=dtype)
    )


def test_problem_cannot_change_after_validation():
    p = _small()
    with pytest.raises(TypeError):
        del p.params["bias_hh"]  # a read-only mapping: torch Native ran on its own init
    with pytest.raises(TypeError):
        p.params["bias_hh"] = np.zeros(24, np.float32)
    for array in (p.x, p.h0, *p.params.values()):
        with pytest.raises(ValueError, match="read-only"):
            array[(0,) * array.ndim] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = p.x[:4]


def test_problem_copies_the_callers_arrays():
    p = _small()
    x = np.array(p.x)
    q = fpbench.Problem(p.spec, x, p.h0, p.params)
    x[0, 0, 0] = 99.0  # the caller's array is not the problem's
    assert q.x[0, 0, 0] != 99.0 and x.flags.writeable


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("x", lambda p: p.x[:5], r"Problem.x has shape \(5, 2, 3\), but the spec"),
        ("weight_hh", lambda p: p.params["weight_hh"][:, :7], r"Problem.weight_hh has shape \(24, 7\)"),
        ("h0", lambda p: p.h0.astype("float64"), "Problem.h0 has dtype float64, but the spec needs float32"),
        ("bias_ih", None, r"Problem.params is missing \['bias_ih'\]"),
    ],
    ids=["short-x", "weight_hh-7-columns", "h0-dtype", "missing-bias"],
)
def test_a_changed_problem_is_validated_again(field, value, match):
    """``dataclasses.replace`` (or a new Problem) re-validates: no kernel sees arrays that
    do not match the spec (Numba read past a 7-column weight_hh; JAX accepted a short x)."""
    p = _small()
    params = dict(p.params)
    with pytest.raises(ValueError, match=match):
        if field in ("x", "h0"):
            dataclasses.replace(p, **{field: value(p)})
        elif value is None:
            del params[field]
            dataclasses.replace(p, params=params)
        else:
            params[field] = value(p)
            dataclasses.replace(p, params=params)


def test_lstm_needs_c0_and_the_others_refuse_it():
    p = _small("lstm")
    with pytest.raises(ValueError, match=r"Problem\.c0 is required for cell 'lstm'"):
        dataclasses.replace(p, c0=None)
    q = _small("gru")
    with pytest.raises(ValueError, match=r"Problem\.c0 must be None for cell 'gru'"):
        dataclasses.replace(q, c0=q.h0)


@pytest.mark.parametrize("solver", [fpbench.Sequential(), fpbench.Jacobi(4), fpbench.Newton(3)], ids=str)
def test_non_contiguous_input_is_accepted(target, solver):
    """A transposed view as ``x`` crashed torch ('view size is not compatible')."""
    p = _small(dtype="float64")
    x_view = np.ascontiguousarray(p.x.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert not x_view.flags.c_contiguous
    q = dataclasses.replace(p, x=x_view)
    got = fpbench.solve(q, solver, backend=target)
    np.testing.assert_allclose(got.states, fpbench.solve(p, solver).states, rtol=0, atol=1e-12)


# -- issue 25, item 6: the crashes -----------------------------------------------------------

CELLS = list(fpbench.CELLS)


@pytest.mark.backend("jax")
@pytest.mark.parametrize("op", ["solve", "grad"])
@pytest.mark.parametrize("solver", [fpbench.ELK(4), fpbench.QuasiELK(4, tol=1e-9)], ids=lambda s: s.name)
@pytest.mark.parametrize("cell", CELLS)
def test_jax_damped_solvers_at_one_step(cell, solver, op):
    """T = 1 failed in every cell with an ``associative_scan`` shape error (the smoother's
    gains are empty at T = 1)."""
    pytest.importorskip("jax")
    p = fpbench.make_problem(_one_step(cell))
    if op == "solve":
        got, want = fpbench.solve(p, solver, backend="jax"), fpbench.solve(p, solver)
        np.testing.assert_allclose(got.states, want.states, rtol=0, atol=1e-12)
        assert got.iterations == want.iterations and got.converged == want.converged
    else:
        got, want = fpbench.grad(p, solver, backend="jax"), fpbench.grad(p, solver)
        for name, a in want.arrays().items():
            np.testing.assert_allclose(got.arrays()[name], a, rtol=1e-10, atol=1e-12, err_msg=name)


def _one_step(cell: str) -> fpbench.RNNSpec:
    return fpbench.RNNSpec(cell=cell, seq_len=1, batch=2, hidden_size=3, input_size=2, dtype="float64")


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
@pytest.mark.parametrize("cell", CELLS)
def test_problem_pickles_and_copies(cell, how):
    """``cannot pickle 'mappingproxy'`` broke deepcopy, process pools and multi-process runs."""
    import copy
    import pickle

    p = _small(cell)
    q = {"pickle": lambda: pickle.loads(pickle.dumps(p)), "deepcopy": lambda: copy.deepcopy(p)}.get(
        how, lambda: copy.copy(p)
    )()
    assert q.spec == p.spec
    assert set(q.params) == set(p.params)
    for name in p.params:
        np.testing.assert_array_equal(q.params[name], p.params[name])
        assert q.params[name].dtype == p.params[name].dtype and not q.params[name].flags.writeable
    for a, b in [(q.x, p.x), (q.h0, p.h0), (q.s0, p.s0)]:
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert not q.x.flags.writeable and not q.h0.flags.writeable
    assert (q.c0 is None) == (p.c0 is None) and (q.c0 is None or not q.c0.flags.writeable)
    with pytest.raises(TypeError):
        q.params["weight_hh"] = p.params["weight_hh"]  # still a read-only mapping
    with pytest.raises(ValueError):
        q.x[0, 0, 0] = 1.0
    np.testing.assert_array_equal(fpbench.reference_states(q), fpbench.reference_states(p))


def test_an_unpickled_problem_is_validated_again():
    """A pickle goes through the constructor: arrays that no longer fit the spec are refused."""
    import pickle

    p = _small()
    object.__setattr__(p, "x", np.zeros((2, 2, 3), np.float32))  # as a damaged pickle would hold
    data = pickle.dumps(p)
    with pytest.raises(ValueError, match=r"Problem\.x has shape \(2, 2, 3\)"):
        pickle.loads(data)


def test_problem_goes_through_a_process_pool():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    p = _small(dtype="float64")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        got = pool.submit(fpbench.reference_states, p).result(timeout=120)
    np.testing.assert_array_equal(got, fpbench.reference_states(p))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nested_lists_take_the_spec_dtype(target, dtype):
    """A float64 problem from lists of ints stored int64 and crashed deep in torch and Numba."""
    p = _small(dtype=dtype)
    ints = np.rint(p.x * 3).astype(np.int64)
    q = fpbench.Problem(
        p.spec,
        ints.tolist(),
        tuple(map(tuple, p.h0.tolist())),
        {k: v.tolist() for k, v in p.params.items()},
    )
    for a in [q.x, q.h0, *q.params.values()]:
        assert a.dtype == np.dtype(dtype) and not a.flags.writeable
    np.testing.assert_array_equal(q.x, ints.astype(dtype))
    np.testing.assert_array_equal(q.params["weight_hh"], p.params["weight_hh"])
    got = fpbench.solve(q, fpbench.Sequential(), backend=target)
    assert got.states.dtype == np.dtype(dtype) and not got.diverged
    want = fpbench.reference_states(q)
    np.testing.assert_allclose(got.states, want, atol=1e-5 if dtype == "float32" else 1e-12)


def _cli(argv: list[str], **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fpbench.cli", *argv], cwd=ROOT, env=_env(), stderr=subprocess.PIPE, **popen
    )


TINY_ARGS = ["--seq-len", "4", "--hidden", "3", "--input-size", "2", "--batch", "2"]
COMMANDS = {
    "info": ["info"],
    "solve": ["solve", *TINY_ARGS],
    "grad": ["grad", *TINY_ARGS],
    "train": ["train", *TINY_ARGS, "--steps", "2"],
}


@pytest.mark.parametrize("argv", COMMANDS.values(), ids=COMMANDS)
def test_closed_pipe_exits_quietly(argv):
    """``fpbench info | head -1`` raised BrokenPipeError: the reader here closes the pipe
    before the command writes anything, so every write hits the closed pipe."""
    from fpbench.cli import EXIT_CLOSED_PIPE

    proc = _cli(argv, stdout=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == EXIT_CLOSED_PIPE == 141
    assert err == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
@pytest.mark.parametrize("argv", [COMMANDS["info"], COMMANDS["solve"]], ids=["info", "solve"])
def test_full_disk_is_one_line(argv):
    """Standard output on a full device (``/dev/full``) raised an OSError traceback."""
    with open("/dev/full", "w") as full:
        proc = _cli(argv, stdout=full)
        err = proc.stderr.read().decode()
        status = proc.wait(timeout=300)
    assert status == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        "fpbench: error: [Errno 28] cannot write to standard output: No space left on device"
    )


def test_full_disk_on_a_file_names_it(monkeypatch, capsys):
    """An output file that cannot be written: one line with the errno and the file."""
    import errno

    import fpbench.cli as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/reports/x/index.html")

    monkeypatch.setattr(cli, "cmd_info", full)
    assert cli.main(["info"]) == cli.EXIT_OUTPUT_ERROR == 1
    err = capsys.readouterr().err
    assert err == "fpbench: error: [Errno 28] No space left on device: '/reports/x/index.html'\n"


@pytest.mark.parametrize("lr", [1e30, np.float32(1e30)], ids=["float", "np.float32"])
def test_huge_learning_rate_diverges(lr):
    """It raised "cotangent contains NaN or Inf", about a cotangent the user never passed."""
    s = fpbench.RNNSpec(cell="gru", input_size=2, hidden_size=4, seq_len=8, batch=4)
    with pytest.warns(fpbench.DivergenceWarning, match="training diverged"):
        r = fpbench.train(s, fpbench.Sequential(), steps=6, lr=lr)
    assert r.diverged and np.isfinite(r.losses[0]) and np.isnan(r.train_loss)


NUMPY_SCALARS = {
    "train-lr-float32": lambda: fpbench.train(
        _tiny_spec(), fpbench.Sequential(), steps=1, lr=np.float32(1e-2)
    ),
    "train-lr-float64": lambda: fpbench.train(
        _tiny_spec(), fpbench.Sequential(), steps=1, lr=np.float64(1e-2)
    ),
    "train-lr-int64": lambda: fpbench.train(_tiny_spec(), fpbench.Sequential(), steps=1, lr=np.int64(1)),
    "train-steps-seed": lambda: fpbench.train(
        _tiny_spec(), fpbench.Sequential(), steps=np.int32(2), seed=np.uint8(3)
    ),
    "solve-repeats": lambda: fpbench.timed_solve(_tiny_problem(), fpbench.Jacobi(2), repeats=np.int64(2)),
    "grad-repeats": lambda: fpbench.timed_grad(_tiny_problem(), fpbench.Jacobi(2), repeats=np.int32(2)),
    "solver-fields": lambda: fpbench.solve(
        _tiny_problem(), fpbench.ELK(np.int64(3), tol=np.float32(1e-3), damping=np.float64(0.5))
    ),
    "chunked-fields": lambda: fpbench.solve(
        _tiny_problem(), fpbench.Chunked(np.int16(2), chunks=np.int64(2), overlap=np.uint8(1))
    ),
    "spec-sizes": lambda: fpbench.make_problem(
        fpbench.RNNSpec(
            hidden_size=np.int32(2),
            input_size=np.int64(2),
            seq_len=np.int16(3),
            batch=np.uint8(1),
            contraction=np.float32(0.5),
            seed=np.int64(4),
        )
    ),
    "lyapunov-steps": lambda: fpbench.lyapunov(_tiny_problem(), steps=np.int64(2), seed=np.int64(1)),
    "truncated-k": lambda: fpbench.truncated_states(_tiny_problem(), np.int64(2)),
}


def _tiny_spec() -> fpbench.RNNSpec:
    return fpbench.RNNSpec(cell="gru", input_size=2, hidden_size=3, seq_len=4, batch=2)


def _tiny_problem() -> fpbench.Problem:
    return fpbench.make_problem(_tiny_spec())


@pytest.mark.parametrize("call", NUMPY_SCALARS.values(), ids=NUMPY_SCALARS)
def test_numpy_scalars_are_accepted_everywhere(call):
    """``lr=np.float32(...)`` and ``repeats=np.int64(...)`` were rejected."""
    assert call() is not None


def test_numpy_scalars_are_stored_as_python_numbers():
    r = fpbench.train(_tiny_spec(), fpbench.Sequential(), steps=1, lr=np.float32(0.5), seed=np.int64(2))
    assert type(r.lr) is float and r.lr == 0.5 and type(r.seed) is int and r.seed == 2


BOOLS = {
    "train-lr": lambda: fpbench.train(_tiny_spec(), fpbench.Sequential(), steps=1, lr=True),
    "train-steps": lambda: fpbench.train(_tiny_spec(), fpbench.Sequential(), steps=True),
    "train-seed": lambda: fpbench.train(_tiny_spec(), fpbench.Sequential(), steps=1, seed=np.bool_(True)),
    "repeats": lambda: fpbench.timed_solve(_tiny_problem(), fpbench.Jacobi(2), repeats=True),
    "max_iters": lambda: fpbench.Jacobi(True),
    "truncated-k": lambda: fpbench.truncated_states(_tiny_problem(), True),
}


@pytest.mark.parametrize("call", BOOLS.values(), ids=BOOLS)
def test_bools_are_still_not_numbers(call):
    with pytest.raises(ValueError, match="must be"):
        call()


@pytest.mark.parametrize("cell", ["elman", "elman-T1"])
def test_lyapunov_at_contraction_zero_is_minus_inf(cell):
    """Elman with W_hh = 0 forgets its state in one step: the exponent is -inf (it was NaN)."""
    T = 1 if cell == "elman-T1" else 6
    p = fpbench.make_problem(
        fpbench.RNNSpec(cell="elman", contraction=0.0, seq_len=T, batch=2, hidden_size=3)
    )
    assert fpbench.lyapunov(p) == -math.inf


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_lyapunov_at_contraction_zero_gated_cells_are_finite(cell):
    """Their state map keeps a gated copy of the state, so the exponent stays finite."""
    p = fpbench.make_problem(fpbench.RNNSpec(cell=cell, contraction=0.0, seq_len=6, batch=2, hidden_size=3))
    lam = fpbench.lyapunov(p)
    assert math.isfinite(lam) and lam < 0


@pytest.mark.parametrize(
    ("lam", "word"),
    [
        (-math.inf, "contractive"),
        (-0.5, "contractive"),
        (0.0, "neutral"),
        (0.3, "chaotic"),
        (math.nan, "undefined"),
    ],
    ids=["-inf", "negative", "zero", "positive", "nan"],
)
def test_lyapunov_verdict(lam, word):
    from fpbench.lyapunov import verdict

    assert verdict(lam) == word


def test_cli_never_calls_contraction_zero_chaotic(capsys):
    from fpbench.cli import main

    argv = ["solve", "--cell", "elman", "--contraction", "0", *TINY_ARGS]
    assert main(argv) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("lyapunov:"))
    assert "lambda_max=-inf" in line and "contractive" in line and "chaotic" not in line
