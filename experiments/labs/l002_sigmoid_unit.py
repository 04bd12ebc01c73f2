"""Lecture 002's sigmoid unit z = X W^T + b, a = sigmoid(z), with W = torch.rand(5).view(1, 5) and
b = torch.rand(1) after torch.manual_seed(1) (the notebook's weights), on the sample x = [-8, 1, -3, 5, 2] and on
the batch of three: z = [-2.4591, 3.1721, 6.2782], a = [0.0788, 0.9598, 0.9981] (four decimals in the course).

Engine: the engine's linear and sigmoid forwards. Twin: the notebook's own lines, torch.mm(X, W.T) + b.
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab
from manual_backprop.activations import sigmoid_forward
from manual_backprop.linear import linear_forward

X = [[-8.0, 1.0, -3.0, 5.0, 2.0], [-2.0, 2.0, -1.0, 5.0, 2.0], [7.0, 1.0, 9.0, -5.0, -2.0]]


def notebook_weights() -> tuple[torch.Tensor, torch.Tensor]:
    state = torch.random.get_rng_state()
    torch.manual_seed(1)
    W, b = torch.rand(5).view(1, 5), torch.rand(1)
    torch.random.set_rng_state(state)
    return W, b


def run(args, report) -> None:
    W, b = notebook_weights()
    X_batch = torch.tensor(X)
    z, _ = linear_forward(X_batch, W, b)
    a, _ = sigmoid_forward(z)
    twin_z = torch.mm(X_batch, W.T) + b
    twin_a = torch.sigmoid(twin_z)
    report.say(f"W = {W.tolist()}, b = {b.tolist()}")
    report.say(f"z = {z.flatten().tolist()}\na = {a.flatten().tolist()}")
    report.check("W (torch.rand after seed 1)", [[0.7576, 0.2793, 0.4031, 0.7347, 0.0293]], W, tol=5e-5)
    report.check("b", [0.7999], b, tol=5e-5)
    report.check("one sample: z", -2.4591, z[0, 0], twin_z[0, 0], tol=5e-5)
    report.check("one sample: a", 0.0788, a[0, 0], twin_a[0, 0], tol=5e-5)
    report.check("batch: z", [[-2.4591], [3.1721], [6.2782]], z, twin_z, tol=5e-5)
    report.check("batch: a", [[0.0788], [0.9598], [0.9981]], a, twin_a, tol=5e-5)
    report.values.update(z=z, a=a)


LAB = Lab("sigmoid_unit", "002", "sigmoid unit on a batch of 3: z = [-2.4591, 3.1721, 6.2782], a = [0.0788, ...]",
          "< 1 s", run)
