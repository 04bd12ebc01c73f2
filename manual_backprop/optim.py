"""Gradient descent for the engine's parameters (lectures 000 and 004).

Plain SGD: W <- W - lr G. With momentum (lecture 004): V <- beta V + G, W <- W - lr V, which is also
PyTorch's convention (torch.optim.SGD with dampening 0), so the same hyper-parameters mean the same thing
in both models. The updates use the same tensor operations as torch.optim.SGD's per-tensor loop, so the
engine's weights stay bitwise equal to the twin's after any number of steps on the CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class SGD:
    """Updates ``params`` (a dict of tensors, owned by the model) in place from a dict of gradients."""

    def __init__(self, params: dict[str, Tensor], lr: float, momentum: float = 0.0):
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr: expected a finite learning rate > 0; got {lr!r}")
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
            raise ValueError(f"momentum: expected 0 <= momentum < 1; got {momentum!r}")
        self.params = params
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.velocity: dict[str, Tensor] = {}  # V per parameter, created at the first step

    def step(self, grads: dict[str, Tensor]) -> None:
        """One update. ``grads`` must hold a gradient for every parameter, same shape."""
        missing = sorted(set(self.params) - set(grads))
        if missing:
            raise ValueError(f"grads: missing gradients for {missing}")
        for name, param in self.params.items():
            grad = grads[name]
            if grad.shape != param.shape:
                raise ValueError(f"grads[{name!r}]: expected shape {tuple(param.shape)}; got {tuple(grad.shape)}")
            if self.momentum:
                velocity = self.velocity.get(name)
                if velocity is None:  # V_0 = 0, so V_1 = G
                    self.velocity[name] = velocity = grad.clone()
                else:
                    velocity.mul_(self.momentum).add_(grad)
                grad = velocity
            # add_ with alpha (one fused multiply-add per entry), as torch.optim.SGD does: W - lr*V written
            # as two operations would round twice and drift from the twin.
            param.add_(grad, alpha=-self.lr)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum,
                "velocity": {name: tensor.clone() for name, tensor in self.velocity.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("momentum") != self.momentum or state.get("lr") != self.lr:
            raise ValueError(f"optimizer state: saved with lr={state.get('lr')}, momentum={state.get('momentum')}; "
                             f"this optimizer has lr={self.lr}, momentum={self.momentum}")
        unknown = sorted(set(state["velocity"]) - set(self.params))
        if unknown:
            raise ValueError(f"optimizer state: velocity for unknown parameters {unknown}")
        self.velocity = {name: tensor.to(self.params[name].device, self.params[name].dtype).clone()
                         for name, tensor in state["velocity"].items()}
