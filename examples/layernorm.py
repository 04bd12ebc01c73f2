"""LayerNorm over the last dimension, with gamma and beta, its backward written by hand the straightforward way.

    python -m experiments.check examples/layernorm.py

    mu = mean(x), var = mean((x - mu)^2) (biased), rstd = 1/sqrt(var + eps), xhat = (x - mu) rstd,
    y = gamma xhat + beta

    dxhat = dy gamma
    dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))      (means over the normalized dimension)
    dgamma = sum over the batch of dy xhat,  dbeta = sum over the batch of dy

What it shows: a correct hand-written LayerNorm against torch.nn.functional.layer_norm. In float32 the two do
not agree bit for bit (PyTorch computes the statistics in another order), and the checker says whether each
difference stays within autograd's own float32 rounding (the "noise" contract). Compare examples/layernorm_bug.py.
"""

import torch

EPS = 1e-5


def inputs(dtype, device, generator):
    gamma = 1 + 0.1 * torch.randn(32, generator=generator, dtype=torch.float64)
    beta = 0.1 * torch.randn(32, generator=generator, dtype=torch.float64)
    x = torch.randn(8, 6, 32, generator=generator, dtype=torch.float64) * 2 + 0.5
    return {name: t.to(dtype=dtype, device=device) for name, t in {"x": x, "gamma": gamma, "beta": beta}.items()}


def forward(x, gamma, beta):
    mu = x.mean(-1, keepdim=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdim=True)
    rstd = 1 / torch.sqrt(var + EPS)
    xhat = xc * rstd
    return gamma * xhat + beta, (xhat, rstd, gamma)


def backward(grad_output, cache):
    xhat, rstd, gamma = cache
    batch_dims = tuple(range(grad_output.dim() - 1))
    dxhat = grad_output * gamma
    dx = rstd * (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True))
    return {"x": dx, "gamma": (grad_output * xhat).sum(batch_dims), "beta": grad_output.sum(batch_dims)}


def reference(x, gamma, beta):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], gamma, beta, eps=EPS)
