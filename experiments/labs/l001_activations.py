"""Lecture 001's activation functions and their derivatives, drawn into TensorBoard as images:
sigmoid, tanh, ReLU, leaky ReLU max(0.1 z, z), maxout max(w1 z + b1, w2 z + b2) and ELU (alpha = 1).

Engine: each activation's forward/backward pair from ``manual_backprop.activations`` with upstream gradient 1,
so the backward returns f'(z); maxout (a max of two affine pieces, here of a scalar input) with the engine's own
maxout pair (``manual_backprop.maxout``, the one training uses): the forward takes the larger piece, the
backward routes the gradient to the winning piece, and the chain rule through that piece gives its slope. Twin:
autograd of the same forward. float32 on a grid of 256 points, where the engine's backward matches autograd bit
for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from experiments.labs.common import Lab, new_lab_run_dir, plot_curves, writer
from manual_backprop.activations import get_activation
from manual_backprop.maxout import maxout_backward, maxout_forward

MAXOUT = ((1.0, 0.0), (-0.5, 0.5))  # (w1, b1), (w2, b2): the two affine pieces of the maxout unit
TWIN_FORWARD = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
                "leaky_relu": lambda z: F.leaky_relu(z, 0.1), "elu": lambda z: F.elu(z, 1.0)}


def engine_curves(z: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    curves = {}
    for name in TWIN_FORWARD:
        activation = get_activation(name, leaky_slope=0.1, elu_alpha=1.0)
        a, cache = activation.forward_fn(z)
        curves[name] = (a, activation.backward_fn(torch.ones_like(z), cache))  # f'(z) = backward of da = 1
    (w1, b1), (w2, b2) = MAXOUT
    pieces = torch.stack([w1 * z + b1, w2 * z + b2], dim=1)  # (256, 2): one unit's two pieces per point
    a, cache = maxout_forward(pieces, 2)                     # (256, 1): the larger piece
    dpieces = maxout_backward(torch.ones_like(a), cache)     # (256, 2): 1 at the winning piece, 0 at the other
    curves["maxout"] = (a.flatten(), dpieces[:, 0] * w1 + dpieces[:, 1] * w2)  # dpiece_p/dz = w_p
    return curves


def twin_curves(z: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    (w1, b1), (w2, b2) = MAXOUT
    forwards = {**TWIN_FORWARD, "maxout": lambda v: torch.maximum(w1 * v + b1, w2 * v + b2)}
    curves = {}
    for name, forward in forwards.items():
        leaf = z.clone().requires_grad_(True)
        a = forward(leaf)
        a.backward(torch.ones_like(a))
        curves[name] = (a.detach(), leaf.grad)
    return curves


def run(args, report) -> None:
    z = torch.linspace(-4, 4, 256)
    engine, twin = engine_curves(z), twin_curves(z)
    run_dir = report.run_dir = new_lab_run_dir(args, "activations")
    images = writer(run_dir, "manual")
    xs = z.tolist()
    for step, name in enumerate(engine):
        a, da = engine[name]
        images.add_image(f"activations/{name}", plot_curves({f"{name}(z)": (xs, a.tolist()),
                                                            f"{name}'(z)": (xs, da.tolist())}, name), step)
        report.check(f"{name}(z)", None, a, twin[name][0])
        report.check(f"{name}'(z)", None, da, twin[name][1])
    images.close()
    report.say("images: activations/<name> in " + (str(run_dir) if run_dir else "(no TensorBoard run)"))
    report.values.update(engine=engine)


LAB = Lab("activations", "001", "sigmoid, tanh, ReLU, leaky ReLU 0.1, maxout, ELU and derivatives as images",
          "< 1 s", run)
