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
    dW_buffer: flat, the largest layer's dW, where it is formed whole (no momentum or another activation; unfused).
    db_buffer: flat scratch of the widest layer's bias.
    Per-layer views of these (db, dW, dA, zero_A, dZ, dZ_T): see _prepare_views.
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
        # W_l's shape (sizes[l] * k rows for a maxout layer of k pieces).
        largest_W = max(rows * cols for rows, cols in map(config.linear_shape, range(1, config.num_layers + 1)))
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
        self.dW_buffer = torch.empty(largest_W, **factory) if not fused and not (momentum and relu_hidden) else None
        self.db_buffer = torch.empty(max(config.linear_shape(layer)[0] for layer in range(1, config.num_layers + 1)),
                                     **factory)
        self.l2_term = torch.empty(largest_W, **factory) if config.l2 > 0 else None
        # The nll gradient's nonzero entry, -1/m rounded in the dtype, as the reference's full(-1)/m.
        self.minus_one_over_m = torch.full((m, 1), -1.0, **factory) / m
        # A zero of the buffer's shape with stride 0: addcmul onto it turns the mask product's -0.0 (where
        # dA < 0 and A = 0) into autograd's +0.0 at no memory cost (and faster than a full zeros tensor).
        self.zero = torch.zeros(1, 1, **factory)
        # {l: (noise_l, D_l)} (m, n_l) for each layer output dropout applies to (0: the input); FastTrainer fills it
        # (fast_dropout.py).
        self.dropout: dict[int, tuple[Tensor, Tensor]] = {}
        self._prepare_views(config, m, relu_hidden, momentum, fused)

    def _prepare_views(self, config: MLPConfig, m: int, relu_hidden: bool, momentum: bool, fused: bool) -> None:
        """The per-layer views the step writes through, made once per batch size: at small batches, slicing and
        reshaping anew each step costs as much as the arithmetic (each view is a call of a few microseconds).

        layer l (1-based): db[l] (n_l,); dW[l] (n_l, n_{l-1}) where dW_l is formed whole (None where it is formed
        in row blocks, or by the GEMM into the velocity); dA[l] (m, n_{l-1}) and zero_A[l] (the stride-0 zero of
        that shape) for l > 1 where dA_{l-1} is formed whole; for ReLU hidden layers dZ[l] (m, n_l), the buffer
        dZ_l is written into (A_l's, or dZ_out for the output layer), and dZ_T[l] its transpose."""
        L = config.num_layers
        self.db, self.dW, self.dA, self.zero_A, self.dZ, self.dZ_T = {}, {}, {}, {}, {}, {}
        shared = momentum and relu_hidden  # dW_l and dA_{l-1} share the scratch, one at a time
        for layer in range(1, L + 1):
            n_out, n_in = config.linear_shape(layer)
            self.db[layer] = self.db_buffer[:n_out]
            if shared and not fused and n_out * n_in <= self.dW_budget:
                self.dW[layer] = self.view(self.scratch, n_out, n_in)
            elif not shared and self.dW_buffer is not None:
                self.dW[layer] = self.view(self.dW_buffer, n_out, n_in)
            else:
                self.dW[layer] = None
            whole_dA = relu_hidden and layer > 1 and self.row_chunk == m
            self.dA[layer] = self.view(self.scratch, m, n_in) if whole_dA else None
            self.zero_A[layer] = self.zero.expand(m, n_in) if whole_dA else None
            if relu_hidden:
                self.dZ[layer] = self.A[layer] if layer < L else self.dZ_out
                self.dZ_T[layer] = self.dZ[layer].t()

    def view(self, buffer: Tensor, *shape: int) -> Tensor:
        """The first prod(shape) entries of a flat buffer, as a tensor of that shape."""
        numel = 1
        for n in shape:
            numel *= n
        return buffer[:numel].view(*shape)

    def nbytes(self) -> int:
        tensors = [*self.A.values(), self.out, self.dZ_out, self.scratch, self.dW_buffer, self.db_buffer, self.l2_term,
                   self.minus_one_over_m, self.zero]
        tensors += [t for pair in self.dropout.values() for t in pair]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)
