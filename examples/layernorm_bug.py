"""LayerNorm with one realistic bug: dx misses the mean term (the path through mu).

    python -m experiments.check examples/layernorm_bug.py        # exit 1

The same forward as examples/layernorm.py; the backward forgets that every x_j also moves the mean, so
``- mean(dxhat)`` is missing from dx:

    dx = rstd (dxhat - xhat mean(dxhat xhat))                    # wrong
    dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))      # right

What it shows: the output, dgamma and dbeta still match, so a loss that only looks at the output would not
notice; the checker names layernorm_bug.dx as the first divergence and, re-running the op in float64 on both
sides, calls it a formula error (not rounding), with the worst element.
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
    dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(-1, keepdim=True))  # BUG: - dxhat.mean(-1) is missing
    return {"x": dx, "gamma": (grad_output * xhat).sum(batch_dims), "beta": grad_output.sum(batch_dims)}


def reference(x, gamma, beta):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], gamma, beta, eps=EPS)
