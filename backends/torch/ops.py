"""torch's primitives for the shared solver algorithms (:mod:`backends.shared`): :data:`OPS`,
with the functional odd/even :func:`associative_scan` (what autograd differentiates)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from backends.shared import Ops

Elems = Sequence[torch.Tensor]


def associative_scan(op: Callable[[Elems, Elems], Elems], elems: Elems) -> list[torch.Tensor]:
    """Inclusive scan over axis 0 of time-major tensors: ``out[t] = e[0] o e[1] o ... o e[t]``
    for an associative ``op(earlier, later)``; functional (no in-place writes on its inputs).

    Recursive odd/even: compose neighbouring pairs, scan the half-length sequence (the
    prefixes at odd positions), then one more ``op`` gives the even positions. About ``2T``
    applications of ``op`` in ``2 log2 T`` batched levels, any T.
    """
    n = elems[0].shape[0]
    if n < 2:
        return list(elems)
    odd = associative_scan(op, op([e[0 : n - 1 : 2] for e in elems], [e[1:n:2] for e in elems]))
    m = (n - 1) // 2  # even positions 2, 4, .., 2m: odd prefix 2k+1, then element 2k+2
    even = op([o[:m] for o in odd], [e[2 : 2 * m + 1 : 2] for e in elems]) if m else None
    out = []
    for i, e in enumerate(elems):
        r = torch.empty_like(e)
        r[0] = e[0]
        r[1::2] = odd[i]
        if even is not None:
            r[2::2] = even[i]
        out.append(r)
    return out


def _scan(op: Callable[[Elems, Elems], Elems], elems: Elems, reverse: bool) -> tuple[torch.Tensor, ...]:
    if not reverse:
        return tuple(associative_scan(op, elems))
    return tuple(o.flip(0) for o in associative_scan(op, [e.flip(0) for e in elems]))


def _solve(M: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``M^-1 R``; ``solve_ex``: no error and no host sync on a singular (e.g. NaN) system,
    whose non-finite result is reported as a divergence."""
    return torch.linalg.solve_ex(M, R).result


def _eye(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device)


OPS = Ops(xp=torch, solve=_solve, scan=_scan, eye=_eye)
"""torch as the shared algorithms' framework."""
