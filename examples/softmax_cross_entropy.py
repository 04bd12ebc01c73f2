"""Softmax + cross-entropy (mean over the batch) from logits and integer class labels, backward by hand.

    python -m experiments.check examples/softmax_cross_entropy.py

    p = softmax(logits) (rows), L = -1/N sum_i log p[i, labels[i]]
    dL/dlogits = (p - onehot(labels)) / N

What it shows: two inputs of different kinds. ``labels`` is an int64 tensor: it passes through to both sides
unchanged and gets no gradient, so the backward returns only ``logits`` (returning one for ``labels`` would be
reported as "gradient for a non-differentiable input"). The output is a scalar, so the upstream gradient is 1.
The forward subtracts the row maximum before exp, as torch.nn.functional.cross_entropy does.
"""

import torch


def inputs(dtype, device, generator):
    logits = 3 * torch.randn(32, 10, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 10, (32,), generator=generator)
    return {"logits": logits.to(dtype=dtype, device=device), "labels": labels.to(device)}


def forward(logits, labels):
    shifted = logits - logits.max(1, keepdim=True).values
    log_p = shifted - shifted.exp().sum(1, keepdim=True).log()
    rows = torch.arange(logits.shape[0], device=logits.device)
    loss = -log_p[rows, labels].mean()
    return loss, (log_p.exp(), labels)


def backward(grad_output, cache):
    p, labels = cache
    n = p.shape[0]
    onehot = torch.nn.functional.one_hot(labels, p.shape[1]).to(p.dtype)
    return {"logits": grad_output * (p - onehot) / n}


def reference(logits, labels):
    return torch.nn.functional.cross_entropy(logits, labels)
