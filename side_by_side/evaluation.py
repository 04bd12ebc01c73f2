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


def predicted_classes(outputs: Tensor, loss: str) -> Tensor:
    """(N,) int64 classes from (N, k) outputs (logits for a fused output): the argmax, or for bce with a single
    output the label z > 0, i.e. sigmoid(z) > 1/2 (an argmax over one column would always say 0)."""
    if loss == "bce" and outputs.shape[1] == 1:
        return (outputs[:, 0] > 0).long()
    return outputs.argmax(dim=1)


def evaluate_engine(engine: MLP, X: Tensor, y: Tensor) -> Evaluation:
    with torch.inference_mode():
        cache = engine.forward_pass(X, y)
        outputs = cache.Z[-1] if engine.config.fused_output else cache.A[-1]  # logits, as the twin's outputs
        predictions = predicted_classes(outputs, engine.config.loss)
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
            predictions = predicted_classes(outputs, twin.config.loss)
            return Evaluation(loss.item(), (predictions == y).double().mean().item(), predictions)
    finally:
        twin.train(was_training)
