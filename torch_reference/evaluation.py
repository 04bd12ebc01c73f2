"""Test and validation metrics of either model: loss (with the L2 term when there is one) and accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from manual_backprop.model import MLP
from torch_reference.twin import TwinMLP


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: Tensor  # (N,) int64 predicted classes


def evaluate_engine(engine: MLP, X: Tensor, y: Tensor) -> Evaluation:
    with torch.inference_mode():
        cache = engine.forward_pass(X, y)
        outputs = cache.Z[-1] if engine.config.output_activation == "softmax" else cache.A[-1]
        predictions = outputs.argmax(dim=1)
        return Evaluation(cache.loss.item(), (predictions == y).double().mean().item(), predictions)


def evaluate_twin(twin: TwinMLP, X: Tensor, y: Tensor) -> Evaluation:
    was_training = twin.training
    twin.eval()
    try:
        with torch.no_grad():
            outputs = twin(X)
            loss = twin.loss(outputs, y)
            if twin.config.l2 > 0:
                loss = loss + twin.l2_penalty()
            predictions = outputs.argmax(dim=1)
            return Evaluation(loss.item(), (predictions == y).double().mean().item(), predictions)
    finally:
        twin.train(was_training)
