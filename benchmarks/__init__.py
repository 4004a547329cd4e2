"""fpbench's airspeed-velocity suites (``asv.conf.json`` at the repository root).

Grids live in :mod:`benchmarks.grids`; shared setup and the correctness gate in
:mod:`benchmarks.common`.
"""
