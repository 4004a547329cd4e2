"""Print the speed ratios the backends are held to, each side measured in its own process.

    python tools/speed_ratios.py [--rounds 3] [--repeats 10] [--seq-len 4096] [--only floor]
                                 [--backends torch,jax,numba] [--against OTHER_CHECKOUT]

Frameworks in one process disturb each other (torch's and Numba's OpenMP thread pools
spin-wait for work and take the cores from the other), so every measurement runs in a
fresh worker process (this script with ``--worker``), and the two sides of a ratio are
measured in alternating workers, round after round, so that machine noise hits both
alike. A worker times ``--repeats`` calls after one warm-up and reports their median;
the figure is the median over ``--rounds`` workers. The ratios:

1. ``floor``: one Jacobi iteration (``Jacobi(k)`` time / k) over the backend's
   ``iteration_floor`` (one batched product + the cell's elementwise work, in that
   framework alone). Target <= 1.5.
2. ``numba-torch``: the Numba sequential solver over ``torch.nn.RNN/GRU`` (oneDNN) on CPU.
   Target <= 1.5 for H <= 128.
3. ``threads``: the Numba Newton and quasi-Newton scans with one thread over two. Above 1
   means the second core is used.
4. ``grad-bptt``: the Numba ``Sequential`` gradient (forward + hand-written BPTT) over
   torch's autograd through ``torch.nn.RNN/GRU`` (``Native``), both passes. Target <= 1.5
   for H <= 128.
5. ``newton-backward``: Newton's implicit backward (one reverse scan) over its own forward
   solve, per backend: ``(grad - forward) / forward``, both measured. Target <= 1.5.
6. ``unrolled``: the whole gradient (forward + backward) with ``backward="unrolled"`` over
   the same with ``"implicit"``, the linearising solvers to tolerance, per backend: what
   differentiating through the iterations costs over one adjoint solve (ELK and quasi-ELK
   on Numba only: autograd through their smoothers to tolerance runs for minutes). No target.
7. ``against`` (only with ``--against DIR``): every solver's forward solve and gradient in
   this checkout over the same in another checkout of fpbench (say ``git worktree add DIR
   <commit>``), whose workers import fpbench from ``DIR``, GRU at T = ``--seq-len``, B = 8,
   I = 32. Each worker times all of one backend's cases, their calls interleaved; the two
   checkouts' workers alternate. Above 1 means this checkout is slower; the target is
   within 5 %.
8. ``chunked``: the fastest sequential baseline of any backend (Numba's and torch's
   ``Sequential``, ``torch.nn.GRU``, JAX's ``lax.scan``) over the fastest ``Chunked`` configuration of any
   backend, GRU, float32, I = H, T in {4096, 16384, 65536}, B in {1, 16}, H in {8, 32, 64}
   (``--chunked-seq-lens`` to change T). Target >= 1.6, with Chunked's max error against
   the float64 states within 2x the sequential solve's. Every candidate is measured at
   every point, all of them in alternating workers; the table prints each one's median.
9. ``numba-layer``: every Numba solver on the ``workqueue`` threading layer (the backend's
   choice) over the same on GNU OpenMP's ``omp`` (Numba's own choice where it finds it),
   GRU, T = ``--seq-len``, B in {1, 16}, H = 16, I = 32, float32. Below 1 means
   ``workqueue`` is faster. Run it on a quiet machine and on a busy one: ``omp``'s threads
   spin while they wait.

Every timed solve is first checked (in its worker) against the NumPy reference, every
timed gradient against the exact float64 gradient; a failing check prints FAILED instead
of a ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

import fpbench
from fpbench.testing import check_close


@dataclass(frozen=True)
class Case:
    """One side of a ratio: ``kind`` is ``"solve"``, ``"grad"`` (forward and backward) or
    ``"floor"``."""

    target: str
    kind: str
    cell: str
    hidden: int
    seq_len: int
    solver: str = "jacobi"
    max_iters: int | None = None
    threads: int | None = None  # FPBENCH_THREADS of the worker
    layer: str | None = None  # NUMBA_THREADING_LAYER of the worker
    tol: float | None = None  # with max_iters: iterate to this tolerance, at most max_iters times
    tree: str | None = None  # the checkout whose fpbench the worker imports (None: this one)
    backward: str = "implicit"  # an iterative solver's backward mode (kind "grad")
    batch: int = 8
    input_size: int | None = None  # None: 32
    chunks: int | None = None  # Chunked's fields (table 8)
    overlap: int | None = None

    @property
    def label(self) -> str:
        """``backend solver`` (with Chunked's chunks and overlap)."""
        extra = f"(P={self.chunks},o={self.overlap},k={self.max_iters})" if self.chunks else ""
        return f"{self.target.split(':')[0]} {self.solver}{extra}"

    def per_call(self) -> float:
        """What the measured time is divided by: k for a ``Jacobi(k)`` against the floor."""
        return float(self.max_iters) if self.kind == "solve" and self.solver == "jacobi" else 1.0


def problem_of(case: Case) -> fpbench.Problem:
    spec = fpbench.RNNSpec(
        cell=case.cell,
        input_size=case.input_size or 32,
        hidden_size=case.hidden,
        seq_len=case.seq_len,
        batch=case.batch,
    )
    return fpbench.make_problem(spec)


def cached(key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute()``, a dict of arrays from the NumPy reference, kept in a temporary folder
    under a hash of ``key`` for the other workers of the same point (every worker checks its
    own answer; only the reference's is reused)."""
    name = hashlib.sha256(key.encode()).hexdigest()[:24]
    path = os.path.join(tempfile.gettempdir(), f"fpbench-oracle-{name}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return dict(f)
    out = compute()
    np.savez(path + ".tmp.npz", **out)
    os.replace(path + ".tmp.npz", path)
    return out


def exact_states(problem: fpbench.Problem) -> np.ndarray:
    """The float64 states ``(T, B, S)``, computed once per problem (:func:`cached`: the NumPy
    recurrence takes seconds at T = 65536)."""
    return cached(f"exact-{problem.spec}", lambda: {"states": fpbench.reference_states(problem)})["states"]


def callable_of(case: Case):
    """The timed callable of ``case``, a solve only after its answer was checked."""
    problem = problem_of(case)
    impl, device = fpbench.registry.resolve(case.target)
    if case.kind == "floor":
        return impl.iteration_floor(problem, device)
    fields = {} if case.backward == "implicit" else {"backward": case.backward}  # (older checkouts)
    if case.chunks:
        fields.update(chunks=case.chunks, overlap=case.overlap)
    solver = (
        fpbench.make_solver(case.solver, case.max_iters, tol=case.tol, **fields)
        if case.max_iters
        else fpbench.make_solver(case.solver)
    )
    if case.kind == "grad":
        from fpbench.testing import check_grad_close  # not in checkouts older than gradients

        got = fpbench.grad(problem, solver, backend=case.target)
        # a budget without tol stops short of the fixed point: its own float64 gradient
        oracle = solver if solver.iterative and solver.tol is None else fpbench.Sequential()
        exact = cached(
            f"grad-{oracle}-{problem.spec}",
            lambda: fpbench.grad(problem.astype("float64"), oracle).arrays(),
        )
        ok, msg = check_grad_close(f"{case.target} {solver}", got.arrays(), exact, "float32")
        if not ok:
            raise AssertionError(msg)
        cotangent = fpbench.default_cotangent(problem.spec)
        return impl.prepare_grad(problem, solver, device, cotangent).run
    prepared = impl.prepare(problem, solver, device)
    states, _ = prepared.to_host(prepared.run())
    states = states[..., : problem.spec.hidden_size]  # h of the full state (h, c for lstm)
    if case.chunks or case.input_size:  # table 8: against the float64 states, error reported
        ok, msg = check_close(f"{case.target} {solver}", states, exact_states(problem), problem.spec.dtype)
        if not ok:
            raise AssertionError(msg)
        return prepared.run, float(np.max(np.abs(states - exact_states(problem))))
    expected = cached(
        f"states-{solver if solver.iterative else 'exact'}-{problem.spec}",
        lambda: {
            "states": fpbench.solve(problem, solver).states
            if solver.iterative
            else fpbench.reference_states(problem)
        },
    )["states"]
    ok, msg = check_close(f"{case.target} {solver}", states, expected, problem.spec.dtype)
    if not ok:
        raise AssertionError(msg)
    return prepared.run


def worker(case: Case, repeats: int) -> None:
    """Print the median seconds of ``repeats`` calls of ``case`` (after one warm-up) as JSON."""
    try:
        fn = callable_of(case)
    except AssertionError as e:
        print(json.dumps({"failed": str(e)}))
        return
    fn, error = fn if isinstance(fn, tuple) else (fn, None)
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    print(json.dumps({"median": statistics.median(samples), "error": error}))


def worker_many(cases: list[Case], repeats: int) -> None:
    """Print, as one JSON list, each case's median seconds over ``repeats`` calls, the cases'
    calls interleaved (call 1 of every case, then call 2, ...) so that drift hits all alike;
    a case whose check fails gives ``{"failed": ...}``, one its backend does not implement
    ``{"na": ...}``."""
    fns: list = []
    for case in cases:
        try:
            fn = callable_of(case)
            fns.append(fn[0] if isinstance(fn, tuple) else fn)
        except AssertionError as e:
            fns.append({"failed": str(e)})
        except NotImplementedError as e:  # fpbench.UnsupportedError: the combination is n/a
            fns.append({"na": str(e)})
    live = [fn for fn in fns if callable(fn)]
    for fn in live:
        fn()  # warm-up
    samples: dict[int, list[float]] = {id(fn): [] for fn in live}
    for _ in range(repeats):
        for fn in live:
            t0 = time.perf_counter()
            fn()
            samples[id(fn)].append(time.perf_counter() - t0)
    print(json.dumps([{"median": statistics.median(samples[id(fn)])} if callable(fn) else fn for fn in fns]))


def run_worker(case: Case, repeats: int) -> dict:
    """One worker process for ``case``: its JSON reply (``median``, ``error``), or
    ``{"failed": message}`` when its check failed or the process exited abnormally."""
    env = dict(os.environ)
    if case.threads is not None:
        env["FPBENCH_THREADS"] = str(case.threads)
    if case.layer is not None:
        env["NUMBA_THREADING_LAYER"] = case.layer
    if case.tree is not None:
        env["PYTHONPATH"] = os.path.abspath(case.tree)
    return _spawn(["--worker", json.dumps(asdict(case))], env, repeats)


def _spawn(mode: list[str], env: dict[str, str], repeats: int) -> Any:
    """Run this script as a worker (``mode``: ``--worker CASE`` or ``--worker-many CASES``)
    and return its JSON reply, or ``{"failed": ...}`` when the process exited abnormally."""
    cmd = [sys.executable, __file__, *mode, "--repeats", str(repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return {"failed": f"worker exited {out.returncode}: {out.stderr[-500:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


AGAINST_SOLVERS: tuple[tuple[str, int | None, int, dict[str, int]], ...] = (
    ("sequential", None, 64, {}),
    ("native", None, 64, {}),
    ("jacobi", 16, 64, {}),
    ("newton", 4, 16, {}),
    ("quasi_newton", 16, 64, {}),
    ("elk", 4, 16, {}),
    ("quasi_elk", 16, 64, {}),
    ("chunked", 1, 64, {"chunks": 8, "overlap": 64}),
)
"""Table 7's solvers: ``(name, iterations, H, Chunked's fields)``, each iterative one run
for exactly that budget (no tol), Chunked as the main job's ``chunked_p8_o64_k1``. Its
gradients are checked against the float64 reference gradient of the same solver."""


def against_cases(backend: str, seq_len: int, tree: str | None) -> list[Case]:
    """Table 7's cases of one backend: every solver's forward solve and gradient (its
    default, implicit, backward), GRU, T = ``seq_len``, B = 8, I = 32, float32."""
    return [
        Case(f"{backend}:cpu", kind, "gru", hidden, seq_len, solver, k, tree=tree, **chunks)
        for solver, k, hidden, chunks in AGAINST_SOLVERS
        for kind in ("solve", "grad")
    ]


def against_table(args: argparse.Namespace, available: list[str]) -> None:
    """Table 7: every solver of every backend, forward and gradient, in this checkout over
    another. Per backend and round, one worker of this checkout and one of the other each
    time all cases (interleaved calls, :func:`worker_many`), alternating; the ratio is of
    the medians over ``--rounds``. A ratio above 1 means this checkout is slower."""
    print(f"\n7. this checkout / {args.against}, forward solve and gradient "
          f"(GRU, T={args.seq_len}, B=8, I=32, float32); ms")  # fmt: skip
    print(f"{'':36s} {'this':>10s} {'other':>10s} {'ratio':>7s}")
    for name in args.backends.split(","):
        if name not in available:
            continue
        sides = {tree: against_cases(name, args.seq_len, tree) for tree in (None, args.against)}
        medians: dict[str | None, list[list[float]]] = {t: [[] for _ in c] for t, c in sides.items()}
        notes: dict[int, str] = {}
        for _ in range(args.rounds):
            for tree, cases in sides.items():
                env = dict(os.environ)
                if tree is not None:
                    env["PYTHONPATH"] = os.path.abspath(tree)
                reply = _spawn(["--worker-many", json.dumps([asdict(c) for c in cases])], env, args.repeats)
                if isinstance(reply, dict):  # the worker itself failed
                    reply = [reply] * len(cases)
                for i, r in enumerate(reply):
                    if "median" in r:
                        medians[tree][i].append(r["median"])
                    else:
                        notes.setdefault(i, "n/a" if "na" in r else "FAILED: " + r["failed"][:200])
        for i, case in enumerate(sides[None]):
            label = f"{name} {case.solver}({case.max_iters or '-'}) H={case.hidden} {case.kind}"
            if i in notes:
                print(f"{label:36s} {notes[i]}")
                continue
            ta, tb = (statistics.median(medians[t][i]) for t in sides)
            print(f"{label:36s} {ta * 1e3:10.3f} {tb * 1e3:10.3f} {ta / tb:7.2f}")


def measure(cases: list[Case], rounds: int, repeats: int) -> list[float | str]:
    """Median over ``rounds`` of each case's worker median, the cases' workers alternating;
    a failed correctness check gives its message instead of a time."""
    medians: list[list[float]] = [[] for _ in cases]
    for _ in range(rounds):
        for i, case in enumerate(cases):
            reply = run_worker(case, repeats)
            if "failed" in reply:
                return ["FAILED: " + reply["failed"]] * len(cases)
            medians[i].append(reply["median"] / case.per_call())
    return [statistics.median(m) for m in medians]


def measure_each(cases: list[Case], rounds: int, repeats: int) -> list[tuple[float | str, float | None]]:
    """``(seconds or failure, max error)`` of every case, measured in alternating workers;
    a failed case does not stop the others (unlike :func:`measure`, whose cases are one
    ratio)."""
    medians: list[list[float]] = [[] for _ in cases]
    out: list[tuple[float | str, float | None]] = [("", None)] * len(cases)
    for _ in range(rounds):
        for i, case in enumerate(cases):
            if out[i][0]:
                continue  # failed before
            reply = run_worker(case, repeats)
            if "failed" in reply:
                out[i] = ("FAILED: " + reply["failed"], None)
                continue
            medians[i].append(reply["median"])
            out[i] = ("", reply.get("error"))
    return [(o[0] or statistics.median(m), o[1]) for o, m in zip(out, medians, strict=True)]


CHUNKED_BASELINES = (
    ("numba:cpu", "sequential"),
    ("torch:cpu", "native"),
    ("torch:cpu", "sequential"),
    ("jax:cpu", "native"),
)
CHUNKED_CANDIDATES = (("numba:cpu", 2, 64), ("numba:cpu", 8, 64), ("torch:cpu", 8, 64), ("jax:cpu", 8, 64))
"""Table 8's contenders: the sequential baselines, and the Chunked configurations
``(target, chunks, overlap)``, each run for one iteration (the overlap-truncated model)."""


def chunked_table(seq_lens: list[int], args: argparse.Namespace) -> None:
    """Table 8 (module docstring): print every point's best baseline, best Chunked, their
    ratio and errors, and every candidate's time; write them as JSON to ``--json``."""
    available = fpbench.available_backends()
    rows = []
    print(
        f"\n8. chunked: best sequential baseline / best Chunked (GRU, float32, I = H, one iteration); ms"
        f"\n{'T':>6s} {'B':>3s} {'H':>3s} {'sequential':>22s} {'ms':>8s} {'chunked':>30s} {'ms':>8s} "
        f"{'speedup':>7s} {'err seq':>8s} {'err chk':>8s}"
    )
    for T in seq_lens:
        for B in (1, 16):
            for H in (8, 32, 64):
                point = dict(cell="gru", hidden=H, seq_len=T, batch=B, input_size=H)
                base = [
                    Case(t, "solve", solver=s, **point) for t, s in CHUNKED_BASELINES if t[:-4] in available
                ]
                cand = [
                    Case(t, "solve", solver="chunked", max_iters=1, chunks=P, overlap=o, **point)
                    for t, P, o in CHUNKED_CANDIDATES
                    if t[:-4] in available
                ]
                got = measure_each(base + cand, args.rounds, args.repeats)
                timed = [
                    (c, t, e) for c, (t, e) in zip(base + cand, got, strict=True) if not isinstance(t, str)
                ]
                best_b = min((x for x in timed if x[0].solver != "chunked"), key=lambda x: x[1], default=None)
                best_c = min((x for x in timed if x[0].solver == "chunked"), key=lambda x: x[1], default=None)
                row = {
                    "seq_len": T, "batch": B, "hidden": H,
                    "cases": [
                        {"case": c.label, "ms": None if isinstance(t, str) else t * 1e3, "error": e,
                         "failed": t if isinstance(t, str) else None}
                        for c, (t, e) in zip(base + cand, got, strict=True)
                    ],
                }  # fmt: skip
                rows.append(row)
                if best_b is None or best_c is None:
                    print(f"{T:6d} {B:3d} {H:3d} no passing baseline or candidate")
                    continue
                row.update(
                    baseline=best_b[0].label, baseline_ms=best_b[1] * 1e3, chunked=best_c[0].label,
                    chunked_ms=best_c[1] * 1e3, speedup=best_b[1] / best_c[1],
                    baseline_error=best_b[2], chunked_error=best_c[2],
                )  # fmt: skip
                print(
                    f"{T:6d} {B:3d} {H:3d} {best_b[0].label:>22s} {best_b[1] * 1e3:8.2f} "
                    f"{best_c[0].label:>30s} {best_c[1] * 1e3:8.2f} {best_b[1] / best_c[1]:7.2f} "
                    f"{best_b[2]:8.1e} {best_c[2]:8.1e}",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "repeats": args.repeats, "rows": rows}, f, indent=1)


def table(title: str, header: str, rows: list[tuple[str, Case, Case]], args: argparse.Namespace) -> None:
    """Print ``a / b`` for each ``(label, a, b)`` row."""
    print(f"\n{title}\n{'':28s} {header}")
    for label, a, b in rows:
        ta, tb = measure([a, b], args.rounds, args.repeats)
        if isinstance(ta, str):
            print(f"{label:28s} {ta}")
        else:
            print(f"{label:28s} {ta * 1e3:10.3f} {tb * 1e3:10.3f} {ta / tb:7.2f}")


TABLES = tuple(
    "floor numba-torch threads grad-bptt newton-backward unrolled against chunked numba-layer".split()
)
"""The tables, by the name ``--only`` picks: 1 to 6, the other checkout's, 8 and 9."""


def _parser() -> argparse.ArgumentParser:
    """The command line (the module docstring describes the tables)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="workers per side of a ratio")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per worker")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--only", choices=TABLES, default=None, help="one table only")
    parser.add_argument(
        "--chunked-seq-lens",
        default="4096,16384,65536",
        help="the sequence lengths of table 8 (comma-separated)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write table 8's measurements to FILE")
    parser.add_argument("--against", metavar="DIR", help="another checkout to compare every solver with")
    parser.add_argument("--backends", default="torch,jax,numba", help="backends of the floor table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-many", help=argparse.SUPPRESS)
    return parser


def floor_table(args: argparse.Namespace, available: dict, T: int, k: int) -> None:
    """Table 1: one Jacobi iteration against the iteration floor, per backend, cell and H."""
    rows = []
    for name in args.backends.split(","):
        if name not in available:
            print(f"{name}: unavailable, skipped")
            continue
        for cell in ("elman", "gru"):
            for hidden in (64, 128):
                solve = Case(f"{name}:cpu", "solve", cell, hidden, T, "jacobi", k)
                rows.append((f"{name} {cell} H={hidden}", solve, replace(solve, kind="floor")))
    table(
        f"1. one Jacobi iteration / iteration floor (T={T}, B=8, I=32, float32, k={k}); ms",
        f"{'iteration':>10s} {'floor':>10s} {'ratio':>7s}",
        rows,
        args,
    )


def numba_vs_torch_nn(kind: str, T: int) -> list[tuple[str, Case, Case]]:
    """Numba ``Sequential`` against torch's ``Native`` (``torch.nn``), per cell and H (tables 2 and 4)."""
    return [
        (f"{cell} H={hidden}", Case("numba:cpu", kind, cell, hidden, T, "sequential"),
         Case("torch:cpu", kind, cell, hidden, T, "native"))
        for cell in ("elman", "gru")
        for hidden in (32, 64, 128)
    ]  # fmt: skip


def threads_table(args: argparse.Namespace, T: int) -> None:
    """Table 3: Numba's parallel scans on one thread against two."""
    rows = []
    for solver, hidden in (("newton", 16), ("newton", 32), ("quasi_newton", 64)):
        for cell in ("elman", "gru"):
            one = Case("numba:cpu", "solve", cell, hidden, T, solver, 4, threads=1)
            rows.append((f"{solver} {cell} H={hidden}", one, replace(one, threads=2)))
    table(
        f"3. numba scans, 1 thread / 2 threads (T={T}, B=8, I=32, float32, 4 iterations); ms",
        f"{'1 thread':>10s} {'2 threads':>10s} {'ratio':>7s}",
        rows,
        args,
    )


def newton_backward_table(args: argparse.Namespace, available: dict, T: int) -> None:
    """Table 5: Newton's implicit backward to tolerance against its forward, per backend."""
    print(f"\n5. Newton (tol) implicit backward / its forward (T={T}, B=8, I=32, float32); ms")
    print(f"{'':28s} {'fwd+bwd':>10s} {'forward':>10s} {'bwd/fwd':>7s}")
    for name in args.backends.split(","):
        if name not in available:
            continue
        for cell, hidden in (("elman", 16), ("gru", 16), ("gru", 32)):
            grad = Case(f"{name}:cpu", "grad", cell, hidden, T, "newton", max_iters=T, tol=1e-4)
            tg, tf = measure([grad, replace(grad, kind="solve")], args.rounds, args.repeats)
            label = f"{name} {cell} H={hidden}"
            if isinstance(tg, str):
                print(f"{label:28s} {tg}")
            else:
                print(f"{label:28s} {tg * 1e3:10.3f} {tf * 1e3:10.3f} {(tg - tf) / tf:7.2f}")


def unrolled_table(args: argparse.Namespace, available: dict, T: int) -> None:
    """Table 6: the unrolled gradient against the implicit one, to tolerance, per backend and solver."""
    rows = []
    for name in args.backends.split(","):
        if name not in available:
            continue
        # autograd through ELK's smoother to tolerance runs for minutes (torch, T = 1024)
        damped = ("elk", "quasi_elk") if name == "numba" else ()
        for solver in ("newton", "quasi_newton", *damped):
            grad = Case(
                f"{name}:cpu", "grad", "gru", 16, T, solver, max_iters=T, tol=1e-4, backward="unrolled"
            )
            rows.append((f"{name} gru {solver} H=16", grad, replace(grad, backward="implicit")))
    table(
        f"6. unrolled / implicit gradient, both passes, to tol 1e-4 (T={T}, B=8, I=32, float32); ms",
        f"{'unrolled':>10s} {'implicit':>10s} {'ratio':>7s}",
        rows,
        args,
    )


def numba_layer_table(args: argparse.Namespace, T: int) -> None:
    """Table 9: Numba's workqueue threading layer against OpenMP, per solver and batch."""
    rows = []
    for batch in (1, 16):
        for solver, k, tol in (("sequential", None, None), ("jacobi", 64, 1e-5), ("newton", 64, 1e-5),
                               ("quasi_newton", 64, 1e-5)):  # fmt: skip
            wq = Case("numba:cpu", "solve", "gru", 16, T, solver, k, tol=tol, batch=batch, layer="workqueue")
            rows.append((f"{solver} B={batch}", wq, replace(wq, layer="omp")))
        chunked = Case("numba:cpu", "solve", "gru", 16, T, "chunked", 1, batch=batch, chunks=8, overlap=64)
        label = f"chunked(8,64,k=1) B={batch}"
        rows.append((label, replace(chunked, layer="workqueue"), replace(chunked, layer="omp")))
    table(
        f"9. numba, workqueue / omp threading layer (GRU, T={T}, H=16, I=32, float32, to tol 1e-5); ms",
        f"{'workqueue':>10s} {'omp':>10s} {'ratio':>7s}",
        rows,
        args,
    )


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.only == "against" and not args.against:
        parser.error("--only against needs --against DIR")
    if args.against and not os.path.isdir(os.path.join(args.against, "fpbench")):
        parser.error(f"--against {args.against}: no fpbench package in that folder")
    if args.worker:
        worker(Case(**json.loads(args.worker)), args.repeats)
        return
    if args.worker_many:
        worker_many([Case(**c) for c in json.loads(args.worker_many)], args.repeats)
        return

    T, k = args.seq_len, 16
    available = fpbench.available_backends()
    if args.only in (None, "floor"):
        floor_table(args, available, T, k)
    if args.only in (None, "numba-torch") and {"numba", "torch"} <= set(available):
        table(
            f"2. numba sequential / torch.nn native, CPU (T={T}, B=8, I=32, float32); ms",
            f"{'numba':>10s} {'torch.nn':>10s} {'ratio':>7s}",
            numba_vs_torch_nn("solve", T),
            args,
        )
    if args.only in (None, "threads") and "numba" in available:
        threads_table(args, T)
    if args.only in (None, "grad-bptt") and {"numba", "torch"} <= set(available):
        table(
            f"4. numba BPTT / torch autograd through torch.nn, both passes (T={T}, B=8, I=32, float32); ms",
            f"{'numba':>10s} {'torch.nn':>10s} {'ratio':>7s}",
            numba_vs_torch_nn("grad", T),
            args,
        )
    if args.only in (None, "newton-backward"):
        newton_backward_table(args, available, T)
    if args.only in (None, "unrolled"):
        unrolled_table(args, available, T)
    if args.against and args.only in (None, "against"):
        against_table(args, available)
    if args.only in (None, "chunked"):
        chunked_table([int(t) for t in args.chunked_seq_lens.split(",")], args)
    if args.only in (None, "numba-layer") and "numba" in available:
        numba_layer_table(args, T)


if __name__ == "__main__":
    main()
