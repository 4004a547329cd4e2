"""The JAX backend (``"jax"``): every solver as one ahead-of-time compiled XLA program.

One module per concern, each importing the one below it:

- :mod:`.runtime`: XLA's threads and clients (on first use), the persistent compilation
  cache, compiling and keeping the programs;
- :mod:`.maths`: ``jax.numpy`` at full precision (the shared cells run in it), the
  parameters' layouts;
- :mod:`.ops`: the primitives the shared solver algorithms (:mod:`backends.shared`) run
  over: the pivoting solve with its own adjoint and ``lax.associative_scan``;
- :mod:`.forward`: Sequential, Native and the iterative solvers under a ``while_loop``;
- :mod:`.grad`: the backward passes (autodiff, unrolled, implicit);
- :mod:`.chunked`: Chunked, forward and backward; :mod:`.sharded`: the solve over a mesh;
- :mod:`.backend`: :class:`JaxBackend` and the choice of program by the solver's traits.
"""

from .backend import JaxBackend

__all__ = ["JaxBackend"]
