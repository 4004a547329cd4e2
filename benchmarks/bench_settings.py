"""The run's settings, recorded with every result: thread counts and the grid.

``asv run --python=same`` (the sweep) ignores asv.conf.json's ``matrix``, so environment
variables set there would be neither applied nor recorded; these tracks record what the
benchmark processes actually saw instead, one value per commit and machine.
"""

from __future__ import annotations

import os

from . import common, grids, sweep_state

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "FPBENCH_THREADS")


class Settings:
    """``track_setting``: each thread variable's value (n/a when unset), ``cpu_count``
    (``os.cpu_count()``) and ``FPBENCH_GRID`` as its index in ``grids.GRID_NAMES``
    (append-only: 0 quick, 1 default, 2 full)."""

    params = ((*THREAD_VARS, "cpu_count", grids.GRID_ENV),)
    param_names = ("setting",)
    rounds = 1

    def setup(self, setting):
        sweep_state.tick()
        if setting == "cpu_count":
            self.value = os.cpu_count()
        elif setting == grids.GRID_ENV:
            self.value = grids.GRID_NAMES.index(common.GRID.name)
        else:
            raw = os.environ.get(setting, "").strip()
            try:
                self.value = int(raw.split(",")[0])  # OMP_NUM_THREADS may list nested levels
            except ValueError:
                raise NotImplementedError(f"{setting} is unset or not a number: {raw!r}") from None

    def track_setting(self, setting):
        return self.value

    track_setting.unit = "value"
