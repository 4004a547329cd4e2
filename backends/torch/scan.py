"""Parallel scans of the linear recurrence ``s_t = A_t s_{t-1} + b_t``: the in-place
:class:`_Scan` (the forward solves) and the functional :func:`_associative_scan` (what
autograd differentiates), with the full and diagonal algebras they compose over.

The forward solves use the recursive odd/even (Blelloch-style) scan :class:`_Scan`: pair
neighbours, compose them (``A_{2i+1} A_{2i}``), recurse on the half-length sequence, then
fill the even positions with one matrix-vector step. It does about ``2N`` compositions in
``2 log2 N`` batched levels, where the Hillis-Steele doubling scan does ``N log2 N``; with
full ``S x S`` Jacobians that is ``log2 N`` times fewer ``S^3`` matrix products (x12 at
T=4096). The diagonal scan (quasi-Newton) reuses the same code with elementwise products.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch


class _Scan:
    """In-place parallel scan of ``s_k = A_k s_{k-1} + b_k``, ``k < N``, ``s_{-1} = 0``.

    Recursive odd/even (Blelloch-style) scan, unrolled into ``log2 N`` up-sweep and
    down-sweep levels of batched products; the half-length level buffers are allocated
    once here. ``A`` is ``(N, H, H)`` (full) or ``(N, H)`` (diagonal); ``b (N, H)`` is
    overwritten by the states.
    """

    def __init__(self, N: int, H: int, full: bool, dtype: torch.dtype, device: torch.device) -> None:
        self.full = full
        self.levels: list[tuple[torch.Tensor | None, torch.Tensor]] = []
        n = N
        while n > 1:
            n //= 2
            # A of a one-element level is never read (its state is its b).
            shape = (n, H, H) if full else (n, H)
            A = torch.empty(shape, dtype=dtype, device=device) if n > 1 else None
            self.levels.append((A, torch.empty(n, H, dtype=dtype, device=device)))
        self.tmp = torch.empty(N // 2, H, 1, dtype=dtype, device=device) if full else None

    def _affine(self, b: torch.Tensor, A: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
        """``out = A v + b`` row by row (``out`` may be ``b``)."""
        if not self.full:
            torch.addcmul(b, A, v, out=out)
        elif out is b:  # strided in-place: product into a contiguous buffer, then add
            prod = self.tmp[: b.shape[0]]
            torch.bmm(A, v.unsqueeze(-1), out=prod)
            b.add_(prod.squeeze(-1))
        else:
            torch.baddbmm(b.unsqueeze(-1), A, v.unsqueeze(-1), out=out.unsqueeze(-1))

    def __call__(self, A: torch.Tensor, b: torch.Tensor) -> None:
        chain = [(A, b), *self.levels]
        for (A0, b0), (A1, b1) in itertools.pairwise(chain):  # up-sweep: compose pairs
            m = b1.shape[0]
            Ap = A0[: 2 * m].view(m, 2, *A0.shape[1:])
            bp = b0[: 2 * m].view(m, 2, b0.shape[1])
            if A1 is not None:
                (torch.bmm if self.full else torch.mul)(Ap[:, 1], Ap[:, 0], out=A1)
            self._affine(bp[:, 1], Ap[:, 1], bp[:, 0], out=b1)
        for (A0, b0), (_, b1) in reversed(list(itertools.pairwise(chain))):  # down-sweep
            m, n = b1.shape[0], b0.shape[0]
            b0[1 : 2 * m : 2] = b1  # odd positions: the states of the half-length scan
            e = (n - 1) // 2  # even positions 2, 4, .., 2e: one step from their odd neighbour
            if e:
                even = b0[2 : 2 * e + 1 : 2]
                self._affine(even, A0[2 : 2 * e + 1 : 2], b0[1 : 2 * e : 2], out=even)


def _associative_scan(
    op: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], Sequence[torch.Tensor]],
    elems: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """Inclusive scan over axis 1 of ``(B, T, ...)`` tensors (axis 0 is a batch):
    ``out[:, t] = e[:, 0] o e[:, 1] o ... o e[:, t]`` for an associative ``op(earlier, later)``.

    Recursive odd/even: compose neighbouring pairs, scan the half-length sequence (the
    prefixes at odd positions), then one more ``op`` gives the even positions. About ``2T``
    applications of ``op`` in ``2 log2 T`` batched levels, any T.
    """
    n = elems[0].shape[1]
    if n < 2:
        return list(elems)
    odd = _associative_scan(op, op([e[:, 0 : n - 1 : 2] for e in elems], [e[:, 1:n:2] for e in elems]))
    m = (n - 1) // 2  # even positions 2, 4, .., 2m: odd prefix 2k+1, then element 2k+2
    even = op([o[:, :m] for o in odd], [e[:, 2 : 2 * m + 1 : 2] for e in elems]) if m else None
    out = []
    for i, e in enumerate(elems):
        r = torch.empty_like(e)
        r[:, 0] = e[:, 0]
        r[:, 1::2] = odd[i]
        if even is not None:
            r[:, 2::2] = even[i]
        out.append(r)
    return out


class _FullAlgebra:
    """Matrices ``(..., S, S)`` and vectors ``(..., S)``: ELK's full transitions."""

    @staticmethod
    def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)

    @staticmethod
    def mv(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, v.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def t(a: torch.Tensor) -> torch.Tensor:
        return a.transpose(-1, -2)

    @staticmethod
    def scaled_eye(like: torch.Tensor, value: float) -> torch.Tensor:
        eye = torch.eye(like.shape[-1], dtype=like.dtype, device=like.device)
        return (value * eye).expand(*like.shape, like.shape[-1]).clone()

    @staticmethod
    def add_eye(a: torch.Tensor) -> torch.Tensor:
        a.diagonal(dim1=-2, dim2=-1).add_(1.0)
        return a

    @staticmethod
    def solve(M: torch.Tensor, *rhs: torch.Tensor) -> list[torch.Tensor]:
        """``M^{-1} r`` for each right-hand side (matrices or vectors), one factorisation.
        ``solve_ex``: no error and no host sync on a singular (e.g. NaN) system; the
        non-finite result is reported as a divergence."""
        cols = [r if r.dim() == M.dim() else r.unsqueeze(-1) for r in rhs]
        sol = torch.linalg.solve_ex(M, torch.cat(cols, -1)).result
        out, k = [], 0
        for r, col in zip(rhs, cols, strict=True):
            w = col.shape[-1]
            out.append(sol[..., k : k + w] if r.dim() == M.dim() else sol[..., k])
            k += w
        return out


class _DiagonalAlgebra:
    """Diagonal matrices stored as ``(..., S)``: quasi-ELK, one scalar filter per component."""

    @staticmethod
    def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b

    mv = mm

    @staticmethod
    def t(a: torch.Tensor) -> torch.Tensor:
        return a

    @staticmethod
    def scaled_eye(like: torch.Tensor, value: float) -> torch.Tensor:
        return torch.full_like(like, value)

    @staticmethod
    def add_eye(a: torch.Tensor) -> torch.Tensor:
        return a.add_(1.0)

    @staticmethod
    def solve(M: torch.Tensor, *rhs: torch.Tensor) -> list[torch.Tensor]:
        return [r / M for r in rhs]


Algebra = type[_FullAlgebra] | type[_DiagonalAlgebra]


def _affine_op(
    alg: Algebra,
) -> Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], list[torch.Tensor]]:
    """Composition of affine maps ``s -> A s + b`` (``earlier`` then ``later``), functional."""

    def op(earlier: Sequence[torch.Tensor], later: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        (A1, b1), (A2, b2) = earlier, later
        return [alg.mm(A2, A1), alg.mv(A2, b1) + b2]

    return op


def _linear_recurrence_diff(A: torch.Tensor, b: torch.Tensor, full: bool) -> torch.Tensor:
    """``s_t = A_t s_{t-1} + b_t`` over axis 1 of batch-major ``(B, T, ...)`` with ``A[:, 0]``
    ignored (``s_{-1} = 0``), by the functional odd/even associative scan: differentiable
    by autograd (the unrolled backward), parallel in time."""
    alg: Algebra = _FullAlgebra if full else _DiagonalAlgebra
    A = torch.cat([torch.zeros_like(A[:, :1]), A[:, 1:]], 1)
    return _associative_scan(_affine_op(alg), [A, b])[1]
