"""Gradient flow: per layer, the norm of the weight gradient, of the update the optimizer made, and the update's
size relative to the weights (a common health check: around 1e-3 per step is typical of a learning rate that
neither stalls nor thrashes). Logged for both models at the curve points, so a vanishing or exploding layer shows,
and the two models' lines coincide when their steps do."""

from __future__ import annotations

import torch
from torch import Tensor

FLOW_PREFIX = "gradient_flow/"


def snapshot(params: dict[str, Tensor]) -> dict[str, Tensor]:
    """The weight matrices before a step (biases are left out: the ratio is about the weights)."""
    return {name: tensor.detach().clone() for name, tensor in params.items() if name.startswith("W")}


def flow_scalars(before: dict[str, Tensor], after: dict[str, Tensor], grads: dict[str, Tensor | None]) -> dict:
    """{"gradient_flow/layer1/grad_norm": ..., ".../update_norm": ..., ".../update_to_weight": ...} per layer;
    ``grads`` by parameter name ("W1"), missing or None where a model keeps none (the fast path)."""
    values = {}
    for name, old in before.items():
        layer = f"{FLOW_PREFIX}layer{name[1:]}/"
        new = after[name].detach()
        update = torch.linalg.vector_norm(new - old).item()
        weight = torch.linalg.vector_norm(new).item()
        values[layer + "update_norm"] = update
        values[layer + "update_to_weight"] = update / weight if weight else 0.0
        grad = grads.get(name)
        if grad is not None:
            values[layer + "grad_norm"] = torch.linalg.vector_norm(grad.detach()).item()
    return values
