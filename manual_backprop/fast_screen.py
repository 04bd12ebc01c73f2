"""The fast step's checks: which configs it trains (``check_supported``), and its batch screen.

The batch screen refuses what the reference engine refuses, reached through a cheap screen.

Every step makes the cheap shape/dtype/device checks; the value checks (NaN, Inf, labels out of range) run the
reference engine's own checker, with its messages, only when a screen of one reduction finds something. So the
fast path refuses exactly the batches the reference refuses, with the same words, at a fraction of the reads.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig

POINTWISE = ("relu", "leaky_relu", "sigmoid", "tanh", "elu", "identity")
FAST_HIDDEN = POINTWISE + ("maxout",)
FAST_LOSSES = ("cross_entropy", "mse", "hinge", "bce", "l1")
FLOAT_TARGET_LOSSES = ("mse", "l1", "bce")  # labels become one-hot rows (check_targets), or float targets


def check_supported(config: MLPConfig) -> None:
    """Raise a ValueError naming the setting when the fast path cannot train ``config`` exactly as the reference
    engine would (those configs train with ``MLP`` + ``manual_backprop.optim``)."""
    if config.activation not in FAST_HIDDEN:
        raise ValueError(f"activation: the fast path supports {', '.join(FAST_HIDDEN)}; got {config.activation!r} "
                         "(train it with the reference engine)")
    if config.loss not in FAST_LOSSES:
        raise ValueError(f"loss: the fast path supports {', '.join(FAST_LOSSES)}; got {config.loss!r} "
                         "(train it with the reference engine)")
    if config.output_activation not in POINTWISE + ("softmax",):
        raise ValueError(f"output_activation: the fast path supports softmax (cross_entropy) and "
                         f"{', '.join(POINTWISE)}; got {config.output_activation!r}")


class BatchScreen:
    """Mixed into ``FastTrainer``: needs ``self.config``, ``self.validate``, ``self._draws_masks`` (dropout is on)
    and ``self._checker`` (the reference engine's ``InputChecker``)."""

    def _check_batch(self, X: Tensor, y: Tensor) -> int:
        """The cheap checks every step makes (the value scans are ``validate``'s): X and y are tensors on the
        model's device, X is (m, n0) in the model's dtype."""
        config = self.config
        if not isinstance(X, Tensor) or X.dim() != 2 or X.shape[1] != config.sizes[0] or X.shape[0] == 0:
            shape = tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__
            raise ValueError(f"X: expected a batch of shape (m >= 1, {config.sizes[0]}); got {shape}")
        if X.dtype != config.torch_dtype:
            raise TypeError(f"X: the model is {config.dtype}; got a {X.dtype} batch")
        if X.device.type != config.torch_device.type:
            raise ValueError(f"X: the model is on {config.device}; got a batch on {X.device}")
        if not isinstance(y, Tensor) or y.shape[:1] != X.shape[:1] or y.device != X.device:
            raise ValueError(f"y: expected {X.shape[0]} targets on {X.device} to match X; got "
                             f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
        return X.shape[0]

    def _screen(self, X: Tensor, y: Tensor, m: int, screen_inputs: bool = True) -> Tensor:
        """The reference engine's value checks, in fewer ops: the reference's own checks run (and raise with
        their message) only when a cheap screen finds something. Returns y as the loss needs it.
        screen_inputs: screen X here (else the eager step screens Z_1, see _screen_inputs)."""
        if self.validate and screen_inputs and not math.isfinite(float(X.sum())):  # NaN and Inf propagate
            self._checker.check_inputs(X)  # finds the entry; passes a finite batch whose sum overflowed
        if self.config.loss in FLOAT_TARGET_LOSSES or y.dtype != torch.int64 or y.dim() != 1:
            return self._checker.check_targets(y, m)
        # Cross-entropy on the CPU: nll_loss itself refuses a label outside [0, k) in the forward, before any
        # update (see FastTrainer._eager_step), so the range check is left to it; a CUDA kernel would assert instead.
        # With dropout the labels are checked up front, as the reference checks them before it draws a mask.
        if self.validate and not (self.config.loss == "cross_entropy" and y.device.type == "cpu"
                                  and not self._draws_masks):
            low, high = torch.aminmax(y)
            if int(low) < 0 or int(high) >= self.config.sizes[-1]:
                self._checker.check_targets(y, m)
        return y

    def _screen_inputs(self, X: Tensor, Z_1: Tensor) -> None:
        """The NaN/Inf screen of X, read from layer 1's pre-activation Z_1 = X W_1^T + b_1 (before the activation
        and before any update), which has n_1 columns where X has n_0 (784 -> 256 for MNIST: a third of the
        reads). It finds every batch the reference's check refuses: an Inf or NaN at X[r, j] makes the term
        X[r, j] W_1[i, j] of every Z_1[r, i] Inf or NaN (Inf * 0 is NaN), and a sum with an Inf or NaN term is
        never finite. A non-finite sum runs the reference's own check on X, which names the entry, or passes a
        finite batch (whose Z_1 overflowed, or whose weights have diverged: the reference trains on then too)."""
        if not math.isfinite(float(Z_1.sum())):
            self._checker.check_inputs(X)

    def _screen_divergence(self, loss: Tensor, Z_out: Tensor) -> None:
        """Raise ``DivergedBeforeUpdate`` when the batch's loss or output scores are not finite, after the forward
        and before the backward updates anything: the reference engine's step refuses such a step before its
        update (``side_by_side.model_pair.ModelPair.step``), so the fast path refuses it at the same point, with
        nothing updated. One reduction of Z (m, k) and one read of the loss. The output is checked as well as the
        loss because the hinge loss turns NaN margins into 0."""
        loss_value = float(loss)
        if not math.isfinite(loss_value):
            raise DivergedBeforeUpdate(loss_value, "loss")
        if not math.isfinite(float(Z_out.sum())) and not bool(torch.isfinite(Z_out).all()):
            raise DivergedBeforeUpdate(loss_value, "output scores Z")


class DivergedBeforeUpdate(ArithmeticError):
    """The fast step's loss (``what == "loss"``) or output scores became non-finite; nothing was updated.
    ``loss``: the batch's loss as a float."""

    def __init__(self, loss: float, what: str):
        super().__init__(f"the {what} became non-finite (loss {loss}); nothing was updated")
        self.loss, self.what = loss, what
