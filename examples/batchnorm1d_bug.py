"""BatchNorm1d with one realistic bug: the forward normalizes with the unbiased variance.

    python -m experiments.check examples/batchnorm1d_bug.py      # exit 1

``x.var(0)`` divides by N - 1 (torch.var's default, unbiased=True); training-mode nn.BatchNorm1d normalizes
with the biased variance, divided by N (it only keeps the unbiased one in running_var). Everything else is
examples/batchnorm1d.py.

What it shows: the bug sits in the forward, so the first divergence is batchnorm1d_bug.out (forward values come
first in graph order), a formula error: in float64 yours is still off by a factor of about sqrt((N-1)/N), far
above rounding. The gradients after it are wrong too, and each row says so.
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
    var = x.var(0)  # BUG: unbiased (divides by N - 1); BatchNorm normalizes with x.var(0, unbiased=False)
    rstd = 1 / torch.sqrt(var + EPS)
    xhat = (x - mu) * rstd
    return gamma * xhat + beta, (xhat, rstd, gamma)


def backward(grad_output, cache):
    xhat, rstd, gamma = cache
    n = grad_output.shape[0]
    dxhat = grad_output * gamma
    dx = rstd / n * (n * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0))
    return {"x": dx, "gamma": (grad_output * xhat).sum(0), "beta": grad_output.sum(0)}


def reference(x, gamma, beta):
    return torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=EPS)
