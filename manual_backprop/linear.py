"""The affine layer ``Z = X W^T + b`` (course lecture 000), as a forward/backward pair."""

from __future__ import annotations

import torch
from torch import Tensor


def linear_forward(x: Tensor, W: Tensor, b: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Inputs:
        x: (m, d_in) activations of the previous layer.
        W: (d_out, d_in) weights, the ``nn.Linear`` layout.
        b: (d_out,) biases.
    Returns:
        z: (m, d_out) pre-activations.
        cache: (x, W) for the backward.
    """
    # addmm is the kernel nn.Linear runs for 2-D input, so Z equals the twin's Z bit for bit.
    z = torch.addmm(b, x, W.t())
    return z, (x, W)


def linear_backward(dz: Tensor, cache: tuple[Tensor, Tensor],
                    input_grad: bool = True) -> tuple[Tensor | None, Tensor, Tensor]:
    """Inputs:
        dz: (m, d_out) dL/dZ, the layer's delta. It already carries the 1/m of the batch average (the loss's
            backward puts it there, as autograd does); lecture 000 writes the same 1/m in dW and db instead.
        cache: (x, W) from linear_forward.
        input_grad: False skips dx (the first layer's input is the data, which needs no gradient).
    Returns:
        dx: (m, d_in)    dL/dX = dZ W, the gradient passed to the previous layer (None if not input_grad).
        dW: (d_out, d_in) dL/dW = dZ^T X, a sum of per-sample outer products delta_i^T x_i.
        db: (d_out,)      dL/db = sum_i dZ_i.
    """
    x, W = cache
    dx = None
    if input_grad:
        # Autograd's mm backward for the first factor (mm_mat1_backward) takes another product when that factor
        # is laid out column-major (strides (1, rows)): (W^T dz^T)^T, a gemm with the operands' roles swapped,
        # whose dot products accumulate in another order. A contiguous (m, d_in) batch has that layout only when
        # m = d_in = 1 (a single sample entering a width-1 layer); the same test keeps such cases bitwise.
        if x.stride(0) == 1 and x.stride(1) == x.shape[0]:
            dx = W.t().mm(dz.t()).t()
        else:
            dx = dz.mm(W)
    # dW: mm_mat2_backward sees the column-major W^T and computes (dz^T x)^T, the transpose of this same product.
    dW = dz.t().mm(x)
    db = dz.sum(0)
    return dx, dW, db
