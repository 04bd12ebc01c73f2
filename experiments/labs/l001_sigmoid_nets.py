"""Lecture 001's two sigmoid networks in numpy style, run with the engine's pairs beside autograd.

- The feed-forward example of a 3-4-4-1 network: ``f = sigmoid``, ``x = randn(3, 1)``, ``h1 = f(W1 x + b1)``
  (4x1), ``h2 = f(W2 h1 + b2)`` (4x1), ``out = W3 h2 + b3`` (1x1), column vectors as on the slide. The slide
  prints no numbers (its weights are random): the lab checks the shapes it states and the engine's forward (row
  vectors, ``z = x W^T + b``) against the slide's lines.
- "Full implementation of training a 2-layer Neural Network needs ~20 lines": N, D_in, H, D_out = 64, 1000, 100,
  10, random x, y, w1, w2, no biases, ``h = 1 / (1 + exp(-x w1))``, ``y_pred = h w2``, the sum of squared errors,
  the slide's gradients (grad_y_pred = 2 (y_pred - y), grad_w2 = h^T grad_y_pred, grad_w1 = x^T (grad_h * h * (1 -
  h))), ``w -= 1e-4 grad``, 2000 steps (``--fast``: 200). Engine: those lines with the engine's linear and sigmoid
  pairs; twin: autograd of the forward lines. The slide prints the loss at every step but no values (random
  data): the lab checks that the loss falls and that both sides agree, in float64.
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab, positive_int
from manual_backprop.activations import sigmoid_backward, sigmoid_forward
from manual_backprop.linear import linear_backward, linear_forward

F64 = torch.float64
N, D_IN, H, D_OUT = 64, 1000, 100, 10
LR = 1e-4


def feed_forward(report, generator: torch.Generator) -> None:
    W1, W2, W3 = (torch.randn(rows, cols, dtype=F64, generator=generator) for rows, cols in ((4, 3), (4, 4), (1, 4)))
    b1, b2, b3 = (torch.randn(rows, 1, dtype=F64, generator=generator) for rows in (4, 4, 1))
    x = torch.randn(3, 1, dtype=F64, generator=generator)
    # the slide's lines (torch for numpy): column vectors
    f = lambda v: 1.0 / (1.0 + torch.exp(-v))
    h1 = f(W1 @ x + b1)
    h2 = f(W2 @ h1 + b2)
    out = W3 @ h2 + b3
    # the engine: row vectors, z = x W^T + b, the same weights
    z1, _ = linear_forward(x.T, W1, b1.flatten())
    a1, _ = sigmoid_forward(z1)
    z2, _ = linear_forward(a1, W2, b2.flatten())
    a2, _ = sigmoid_forward(z2)
    engine_out, _ = linear_forward(a2, W3, b3.flatten())
    report.say(f"3-4-4-1: x = {x.flatten().tolist()}, out = {out.item():.6f} (engine {engine_out.item():.6f})")
    report.check("3-4-4-1: h1 shape (4x1)", [4, 1], list(a1.T.shape), list(h1.shape))
    report.check("3-4-4-1: h2 shape (4x1)", [4, 1], list(a2.T.shape), list(h2.shape))
    report.check("3-4-4-1: out shape (1x1)", [1, 1], list(engine_out.shape), list(out.shape))
    # exp via torch.sigmoid vs 1/(1 + exp(-v)): the same function, rounded differently
    report.check("3-4-4-1: h1", None, a1.T, h1, parity=1e-15)
    report.check("3-4-4-1: h2", None, a2.T, h2, parity=1e-15)
    report.check("3-4-4-1: out", None, engine_out, out, parity=1e-14)


def twenty_lines(report, generator: torch.Generator, steps: int) -> None:
    x, y = torch.randn(N, D_IN, dtype=F64, generator=generator), torch.randn(N, D_OUT, dtype=F64, generator=generator)
    w1, w2 = torch.randn(D_IN, H, dtype=F64, generator=generator), torch.randn(H, D_OUT, dtype=F64, generator=generator)
    # the engine keeps W in nn.Linear's layout (out, in): W1 = w1^T, W2 = w2^T; no biases (zeros, never updated)
    W1, W2 = w1.T.contiguous(), w2.T.contiguous()
    zero_h, zero_out = torch.zeros(H, dtype=F64), torch.zeros(D_OUT, dtype=F64)
    t1, t2 = w1.clone().requires_grad_(True), w2.clone().requires_grad_(True)
    engine_losses, twin_losses = [], []
    for _ in range(steps):
        z1, cache1 = linear_forward(x, W1, zero_h)
        h, sigmoid_cache = sigmoid_forward(z1)                 # h = 1 / (1 + exp(-x w1))
        y_pred, cache2 = linear_forward(h, W2, zero_out)       # y_pred = h w2
        engine_losses.append(((y_pred - y) ** 2).sum().item())  # loss = sum (y_pred - y)^2
        grad_y_pred = 2.0 * (y_pred - y)
        grad_h, grad_W2, _ = linear_backward(grad_y_pred, cache2)              # grad_w2 = h^T grad_y_pred
        _, grad_W1, _ = linear_backward(sigmoid_backward(grad_h, sigmoid_cache), cache1, input_grad=False)
        W1 -= LR * grad_W1                                     # w1 -= 1e-4 * grad_w1
        W2 -= LR * grad_W2
        twin_loss = ((torch.sigmoid(x.mm(t1)).mm(t2) - y) ** 2).sum()
        twin_losses.append(twin_loss.item())
        twin_loss.backward()
        with torch.no_grad():
            t1 -= LR * t1.grad
            t2 -= LR * t2.grad
        t1.grad = t2.grad = None
    report.say(f"20-line net, {steps} steps: loss {engine_losses[0]:.1f} -> {engine_losses[-1]:.2f} "
               f"(twin {twin_losses[0]:.1f} -> {twin_losses[-1]:.2f})")
    report.claim(f"the loss falls: the last ({engine_losses[-1]:.3g}) is below a tenth of the first "
                 f"({engine_losses[0]:.3g})", engine_losses[-1] < 0.1 * engine_losses[0])
    rises = sum(b > a for a, b in zip(engine_losses, engine_losses[1:]))
    report.claim(f"the loss fell at every one of the {steps - 1} steps (it rose after {rises})", rises == 0)
    # the two sides round differently (addmm with a zero bias, the fused sigmoid backward); over many steps the
    # differences stay at float64 rounding relative to the values
    report.check(f"20-line net: losses of the {steps} steps (relative)", None,
                 torch.tensor(engine_losses) / engine_losses[0], torch.tensor(twin_losses) / engine_losses[0],
                 parity=1e-9)
    report.check("20-line net: w1 after training", None, W1.T, t1.detach(), parity=1e-9)
    report.check("20-line net: w2 after training", None, W2.T, t2.detach(), parity=1e-9)
    report.values.update(losses=engine_losses)


def add_arguments(parser) -> None:
    parser.add_argument("--steps", type=positive_int, default=None, help="default: 2000 (the slide's), --fast 200")


def run(args, report) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    feed_forward(report, generator)
    twenty_lines(report, generator, args.steps or (200 if args.fast else 2000))


LAB = Lab("sigmoid_nets", "001", "the 3-4-4-1 sigmoid forward and the ~20-line sigmoid net (sum loss, no biases, "
          "lr 1e-4)", "22 s", run, add_arguments)
