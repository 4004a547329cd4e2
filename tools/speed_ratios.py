"""Print the speed ratios the backends are held to, measured side by side in one process.

    python tools/speed_ratios.py [--repeats 15] [--seq-len 4096]

Every ratio compares callables timed in interleaved rounds (A, B, A, B, ...) so that
machine noise hits both alike; figures are medians. The ratios:

1. ``jacobi/floor``: one Jacobi iteration (``Jacobi(k)`` time / k) over the backend's
   ``iteration_floor`` (one batched product + the cell's elementwise work, in that
   framework alone). Target <= 1.5.
2. ``numba seq / torch.nn``: the Numba sequential solver over ``torch.nn.RNN/GRU``
   (oneDNN) on CPU. Target <= 1.5 for H <= 128.
3. ``numba 1 thread / 2 threads``: the Numba Newton and QuasiNewton scans with one
   thread over two. Above 1 means the second core is used.

Every timed configuration is first checked against the NumPy reference; a failing
check prints FAILED instead of a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import fpbench
from fpbench.testing import check_close


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, timed in interleaved rounds after one warm-up."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def gated(problem: fpbench.Problem, solver: fpbench.Solver, target: str) -> Callable[[], object]:
    """The prepared callable of ``solver`` on ``target``, after checking its answer."""
    impl, device = fpbench.registry.resolve(target)
    prepared = impl.prepare(problem, solver, device)
    states, _ = prepared.to_host(prepared.run())
    expected = fpbench.solve(problem, solver, backend="numpy").states if solver.iterative else None
    if expected is None:
        expected = fpbench.reference_states(problem)
    ok, msg = check_close(f"{target} {solver}", states, expected, problem.spec.dtype)
    if not ok:
        raise AssertionError(msg)
    return prepared.run


def spec(cell: str, hidden: int, seq_len: int) -> fpbench.RNNSpec:
    return fpbench.RNNSpec(cell=cell, input_size=32, hidden_size=hidden, seq_len=seq_len, batch=8)


def jacobi_vs_floor(args: argparse.Namespace) -> None:
    k = 16
    print(f"\n1. one Jacobi iteration / iteration floor (T={args.seq_len}, B=8, I=32, float32, k={k})")
    print(f"{'backend':8s} {'cell':6s} {'H':>4s} {'iter ms':>9s} {'floor ms':>9s} {'ratio':>6s}")
    for name in ("torch", "jax", "numba"):
        if name not in fpbench.available_backends():
            print(f"{name:8s} unavailable")
            continue
        for cell in ("elman", "gru"):
            for hidden in (64, 128):
                problem = fpbench.make_problem(spec(cell, hidden, args.seq_len))
                try:
                    fns = {
                        "jacobi": gated(problem, fpbench.Jacobi(max_iters=k), f"{name}:cpu"),
                        "floor": fpbench.get_backend(name).iteration_floor(problem, "cpu"),
                    }
                except AssertionError as e:
                    print(f"{name:8s} {cell:6s} {hidden:4d} FAILED {e}")
                    continue
                t = interleaved(fns, args.repeats)
                it = t["jacobi"] / k
                print(
                    f"{name:8s} {cell:6s} {hidden:4d} {it * 1e3:9.3f} {t['floor'] * 1e3:9.3f} "
                    f"{it / t['floor']:6.2f}"
                )


def numba_vs_torch(args: argparse.Namespace) -> None:
    print(f"\n2. numba sequential / torch.nn native, CPU (T={args.seq_len}, B=8, I=32, float32)")
    print(f"{'cell':6s} {'H':>4s} {'numba ms':>9s} {'torch ms':>9s} {'ratio':>6s}")
    for cell in ("elman", "gru"):
        for hidden in (32, 64, 128):
            problem = fpbench.make_problem(spec(cell, hidden, args.seq_len))
            fns = {
                "numba": gated(problem, fpbench.Sequential(), "numba:cpu"),
                "torch": gated(problem, fpbench.Native(), "torch:cpu"),
            }
            t = interleaved(fns, args.repeats)
            print(
                f"{cell:6s} {hidden:4d} {t['numba'] * 1e3:9.3f} {t['torch'] * 1e3:9.3f} "
                f"{t['numba'] / t['torch']:6.2f}"
            )


def numba_threads(args: argparse.Namespace) -> None:
    import numba

    print(f"\n3. numba scans, 1 thread / 2 threads (T={args.seq_len}, B=8, I=32, float32, 4 iterations)")
    print(f"{'solver':13s} {'cell':6s} {'H':>4s} {'1 thr ms':>9s} {'2 thr ms':>9s} {'ratio':>6s}")
    cases = [(fpbench.Newton(4), 16), (fpbench.Newton(4), 32), (fpbench.QuasiNewton(4), 64)]
    for solver, hidden in cases:
        for cell in ("elman", "gru"):
            run = gated(fpbench.make_problem(spec(cell, hidden, args.seq_len)), solver, "numba:cpu")

            def with_threads(n: int, run=run) -> Callable[[], object]:
                def call() -> object:
                    numba.set_num_threads(n)
                    return run()

                return call

            t = interleaved({"1": with_threads(1), "2": with_threads(2)}, args.repeats)
            numba.set_num_threads(2)
            print(
                f"{solver.name:13s} {cell:6s} {hidden:4d} {t['1'] * 1e3:9.3f} {t['2'] * 1e3:9.3f} "
                f"{t['1'] / t['2']:6.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--only", choices=["floor", "numba-torch", "threads"], default=None)
    args = parser.parse_args()
    steps = {"floor": jacobi_vs_floor, "numba-torch": numba_vs_torch, "threads": numba_threads}
    for name, step in steps.items():
        if args.only in (None, name):
            step(args)


if __name__ == "__main__":
    main()
