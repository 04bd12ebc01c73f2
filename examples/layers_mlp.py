"""Lecture 002's 5-7-4-3 tanh/softmax network checked layer by layer with check_layers (level 2 of the API).

    python examples/layers_mlp.py            # exit 0: every intermediate and gradient within its contract
    python examples/layers_mlp.py --bug      # exit 1: the tanh backward uses Z instead of A = tanh(Z)
    python examples/layers_mlp.py --dtype float64

Your network is a list of layers, each a (forward, backward) pair with its parameters: Linear, Tanh, Linear,
Tanh, Linear, then the loss (softmax and -1/N sum(Y log A3), backward dL/dZ3 = (A3 - Y)/N). The reference is an
nn.Sequential with the same five children (your parameter values are copied into it) and the lecture notebook's
loss; check_layers runs it with retain_grad on every intermediate, as the notebook does, and compares in graph
order: each layer's output, the loss, then from the loss back each layer's upstream gradient (``tanh2.d_out`` is
dL/dA2) and parameter gradients, and dL/dX.

What it shows: with --bug every forward value and the loss still match, and the first divergence is
``fc2.d_out`` (dL/dZ2, the gradient that leaves tanh2's backward and is fc2's upstream): a formula error. The
gradients below it are wrong too, but only because they inherit it: re-run from the gradient they received,
their own layers are right, so their rows say "rounding"; the report's verdict is the first tensor's.
"""

import argparse
import sys

import torch
from torch import nn

from torch_reference.checker import Layer, check_layers

X = [[-8.0, 1.0, -3.0, 5.0, 2.0], [-2.0, 2.0, -1.0, 5.0, 2.0], [7.0, 1.0, 9.0, -5.0, -2.0], [3.0, 1.0, 9.0, 5.0, 2.0]]
LABELS = [2, 0, 1, 2]  # the lecture's one-hot Y = [[0,0,1], [1,0,0], [0,1,0], [0,0,1]]


def linear_forward(x, W, b):
    return torch.mm(x, W.T) + b, (x, W)


def linear_backward(d_out, cache):
    x, W = cache
    return {"x": d_out @ W, "W": d_out.T @ x, "b": d_out.sum(0)}


def tanh_forward(z):
    a = torch.tanh(z)
    return a, (z, a)


def tanh_backward(d_out, cache):
    z, a = cache
    return {"x": d_out * (1 - a**2)}


def tanh_backward_bug(d_out, cache):
    z, a = cache
    return {"x": d_out * (1 - z**2)}  # BUG: the derivative of tanh is 1 - tanh(z)^2, not 1 - z^2


def loss_forward(z3, labels):
    N = z3.shape[0]
    Y = torch.nn.functional.one_hot(labels, z3.shape[1]).to(z3.dtype)
    A3 = torch.softmax(z3, dim=1)
    return -1 / N * torch.sum(Y * torch.log(A3)), (A3, Y)


def loss_backward(d_loss, cache):
    A3, Y = cache
    return {"x": d_loss * (A3 - Y) / A3.shape[0]}  # dL/dZ3 = (A3 - Y)/N


def reference_loss(z3, labels):
    """The notebook's loss cell."""
    Y = torch.nn.functional.one_hot(labels, z3.shape[1]).to(z3.dtype)
    return -1 / len(z3) * torch.sum(Y * torch.log(torch.softmax(z3, dim=1)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bug", action="store_true", help="use the tanh backward with the bug")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)

    generator = torch.Generator().manual_seed(0)
    draw = lambda *size: (0.3 * (2 * torch.rand(size, generator=generator, dtype=torch.float64) - 1)).to(dtype)
    params = [{"W": draw(7, 5), "b": draw(7)}, {"W": draw(4, 7), "b": draw(4)}, {"W": draw(3, 4), "b": draw(3)}]
    tanh_back = tanh_backward_bug if args.bug else tanh_backward
    layers = [Layer(linear_forward, linear_backward, params[0], "fc1"), Layer(tanh_forward, tanh_back, {}, "tanh1"),
              Layer(linear_forward, linear_backward, params[1], "fc2"), Layer(tanh_forward, tanh_back, {}, "tanh2"),
              Layer(linear_forward, linear_backward, params[2], "fc3")]
    reference = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4), nn.Tanh(), nn.Linear(4, 3))

    report = check_layers(layers, reference, torch.tensor(X, dtype=dtype), target=torch.tensor(LABELS),
                          loss=Layer(loss_forward, loss_backward), reference_loss=reference_loss, name="mlp_5743")
    print(report.table())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
