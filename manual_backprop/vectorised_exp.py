"""The exponential that PyTorch's vectorised CPU kernels compute, for bitwise parity with autograd."""

from __future__ import annotations

import torch
from torch import Tensor


def vectorised_exp(x: Tensor) -> Tensor:
    """exp(x) for x <= 0, computed with the exp that PyTorch's fused CPU kernels use.

    Why not torch.exp: on the CPU, torch.exp calls Intel's VML, while the log_softmax backward kernel calls
    its own vectorised exp (SLEEF); the two round differently in about one entry in ten, a 1-ulp difference
    that cancellation at the true class grows to tens of ulps. log_sigmoid's forward returns exp(-|x|) from
    that vectorised exp as its second output, which for x <= 0 is exp(x): a forward computation, not a
    derivative. Where that output is not filled in (CUDA), torch.exp is used: GPU kernels are not bitwise
    reproducible against a formula anyway.
    """
    if x.device.type == "cpu":
        _, exp_of_minus_abs = torch.ops.aten.log_sigmoid_forward(x)
        if exp_of_minus_abs.shape == x.shape:
            return exp_of_minus_abs
    return torch.exp(x)
