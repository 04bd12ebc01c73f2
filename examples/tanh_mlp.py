"""Lecture 002's 5-7-4-3 network, with tanh hidden units and a softmax output, on the lecture's 4 samples: the
whole net's forward and backward written the way the lecture writes them, checked as one op.

    python -m experiments.check examples/tanh_mlp.py

    Z1 = X W1^T + b1, A1 = tanh(Z1), Z2 = A1 W2^T + b2, A2 = tanh(Z2), Z3 = A2 W3^T + b3, A3 = softmax(Z3),
    L = -1/N sum(Y * log A3)
    dL/dZ3 = (A3 - Y)/N,  dW3 = dZ3^T A2,  db3 = sum_rows dZ3,  dA2 = dZ3 W3,  dZ2 = dA2 (1 - A2^2),  ...

The reference is the lecture notebook's cells (torch.mm, torch.tanh, torch.softmax, then log), which autograd
differentiates. The lecture's one-hot Y is built inside from integer labels, so Y gets no gradient; X is a
floating input, so the backward also returns dX = dZ1 W1 (the lecture stops at dW1).

What it shows: a multi-layer hand-written backward checked in one call, with every parameter's gradient in its
own row; to see every intermediate (Z1, A1, ..., each dZ) compared against retain_grad, layer by layer, run
examples/layers_mlp.py (check_layers).
"""

import torch

X = [[-8.0, 1.0, -3.0, 5.0, 2.0], [-2.0, 2.0, -1.0, 5.0, 2.0], [7.0, 1.0, 9.0, -5.0, -2.0], [3.0, 1.0, 9.0, 5.0, 2.0]]
LABELS = [2, 0, 1, 2]  # the lecture's Y = [[0,0,1], [1,0,0], [0,1,0], [0,0,1]]


def inputs(dtype, device, generator):
    # The lecture draws its weights with torch.rand; scaled down here so that tanh does not saturate on X.
    sizes = [(7, 5), (7,), (4, 7), (4,), (3, 4), (3,)]
    weights = [0.3 * (2 * torch.rand(size, generator=generator, dtype=torch.float64) - 1) for size in sizes]
    named = dict(zip(["W1", "b1", "W2", "b2", "W3", "b3"], weights))
    named = {"X": torch.tensor(X, dtype=torch.float64), **named}
    return {**{name: t.to(dtype=dtype, device=device) for name, t in named.items()},
            "labels": torch.tensor(LABELS, device=device)}


def forward(X, W1, b1, W2, b2, W3, b3, labels):
    N = X.shape[0]
    Y = torch.nn.functional.one_hot(labels, 3).to(X.dtype)
    Z1 = torch.mm(X, W1.T) + b1
    A1 = torch.tanh(Z1)
    Z2 = torch.mm(A1, W2.T) + b2
    A2 = torch.tanh(Z2)
    Z3 = torch.mm(A2, W3.T) + b3
    A3 = torch.softmax(Z3, dim=1)
    L = -1 / N * torch.sum(Y * torch.log(A3))
    return L, (X, Y, A1, A2, A3, W1, W2, W3)


def backward(grad_output, cache):
    X, Y, A1, A2, A3, W1, W2, W3 = cache
    N = X.shape[0]
    dZ3 = grad_output * (A3 - Y) / N
    dW3, db3, dA2 = dZ3.T @ A2, dZ3.sum(0), dZ3 @ W3
    dZ2 = dA2 * (1 - A2**2)
    dW2, db2, dA1 = dZ2.T @ A1, dZ2.sum(0), dZ2 @ W2
    dZ1 = dA1 * (1 - A1**2)
    dW1, db1, dX = dZ1.T @ X, dZ1.sum(0), dZ1 @ W1
    return {"X": dX, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3}


def reference(**inputs):
    """The same forward, differentiated by autograd: what lecture 002's notebook does with retain_grad."""
    loss, _ = forward(**inputs)
    return loss
