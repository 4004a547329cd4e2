"""The PyTorch backend (``"torch"``): every solver for every cell, on ``cpu`` and ``cuda``.
Solvers are chosen by their traits (``kind``, ``transition``, ``damping``), never by class
or name.

Modules, one concern each:

- :mod:`.backend`: :class:`TorchBackend` (prepare a solve, a gradient, the iteration floor;
  threads, the IEEE float32 guard, the copy to the host).
- :mod:`.kernels`: the cells' kernels (the shared cell maths and hand-tuned overrides) and
  the cell's ``torch.nn`` module.
- :mod:`.scan`: parallel scans of linear recurrences, in place and functional.
- :mod:`.kalman`: ELK's damped step, a parallel Kalman filter and smoother.
- :mod:`.forward`: the forward solves, their buffers and the device-side stopping rule
  (the in-place fast path: dense cells).
- :mod:`.shared_solve`: the forward solves of the diagonal cells, through the shared layer.
- :mod:`.grad`: the gradient programs (BPTT, autograd, unrolled, implicit).
- :mod:`.chunked`: Chunked, forward and gradients, over the ``torch.nn`` module (a cell
  without one, such as the diagonal cells: a loop of the shared cell step).
- :mod:`.distributed`: the sharded solve over ``torch.distributed`` ranks.
"""

from .backend import TorchBackend

__all__ = ["TorchBackend"]
