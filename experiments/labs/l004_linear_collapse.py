"""Lecture 004's question "why bother using ReLU?": without the activations, two linear layers are one.

z3 = W2 (W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2): the network 785 -> d1 -> d2 -> 10 with identity activations
computes a linear function, "equally expressive as a linear model". The lab builds such a network with the
engine (identity hidden activations, float64) and the single linear layer W = W3 W2 W1, b = W3 (W2 b1 + b2) + b3,
and compares their outputs on random inputs; then the same network with ReLU, which the single layer does not
reproduce. It also checks the gradient: dL/dx through the three layers equals the single layer's W^T dL/dz.
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab
from manual_backprop.config import MLPConfig
from manual_backprop.init import init_parameters
from manual_backprop.model import MLP

F64 = torch.float64
SIZES = (785, 64, 32, 10)  # the lecture's 785 inputs (784 pixels and the constant 1); small hidden layers


def collapsed(params: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The single layer of a linear three-layer network: W = W3 W2 W1, b = W3 (W2 b1 + b2) + b3."""
    W = params["W3"] @ params["W2"] @ params["W1"]
    b = params["W3"] @ (params["W2"] @ params["b1"] + params["b2"]) + params["b3"]
    return W, b


def run(args, report) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    X = torch.randn(16, SIZES[0], dtype=F64, generator=generator)
    labels = torch.randint(0, SIZES[-1], (16,), generator=generator)
    outputs = {}
    for activation in ("identity", "relu"):
        config = MLPConfig(sizes=SIZES, activation=activation, output_activation="identity", loss="mse",
                           dtype="float64")
        params = init_parameters(config, torch.Generator().manual_seed(args.seed))
        engine = MLP(config, params)
        W, b = collapsed(params)
        scores = engine.scores(X)
        single = X @ W.T + b  # the twin: one linear layer, plain torch
        outputs[activation] = (scores, single)
        gap = (scores - single).abs().max().item()
        report.say(f"{activation} hidden layers: max |three layers - one layer W x + b| = {gap:.3g}")
        if activation == "identity":
            report.check("identity activations: z3 of 785-64-32-10 = W x + b of one layer", None, scores, single,
                         parity=1e-12)
            record = engine.loss_and_gradients(X, torch.nn.functional.one_hot(labels, SIZES[-1]).to(F64),
                                               input_grad=True)
            dz = record.layers[-1]["dZ"]
            report.check("identity activations: dL/dx through three layers = W^T dL/dz of one", None,
                         record.input_gradient, dz @ W, parity=1e-12)
        else:
            report.claim(f"with ReLU the network is not that one linear layer (outputs differ by {gap:.3g})",
                         gap > 1e-3)
    report.values.update(outputs=outputs)


LAB = Lab("linear_collapse", "004", "without activations 785-d1-d2-10 is one linear layer W = W3 W2 W1 (why ReLU)",
          "< 1 s", run)
