"""Losses from the course, each a forward/backward pair, averaged over the batch of m samples.

``*_forward(...) -> (loss, cache)`` with ``loss`` a 0-dim tensor, and ``*_backward(cache) -> dscores``: the
gradient of the loss with respect to the network's output, shape (m, k). The upstream gradient of the loss
is 1 (the loss is the root of the graph).
"""

from __future__ import annotations

import torch
from torch import Tensor


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
    picked = log_probs.gather(1, labels.unsqueeze(1))  # (m, 1) log p of the true class
    loss = -(picked.sum() / labels.shape[0])
    return loss, (log_probs, labels)


def softmax_cross_entropy_backward(cache: tuple[Tensor, Tensor]) -> Tensor:
    """dL/dZ = (softmax(Z) - onehot(y)) / m   (lecture 002: dL/dZ3 = (A3 - Y)/N; lecture 003: p - e_y).

    Evaluated as autograd does for log_softmax + nll_loss: the nll gradient g (-1/m at each true class, zero
    elsewhere) pulled back through log_softmax, ``g - exp(log_probs) * rowsum(g)``. With rowsum(g) = -1/m
    this is p/m - onehot/m; spelling it the same way keeps the result bitwise equal to autograd.
    """
    log_probs, labels = cache
    m = labels.shape[0]
    dlog_probs = torch.zeros_like(log_probs)
    dlog_probs.scatter_(1, labels.unsqueeze(1), -1.0 / m)  # we own this buffer, so in-place is safe
    return dlog_probs - torch.exp(log_probs) * dlog_probs.sum(1, keepdim=True)


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
    """dL/dY_hat = (Y_hat - Y) / m (course) or 2 (Y_hat - Y) / (m k) (mean)."""
    diff, convention = cache
    if convention == "course":
        return diff * (1.0 / diff.shape[0])
    return diff * (2.0 / diff.numel())


# --- multiclass SVM hinge loss (lecture 001) -----------------------------------------------------------------


def hinge_forward(scores: Tensor, labels: Tensor) -> tuple[Tensor, tuple]:
    """L = 1/m sum_i sum_{j != y_i} max(0, s_ij - s_i,y_i + 1).

    Inputs: scores (m, k), labels (m,) int64. Returns loss () and a cache.
    """
    m = scores.shape[0]
    correct = scores.gather(1, labels.unsqueeze(1))  # (m, 1) s_i,y_i
    margins = scores - correct + 1  # (m, k); the j = y_i entry is exactly 1 and is excluded below
    not_target = torch.ones_like(scores, dtype=torch.bool).scatter_(1, labels.unsqueeze(1), False)
    active = (margins > 0) & not_target  # (m, k) the terms that contribute (and carry gradient)
    loss = torch.where(active, margins, 0.0).sum() / m
    return loss, (active, labels, margins)


def hinge_backward(cache: tuple) -> Tensor:
    """dL/ds_ij = 1/m for each active j != y_i; dL/ds_i,y_i = -(number of active j)/m."""
    active, labels, margins = cache
    m = active.shape[0]
    dscores = active.to(margins.dtype) * (1.0 / m)
    count = active.sum(1, keepdim=True).to(margins.dtype)
    dscores.scatter_(1, labels.unsqueeze(1), -count * (1.0 / m))
    return dscores


# --- L2 weight penalty (lecture 001) --------------------------------------------------------------------------


def l2_forward(weights: list[Tensor], strength: float) -> tuple[Tensor, tuple]:
    """R = strength * sum_l ||W_l||_F^2 over the weight matrices (biases are not penalised)."""
    squared_norm = sum((W * W).sum() for W in weights)
    return strength * squared_norm, (weights, strength)


def l2_backward(cache: tuple) -> list[Tensor]:
    """dR/dW_l = 2 strength W_l, one per weight matrix."""
    weights, strength = cache
    return [strength * (2 * W) for W in weights]
