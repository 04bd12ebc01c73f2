"""Copy this file to check your own op: python -m experiments.check my_op.py

Four functions, all at module level. This template checks a linear layer, z = x W^T + b (W of shape (out, in),
as nn.Linear), so it runs as it is; replace the four bodies with your op.
"""

import torch


def inputs(dtype, device, generator):
    """The op's inputs by name. Draw them from ``generator`` (a seeded CPU generator), then move them.
    Floating tensors get gradients; integer tensors (labels) and plain numbers pass through."""
    x = torch.randn(64, 30, generator=generator, dtype=torch.float64)
    W = torch.randn(20, 30, generator=generator, dtype=torch.float64)
    b = torch.randn(20, generator=generator, dtype=torch.float64)
    return {name: t.to(dtype=dtype, device=device) for name, t in {"x": x, "W": W, "b": b}.items()}


def forward(x, W, b):
    """Return (output, cache): the cache is whatever backward needs."""
    return x @ W.T + b, (x, W)


def backward(grad_output, cache):
    """grad_output: dL/d(output), the output's shape. Return one gradient per floating input, by name."""
    x, W = cache
    return {"x": grad_output @ W, "W": grad_output.T @ x, "b": grad_output.sum(0)}


def reference(x, W, b):
    """The same op with torch ops that autograd can differentiate."""
    return torch.nn.functional.linear(x, W, b)


# Optional: contracts by tensor name (rows are named "<file name>.out", "<file name>.dx", ...).
# CONTRACTS = {"*.dW": "bitwise"}
