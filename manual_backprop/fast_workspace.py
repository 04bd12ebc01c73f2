"""The buffers of the fast training step (manual_backprop/fast.py) for one batch size."""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig


class Workspace:
    """The buffers of one batch size m, allocated once and reused by every step of that size.

    A[l]: (m, n_l) for each hidden ReLU layer l (1-based): Z_l, then A_l in place, then in the backward dZ_l.
    out: (m, k) the output layer's Z_L; dZ_out (m, k) the loss gradient.
    scratch: flat, shared by every layer, one use at a time. ReLU with momentum: dA_{l-1} = dZ_l W_l being turned
        into dZ_{l-1} and, without fuse_velocity, dW_l being folded into the momentum buffer; whole, or with
        ``low_memory`` at large batches in row blocks (ROW_CHUNK batch rows of dA, an eighth of the largest W's
        rows of dW). Otherwise (ReLU): dA_{l-1} whole.
    dW: flat, the largest layer's dW, where it is formed whole (no momentum or another activation; unfused).
    db: flat scratch of the widest layer's bias.
    """

    # low_memory: from LARGE_BATCH rows on, dW is formed in row blocks of an eighth of the largest W and dA in
    # blocks of ROW_CHUNK batch rows (a row block of a product is bitwise that block of the whole product), so the
    # scratch is small beside the activations. It costs time: on 2 threads the blocks are small or skinny GEMMs
    # that MKL splits poorly (docs/benchmark.md measures both), so by default both are formed whole.
    ROW_CHUNK = 64
    LARGE_BATCH = 256

    def __init__(self, config: MLPConfig, m: int, fused: bool, relu_hidden: bool, momentum: bool,
                 low_memory: bool = False):
        factory = {"dtype": config.torch_dtype, "device": config.torch_device}
        sizes = config.sizes
        widest_hidden = max(sizes[1:-1], default=0)
        largest_W = max(sizes[layer] * sizes[layer - 1] for layer in range(1, config.num_layers + 1))
        self.m = m
        self.A = {layer: torch.empty(m, sizes[layer], **factory) for layer in range(1, config.num_layers)} \
            if relu_hidden else {}
        self.out = torch.empty(m, sizes[-1], **factory)
        self.dZ_out = torch.empty(m, sizes[-1], **factory)
        if momentum and relu_hidden:
            large = low_memory and m >= self.LARGE_BATCH
            self.row_chunk = self.ROW_CHUNK if large else m
            self.dW_budget = 0 if fused else (-(-largest_W // 8) if large else largest_W)
            scratch = max(self.row_chunk * widest_hidden, self.dW_budget)
        else:  # dA_{l-1} whole (relu); dW_l whole in its own buffer (both are alive during the update)
            self.row_chunk, self.dW_budget = m, 0
            scratch = m * widest_hidden if relu_hidden else 0
        self.scratch = torch.empty(scratch, **factory)
        self.dW = torch.empty(largest_W, **factory) if not fused and not (momentum and relu_hidden) else None
        self.db = torch.empty(max(sizes[1:]), **factory)
        self.l2_term = torch.empty(largest_W, **factory) if config.l2 > 0 else None
        # The nll gradient's nonzero entry, -1/m rounded in the dtype, as the reference's full(-1)/m.
        self.minus_one_over_m = torch.full((m, 1), -1.0, **factory) / m
        # A zero of the buffer's shape with stride 0: addcmul onto it turns the mask product's -0.0 (where
        # dA < 0 and A = 0) into autograd's +0.0 at no memory cost (and faster than a full zeros tensor).
        self.zero = torch.zeros(1, 1, **factory)

    def view(self, buffer: Tensor, *shape: int) -> Tensor:
        """The first prod(shape) entries of a flat buffer, as a tensor of that shape."""
        numel = 1
        for n in shape:
            numel *= n
        return buffer[:numel].view(*shape)

    def nbytes(self) -> int:
        tensors = [*self.A.values(), self.out, self.dZ_out, self.scratch, self.dW, self.db, self.l2_term,
                   self.minus_one_over_m, self.zero]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)
