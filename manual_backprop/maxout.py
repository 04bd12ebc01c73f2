"""Maxout (lecture 001: max(w_1^T x + b_1, w_2^T x + b_2)), generalised to k pieces, as a forward/backward pair.

The layer's linear map produces k pieces per unit, Z of shape (m, n * k), with unit j's pieces in columns
j*k .. j*k + k-1 (the twin's ``Z.view(m, n, k).max(dim=2)``). Each unit outputs the largest of its pieces.
"""

from __future__ import annotations

import torch
from torch import Tensor


def maxout_forward(z: Tensor, pieces: int) -> tuple[Tensor, tuple[Tensor, int]]:
    """Inputs:
        z: (m, n * k) the pieces of n units, k = ``pieces``.
    Returns:
        a: (m, n) a[i, j] = max_p z[i, j*k + p].
        cache: (winner (m, n) int64 index p of the winning piece, k).

    ``max(dim)`` returns the first index among equal maxima; the backward sends the gradient to exactly that
    piece, so ties are broken as autograd breaks them (its max backward scatters to the same index).
    """
    m, width = z.shape
    a, winner = z.view(m, width // pieces, pieces).max(dim=2)
    return a, (winner, pieces)


def maxout_backward(da: Tensor, cache: tuple[Tensor, int]) -> Tensor:
    """Inputs: da (m, n) dL/da. Returns dz (m, n * k): da at each unit's winning piece, 0 at the others.

    The derivative of max is the indicator of the argmax (a subgradient at ties). Scattered into zeros, as
    autograd's value-selecting reduction backward does, so the zeros are +0.0 and the values exact copies.
    """
    winner, pieces = cache
    m, units = da.shape
    dz = torch.zeros(m, units, pieces, dtype=da.dtype, device=da.device)
    dz.scatter_(2, winner.unsqueeze(2), da.unsqueeze(2))
    return dz.view(m, units * pieces)


def make_maxout(pieces: int):
    """The (forward, backward) pair of a maxout layer with ``pieces`` pieces per unit."""

    def forward(z: Tensor) -> tuple[Tensor, tuple[Tensor, int]]:
        return maxout_forward(z, pieces)

    return forward, maxout_backward
