"""The fast path's SGD with momentum (manual_backprop/fast.py): the engine ``SGD``'s V <- momentum V + G,
W <- W - lr V, on buffers the step binds once, with the ``_foreach_`` calls that run the same per-tensor ops in
one dispatch, and the opt-in ``fuse_velocity`` forms (the GEMM writes the velocity; not bitwise)."""

from __future__ import annotations

import torch
from torch import Tensor


class MomentumSGD:
    """Mixed into ``FastTrainer``: needs ``self.config``, ``self.lr``, ``self.momentum``, ``self._velocity``,
    ``self._velocity_started`` and ``self._momentum_tensor``."""

    def _scale_velocity(self, velocities: list[Tensor]) -> None:
        """The engine SGD's V.mul_(momentum) for each buffer, in one call. The momentum is passed as a 0-dim tensor
        of the buffers' dtype: a Python number would be wrapped into a new tensor for every buffer (about a third
        of the call's time at small batches); the kernel reads both as the same scalar, so the bits are the same."""
        torch._foreach_mul_(velocities, self._momentum_scalar())

    def _momentum_scalar(self) -> Tensor:
        """The momentum as a 0-dim tensor of the parameters' dtype and device (made anew if ``momentum`` changed)."""
        value, tensor = self._momentum_tensor
        if value != self.momentum:
            tensor = torch.tensor(self.momentum, dtype=self.config.torch_dtype, device=self.config.torch_device)
            self._momentum_tensor = (self.momentum, tensor)
        return tensor

    def _fold_into_velocity(self, velocities: list[Tensor], gradients: list[Tensor], scaled: bool = False) -> None:
        """The engine SGD's V <- momentum V + G (V_1 = G) for each pair: its mul_ then add_, through the
        _foreach_ calls (one dispatch for the list; on the CPU they loop over the same per-tensor ops).
        scaled: the mul_ has been done already (_eager_step scales every buffer in one call)."""
        if self._velocity_started:
            if not scaled:
                self._scale_velocity(velocities)
            torch._foreach_add_(velocities, gradients)
        else:
            for velocity, gradient in zip(velocities, gradients):
                velocity.copy_(gradient)

    def _sgd(self, name: str, param: Tensor, gradient: Tensor) -> None:
        """manual_backprop.optim.SGD.update for one tensor, op for op."""
        if self.momentum:
            self._fold_into_velocity([self._velocity[name]], [gradient])
            gradient = self._velocity[name]
        param.add_(gradient, alpha=-self.lr)

    def _fused_velocity(self, velocity: Tensor, W: Tensor, dZ: Tensor, A_prev: Tensor) -> None:
        """V <- momentum V + dZ^T A (+ 2 l2 W) with the GEMM adding momentum V itself: no dW tensor."""
        if self._velocity_started:
            velocity.addmm_(dZ.t(), A_prev, beta=self.momentum)
        else:
            torch.mm(dZ.t(), A_prev, out=velocity)
        if self.config.l2 > 0:
            velocity.add_(W, alpha=2 * self.config.l2)

    def _fused_weight_update(self, name: str, W: Tensor, dZ: Tensor, A_prev: Tensor) -> None:
        """The weight update with the GEMM writing into the velocity (or the weights): no dW tensor."""
        if self.momentum:
            self._fused_velocity(self._velocity[name], W, dZ, A_prev)
            W.add_(self._velocity[name], alpha=-self.lr)
        else:
            if self.config.l2 > 0:  # W - lr (dZ^T A + 2 l2 W) = (1 - 2 lr l2) W - lr dZ^T A
                W.mul_(1 - 2 * self.lr * self.config.l2)
            W.addmm_(dZ.t(), A_prev, alpha=-self.lr)
