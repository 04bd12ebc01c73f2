"""What one step of the model pair returns, and how it says a model diverged."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from manual_backprop.record import Record


class DivergenceError(Exception):
    """A model's loss or weights stopped being finite; the message says which and when."""


def diverged_loss(model: str, loss: float) -> str:
    """A step's refusal when ``model``'s ("manual", "autograd") loss is not finite; nothing was updated."""
    return f"the {model} model's loss became {loss}; stopping without updating the weights"


def overflowed(model: str, bad: str, loss: float) -> str:
    """A step's refusal when ``model``'s ``bad`` (output scores or a gradient) is not finite under a finite loss."""
    return (f"the {model} model's {bad} became non-finite (an overflow: the loss is still {loss}); stopping without "
            "updating the weights")


@dataclass
class StepResult:
    engine_record: Record | None  # None on the fast path, which keeps no record
    twin_record: Record | None
    engine_loss: float  # data-parallel: the mean over the ranks, i.e. the loss of the global batch
    twin_loss: float | None
    stop_requested: bool = False  # data-parallel: True when any rank asked to stop (all ranks agree)
    engine_grads: dict | None = None  # the fast path's data-parallel step: copies of the averaged gradients


def non_finite_parameter(params: dict[str, Tensor]) -> str | None:
    """The name of the first parameter holding NaN or Inf, or None. One sum per tensor: NaN and Inf propagate
    into it (a finite tensor whose sum overflows is then checked entry by entry)."""
    for name, tensor in params.items():
        if not torch.isfinite(tensor.sum()) and not torch.isfinite(tensor).all():
            return name
    return None
