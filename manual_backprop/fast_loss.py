"""The fast step's loss (manual_backprop/fast.py): the data loss and dL/dZ_L with the reference losses'
arithmetic, and the L2 penalty's value."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from manual_backprop import losses
from manual_backprop.fast_workspace import Workspace
from manual_backprop.vectorised_exp import vectorised_exp


class LossHead:
    """Mixed into ``FastTrainer``: needs ``self.config``, ``self.params`` and ``self.activations``."""

    def _loss_and_output_delta(self, Z_out: Tensor, y: Tensor, ws: Workspace, caches: dict) -> tuple[Tensor, Tensor]:
        """(the data loss, dL/dZ_L (m, k)), the reference losses' arithmetic."""
        config = self.config
        if config.loss == "cross_entropy":
            log_probs = torch.log_softmax(Z_out, dim=1)
            loss = F.nll_loss(log_probs, y)
            # softmax_cross_entropy_backward: dlog_probs holds -1/m at the labels; its row sum is exactly -1/m,
            # so the reference's rowsum tensor equals minus_one_over_m. One fused multiply-add per entry.
            dlog_probs = ws.dZ_out.zero_().scatter_(1, y.unsqueeze(1), ws.minus_one_over_m)
            dZ = torch.addcmul(dlog_probs, vectorised_exp(log_probs), ws.minus_one_over_m, value=-1, out=dlog_probs)
            return loss, dZ
        if config.loss == "bce":  # sigmoid fused with the loss, on Z_L
            loss, loss_cache = losses.sigmoid_bce_forward(Z_out, y)
            return loss, losses.sigmoid_bce_backward(loss_cache)
        # mse / l1 / hinge: the reference pairs, on A_L = f(Z_L).
        activation = self.activations[-1]
        A_out, cache = activation.forward_fn(Z_out)
        if config.loss == "mse":
            loss, loss_cache = losses.mse_forward(A_out, y, config.mse_convention)
            dA_out = losses.mse_backward(loss_cache)
        elif config.loss == "l1":
            loss, loss_cache = losses.l1_forward(A_out, y)
            dA_out = losses.l1_backward(loss_cache)
        else:
            loss, loss_cache = losses.hinge_forward(A_out, y)
            dA_out = losses.hinge_backward(loss_cache)
        return loss, activation.backward_fn(dA_out, cache)

    def _l2_penalty(self) -> Tensor:
        """losses.l2_forward's value, the same expression."""
        weights = [self.params[f"W{layer}"] for layer in range(1, self.config.num_layers + 1)]
        return self.config.l2 * sum((W * W).sum() for W in weights)
