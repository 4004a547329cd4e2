"""The solver algorithms, written once over a framework's primitives (:class:`Ops`).

- :mod:`.ops`: :class:`Ops`, what a framework provides (its array namespace, a linear
  solve and an associative scan), and the recurrent weights' layouts (:class:`Recurrent`);
- :mod:`.structured`: the Jacobian from a cell's structured form (``J s``, ``J``, ``diag J``);
- :mod:`.linear`: affine composition, the linear recurrence, ELK's Kalman smoother;
- :mod:`.iteration`: one iteration of every iterative solver by its traits, the residual
  and the stopping rule;
- :mod:`.adjoint`: the implicit backward's adjoint and the parameter gradients;
- :mod:`.shard`: the sharded solve's updates, over an engine's collectives (:class:`shard.Comm`).

JAX runs these as they are; torch runs them in its differentiable paths (the gradients,
``backends/torch/grad.py``) and keeps in-place versions for its forward solve
(``backends/torch/forward.py``, ``scan.py``, ``kalman.py``: the last runs the shared filter
and smoother gains, then its in-place scan), tested against these; those are dense-only, so
torch's diagonal cells run these algorithms for their forward solves too
(``backends/torch/shared_solve.py``). Numba keeps fused kernels.
"""

from .ops import Ops, Recurrent

__all__ = ["Ops", "Recurrent"]
