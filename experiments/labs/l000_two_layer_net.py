"""Lecture 000's TwoLayerNet (2-3-3, ReLU hidden, linear output, L = 1/2 ||y_hat - y||^2) on one sample,
20 gradient steps at lr 0.1, weights drawn as the lecture draws them (``np.random.seed(0)``, ``randn``)."""

from __future__ import annotations

import numpy as np
import torch

from experiments.labs.common import Lab, model_writers, new_lab_run_dir
from manual_backprop.activations import relu_backward, relu_forward
from manual_backprop.config import MLPConfig
from manual_backprop.linear import linear_backward, linear_forward
from torch_reference.twin import TwinMLP

F64 = torch.float64
STEPS, LR = 20, 0.1


def course_init(seed: int = 0, in_dim: int = 2, hidden_dim: int = 3, out_dim: int = 3) -> dict[str, torch.Tensor]:
    """TwoLayerNet.__init__: W1 = randn(hidden, in), b1 = 0, W2 = randn(out, hidden), b2 = 0 after seed(0)."""
    rng = np.random.RandomState(seed)  # the legacy global stream np.random.seed uses
    W1 = torch.from_numpy(rng.randn(hidden_dim, in_dim))
    W2 = torch.from_numpy(rng.randn(out_dim, hidden_dim))
    return {"W1": W1, "b1": torch.zeros(hidden_dim, dtype=F64), "W2": W2, "b2": torch.zeros(out_dim, dtype=F64)}


def engine_forward(p, x):
    z1, cache1 = linear_forward(x, p["W1"], p["b1"])   # z1 = x W1^T + b1
    h, relu_cache = relu_forward(z1)                  # h = ReLU(z1)
    z2, cache2 = linear_forward(h, p["W2"], p["b2"])   # z2 = h W2^T + b2; y_hat = z2 (linear output)
    return z2, (cache1, relu_cache, cache2)


def engine_backward(y_hat, y, caches):
    cache1, relu_cache, cache2 = caches
    diff = y_hat - y
    loss = 0.5 * (diff ** 2).sum()                    # L = 1/2 ||y_hat - y||^2 (one sample)
    delta2 = diff                                     # delta2 = (y_hat - y) * f2'(z2), f2 = identity
    dh, dW2, db2 = linear_backward(delta2, cache2)    # dW2 = delta2^T h, db2 = delta2, dh = delta2 W2
    delta1 = relu_backward(dh, relu_cache)            # delta1 = dh * ReLU'(z1)
    _, dW1, db1 = linear_backward(delta1, cache1, input_grad=False)  # dW1 = delta1^T x, db1 = delta1
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def train(steps: int = STEPS, lr: float = LR):
    x = torch.tensor([[1.0, 2.0]], dtype=F64)
    y = torch.tensor([[1.0, 4.0, 4.0]], dtype=F64)
    params = course_init()
    config = MLPConfig(sizes=(2, 3, 3), activation="relu", loss="mse", dtype="float64")
    twin = TwinMLP.from_engine(config, params)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=lr, foreach=False)
    engine_losses, twin_losses = [], []
    for _ in range(steps):
        y_hat, caches = engine_forward(params, x)
        loss, grads = engine_backward(y_hat, y, caches)
        for name in params:                           # step(): W <- W - lr dW
            # add(alpha=-lr) is one fused multiply-add per entry, as torch.optim.SGD does; W - lr * dW
            # rounds twice and drifts from the twin by an ulp.
            params[name] = params[name].add(grads[name], alpha=-lr)
        engine_losses.append(loss.item())
        twin_losses.append(twin.loss_and_gradients(x, y).loss.item())  # mse "course" with m = 1: 1/2 ||.||^2
        twin_optimizer.step()
    return engine_losses, twin_losses, params, twin.engine_parameters()


def run(args, report) -> None:
    engine_losses, twin_losses, params, twin_params = train()
    run_dir = report.run_dir = new_lab_run_dir(args, "two_layer_net")
    writers = model_writers(run_dir)
    for epoch, (mine, theirs) in enumerate(zip(engine_losses, twin_losses), start=1):
        report.say(f"Epoch {epoch:02d} | Loss: {mine:.4f}   (twin {theirs:.4f})")
        writers["manual"].add_scalar("loss/train", mine, epoch)
        writers["autograd"].add_scalar("loss/train", theirs, epoch)
    for w in writers.values():
        w.close()
    # The lecture asks to "verify that it decreases". With its own seed-0 weights and lr 0.1 the first step
    # overshoots (the loss jumps from 3.48 to 38.9 before falling at every later step): lr 0.1 is too large
    # for these weights' curvature at the start. The course's claim that holds is that training lowers the loss.
    rises = [step for step in range(1, len(engine_losses)) if engine_losses[step] > engine_losses[step - 1]]
    report.say(f"steps after which the loss rose: {[step + 1 for step in rises] or 'none'}; "
               f"fell at every step after step {max(rises, default=0) + 1}")
    report.check("final loss below the first (1 = yes)", 1.0, float(engine_losses[-1] < engine_losses[0]),
                 float(twin_losses[-1] < twin_losses[0]))
    falling_after = [b < a for a, b in zip(engine_losses[2:], engine_losses[3:])]
    report.claim("the loss fell at every step from step 3 on", all(falling_after))
    report.check("losses of the 20 steps", None, torch.tensor(engine_losses), torch.tensor(twin_losses), parity=1e-12)
    for name in params:
        report.check(f"{name} after 20 steps", None, params[name], twin_params[name].detach(), parity=1e-12)
    report.values["losses"] = engine_losses


LAB = Lab("two_layer_net", "000",
          "TwoLayerNet 2-3-3 on one sample, 20 steps at lr 0.1 with the course's seed-0 weights", "6 s", run)
