"""No side effects on import or on a query: importing the backends and asking what is
available leaves the environment and torch's thread count as the caller had them; the
thread settings are applied when the backends are used, and still take effect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WATCHED = ("XLA_FLAGS", "PJRT_NPROC", "OPENBLAS_THREAD_TIMEOUT")

CODE = """
import json, os, sys
watched = {watched!r}
snap = lambda: {{k: os.environ.get(k) for k in watched}}
out = {{"before": snap()}}
import torch
torch.set_num_threads(2)
import fpbench
for name in ("backends.torch", "backends.jax", "backends.numba"):
    try:
        __import__(name)
    except ImportError:
        pass
out["after_import"] = snap()
out["available"] = sorted(fpbench.available_backends())
out["after_query"] = snap()
out["torch_threads"] = torch.get_num_threads()
if "jax" in out["available"]:
    out["jax_threads"] = fpbench.get_backend("jax").info()["jax_threads"]
out["after_info"] = snap()
print(json.dumps(out))
"""


def test_import_and_available_backends_change_nothing():
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if k not in WATCHED}
    env.update(FPBENCH_THREADS="1", PYTHONPATH=str(REPO), FPBENCH_BACKENDS="")
    proc = subprocess.run(
        [sys.executable, "-c", CODE.format(watched=WATCHED)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    unset = dict.fromkeys(WATCHED)
    assert out["before"] == out["after_import"] == out["after_query"] == out["after_info"] == unset
    assert out["torch_threads"] == 2  # available_backends() left torch's thread count alone
    if "jax" in out["available"]:  # and yet fpbench's thread count reached XLA's client
        assert out["jax_threads"] == "1"
