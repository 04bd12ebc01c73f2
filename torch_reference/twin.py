"""The autograd twin: the same network as an ``nn.Module`` from standard PyTorch modules and losses.

Its gradients come from ``loss.backward()``; ``retain_grad()`` on every Z and A (lecture 002) gives the
intermediate gradients, which it hands back in the engine's ``Record`` layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manual_backprop.config import MLPConfig
from manual_backprop.record import Record


def state_dict_key(engine_name: str) -> str:
    """The one mapping between the engine's parameter names and the twin's state_dict keys.

    "W3" -> "layers.2.weight", "b3" -> "layers.2.bias" (engine layers are 1-based, ModuleList 0-based).
    """
    kind, layer = engine_name[0], engine_name[1:]
    if kind not in ("W", "b") or not layer.isdigit() or int(layer) < 1:
        raise ValueError(f"parameter name: expected 'W<l>' or 'b<l>' with l >= 1; got {engine_name!r}")
    return f"layers.{int(layer) - 1}.{'weight' if kind == 'W' else 'bias'}"


def _activation_module(name: str, config: MLPConfig) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(config.leaky_slope)
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    if name == "elu":
        return nn.ELU(config.elu_alpha)
    if name in ("identity", "softmax"):  # softmax is applied inside F.cross_entropy
        return nn.Identity()
    raise ValueError(f"activation: unknown name {name!r}")


class TwinMLP(nn.Module):
    """``nn.Linear`` layers with activation modules between them, built from the same ``MLPConfig``."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        factory = {"dtype": config.torch_dtype, "device": config.torch_device}
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out, **factory) for n_in, n_out in zip(config.sizes[:-1], config.sizes[1:])
        )
        self.activations = nn.ModuleList(
            _activation_module(config.layer_activation(layer), config)
            for layer in range(1, config.num_layers + 1)
        )

    @classmethod
    def from_engine(cls, config: MLPConfig, params: dict[str, Tensor]) -> "TwinMLP":
        twin = cls(config)
        twin.load_engine_parameters(params)
        return twin

    def load_engine_parameters(self, params: dict[str, Tensor]) -> None:
        """Copy the engine's {"W1": ..., "b1": ...} into this module through ``state_dict_key``."""
        state = {state_dict_key(name): tensor for name, tensor in params.items()}
        self.load_state_dict(state, strict=True)

    def engine_parameters(self) -> dict[str, Tensor]:
        """This module's parameters under the engine's names (the same tensors, not copies)."""
        by_key = dict(self.named_parameters())
        return {name: by_key[state_dict_key(name)]
                for layer in range(1, self.config.num_layers + 1) for name in (f"W{layer}", f"b{layer}")}

    def forward(self, X: Tensor) -> Tensor:
        """(m, k) outputs: the logits for a softmax network, A_L otherwise."""
        return self._forward(X)[1][-1]

    def _forward(self, X: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        Zs, As = [], []
        A = X
        for linear, activation in zip(self.layers, self.activations):
            Z = linear(A)
            A = activation(Z)
            Zs.append(Z)
            As.append(A)
        return Zs, As

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        """The data loss in the course's convention, from PyTorch's own loss functions."""
        config = self.config
        m, k = outputs.shape
        if config.loss == "cross_entropy":
            return F.cross_entropy(outputs, target)
        if config.loss == "mse":
            if not target.is_floating_point():
                target = F.one_hot(target, k).to(outputs.dtype)
            if config.mse_convention == "mean":
                return F.mse_loss(outputs, target)
            # Course: 1/(2m) ||Y_hat - Y||^2, i.e. PyTorch's summed squared error divided by 2m.
            return F.mse_loss(outputs, target, reduction="sum") / (2 * m)
        # PyTorch's multi_margin_loss divides each sample's sum over j != y by the number of classes k;
        # the course's hinge loss does not, so multiply it back.
        return F.multi_margin_loss(outputs, target) * k

    def l2_penalty(self) -> Tensor:
        """l2 * sum_l ||W_l||_F^2, weights only."""
        return self.config.l2 * sum((layer.weight * layer.weight).sum() for layer in self.layers)

    def loss_and_gradients(self, X: Tensor, target: Tensor) -> Record:
        """One forward/backward through autograd; every Z and A keeps its gradient.

        Parameter gradients are reset first, so the record holds this pass's gradients only.
        """
        self.zero_grad(set_to_none=True)
        with torch.enable_grad():
            Zs, As = self._forward(X)
            for Z, A in zip(Zs, As):
                Z.retain_grad()
                A.retain_grad()  # a no-op re-request where A is Z (identity output)
            data_loss = self.loss(As[-1], target)
            loss = data_loss + self.l2_penalty() if self.config.l2 > 0 else data_loss
            loss.backward()

        layers = []
        softmax_output = self.config.output_activation == "softmax"
        for index, (Z, A, linear) in enumerate(zip(Zs, As, self.layers)):
            is_output = index == len(self.layers) - 1
            record = {"Z": Z.detach(), "A": A.detach()}
            if is_output and softmax_output:
                # The fused loss never sees the probabilities; report them, with no gradient.
                record["A"] = torch.softmax(Z.detach(), dim=1)
            else:
                record["dA"] = A.grad
            record["dZ"] = Z.grad
            record["dW"] = linear.weight.grad
            record["db"] = linear.bias.grad
            layers.append(record)
        return Record(loss=loss.detach(), layers=layers)
