"""Lecture 000's one-layer lab, step by step: x = [1, 2], W = [[3, 2], [4, 1], [5, 2]], y = [1, 4, 4],
y_hat = ReLU(x W^T), L = 1/2 ||y_hat - y||^2, one gradient step with eta = 0.1."""

from __future__ import annotations

import torch

from experiments.labs.common import Lab
from manual_backprop.activations import relu_backward, relu_forward
from manual_backprop.linear import linear_backward, linear_forward

F64 = torch.float64
X = [[1.0, 2.0]]
W0 = [[3.0, 2.0], [4.0, 1.0], [5.0, 2.0]]
Y = [[1.0, 4.0, 4.0]]
ETA = 0.1


def engine_lab() -> dict:
    """The lecture's three steps with the engine's forward/backward pairs (the lab has no bias: b = 0)."""
    x, W, y = torch.tensor(X, dtype=F64), torch.tensor(W0, dtype=F64), torch.tensor(Y, dtype=F64)
    b = torch.zeros(3, dtype=F64)
    z, linear_cache = linear_forward(x, W, b)          # z = x W^T                     (1, 3)
    y_hat, relu_cache = relu_forward(z)                # y_hat = ReLU(z)               (1, 3)
    L = 0.5 * ((y_hat - y) ** 2).sum()                 # L = 1/2 sum_i (y_hat_i - y_i)^2
    dy_hat = y_hat - y                                 # dL/dy_hat = y_hat - y
    delta = relu_backward(dy_hat, relu_cache)          # delta = dL/dz = dL/dy_hat * ReLU'(z)
    _, dW, _ = linear_backward(delta, linear_cache, input_grad=False)  # dL/dW = delta^T x  (3, 2)
    W_new = W - ETA * dW                               # W <- W - eta dL/dW
    z_new, _ = linear_forward(x, W_new, b)
    y_hat_new, _ = relu_forward(z_new)
    L_new = 0.5 * ((y_hat_new - y) ** 2).sum()
    return {"z": z, "y_hat": y_hat, "L": L, "dL/dy_hat": dy_hat, "delta": delta, "dL/dW": dW,
            "W_new": W_new, "z_new": z_new, "L_new": L_new}


def twin_lab() -> dict:
    """The same three steps, the gradient from autograd."""
    x, y = torch.tensor(X, dtype=F64), torch.tensor(Y, dtype=F64)
    W = torch.tensor(W0, dtype=F64, requires_grad=True)
    z = x @ W.T
    z.retain_grad()
    y_hat = torch.relu(z)
    y_hat.retain_grad()
    L = 0.5 * ((y_hat - y) ** 2).sum()
    L.backward()
    with torch.no_grad():
        W_new = W - ETA * W.grad
        z_new = x @ W_new.T
        L_new = 0.5 * ((torch.relu(z_new) - y) ** 2).sum()
    return {"z": z.detach(), "y_hat": y_hat.detach(), "L": L.detach(), "dL/dy_hat": y_hat.grad,
            "delta": z.grad, "dL/dW": W.grad, "W_new": W_new, "z_new": z_new, "L_new": L_new}


COURSE = {"z": [[7, 6, 9]], "y_hat": [[7, 6, 9]], "L": 32.5, "dL/dy_hat": [[6, 2, 5]], "delta": [[6, 2, 5]],
          "dL/dW": [[6, 12], [2, 4], [5, 10]], "W_new": [[2.4, 0.8], [3.8, 0.6], [4.5, 1.0]],
          "z_new": [[4.0, 5.0, 6.5]], "L_new": 8.125}


def run(args, report) -> None:
    engine, twin = engine_lab(), twin_lab()
    report.say("Lab (1/3) forward: z = x W^T, y_hat = ReLU(z), L = 1/2 ||y_hat - y||^2")
    report.say(f"  z = {engine['z'].tolist()}, y_hat = {engine['y_hat'].tolist()}, L = {engine['L'].item()}")
    report.say("Lab (2/3) gradients: dL/dy_hat = y_hat - y; delta = dL/dy_hat * ReLU'(z); dL/dW = delta^T x")
    report.say(f"  dL/dy_hat = {engine['dL/dy_hat'].tolist()}, delta = {engine['delta'].tolist()}")
    report.say(f"  dL/dW = {engine['dL/dW'].tolist()}")
    report.say(f"Lab (3/3) step: W_new = W - {ETA} dL/dW = {engine['W_new'].tolist()}")
    report.say(f"  z_new = {engine['z_new'].tolist()}, L_new = {engine['L_new'].item()} (was {engine['L'].item()})")
    for name, course in COURSE.items():
        # W_new and what follows it carry the rounding of 0.1 * dW; everything before is exact in float64.
        report.check(name, course, engine[name], twin[name], tol=1e-12 if name in ("W_new", "z_new", "L_new") else 0)
    report.values.update(engine)


LAB = Lab("one_layer_relu", "000", "one-layer ReLU lab: z, L = 32.5, dW, W_new, L_new = 8.125 step by step",
          "< 1 s", run)
