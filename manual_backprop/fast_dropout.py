"""Dropout on the fast path (manual_backprop/fast.py): the reference's masks (manual_backprop/dropout.py) drawn
into buffers the step keeps, and max-norm after the update.

On the CPU ``dropout_forward`` draws ``empty_like(x).bernoulli_(1 - p)`` then ``div_(1 - p)``: here the same two
calls run on a buffer of the same shape, so torch's default generator is consumed identically and the masks are
the same bits (bernoulli_'s values depend on the generator and the tensor's size, not on what the buffer held).
On other devices the reference's own function runs (the fused native_dropout kernel, as nn.Dropout).
"""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop.dropout import dropout_forward


class Dropout:
    """Mixed into ``FastTrainer``: needs ``self.config``."""

    def _drop(self, A: Tensor, p: float, buffers: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor | None]:
        """(D, noise): D = A * noise (m, n), the tensor the next layer reads, and the scaled mask noise (m, n)
        (None where p = 0: A itself is read and nothing is drawn, as the reference). ``buffers``: (noise, D)
        to write into, or None (a device that takes the reference's fused kernel)."""
        if p == 0:
            return A, None
        if buffers is None:
            return dropout_forward(A, p)
        noise, D = buffers
        noise.bernoulli_(1 - p)
        noise.div_(1 - p)  # ATen's (float)1/(float)(1-p) division, as dropout_forward
        return torch.mul(A, noise, out=D), noise

    @staticmethod
    def dropout_buffers(m: int, sizes: tuple[int, ...], input_p: float, hidden_p: float, factory: dict) -> dict:
        """{l: (noise_l, D_l)} (m, n_l) for each dropped layer output (l = 0 is the input), on the CPU only."""
        if factory["device"].type != "cpu":
            return {}
        layers = ([0] if input_p else []) + (list(range(1, len(sizes) - 1)) if hidden_p else [])
        return {layer: (torch.empty(m, sizes[layer], **factory), torch.empty(m, sizes[layer], **factory))
                for layer in layers}
