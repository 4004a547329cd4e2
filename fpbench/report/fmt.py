"""How the report prints a number: one function per kind of quantity, used by every table,
text and figure label of the report, so that each kind reads the same everywhere.

- a count, a shape or any whole number prints as an integer: ``2048``, never ``2048.0``;
- any other number prints with 3 significant figures: ``0.159``, ``12.3``, ``1230``;
- a time with its unit: ``22.1 ms``; memory in binary units: ``512 MiB``;
- a speedup or a ratio with ``×``: ``0.352×``;
- an error (against the exact states or gradient) in scientific notation with 2
  significant figures: ``2.3e-07``; a gap (a signed difference of two losses) in scientific
  notation with 3: ``2.32e-11``, ``-1.16e-10``;
- a loss with 3 significant figures, in scientific notation when small: ``0.0177``,
  ``4.56e-05``;
- a missing number prints as ``—``.

Every function takes anything pandas may hold (``None``, NaN, numpy scalars, a string that
is not a number) and returns a string; a value that is not a number comes back as text.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"
"""What a missing number prints as."""

SIG = 3
"""Significant figures of every number that is not an integer nor an error."""


def _float(x: Any) -> float | None:
    """``x`` as a float, or None when it is missing or not a number (a bool is not one)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _text(x: Any) -> str:
    return MISSING if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)


def _round_sig(v: float, sig: int) -> float:
    if v == 0 or not math.isfinite(v):
        return v
    return round(v, sig - 1 - math.floor(math.log10(abs(v))))


def number(x: Any, sig: int = SIG) -> str:
    """A whole number as an integer (``2048``), any other with ``sig`` significant figures:
    plain between 0.0001 and 100000 (``0.0177``, ``12.3``, ``1230``), scientific outside
    (``4.56e-05``, ``1.23e+06``)."""
    v = _float(x)
    if v is None:
        return _text(x)
    if not math.isfinite(v):
        return "∞" if v > 0 else "-∞"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    r = _round_sig(v, sig)
    if 1e-4 <= abs(r) < 1e5:
        if abs(r) >= 10 ** (sig - 1):  # 1234.5 -> 1230: no decimals left to show
            return str(int(r))
        return f"{r:.{sig}g}"
    return f"{v:.{sig - 1}e}"


def integer(x: Any) -> str:
    """A count or a shape (T, H, B, steps): ``2048``; a non-integer value falls back to :func:`number`."""
    return number(x)


def seconds(s: Any) -> str:
    """A time with its unit and 3 significant figures: ``1.23 s``, ``22.1 ms``, ``450 µs``, ``80 ns``."""
    v = _float(s)
    if v is None:
        return _text(s)
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(v) >= scale:
            return f"{number(v / scale)} {unit}"
    return f"{number(v / 1e-9)} ns"


def mebibytes(b: Any) -> str:
    """A memory size in bytes with its binary unit: ``512 MiB``, ``23.5 GiB``."""
    v = _float(b)
    if v is None:
        return _text(b)
    for scale, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(v) >= scale:
            return f"{number(v / scale)} {unit}"
    return f"{number(v)} B"


def speedup(x: Any) -> str:
    """A speedup or a ratio: ``0.352×``, ``12.3×``."""
    v = _float(x)
    return _text(x) if v is None else f"{number(v)}×"


ratio = speedup
"""A ratio of two times or counts (``1.1×``): printed as a speedup."""


def error(x: Any) -> str:
    """An error against the exact answer: ``2.3e-07`` (``0`` for an exact one)."""
    v = _float(x)
    if v is None:
        return _text(x)
    return "0" if v == 0 else f"{v:.1e}"


def loss(x: Any) -> str:
    """A loss: 3 significant figures, in scientific notation below 0.0001 (``0.0177``, ``4.56e-05``)."""
    return number(x)


def gap(x: Any) -> str:
    """A signed difference of two losses, in scientific notation so its size shows: ``2.32e-11``."""
    v = _float(x)
    if v is None:
        return _text(x)
    return "0" if v == 0 else f"{v:.{SIG - 1}e}"


def signed(x: Any) -> str:
    """A number whose sign matters (an exponent): ``+0.105``, ``-0.693``."""
    v = _float(x)
    if v is None:
        return _text(x)
    out = number(v)
    return out if out.startswith("-") else "+" + out


def cell(value: Any) -> str:
    """A table cell: a float as :func:`number` (so no table prints a raw float), anything
    else as its text, a missing value as ``—``."""
    if value is None or isinstance(value, bool):
        return MISSING if value is None else str(value)
    if isinstance(value, float):  # numpy's float64 is one
        return number(value)
    return str(value)


__all__ = [
    "MISSING",
    "cell",
    "error",
    "gap",
    "integer",
    "loss",
    "mebibytes",
    "number",
    "ratio",
    "seconds",
    "signed",
    "speedup",
]


def fixed(frame: Any, symbols: dict[str, str]) -> str:
    """What a section held fixed: ``"T = 1024, B = 8"`` for each distinct row of the columns
    ``symbols`` names (column -> symbol) in the DataFrame ``frame``, comma-separated."""
    rows = frame[list(symbols)].drop_duplicates().itertuples(index=False)
    return ", ".join(
        ", ".join(f"{s} = {number(v)}" for s, v in zip(symbols.values(), row, strict=True)) for row in rows
    )
