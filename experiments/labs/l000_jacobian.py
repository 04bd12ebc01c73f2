"""Lecture 000's Jacobian example: f(x) = [x1 + 2 x2, 3 x1 - x2] has the Jacobian [[1, 2], [3, -1]].

f is the linear layer x A^T with A = [[1, 2], [3, -1]] and no bias. A backward pass computes a
vector-Jacobian product u^T J: pulling back each unit vector e_i gives row i of J, which is how the engine
builds the whole matrix without autograd. The twin asks ``torch.autograd.functional.jacobian``.
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab
from manual_backprop.linear import linear_backward, linear_forward

F64 = torch.float64
A = [[1.0, 2.0], [3.0, -1.0]]


def engine_jacobian(x: torch.Tensor) -> torch.Tensor:
    """J[i, :] = e_i^T J, one backward pass of the linear layer per output."""
    W, b = torch.tensor(A, dtype=F64), torch.zeros(2, dtype=F64)
    _, cache = linear_forward(x.unsqueeze(0), W, b)
    rows = [linear_backward(torch.eye(2, dtype=F64)[i:i + 1], cache)[0] for i in range(2)]
    return torch.cat(rows)


def twin_jacobian(x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(lambda v: torch.stack([v[0] + 2 * v[1], 3 * v[0] - v[1]]), x)


def run(args, report) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(2, dtype=F64, generator=generator)  # any point: a linear map has the same Jacobian everywhere
    engine, twin = engine_jacobian(x), twin_jacobian(x)
    report.say(f"f(x) = [x1 + 2 x2, 3 x1 - x2] at x = {x.tolist()}")
    report.say(f"engine (rows from backward passes of e_1, e_2): {engine.tolist()}")
    report.say(f"twin (torch.autograd.functional.jacobian):      {twin.tolist()}")
    report.check("J_f(x)", [[1, 2], [3, -1]], engine, twin)
    report.values["J"] = engine


LAB = Lab("jacobian", "000", "the Jacobian [[1, 2], [3, -1]] from vector-Jacobian products", "< 1 s", run)
