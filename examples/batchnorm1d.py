"""BatchNorm1d in training mode (batch statistics, biased variance as nn.BatchNorm1d normalizes with), its
backward written by hand the straightforward way.

    python -m experiments.check examples/batchnorm1d.py

    x: (N, C). mu = mean over the batch, var = mean((x - mu)^2) (biased: divide by N), rstd = 1/sqrt(var + eps),
    xhat = (x - mu) rstd, y = gamma xhat + beta

    dxhat = dy gamma
    dx = rstd / N (N dxhat - sum(dxhat) - xhat sum(dxhat xhat))      (sums over the batch)
    dgamma = sum(dy xhat), dbeta = sum(dy)

What it shows: a correct hand-written BatchNorm1d against torch.nn.functional.batch_norm(training=True) (the
running statistics are not part of the check: they get no gradient). The float32 results differ from PyTorch's
in the last bits and the checker says they stay within autograd's own rounding. Compare examples/batchnorm1d_bug.py.
"""

import torch

EPS = 1e-5


def inputs(dtype, device, generator):
    gamma = 1 + 0.1 * torch.randn(10, generator=generator, dtype=torch.float64)
    beta = 0.1 * torch.randn(10, generator=generator, dtype=torch.float64)
    x = torch.randn(16, 10, generator=generator, dtype=torch.float64) * 3 - 1
    return {name: t.to(dtype=dtype, device=device) for name, t in {"x": x, "gamma": gamma, "beta": beta}.items()}


def forward(x, gamma, beta):
    mu = x.mean(0)
    xc = x - mu
    var = (xc * xc).mean(0)  # biased: what training-mode BatchNorm normalizes with
    rstd = 1 / torch.sqrt(var + EPS)
    xhat = xc * rstd
    return gamma * xhat + beta, (xhat, rstd, gamma)


def backward(grad_output, cache):
    xhat, rstd, gamma = cache
    n = grad_output.shape[0]
    dxhat = grad_output * gamma
    dx = rstd / n * (n * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0))
    return {"x": dx, "gamma": (grad_output * xhat).sum(0), "beta": grad_output.sum(0)}


def reference(x, gamma, beta):
    return torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=EPS)
