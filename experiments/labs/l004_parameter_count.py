"""Lecture 004's parameter count of the MLP 785 -> d1 -> d2 -> 10 (784 pixels plus a constant-1 feature).

The slide counts 785 d1 + d1 d2 + 10 d2: it keeps the bias of the first layer as the 785th input and leaves
out the biases of the other two layers "for simplicity". With a bias in every layer (the engine and nn.Linear):
785 d1 + (d1 + 1) d2 + (d2 + 1) 10. Both are checked against the parameters the engine's MLP and the twin hold.
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab
from manual_backprop.config import MLPConfig
from manual_backprop.model import init_parameters
from torch_reference.twin import TwinMLP

WIDTHS = ((256, 128), (100, 50), (32, 16), (800, 800))


def run(args, report) -> None:
    for d1, d2 in WIDTHS:
        config = MLPConfig(sizes=(784, d1, d2, 10))
        params = init_parameters(config, torch.Generator().manual_seed(args.seed))
        twin = TwinMLP(config)
        engine_total = sum(tensor.numel() for tensor in params.values())
        twin_total = sum(parameter.numel() for parameter in twin.parameters())
        slide_part = sum(params[name].numel() for name in ("W1", "b1", "W2", "W3"))  # what the slide counts
        twin_slide_part = sum(twin.engine_parameters()[name].numel() for name in ("W1", "b1", "W2", "W3"))
        report.say(f"d1 = {d1}, d2 = {d2}: {engine_total:,} parameters "
                   f"({slide_part:,} without the biases of layers 2, 3)")
        report.check(f"({d1}, {d2}) slide: 785 d1 + d1 d2 + 10 d2", 785 * d1 + d1 * d2 + 10 * d2, slide_part,
                     twin_slide_part)
        report.check(f"({d1}, {d2}) with biases: 785 d1 + (d1+1) d2 + (d2+1) 10", None, engine_total, twin_total)
        report.check(f"({d1}, {d2}) formula with biases", None, 785 * d1 + (d1 + 1) * d2 + (d2 + 1) * 10, engine_total)
        report.values[(d1, d2)] = engine_total


LAB = Lab("parameter_count", "004", "MLP 785-d1-d2-10: 785 d1 + d1 d2 + 10 d2 (slide) and with every bias",
          "< 1 s", run)
