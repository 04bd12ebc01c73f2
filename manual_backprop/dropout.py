"""Inverted dropout (Srivastava et al. 2014) as a forward/backward pair, drawing nn.Dropout's masks.

In training each entry is kept with probability 1 - p and scaled by 1/(1 - p), so the expected activation
equals the evaluation-time one and evaluation needs no rescaling (identity). The backward multiplies the
upstream gradient by the same scaled mask.

Same masks as the twin's ``nn.Dropout``: rather than drawing masks once and handing them to both models, the
engine draws its own with the very forward kernel call that nn.Dropout makes, from torch's default generator.
Then the engine stays a self-contained model (training without the twin draws the same masks as training with
it), and the two sides agree as long as they start from the same generator state, which the training loop
arranges by rewinding the generator between them (torch_reference/lockstep.py). PyTorch's dropout takes two
paths (ATen's ``dropout``): on the CPU ``noise = empty_like(x).bernoulli_(1 - p); noise.div_(1 - p);
x * noise``, whose autograd gradient is ``upstream * noise``; on CUDA the fused ``native_dropout``
(a boolean mask and a scale). The engine takes the same path on the same device, so the generator is
consumed identically.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Devices where ATen's dropout uses the fused native_dropout kernel (is_fused_kernel_acceptable).
_FUSED_DEVICE_TYPES = ("cuda", "xpu", "lazy", "privateuseone")


def dropout_forward(x: Tensor, p: float) -> tuple[Tensor, Tensor | None]:
    """Inputs: x (m, n), p the drop probability in [0, 1).
    Returns: out (m, n) x with dropped entries zeroed and the kept ones scaled by 1/(1 - p), and the cache
    noise (m, n), the scaled mask (None when p = 0: like nn.Dropout, nothing is drawn and x passes through).
    """
    if p == 0:
        return x, None
    if x.device.type in _FUSED_DEVICE_TYPES:
        out, mask = torch.native_dropout(x, p, True)
        return out, mask.to(x.dtype) * (1.0 / (1.0 - p))
    noise = torch.empty_like(x).bernoulli_(1 - p)
    # Divided in place by 1 - p, as ATen does: (float)1/(float)(1-p), which a multiply by 1/(1-p) rounded in
    # double and then cast need not equal.
    noise.div_(1 - p)
    return x * noise, noise


def dropout_backward(dout: Tensor, noise: Tensor | None) -> Tensor:
    """dL/dx = dL/dout * noise (the forward is a product with a constant). Shapes (m, n)."""
    if noise is None:
        return dout
    return dout * noise
