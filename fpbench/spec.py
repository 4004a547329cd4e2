"""The problem specification and the seeded, deterministic problem generator.

Shapes are time-major everywhere: ``x`` is ``(T, B, I)``, states ``(T, B, H)``,
``h0`` ``(B, H)``. Parameters use exactly the layout and names of ``torch.nn.RNN`` /
``torch.nn.GRU`` (single layer), so those modules are an external oracle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from .cells import CELLS, Cell

DTYPES: tuple[str, ...] = ("float32", "float64")


def max_contraction(dtype: str) -> float:
    """The largest ``RNNSpec.contraction`` for ``dtype``: its largest finite number (an entry
    of ``W_hh`` is at most its spectral norm, the contraction, in size)."""
    return float(np.finfo(dtype).max)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"RNNSpec.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class RNNSpec:
    """One RNN evaluation problem.

    Attributes:
        cell: ``"elman"`` (``torch.nn.RNN`` with tanh), ``"gru"`` (``torch.nn.GRU``),
            ``"lstm"`` (``torch.nn.LSTM``), or ParaRNN's diagonal ``"gru_diag"`` and
            ``"lstm_cifg_diag"``: a name in :data:`fpbench.cells.CELLS`.
        input_size: I, features per time step.
        hidden_size: H, state size.
        seq_len: T, number of time steps.
        batch: B, independent sequences.
        dtype: ``"float32"`` or ``"float64"``: the precision backends compute in.
        contraction: rho >= 0, the spectral norm ``W_hh`` is scaled to (for ``gru``
            each of the three gate blocks is scaled to it: a heuristic, since the GRU
            state map's Lipschitz constant also depends on the gates; likewise the four
            blocks of ``lstm``). For the diagonal cells (``gru_diag``, ``lstm_cifg_diag``)
            the same definition: each recurrent vector ``a_g`` is scaled to
            ``max |a_g| = rho``, the spectral norm of ``diag(a_g)``; the peepholes of
            ``lstm_cifg_diag`` are not scaled.
        seed: seed of the NumPy generator that makes every array.

    ``contraction`` is at most :func:`max_contraction` of the dtype (the largest finite
    number in it), so that every weight is finite in the dtype.

    NumPy scalars (``np.int64(8)``, ``np.float32(0.9)``) are stored as Python ``int`` /
    ``float``, and a NumPy dtype (``np.dtype("float32")``, ``np.float32``) as its name, so
    equal specs compare and hash equal.
    """

    cell: str = "gru"
    input_size: int = 32
    hidden_size: int = 64
    seq_len: int = 1024
    batch: int = 8
    dtype: str = "float32"
    contraction: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("input_size", "hidden_size", "seq_len", "batch", "contraction", "seed"):
            value = getattr(self, name)
            if isinstance(value, (np.integer, np.floating)):  # frozen: normalise by setattr
                object.__setattr__(self, name, value.item())
        dt = self.dtype
        if isinstance(dt, np.dtype) or (isinstance(dt, type) and issubclass(dt, np.generic)):
            object.__setattr__(self, "dtype", np.dtype(dt).name)
        if not isinstance(self.cell, str) or self.cell not in CELLS:
            raise ValueError(f"RNNSpec.cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        for name in ("input_size", "hidden_size", "seq_len", "batch"):
            _positive_int(name, getattr(self, name))
        if self.dtype not in DTYPES:
            raise ValueError(f"RNNSpec.dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        c = self.contraction
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
            raise ValueError(f"RNNSpec.contraction must be a finite number >= 0, got {c!r}")
        limit = max_contraction(self.dtype)
        if c > limit:
            raise ValueError(
                f"RNNSpec.contraction must be at most {limit:.8g} for dtype {self.dtype} (the largest "
                f"finite {self.dtype}: W_hh's entries are up to the contraction in size), got {c!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"RNNSpec.seed must be a non-negative integer, got {self.seed!r}")

    @property
    def model(self) -> Cell:
        """The cell's maths (:class:`fpbench.cells.Cell`)."""
        return CELLS[self.cell]

    @property
    def gates(self) -> int:
        """Number of gate blocks (1 elman, 3 gru, 4 lstm)."""
        return self.model.gates

    @property
    def state_size(self) -> int:
        """S, the length of the state the fixed point is over: H, or 2H for ``lstm`` (h, c)."""
        return self.model.state_size(self.hidden_size)


PARAM_NAMES: tuple[str, ...] = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass(frozen=True, eq=False)
class Problem:
    """A generated problem: NumPy arrays, identical for every backend, and immutable.

    Construction validates every array against the spec (shape and dtype) and stores a
    C-contiguous, read-only copy; ``params`` is a read-only mapping. A problem therefore
    cannot change after validation, and no backend ever sees arrays that do not match its
    spec. Use ``dataclasses.replace(problem, x=...)`` to make a changed (re-validated) copy.
    NumPy arrays must already have ``spec.dtype``; nested lists (or tuples) of real numbers
    are converted to it. A problem pickles and deep-copies through its constructor, so a
    copy is validated again and read-only too.

    Attributes:
        spec: the spec it was made from.
        x: ``(T, B, I)`` inputs, in ``spec.dtype``.
        h0: ``(B, H)`` initial state, in ``spec.dtype``.
        params: ``weight_ih (gH, I)``, ``weight_hh (gH, H)``, ``bias_ih (gH,)``,
            ``bias_hh (gH,)`` with g gate blocks in torch order (GRU: r, z, n; LSTM: i, f, g, o);
            a diagonal cell's ``weight_hh`` is a vector (:meth:`fpbench.Cell.param_shapes`).
        c0: ``(B, H)`` initial cell state for ``lstm``; None for the other cells.
    """

    spec: RNNSpec
    x: np.ndarray
    h0: np.ndarray
    params: Mapping[str, np.ndarray] = field(repr=False)
    c0: np.ndarray | None = None

    def __post_init__(self) -> None:
        s = self.spec
        if not isinstance(s, RNNSpec):
            raise TypeError(f"Problem.spec must be an fpbench.RNNSpec, got {type(s).__name__}")
        H = s.hidden_size
        expected = {
            "x": (s.seq_len, s.batch, s.input_size),
            "h0": (s.batch, H),
            **s.model.param_shapes(H, s.input_size),
        }
        if not isinstance(self.params, Mapping):
            raise TypeError(f"Problem.params must be a mapping, got {type(self.params).__name__}")
        missing = set(expected) - {"x", "h0"} - set(self.params)
        if missing:
            raise ValueError(f"Problem.params is missing {sorted(missing)}")
        extra = set(self.params) - set(expected)
        if extra:
            raise ValueError(f"Problem.params has unknown entries {sorted(extra)}")
        arrays = {"x": self.x, "h0": self.h0, **self.params}
        if s.model.has_cell_state:
            expected["c0"] = (s.batch, H)
            arrays["c0"] = self.c0
            if self.c0 is None:
                raise ValueError(f"Problem.c0 is required for cell {s.cell!r}")
        elif self.c0 is not None:
            raise ValueError(f"Problem.c0 must be None for cell {s.cell!r} (its state is h only)")
        frozen = {}
        for name, shape in expected.items():
            a = _from_nested(name, arrays[name], s.dtype)
            got = np.shape(a)
            if got != shape:
                raise ValueError(
                    f"Problem.{name} has shape {got}, but the spec "
                    f"({s.cell}, T={s.seq_len}, B={s.batch}, I={s.input_size}, H={H}) needs {shape}"
                )
            dtype = getattr(a, "dtype", None)
            if not isinstance(dtype, np.dtype) or dtype != np.dtype(s.dtype):
                raise ValueError(f"Problem.{name} has dtype {dtype}, but the spec needs {s.dtype}")
            frozen[name] = _frozen(a)
        set_ = object.__setattr__  # the dataclass is frozen: store the validated copies
        set_(self, "x", frozen.pop("x"))
        set_(self, "h0", frozen.pop("h0"))
        set_(self, "c0", frozen.pop("c0", None))
        set_(self, "params", MappingProxyType(frozen))

    def __reduce__(self) -> tuple[type[Problem], tuple[object, ...]]:
        """Pickle (and ``copy.deepcopy``) through the constructor, so that the copy is
        validated again and its arrays are read-only like the original's."""
        return (Problem, (self.spec, self.x, self.h0, dict(self.params), self.c0))

    @property
    def weight_ih(self) -> np.ndarray:
        return self.params["weight_ih"]

    @property
    def weight_hh(self) -> np.ndarray:
        return self.params["weight_hh"]

    @property
    def bias_ih(self) -> np.ndarray:
        return self.params["bias_ih"]

    @property
    def bias_hh(self) -> np.ndarray:
        return self.params["bias_hh"]

    @property
    def s0(self) -> np.ndarray:
        """``(B, S)`` initial state vector: ``h0``, or ``[h0, c0]`` for ``lstm``."""
        return self.h0 if self.c0 is None else np.concatenate([self.h0, self.c0], axis=-1)

    def astype(self, dtype: str) -> Problem:
        """The same numbers cast to ``dtype`` (the reference uses ``"float64"``), with the
        spec's ``dtype`` set to match."""
        return Problem(
            dataclasses.replace(self.spec, dtype=dtype),
            self.x.astype(dtype),
            self.h0.astype(dtype),
            {k: v.astype(dtype) for k, v in self.params.items()},
            None if self.c0 is None else self.c0.astype(dtype),
        )


def _from_nested(name: str, a: object, dtype: str) -> object:
    """A nested list or tuple of real numbers as an array in ``dtype``; anything else as is
    (arrays are checked, never cast: a NumPy array must already have the spec's dtype)."""
    if not isinstance(a, (list, tuple)):
        return a
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as e:  # ragged nesting
        raise ValueError(f"Problem.{name} must be a rectangular array of real numbers: {e}") from None
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"Problem.{name} must hold real numbers (int or float, converted to {dtype}), "
            f"got a nested list of {arr.dtype} values"
        )
    return arr.astype(dtype)


def _frozen(a: np.ndarray) -> np.ndarray:
    """A C-contiguous read-only copy of ``a`` (never a view of the caller's array)."""
    out = np.array(a, order="C", copy=True)
    out.flags.writeable = False
    return out


def _scale_spectral(w: np.ndarray, rho: float) -> np.ndarray:
    norm = np.linalg.norm(w, ord=2)
    if not norm > 0:
        return w
    with np.errstate(over="ignore"):
        scale = rho / norm
    return w * scale if math.isfinite(scale) else (w / norm) * rho  # no overflow on the way


def _scale_max(a: np.ndarray, rho: float) -> np.ndarray:
    """``a`` scaled to ``max |a| = rho``: the spectral norm of ``diag(a)``."""
    top = np.max(np.abs(a))
    if not top > 0:
        return a
    with np.errstate(over="ignore"):
        scale = rho / top
    return a * scale if math.isfinite(scale) else (a / top) * rho  # no overflow on the way


def make_problem(spec: RNNSpec) -> Problem:
    """Generate the problem for ``spec``: deterministic in the spec, NumPy only.

    Weights and biases are drawn like PyTorch's default init, U(-1/sqrt(H), 1/sqrt(H));
    each H x H block of ``weight_hh`` is then rescaled to spectral norm
    ``spec.contraction`` (a diagonal cell's recurrent vectors each to max absolute value
    ``spec.contraction``; its peepholes keep their draw). Inputs are standard normal, ``h0``
    (and ``c0`` for ``lstm``, drawn last) are U(-0.5, 0.5). Arrays are generated in float64
    and cast to ``spec.dtype``.
    """
    rng = np.random.default_rng(spec.seed)
    g, H, I = spec.gates, spec.hidden_size, spec.input_size
    k = 1.0 / math.sqrt(H)
    w_ih = rng.uniform(-k, k, size=(g * H, I))
    if spec.model.recurrence == "diagonal":
        w_hh = rng.uniform(-k, k, size=((g + spec.model.peepholes) * H,))
        scaled = [_scale_max(a, spec.contraction) for a in np.split(w_hh[: g * H], g)]
        w_hh = np.concatenate([*scaled, w_hh[g * H :]])
    else:
        w_hh = rng.uniform(-k, k, size=(g * H, H))
        w_hh = np.concatenate([_scale_spectral(b, spec.contraction) for b in np.split(w_hh, g)])
    params = {
        "weight_ih": w_ih,
        "weight_hh": w_hh,
        "bias_ih": rng.uniform(-k, k, size=g * H),
        "bias_hh": rng.uniform(-k, k, size=g * H),
    }
    x = rng.standard_normal((spec.seq_len, spec.batch, I))
    h0 = rng.uniform(-0.5, 0.5, size=(spec.batch, H))
    c0 = rng.uniform(-0.5, 0.5, size=(spec.batch, H)) if spec.model.has_cell_state else None
    dt = spec.dtype
    with np.errstate(over="ignore"):  # checked just below
        cast = {k: v.astype(dt) for k, v in params.items()}
    if not np.isfinite(cast["weight_hh"]).all():  # rounding at the very top of the range
        raise ValueError(
            f"RNNSpec.contraction={spec.contraction!r} makes W_hh overflow {dt}: use a contraction "
            f"below {max_contraction(dt):.8g}"
        )
    return Problem(spec, x.astype(dt), h0.astype(dt), cast, None if c0 is None else c0.astype(dt))
