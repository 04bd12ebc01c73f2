"""Lecture 000's batch formulas: L = 1/(2m) ||Y_hat - Y||_F^2 and, for the 2-3-3 TwoLayerNet,

    Delta2 = (Y_hat - Y) * f'(Z2),  dW2 = 1/m Delta2^T H,  db2 = 1/m sum_i Delta2_i,
    Delta1 = (Delta2 W2) * f'(Z1),  dW1 = 1/m Delta1^T X,  db1 = 1/m sum_i Delta1_i.

The lecture puts the 1/m into dW and db; the engine puts it into the output delta (dL/dY_hat = (Y_hat - Y)/m),
where autograd puts it, so the deltas are 1/m of the lecture's and the products dW, db are the same. Both are
checked against the twin on a batch of the quadratic-regression data.
"""

from __future__ import annotations

import numpy as np
import torch

from experiments.labs.common import Lab, positive_int
from experiments.labs.l000_two_layer_net import course_init
from manual_backprop import losses
from manual_backprop.activations import relu_backward, relu_forward
from manual_backprop.config import MLPConfig
from manual_backprop.linear import linear_backward, linear_forward
from torch_reference.twin import TwinMLP

F64 = torch.float64


def quadratic_batch(m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """X uniform in [-10, 10]^2 scaled by 1/20 as the lab does; Y = [x1^2, x2^2, 2 x1 x2]."""
    X = np.random.RandomState(seed).uniform(-10, 10, size=(m, 2))
    Y = np.column_stack((X[:, 0] ** 2, X[:, 1] ** 2, 2 * X[:, 0] * X[:, 1]))
    return torch.from_numpy(X / 20), torch.from_numpy(Y)


def lecture_backward(p, X, Y):
    """TwoLayerNet.backward of the lecture, transcribed: the 1/m sits in dW and db."""
    m = X.shape[0]
    Z1 = X @ p["W1"].T + p["b1"]
    H = torch.clamp(Z1, min=0)
    Y_hat = H @ p["W2"].T + p["b2"]
    Diff = Y_hat - Y
    loss = 0.5 / m * (Diff ** 2).sum()                 # L = 1/(2m) ||Y_hat - Y||_F^2
    Delta2 = Diff                                      # linear output: f'(Z2) = 1
    dW2, db2 = Delta2.T @ H / m, Delta2.mean(0)
    Delta1 = (Delta2 @ p["W2"]) * (Z1 > 0).to(X.dtype)
    dW1, db1 = Delta1.T @ X / m, Delta1.mean(0)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def engine_backward(p, X, Y):
    """The engine's pairs: the 1/m enters once, in dL/dY_hat, and every product below inherits it."""
    Z1, cache1 = linear_forward(X, p["W1"], p["b1"])
    H, relu_cache = relu_forward(Z1)
    Y_hat, cache2 = linear_forward(H, p["W2"], p["b2"])
    loss, loss_cache = losses.mse_forward(Y_hat, Y, "course")
    Delta2 = losses.mse_backward(loss_cache)           # (Y_hat - Y) / m
    dH, dW2, db2 = linear_backward(Delta2, cache2)     # Delta2^T H, sum_i Delta2_i
    Delta1 = relu_backward(dH, relu_cache)
    _, dW1, db1 = linear_backward(Delta1, cache1, input_grad=False)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def add_arguments(parser) -> None:
    parser.add_argument("--batch-size", type=positive_int, default=16, help="m, the number of samples")


def run(args, report) -> None:
    X, Y = quadratic_batch(args.batch_size, args.seed)
    params = course_init()
    twin = TwinMLP.from_engine(MLPConfig(sizes=(2, 3, 3), activation="relu", loss="mse", dtype="float64"), params)
    twin_record = twin.loss_and_gradients(X, Y)
    twin_grads = twin_record.gradients()
    lecture_loss, lecture_grads = lecture_backward(params, X, Y)
    engine_loss, engine_grads = engine_backward(params, X, Y)
    m = X.shape[0]
    report.say(f"batch of m = {m}: L = 1/(2m) ||Y_hat - Y||_F^2 = {engine_loss.item():.6f}")
    report.say("engine: 1/m in dL/dY_hat (as autograd); lecture: 1/m in dW and db. Same products, other rounding.")
    report.check("L = 1/(2m)||Y_hat-Y||^2", None, engine_loss, twin_record.loss)
    for name in ("W2", "b2", "W1", "b1"):
        report.check(f"d{name} (engine: 1/m in delta)", None, engine_grads[name], twin_grads[name])
        report.check(f"d{name} (lecture: 1/m in dW, db)", None, lecture_grads[name], twin_grads[name],
                     parity=1e-12 * max(1.0, twin_grads[name].abs().max().item()))
    report.check("lecture's L", None, lecture_loss, twin_record.loss, parity=1e-12 * engine_loss.item())
    report.values.update(loss=engine_loss, grads=engine_grads, lecture_grads=lecture_grads)


LAB = Lab("batch_formulas", "000", "batch backprop with 1/m: lecture's placement (dW, db) vs the engine's (delta)",
          "< 1 s", run, add_arguments)
