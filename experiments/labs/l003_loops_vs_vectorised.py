"""Lecture 003's per-sample loops against the vectorised batch, forward and backward, for the lecture's
2-10-3 ReLU network with softmax cross-entropy J = 1/n sum_i L(z_i, y_i):

    loop:        p_i = softmax(z_i), g_i = p_i - e_{y_i};  dW2 += outer(g_i, relu(h_i)), db2 += g_i,
                 d_i = (W2^T g_i) * relu'(h_i);  dW1 += outer(d_i, x_i), db1 += d_i;  then everything / n
    vectorised:  the engine's MLP on the whole batch (one matrix product per layer).

(The lecture stores W as (in, out); the engine's layout is (out, in), so its outer products appear transposed.)
The gradients agree to 1e-12 in float64 (the loop sums in another order) and the vectorised one equals the
autograd twin bit for bit. The speed-up is timed for several batch sizes (wall clock, printed, not asserted).
"""

from __future__ import annotations

import time

import torch

from experiments.labs.common import Lab, positive_int_list
from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP
from torch_reference.twin import TwinMLP

F64 = torch.float64


def loop_gradients(p, X, y):
    """The lecture's loops, one sample at a time."""
    n = X.shape[0]
    grads = {name: torch.zeros_like(tensor) for name, tensor in p.items()}
    loss = torch.zeros((), dtype=F64)
    E = torch.eye(p["W2"].shape[0], dtype=F64)
    for i in range(n):
        h = p["W1"] @ X[i] + p["b1"]                 # h_i = W1 x_i + b1 (pre-activation)
        z = p["W2"] @ torch.clamp(h, min=0) + p["b2"]
        pr = torch.exp(z - z.max()) / torch.exp(z - z.max()).sum()
        loss += -torch.log(pr[y[i]])
        g = pr - E[y[i]]                             # dL/dz = p - e_y
        grads["W2"] += torch.outer(g, torch.clamp(h, min=0))
        grads["b2"] += g
        d = (p["W2"].T @ g) * (h > 0).to(F64)
        grads["W1"] += torch.outer(d, X[i])
        grads["b1"] += d
    return loss / n, {name: grad / n for name, grad in grads.items()}


def timed(function, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def add_arguments(parser) -> None:
    parser.add_argument("--batch-sizes", type=positive_int_list, default=None,
                        help="comma-separated (default: 16,64,256,1024; --fast 16,64)")


def run(args, report) -> None:
    config = MLPConfig(sizes=(2, 10, 3), activation="relu", loss="cross_entropy", dtype="float64")
    generator = torch.Generator().manual_seed(args.seed)
    engine = MLP(config, generator=generator)
    twin = TwinMLP.from_engine(config, engine.params)
    batch_sizes = args.batch_sizes or ([16, 64] if args.fast else [16, 64, 256, 1024])
    if min(batch_sizes) < 1:
        raise ValueError(f"--batch-sizes: expected positive sizes; got {batch_sizes}")
    for n in batch_sizes:
        X = torch.randn(n, 2, dtype=F64, generator=generator)
        y = torch.randint(0, 3, (n,), generator=generator)
        loop_loss, loop_grads = loop_gradients(engine.params, X, y)
        record = engine.loss_and_gradients(X, y)
        twin_grads = twin.loss_and_gradients(X, y).gradients()
        report.check(f"n={n}: J (loop vs vectorised)", None, loop_loss, record.loss, parity=1e-12)
        for name, grad in record.gradients().items():
            report.check(f"n={n}: d{name} loop vs vectorised", None, loop_grads[name], grad, parity=1e-12)
            report.check(f"n={n}: d{name} vectorised vs autograd", None, grad, twin_grads[name])
        repeats = max(1, 256 // n)
        loop_time = timed(lambda: loop_gradients(engine.params, X, y), repeats)
        vector_time = timed(lambda: engine.loss_and_gradients(X, y), 20)
        report.say(f"n = {n:5d}: loop {loop_time * 1e3:9.2f} ms, vectorised {vector_time * 1e3:7.3f} ms, "
                   f"speed-up x{loop_time / vector_time:,.0f}")
        report.values[n] = loop_time / vector_time


LAB = Lab("loops_vs_vectorised", "003", "per-sample loops vs the vectorised batch: equal gradients, measured speed-up",
          "2 s", run, add_arguments)
