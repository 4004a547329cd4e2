"""The dense vs diagonal cells section (fpbench/report/diag_section.py) from a synthetic tidy
frame shaped like the loader's rows of ``DiagNewton`` results."""

import itertools

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("seaborn")

from fpbench.report import analysis
from fpbench.report.diag_section import TITLE, diag_section, diag_speedups, solver_sentence
from fpbench.report.figure_files import FigureFiles
from fpbench.report.output import OutputFolder
from fpbench.report.page import Image, Table, Text

BASE = dict(
    machine="m", commit="abcdef12", date=pd.Timestamp("2026-01-01"), device="cpu", group="DiagNewton",
    metric="time_solve", unit="seconds", seq_len=1024.0, batch=8.0, max_iters="tol", max_abs_error=1e-6,
)  # fmt: skip
SEQUENTIAL = {"gru": 1e-3, "gru_diag": 2e-4}
"""Sequential seconds per unit of H: the diagonal cell's loop is cheaper."""


def newton_seconds(cell: str, h: int) -> float:
    """Dense: O(H^3) per step, losing ever more with H; diagonal: O(H), a flat ratio to the
    sequential loop, winning from H = 32 on."""
    return 2e-5 * h**3 if cell == "gru" else (2e-4 * h * (1.5 if h == 8 else 0.8))


def frame(backends=("numba",), diag_status="ok") -> pd.DataFrame:
    rows = []
    for backend, cell, solver, h in itertools.product(
        backends, ("gru", "gru_diag"), ("sequential", "newton", "quasi_newton"), (8, 32, 128)
    ):
        t = SEQUENTIAL[cell] * h if solver == "sequential" else newton_seconds(cell, h)
        if solver == "quasi_newton":
            t *= 1.2
        diag_na = cell == "gru_diag" and (backend == "torch" or diag_status != "ok")
        rows.append(
            dict(
                BASE, target=f"{backend}:cpu", backend=backend, cell=cell, solver=solver,
                hidden_size=float(h), value=np.nan if diag_na else t, q25=np.nan, q75=np.nan,
                status="n/a" if diag_na else "ok",
                reason="backend does not support cell 'gru_diag'" if diag_na else "",
            )
        )  # fmt: skip
    return pd.DataFrame(rows)


def test_speedups_pair_each_diagonal_cell_with_its_dense_cell():
    sp = diag_speedups(frame()).set_index(["cell", "solver", "hidden_size"])
    assert sp.loc[("gru_diag", "newton", 32.0), ["pair", "recurrence"]].tolist() == ["gru", "diagonal"]
    assert sp.loc[("gru", "newton", 32.0), ["pair", "recurrence"]].tolist() == ["gru", "dense"]
    want = SEQUENTIAL["gru_diag"] * 32 / newton_seconds("gru_diag", 32)
    assert sp.loc[("gru_diag", "newton", 32.0), "speedup"] == pytest.approx(want)


def test_sentence_says_where_newton_wins_on_diagonal_cells_only():
    sp = diag_speedups(frame())
    text = solver_sentence(sp, "numba", "newton")
    assert text.startswith("**`numba` newton**: wins on diagonal cells where the dense cell does not:")
    assert "gru_diag at H = 32 (1.25×; gru " in text and "gru_diag at H = 128 (1.25×;" in text
    assert "gru_diag at H = 8" not in text.split("Against H")[0]  # 0.667×: no win there
    # the trend in H, from the data: flat-ish on the diagonal cell, falling on the dense one
    assert "gru_diag 0.667× at H = 8 → 1.25× at H = 128 (×1.88; time ×8.53)" in text
    assert "gru 0.781× at H = 8 → 0.00305× at H = 128 (×0.00391; time ×4096)" in text


def test_sentence_names_the_closest_point_where_nothing_wins():
    f = frame()
    slow = f["solver"].eq("newton") & f["cell"].eq("gru_diag")
    f.loc[slow, "value"] *= 4
    f.loc[slow & f["hidden_size"].eq(128), "value"] *= 2
    text = solver_sentence(diag_speedups(f), "numba", "newton")
    assert "wins nowhere measured on the diagonal cells; closest 0.312× (gru_diag, H = 32)" in text
    assert "against 0.781× at best on the dense cells (gru, H = 8)" in text


def test_section_has_text_figure_and_table(tmp_path):
    section = diag_section(frame(("numba", "torch")), FigureFiles(OutputFolder(tmp_path), None))
    assert section.title == TITLE
    texts = [b.text for b in section.blocks if isinstance(b, Text)]
    assert any("T = 1024, B = 8" in t for t in texts)
    machine = next(t for t in texts if t.startswith("Machine `m`"))
    assert "**`numba` newton**" in machine and "**`numba` quasi_newton**" in machine
    assert "`torch` measured the dense cells only" in machine and "`torch` newton" not in machine
    (image,) = [b for b in section.blocks if isinstance(b, Image)]
    assert (tmp_path / image.path).is_file()
    (table,) = [b.frame for b in section.blocks if isinstance(b, Table)]
    assert list(table.columns[-3:]) == ["H = 8", "H = 32", "H = 128"]
    row = table[table["backend"].eq("numba") & table["solver"].eq("newton") & table["cell"].eq("gru_diag")]
    assert row[["H = 8", "H = 32", "H = 128"]].values.tolist() == [["0.667×", "1.25×", "1.25×"]]


def test_a_device_where_nothing_was_measured_gets_no_sentence(tmp_path):
    """A GPU target that is n/a throughout (no GPU on the machine) is not said to have
    "measured the dense cells only": it measured nothing."""
    cuda = frame(("torch",)).assign(device="cuda", target="torch:cuda", status="n/a", value=np.nan)
    section = diag_section(pd.concat([frame(), cuda]), FigureFiles(OutputFolder(tmp_path), None))
    texts = [b.text for b in section.blocks if isinstance(b, Text)]
    assert any(t.startswith("Machine `m`, cpu.") for t in texts)
    assert not any(t.startswith("Machine `m`, cuda.") for t in texts), texts


def test_section_is_absent_without_diagonal_cell_results(tmp_path):
    figs = FigureFiles(OutputFolder(tmp_path), None)
    assert diag_section(frame(diag_status="n/a"), figs).blocks == []  # every diagonal solve n/a
    dense = frame()
    assert diag_section(dense[dense["cell"].eq("gru")], figs).blocks == []
    assert diag_section(dense.iloc[:0], figs).blocks == []
    assert not list((tmp_path / "figures").glob("*.png"))


def test_headline_counts_the_diagonal_cells_as_a_family_of_their_own():
    sp = analysis.family_speedups(frame())
    assert set(sp["family"]) == {"dense vs diagonal cells"}
    head = analysis.headline(sp).set_index(["cell", "solver"])
    assert head.loc[("gru_diag", "newton"), "points won"] == "2 of 3"
    assert head.loc[("gru", "newton"), "points won"] == "0 of 3"


@pytest.mark.parametrize(("low", "high"), [(0.2, 1.4), (0.004, 1.3)])
def test_log_axes_print_plain_tick_labels(low, high):
    """The report draws with ``text.parse_math`` off, so matplotlib's log tick labels
    (``$\\mathdefault{10^{-1}}$``) printed as raw mathtext in every log-y figure; now plain
    numbers, minor ticks labelled where the axis spans less than a decade."""
    import matplotlib
    import matplotlib.pyplot as plt

    from fpbench.report import figures

    sp = diag_speedups(frame())
    sp = sp[sp["solver"].eq("newton") & sp["cell"].eq("gru_diag")]
    sp = sp.assign(speedup=np.geomspace(low, high, len(sp)))
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = figures.speedup_against(sp, "hidden_size", "t", row="solver", col="cell")
        fig.canvas.draw()
        (ax,) = fig.axes
        major = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        minor = [t.get_text() for t in ax.get_yticklabels(minor=True) if t.get_text()]
    plt.close(fig)
    assert major and not any("$" in t or "mathdefault" in t for t in major + minor)
    assert "1" in major and ("0.1" in major or "0.01" in major)
    assert bool(minor) == (high / low < 10)
    if minor:
        assert "0.2" in minor
