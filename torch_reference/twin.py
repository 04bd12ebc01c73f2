"""The autograd twin: the same network as an ``nn.Module`` from standard PyTorch modules and losses.

Its gradients come from ``loss.backward()``; ``retain_grad()`` on every Z and A (lecture 002) gives the
intermediate gradients, which it hands back in the engine's ``Record`` layout.

Dropout is ``nn.Dropout`` (on the input and after each hidden activation), active only in training mode. A
TwinMLP starts in evaluation mode, so ``twin(X)`` is dropout-free like the engine's ``scores``;
``loss_and_gradients(..., train=True)`` switches to training mode for that pass only.
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


class Maxout(nn.Module):
    """Maxout over k pieces per unit: (m, n * k) -> (m, n), unit j's pieces in columns j*k .. j*k + k-1.

    The twin builds it from standard parts: its preceding nn.Linear produces the n * k pieces, and this is
    ``view`` + ``max``, whose autograd gradient goes to the (first) winning piece.
    """

    def __init__(self, pieces: int):
        super().__init__()
        self.pieces = pieces

    def forward(self, z: Tensor) -> Tensor:
        m, width = z.shape
        return z.view(m, width // self.pieces, self.pieces).max(dim=2).values


def _activation_module(name: str, config: MLPConfig, output: bool) -> nn.Module:
    if output and config.fused_output:  # softmax and bce's sigmoid are applied inside the loss function
        return nn.Identity()
    if name == "maxout":
        return Maxout(config.maxout_pieces)
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
            nn.Linear(n_in, n_out, **factory)
            for n_out, n_in in (config.linear_shape(layer) for layer in range(1, config.num_layers + 1))
        )
        self.activations = nn.ModuleList(
            _activation_module(config.layer_activation(layer), config, layer == config.num_layers)
            for layer in range(1, config.num_layers + 1)
        )
        # dropouts[0] acts on the input, dropouts[l] on hidden layer l's activation (no parameters, so the
        # state_dict keys stay those of state_dict_key).
        self.dropouts = nn.ModuleList(
            nn.Dropout(config.input_dropout if layer == 0 else config.dropout)
            for layer in range(config.num_layers)
        )
        self.eval()

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

    def forward(self, X: Tensor, intermediates: bool = False):
        """(m, k) outputs: the logits for a fused output (softmax, bce's sigmoid), A_L otherwise.
        ``intermediates=True`` returns (Zs, As, Ds) instead (see _forward): the way loss_and_gradients runs the
        forward through a DistributedDataParallel wrapper, which must see the call to prepare its all-reduce."""
        return self._forward(X) if intermediates else self._forward(X)[1][-1]

    def _forward(self, X: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Zs, As, and Ds: Ds[l] is what layer l + 1 reads (dropout applied, l = 0 the input)."""
        Zs, As = [], []
        D = self.dropouts[0](X)
        Ds = [D]
        for layer, (linear, activation) in enumerate(zip(self.layers, self.activations), start=1):
            Z = linear(D)
            A = activation(Z)
            Zs.append(Z)
            As.append(A)
            if layer < len(self.layers):
                D = self.dropouts[layer](A)
                Ds.append(D)
        return Zs, As, Ds

    @torch.no_grad()
    def apply_max_norm(self, c: float) -> None:
        """Max-norm: rescale every layer's weight rows (each unit's incoming weights) to 2-norm <= c, in place
        (``torch.renorm``; see manual_backprop/constraints.py for the choice of layers)."""
        if not c > 0:
            raise ValueError(f"max_norm: expected a norm bound c > 0; got {c!r}")
        for linear in self.layers:
            linear.weight.renorm_(2, 0, c)

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        """The data loss in the course's convention, from PyTorch's own loss functions."""
        config = self.config
        m, k = outputs.shape
        if config.loss == "cross_entropy":
            return F.cross_entropy(outputs, target)
        if config.loss in ("mse", "l1", "bce") and not target.is_floating_point():
            # int64 labels: one-hot rows, or for bce with one output the 0/1 label column (the engine's rule).
            target = (target.to(outputs.dtype).unsqueeze(1) if config.loss == "bce" and k == 1
                      else F.one_hot(target, k).to(outputs.dtype))
        if config.loss == "bce":
            return F.binary_cross_entropy_with_logits(outputs, target)
        if config.loss == "l1":
            return F.l1_loss(outputs, target)
        if config.loss == "mse":
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

    def loss_and_gradients(self, X: Tensor, target: Tensor, *, train: bool = False, input_grad: bool = False,
                           wrapper: nn.Module | None = None) -> Record:
        """One forward/backward through autograd; every Z and A keeps its gradient.

        train: run the pass in training mode (nn.Dropout active), then restore the module's previous mode.
        input_grad: also return dL/dX (from a leaf ``X.detach().requires_grad_()``) as ``record.input["dX"]``.
        Parameter gradients are reset first, so the record holds this pass's gradients only.
        wrapper: a ``DistributedDataParallel`` around this module; the forward then runs through it, so its
        backward all-reduces the parameter gradients (the record's dW and db are the averages over the ranks;
        every other entry is this rank's own).
        """
        self.zero_grad(set_to_none=True)
        was_training = self.training
        self.train(train)
        try:
            with torch.enable_grad():
                if input_grad:
                    X = X.detach().requires_grad_()
                Zs, As, Ds = self._forward(X) if wrapper is None else wrapper(X, intermediates=True)
                for Z, A in zip(Zs, As):
                    Z.retain_grad()
                    A.retain_grad()  # a no-op re-request where A is Z (identity output)
                data_loss = self.loss(As[-1], target)
                loss = data_loss + self.l2_penalty() if self.config.l2 > 0 else data_loss
                loss.backward()
        finally:
            self.train(was_training)

        layers = []
        fused_output = self.config.fused_output
        for index, (Z, A, linear) in enumerate(zip(Zs, As, self.layers)):
            is_output = index == len(self.layers) - 1
            record = {"Z": Z.detach(), "A": A.detach()}
            if is_output and fused_output:
                # The fused loss never sees the probabilities; report them, with no gradient.
                record["A"] = (torch.softmax(Z.detach(), dim=1) if self.config.loss == "cross_entropy"
                               else torch.sigmoid(Z.detach()))
            else:
                record["dA"] = A.grad
            if not is_output and train and self.config.dropout > 0:  # the dropouts that acted
                record["D"] = Ds[index + 1].detach()
            record["dZ"] = Z.grad
            record["dW"] = linear.weight.grad
            record["db"] = linear.bias.grad
            layers.append(record)
        inputs = {}
        if train and self.config.input_dropout > 0:
            inputs["D"] = Ds[0].detach()
        if input_grad:
            inputs["dX"] = X.grad
        return Record(loss=loss.detach(), layers=layers, input=inputs)
