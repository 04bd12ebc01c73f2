"""Lecture 001's vectorised example f(x, W) = ||W x||^2 = sum_i (W x)_i^2 with W = [[0.1, 0.5], [-0.3, 0.8]]
(the lecture's W; x = [0.2, 0.4] is the CS231n slide's, which the lecture's text does not carry):

    q = W x,  f = ||q||^2,  df/dq = 2 q,  df/dW_ij = 2 q_i x_j (i.e. 2 q x^T),  df/dx_i = sum_k 2 q_k W_ki (2 W^T q).

Gradients have the shapes of the variables. Engine: the three formulas; twin: autograd.
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab

F64 = torch.float64
W0 = [[0.1, 0.5], [-0.3, 0.8]]
X0 = [0.2, 0.4]


def engine_norm(W: torch.Tensor, x: torch.Tensor) -> dict:
    q = W @ x
    f = (q * q).sum()
    dq = 2 * q
    dW = torch.outer(dq, x)   # df/dW_ij = 2 q_i x_j
    dx = W.T @ dq             # df/dx_i = sum_k 2 q_k W_ki
    return {"q": q, "f": f, "df/dq": dq, "df/dW": dW, "df/dx": dx}


def twin_norm(W: torch.Tensor, x: torch.Tensor) -> dict:
    W, x = W.clone().requires_grad_(True), x.clone().requires_grad_(True)
    q = W @ x
    q.retain_grad()
    f = (q ** 2).sum()
    f.backward()
    return {"q": q.detach(), "f": f.detach(), "df/dq": q.grad, "df/dW": W.grad, "df/dx": x.grad}


def run(args, report) -> None:
    W, x = torch.tensor(W0, dtype=F64), torch.tensor(X0, dtype=F64)
    engine, twin = engine_norm(W, x), twin_norm(W, x)
    for name, value in engine.items():
        report.say(f"{name} = {value.tolist()}")
    expected = {"q": [0.22, 0.26], "f": 0.116, "df/dq": [0.44, 0.52], "df/dW": [[0.088, 0.176], [0.104, 0.208]],
                "df/dx": [-0.112, 0.636]}  # by hand (CS231n's slide shows the same numbers)
    report.check("W (course)", W0, W)
    for name, value in expected.items():
        report.check(f"{name} (hand-computed)", value, engine[name], twin[name], tol=1e-12, parity=1e-16)
    report.values.update(engine)


LAB = Lab("vectorised_norm", "001", "||W x||^2: df/dq = 2q, df/dW = 2 q x^T, df/dx = 2 W^T q, engine vs autograd",
          "< 1 s", run)
