"""Gradients: the backward pass through a solve, ``fpbench.grad``.

The loss is ``L = sum(cotangent * states)`` over the returned states ``h_t`` (a
vector-Jacobian product, so any loss reduces to it). ``grad`` returns ``dL/dparams`` (torch
layout), ``dL/dx``, ``dL/dh0`` (and ``dL/dc0`` for ``lstm``), with the diagnostics of the
forward and the backward pass.

Semantics, per solver (DESIGN §1):

- ``Sequential``: BPTT, the adjoint recurrence run backwards in time (exact).
- ``Native``: the framework's autograd through ``torch.nn.RNN/GRU/LSTM`` / ``lax.scan`` (exact).
- iterative, ``backward="unrolled"``: the exact gradient of the iterations that ran (for
  ``Jacobi(k)`` the gradient of the k-truncated model).
- iterative, ``backward="implicit"``: the implicit-function-theorem gradient at the
  returned states: the adjoint ``lambda_t = g_t + J_{t+1}^T lambda_{t+1}`` solved backwards
  in time in parallel, then the parameter gradients as batched products over all t.

Backend contract: :meth:`fpbench.Backend.prepare_grad` returns a ``Prepared`` whose
``to_host`` gives a :class:`GradHost` (host NumPy arrays, full states ``(T, B, S)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GradHost:
    """What a backend's prepared gradient returns to the host (NumPy arrays).

    Attributes:
        states: ``(T, B, S)`` full forward states (``[h, c]`` for ``lstm``).
        residuals: forward residuals, one per iteration that ran (empty for sequential).
        params: ``dL/dparam`` for ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``.
        x: ``(T, B, I)`` ``dL/dx``.
        s0: ``(B, S)`` ``dL/ds0`` (``[dL/dh0, dL/dc0]`` for ``lstm``).
        backward_residuals: residuals of the backward iterations (empty where the backward
            is a direct solve: BPTT, autograd, a reverse scan).
        backward_method: what ran backwards, e.g. ``"bptt"``, ``"autograd"``,
            ``"unrolled"``, ``"implicit: reverse scan"``, ``"implicit: jacobi on the adjoint"``.
    """

    states: np.ndarray
    residuals: np.ndarray
    params: dict[str, np.ndarray]
    x: np.ndarray
    s0: np.ndarray
    backward_residuals: np.ndarray = field(default_factory=lambda: np.empty(0))
    backward_method: str = ""
