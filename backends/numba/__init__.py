"""The Numba backend (``"numba"``, device ``"cpu"``): parallel CPU kernels.

Exports :class:`NumbaBackend` (registered as ``backends.numba:NumbaBackend``). Every solve is
a short Python loop over compiled kernels: per iteration one BLAS product ``(T*B, H) x (H,
gH)`` (``np.dot`` into a preallocated buffer, SciPy's BLAS) and one or two ``prange``
kernels. An iteration costs milliseconds at benchmark sizes and the Python loop a few
microseconds, while separate kernels keep each compile unit small and cacheable
(``cache=True``: asv starts a fresh process per benchmark). ``prepare`` copies the
(read-only) problem into its own buffers (:mod:`.arrays`), allocates every buffer and runs
each kernel once on the real data.

Cells: ``kernels_cells.CELL_IDS`` (elman, gru, lstm and the diagonal gru_diag,
lstm_cifg_diag) is the one table; a cell missing from it raises ``UnsupportedError``. The
state is ``s = h`` or, for lstm and lstm_cifg_diag, ``s = [h, c]`` (``2H``);
``Prepared.to_host`` returns the full states ``(T, B, S)``. A diagonal cell has no recurrent
product (its row function applies the vector ``weight_hh`` elementwise); Newton and ELK
run on its per-unit ``P x P`` Jacobian blocks (``Arrays.transition_shape``), never ``S x
S``; every solver runs it, with both backward modes.

Modules: ``backend`` (the class, threads, host copies), ``arrays`` (the problem laid out
for the kernels), ``forward`` (the solves, by the solver's traits), ``vjp``, ``backward``
and ``backward_unrolled`` (the gradients); the jitted kernels in ``kernels_cells`` (cells,
steps, shared helpers), ``kernels_scan`` (Newton's linearisation and parallel scan),
``kernels_damped`` (ELK's Kalman filter and smoother), ``grad_kernels`` (the backward's) and
``chunked`` (Chunked's iterations). Only ``backend`` is imported with the package: the others
import numba and load once a solve is prepared.
"""

from .backend import NumbaBackend

__all__ = ["NumbaBackend"]
