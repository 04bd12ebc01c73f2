"""Losses from the course, each a forward/backward pair, averaged over the batch of m samples.

``*_forward(...) -> (loss, cache)`` with ``loss`` a 0-dim tensor, and ``*_backward(cache) -> dscores``: the
gradient of the loss with respect to the network's output, shape (m, k). The upstream gradient of the loss
is 1 (the loss is the root of the graph).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from manual_backprop.vectorised_exp import vectorised_exp

# --- softmax fused with cross-entropy (lectures 002, 003, 004) --------------------------------------------


def softmax_cross_entropy_forward(logits: Tensor, labels: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """L = -1/m sum_i log softmax(z_i)[y_i].

    Inputs:
        logits: (m, k) the output layer's pre-activations Z_L.
        labels: (m,) int64 class indices in [0, k).
    Returns:
        loss: () and cache (log_probs (m, k), labels).

    log_softmax subtracts each row's max before exponentiating, so logits in the thousands neither overflow
    nor lose the loss to log(0); the softmax is never materialised and then logged.
    """
    log_probs = torch.log_softmax(logits, dim=1)
    # -mean_i log_probs[i, y_i]. nll_loss is that forward sum, in the cascade order F.cross_entropy uses, so
    # the loss value matches the twin's to the bit (a plain .sum() differs in the last bits for m >= 7).
    loss = F.nll_loss(log_probs, labels)
    return loss, (log_probs, labels)


def softmax_cross_entropy_backward(cache: tuple[Tensor, Tensor]) -> Tensor:
    """dL/dZ = (softmax(Z) - onehot(y)) / m   (lecture 002: dL/dZ3 = (A3 - Y)/N; lecture 003: p - e_y).

    Evaluated the way autograd does for log_softmax + nll_loss, so that it matches bit for bit: the nll
    gradient g (-1/m at each true class, zero elsewhere, 1/m rounded in the tensor's dtype) pulled back through
    log_softmax as g - exp(log_probs) * rowsum(g), with one rounding (the kernel's fused multiply-add, which
    addcmul also is) and the kernel's exp. rowsum(g) = -1/m, so this is p/m - onehot/m.
    """
    log_probs, labels = cache
    m = labels.shape[0]
    minus_one_over_m = torch.full((m, 1), -1.0, dtype=log_probs.dtype, device=log_probs.device) / m
    dlog_probs = torch.zeros_like(log_probs).scatter_(1, labels.unsqueeze(1), minus_one_over_m)
    return torch.addcmul(dlog_probs, vectorised_exp(log_probs), dlog_probs.sum(1, keepdim=True), value=-1)


# --- squared error (lecture 000) ----------------------------------------------------------------------------


def mse_forward(predictions: Tensor, targets: Tensor, convention: str) -> tuple[Tensor, tuple]:
    """Squared error between predictions and targets, both (m, k).

    convention "course": L = 1/(2m) ||Y_hat - Y||_F^2 (lecture 000; the 1/2 cancels the square's 2).
    convention "mean":   L = 1/(m k) ||Y_hat - Y||_F^2 (PyTorch's MSELoss with reduction="mean").
    """
    diff = predictions - targets
    squared_sum = (diff * diff).sum()
    if convention == "course":
        loss = squared_sum / (2 * diff.shape[0])
    elif convention == "mean":
        loss = squared_sum / diff.numel()
    else:
        raise ValueError(f"mse_convention: expected 'course' or 'mean'; got {convention!r}")
    return loss, (diff, convention)


def mse_backward(cache: tuple) -> Tensor:
    """dL/dY_hat = (Y_hat - Y) / m (course) or 2 (Y_hat - Y) / (m k) (mean).

    Multiplied by a factor rounded once (as PyTorch's mse_loss_backward scales by 2/numel, and the twin's
    division by 2m hands down 1/(2m)), not divided by m: ``diff / m`` rounds differently in the last bit.
    """
    diff, convention = cache
    if convention == "course":
        return diff * (1.0 / diff.shape[0])
    return diff * (2.0 / diff.numel())


# --- sigmoid fused with binary cross-entropy (lecture 004: sigmoid outputs for binary classification) -----


def sigmoid_bce_forward(logits: Tensor, targets: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """L = 1/(m k) sum_ij [ -t_ij log sigmoid(z_ij) - (1 - t_ij) log(1 - sigmoid(z_ij)) ].

    Inputs:
        logits: (m, k) the output layer's pre-activations Z_L (k = 1 for one binary label per sample).
        targets: (m, k) float targets in [0, 1] (0/1 labels, or probabilities).
    Returns:
        loss: () PyTorch's mean over all m*k entries, and cache (logits, targets).

    With log(1 - sigmoid(z)) = log sigmoid(z) - z each term is (1 - t) z - log sigmoid(z), which never takes
    the log of a rounded probability (stable for logits in the thousands). Written in the operations and order
    of ATen's binary_cross_entropy_with_logits, so the loss equals the twin's bit for bit.
    """
    loss = (1 - targets).mul_(logits).sub_(F.logsigmoid(logits)).mean()
    return loss, (logits, targets)


def sigmoid_bce_backward(cache: tuple[Tensor, Tensor]) -> Tensor:
    """dL/dZ = (sigmoid(Z) - T) / (m k): the same "prediction minus target" as softmax with cross-entropy.

    Divided by m k, not multiplied by 1/(m k), as autograd's binary_cross_entropy_with_logits_backward does.
    """
    logits, targets = cache
    return torch.sigmoid(logits).sub_(targets).div_(logits.numel())


# --- mean absolute error (lecture 004: L1 loss for regression) ---------------------------------------------


def l1_forward(predictions: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """L = 1/(m k) sum_ij |y_hat_ij - y_ij| (PyTorch's L1Loss, mean over all entries). Shapes (m, k).
    Returns the loss () and the cache diff (m, k)."""
    diff = predictions - targets
    return diff.abs().mean(), diff


def l1_backward(diff: Tensor) -> Tensor:
    """dL/dY_hat = sign(Y_hat - Y) / (m k), with the subgradient 0 where Y_hat = Y (PyTorch's sgn).

    The factor 1/(m k) is rounded once and multiplied in, as autograd's mean backward hands 1/numel down
    to abs's backward (grad * sgn); sgn is -1, 0 or 1, so the product is exact.
    """
    one_over_n = torch.ones((), dtype=diff.dtype, device=diff.device).div(diff.numel())
    return torch.sgn(diff) * one_over_n


# --- multiclass SVM hinge loss (lecture 001) -----------------------------------------------------------------
#
# PyTorch's multi_margin_loss also divides by the number of classes k, so the twin multiplies it by k. The
# engine computes the course's loss but in the same steps (per-row sums in 1/k units, rows accumulated in
# float64, then times k), because that is what makes its loss and gradient equal autograd's bit for bit.


def hinge_forward(scores: Tensor, labels: Tensor) -> tuple[Tensor, tuple]:
    """L = 1/m sum_i sum_{j != y_i} max(0, s_ij - s_i,y_i + 1).

    Inputs: scores (m, k), labels (m,) int64. Returns loss () and a cache.
    """
    m, k = scores.shape
    correct = scores.gather(1, labels.unsqueeze(1))  # (m, 1) s_i,y_i
    margins = (1 - correct) + scores  # (m, k), grouped like the kernel: (margin - s_y) + s_j
    not_target = torch.ones_like(scores, dtype=torch.bool).scatter_(1, labels.unsqueeze(1), False)
    active = (margins > 0) & not_target  # (m, k) the terms that contribute (and carry gradient)
    terms = torch.where(active, margins, 0.0)
    row_sums = torch.zeros_like(scores[:, 0])
    for j in range(k):  # left to right over the classes, as the kernel adds them
        row_sums = row_sums + terms[:, j]
    per_class = (row_sums / k).to(torch.float64).cumsum(0)[-1] / m  # rows summed in order, in float64
    loss = per_class.to(scores.dtype) * k
    return loss, (active, labels, margins)


def hinge_backward(cache: tuple) -> Tensor:
    """dL/ds_ij = 1/m for each active j != y_i; dL/ds_i,y_i = -(number of active j)/m.

    Built in units of 1/(m k) and scaled by k at the end (see above); the true class's entry subtracts one
    unit per active class, in class order, as the kernel does: -(count * unit) rounds differently.
    """
    active, labels, margins = cache
    m, k = active.shape
    unit = torch.tensor(1.0 / (m * k), dtype=torch.float64).to(margins.dtype)  # rounded once, like the kernel
    dscores = torch.where(active, unit, 0.0).to(margins.dtype)
    target_grad = torch.zeros_like(margins[:, 0])
    for j in range(k):
        target_grad = torch.where(active[:, j], target_grad - unit, target_grad)
    dscores.scatter_(1, labels.unsqueeze(1), target_grad.unsqueeze(1))
    return dscores * k


# --- L2 weight penalty (lecture 001) --------------------------------------------------------------------------


def l2_forward(weights: list[Tensor], strength: float) -> tuple[Tensor, tuple]:
    """R = strength * sum_l ||W_l||_F^2 over the weight matrices (biases are not penalised)."""
    squared_norm = sum((W * W).sum() for W in weights)
    return strength * squared_norm, (weights, strength)


def l2_backward(cache: tuple) -> list[Tensor]:
    """dR/dW_l = 2 strength W_l, one per weight matrix."""
    weights, strength = cache
    return [strength * (2 * W) for W in weights]
