"""Lecture 002's live demo: the 5-7-4-3 sigmoid/softmax network on 4 samples with retain_grad() on every tensor.

    Z1 = X W1^T + b1, A1 = sigmoid(Z1), Z2 = A1 W2^T + b2, A2 = sigmoid(Z2), Z3 = A2 W3^T + b3, A3 = softmax(Z3),
    L = -1/N sum(Y * log A3) = 1.1394,  dL/dA3 = -1/N Y / A3,  dL/dZ3 = (A3 - Y)/N.

Weights: torch.rand in the notebook's order after torch.manual_seed(0), the seed whose draws give the notebook's
printed A3 (it does not show its seed cell). The notebook's first loss line, 1/N sum(Y * A3) = 0.3374, forgets
the minus sign and the log; it is reproduced too, as the number it printed, not as a cross-entropy.
Engine: the lecture's formulas by hand with the engine's pairs, dL/dZ3 through the softmax Jacobian
diag(a) - a a^T row by row. Twin: the notebook's own lines through autograd, every tensor's .grad.
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab
from manual_backprop.activations import sigmoid_backward, sigmoid_forward
from manual_backprop.linear import linear_backward, linear_forward

X = [[-8.0, 1.0, -3.0, 5.0, 2.0], [-2.0, 2.0, -1.0, 5.0, 2.0], [7.0, 1.0, 9.0, -5.0, -2.0], [3.0, 1.0, 9.0, 5.0, 2.0]]
Y = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
COURSE = {
    "A3": [[0.4358, 0.2137, 0.3505], [0.4785, 0.1890, 0.3325], [0.4795, 0.1882, 0.3324], [0.4797, 0.1880, 0.3323]],
    "L": 1.1394,
    "notebook's 1/N sum(Y*A3)": 0.3374,
    "dL/dA3": [[0, 0, -0.7133], [-0.5224, 0, 0], [0, -1.3285, 0], [0, 0, -0.7523]],
    "dL/dZ3": [[0.1090, 0.0534, -0.1624], [-0.1304, 0.0473, 0.0831], [0.1199, -0.2030, 0.0831],
               [0.1199, 0.0470, -0.1669]],
}


def notebook_parameters() -> dict[str, torch.Tensor]:
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    params = {"W1": torch.rand(7, 5), "b1": torch.rand(7), "W2": torch.rand(4, 7), "b2": torch.rand(4),
              "W3": torch.rand(3, 4), "b3": torch.rand(3)}
    torch.random.set_rng_state(state)
    return params


def engine_pass(p, X, Y) -> dict:
    N = X.shape[0]
    Z1, c1 = linear_forward(X, p["W1"], p["b1"])
    A1, s1 = sigmoid_forward(Z1)
    Z2, c2 = linear_forward(A1, p["W2"], p["b2"])
    A2, s2 = sigmoid_forward(Z2)
    Z3, c3 = linear_forward(A2, p["W3"], p["b3"])
    A3 = torch.softmax(Z3, dim=1)
    L = -(Y * torch.log(A3)).sum() / N
    dA3 = -(Y / A3) / N                                           # dL/dA3 = -1/N Y / A3
    # dL/dz = dL/da (diag(a) - a a^T) per row: a * dL/da - a (dL/da . a)
    dZ3 = A3 * dA3 - A3 * (dA3 * A3).sum(1, keepdim=True)        # = (A3 - Y)/N
    dA2, dW3, db3 = linear_backward(dZ3, c3)
    dZ2 = sigmoid_backward(dA2, s2)
    dA1, dW2, db2 = linear_backward(dZ2, c2)
    dZ1 = sigmoid_backward(dA1, s1)
    _, dW1, db1 = linear_backward(dZ1, c1, input_grad=False)
    return {"A3": A3, "L": L, "notebook's 1/N sum(Y*A3)": (Y * A3).sum() / N, "dL/dA3": dA3, "dL/dZ3": dZ3,
            "(A3 - Y)/N": (A3 - Y) / N, "dL/dA2": dA2, "dL/dZ2": dZ2, "dL/dA1": dA1, "dL/dZ1": dZ1,
            "dW3": dW3, "db3": db3, "dW2": dW2, "db2": db2, "dW1": dW1, "db1": db1}


def twin_pass(p, X, Y) -> dict:
    """The notebook's cells."""
    W1, b1, W2, b2, W3, b3 = (p[name].clone().requires_grad_(True) for name in ("W1", "b1", "W2", "b2", "W3", "b3"))
    N = len(X)
    Z1 = torch.mm(X, W1.T) + b1
    A1 = torch.sigmoid(Z1)
    Z2 = torch.mm(A1, W2.T) + b2
    A2 = torch.sigmoid(Z2)
    Z3 = torch.mm(A2, W3.T) + b3
    A3 = torch.softmax(Z3, dim=1)
    L = -1 / N * torch.sum(Y * torch.log(A3))
    for tensor in (Z1, A1, Z2, A2, Z3, A3):
        tensor.retain_grad()
    L.backward()
    return {"A3": A3.detach(), "L": L.detach(), "notebook's 1/N sum(Y*A3)": 1 / N * torch.sum(Y * A3.detach()),
            "dL/dA3": A3.grad, "dL/dZ3": Z3.grad, "(A3 - Y)/N": Z3.grad, "dL/dA2": A2.grad, "dL/dZ2": Z2.grad,
            "dL/dA1": A1.grad, "dL/dZ1": Z1.grad, "dW3": W3.grad, "db3": b3.grad, "dW2": W2.grad, "db2": b2.grad,
            "dW1": W1.grad, "db1": b1.grad}


def run(args, report) -> None:
    params, X_, Y_ = notebook_parameters(), torch.tensor(X), torch.tensor(Y)
    engine, twin = engine_pass(params, X_, Y_), twin_pass(params, X_, Y_)
    report.say(f"A3 = {engine['A3'].tolist()}\nL = {engine['L'].item():.4f}")
    report.say("dL/dZ3 by the softmax Jacobian equals (A3 - Y)/N: "
               f"max difference {(engine['dL/dZ3'] - engine['(A3 - Y)/N']).abs().max().item():.1e}")
    for name, value in engine.items():
        # The course prints 4 decimals. The twin goes through softmax then log (the notebook's lines), the engine
        # through the Jacobian formula: float32 rounding differs, so engine vs twin is checked to 1e-6.
        report.check(name, COURSE.get(name), value, twin[name], tol=5e-5, parity=1e-6)
    # The slide above the notebook's cell writes dL/dZ3 = -1/N (A3 - Y); the cell below it computes 1/N * (A3-Y) and
    # prints the same tensor as Z3.grad. The minus sign is a slip: autograd's Z3.grad is +(A3 - Y)/N.
    plus, minus = engine["(A3 - Y)/N"], -engine["(A3 - Y)/N"]
    report.say("the slide's dL/dZ3 = -1/N (A3 - Y) has a sign slip: Z3.grad is +(A3 - Y)/N")
    report.claim("the slide's sign slip: autograd's Z3.grad equals +(A3 - Y)/N, not -1/N (A3 - Y)",
                 torch.allclose(twin["dL/dZ3"], plus, atol=1e-6)
                 and not torch.allclose(twin["dL/dZ3"], minus, atol=1e-6))
    report.values.update(engine)


LAB = Lab("mlp_5743", "002", "5-7-4-3 sigmoid/softmax net: A3, L = 1.1394, dL/dA3 = -Y/A3/N, dL/dZ3 = (A3-Y)/N",
          "< 1 s", run)
