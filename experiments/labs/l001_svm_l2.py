"""Lecture 001's multiclass SVM loss with L2 regularisation:

    L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + 1),   L = 1/N sum_i L_i + lambda R(W1) + lambda R(W2),
    R(W) = sum_k W_k^2,   s = W2 max(0, W1 x).

1. The scores example of the CS231n slides the lecture is modified from (three images, classes cat / car /
   frog; the lecture's text does not carry these numbers): L_i = 2.9, 0, 12.9 and L = 5.27.
   dL/ds: +1/N for every class with a positive margin, minus their count at the true class.
2. The two-layer network with both terms on a small random batch: the engine's hinge and L2 pairs
   (``manual_backprop.losses``) inside the engine's MLP against the twin (``multi_margin_loss`` times the
   number of classes, plus lambda sum W^2, through autograd), every tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from experiments.labs.common import Lab, positive_float
from manual_backprop import losses
from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP
from torch_reference.twin import TwinMLP

F64 = torch.float64
# Columns of the slide's table, one row per image: scores for (cat, car, frog); the labels are cat, car, frog.
SCORES = [[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]]
LABELS = [0, 1, 2]


def engine_per_sample(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_i written out: margins s_j - s_y + 1 clipped at 0, the true class left out."""
    correct = scores.gather(1, labels.unsqueeze(1))
    margins = torch.clamp(scores - correct + 1, min=0)
    margins.scatter_(1, labels.unsqueeze(1), 0.0)
    return margins.sum(1)


def add_arguments(parser) -> None:
    parser.add_argument("--l2", type=positive_float, default=0.01, help="lambda, the L2 strength")


def run(args, report) -> None:
    scores, labels = torch.tensor(SCORES, dtype=F64), torch.tensor(LABELS)
    per_sample = engine_per_sample(scores, labels)
    loss, cache = losses.hinge_forward(scores, labels)
    dscores = losses.hinge_backward(cache)
    leaf = scores.clone().requires_grad_(True)
    twin_loss = F.multi_margin_loss(leaf, labels) * 3  # PyTorch divides by the number of classes too
    twin_loss.backward()
    twin_per_sample = F.multi_margin_loss(scores, labels, reduction="none") * 3
    report.say(f"scores (cat, car, frog) per image: {SCORES}; L_i = {per_sample.tolist()}; L = {loss.item():.4f}")
    for index, value in enumerate((2.9, 0.0, 12.9)):
        report.check(f"CS231n example: L_{index + 1}", value, per_sample[index], twin_per_sample[index], tol=0.05,
                     parity=1e-14)
    report.check("CS231n example: L = mean L_i", 5.27, loss, twin_loss.detach(), tol=0.005, parity=1e-14)
    report.check("dL/ds (1/N per positive margin)", None, dscores, leaf.grad, parity=1e-15)

    generator = torch.Generator().manual_seed(args.seed)
    config = MLPConfig(sizes=(4, 6, 3), activation="relu", loss="hinge", l2=args.l2, dtype="float64")
    engine = MLP(config, generator=generator)
    X = torch.randn(5, 4, dtype=F64, generator=generator)
    y = torch.randint(0, 3, (5,), generator=generator)
    record = engine.loss_and_gradients(X, y)
    twin_record = TwinMLP.from_engine(config, engine.params).loss_and_gradients(X, y)
    penalty = args.l2 * sum((engine.params[f"W{layer}"] ** 2).sum() for layer in (1, 2))
    report.say(f"2-layer net 4-6-3, N = 5: L = data {record.loss.item() - penalty.item():.4f} "
               f"+ L2 {penalty.item():.4f}")
    report.check("net: L (data + lambda R)", None, record.loss, twin_record.loss)
    for layer, name, tensor in record.items():
        if name.startswith("d"):
            report.check(f"net: layer {layer} {name}", None, tensor, twin_record.layers[layer - 1][name])
    report.values.update(per_sample=per_sample, loss=loss)


LAB = Lab("svm_l2", "001", "multiclass SVM loss + L2 on the slides' 3-image example and a 2-layer net",
          "< 1 s", run, add_arguments)
