"""The MLP of the course, trained by hand-written backpropagation: it only chains forward/backward pairs.

No autograd anywhere (DEVELOPERS.md): every derivative below is written out, and the whole engine runs under
``torch.inference_mode()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from manual_backprop import losses
from manual_backprop.activations import Activation, get_activation
from manual_backprop.config import MLPConfig
from manual_backprop.linear import linear_backward, linear_forward
from manual_backprop.record import Record


def parameter_names(config: MLPConfig) -> list[str]:
    """["W1", "b1", "W2", "b2", ...]: the course's names, layer numbers 1-based."""
    return [f"{kind}{layer}" for layer in range(1, config.num_layers + 1) for kind in ("W", "b")]


def init_parameters(config: MLPConfig, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Fresh parameters {"W1": (n1, n0), "b1": (n1,), ...} in the config's dtype and on its device.

    "torch_linear" reproduces ``nn.Linear``'s default exactly: the same bounds computed with the same float
    operations and drawn in the same order (W then b, layer by layer), so a CPU generator seeded with s gives
    the tensors that ``torch.manual_seed(s)`` followed by building the nn.Linear layers gives.
    The numbers are drawn on the CPU and then moved to the config's device, so a seed gives the same
    initial weights on every device.
    """
    dtype, device = config.torch_dtype, torch.device("cpu")
    params = {}
    for layer in range(1, config.num_layers + 1):
        fan_in, fan_out = config.sizes[layer - 1], config.sizes[layer]
        W = torch.empty(fan_out, fan_in, dtype=dtype, device=device)
        b = torch.empty(fan_out, dtype=dtype, device=device)
        if config.init == "torch_linear":
            # nn.init.kaiming_uniform_(W, a=sqrt(5)) written out: gain for leaky_relu with slope a.
            gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
            weight_bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
            W.uniform_(-weight_bound, weight_bound, generator=generator)
            bias_bound = 1 / math.sqrt(fan_in)
            b.uniform_(-bias_bound, bias_bound, generator=generator)
        else:  # "course_normal": the course's TwoLayerNet
            W.normal_(generator=generator)
            b.zero_()
        params[f"W{layer}"] = W.to(config.torch_device)
        params[f"b{layer}"] = b.to(config.torch_device)
    return params


@dataclass
class ForwardCache:
    """What the backward needs: per layer the linear and activation caches, Z and A, and the loss caches."""

    Z: list[Tensor]
    A: list[Tensor]
    linear_caches: list
    activation_caches: list
    loss: Tensor
    loss_cache: object
    l2_cache: object | None


class MLP:
    """A fully connected network built from an ``MLPConfig``, with its parameters in ``params``.

    ``params`` maps "W1", "b1", ... to tensors that this object owns and the optimizer updates in place.
    """

    def __init__(self, config: MLPConfig, params: dict[str, Tensor] | None = None,
                 generator: torch.Generator | None = None):
        self.config = config
        self.activations: list[Activation] = [
            get_activation(config.layer_activation(layer), leaky_slope=config.leaky_slope,
                           elu_alpha=config.elu_alpha)
            if config.layer_activation(layer) != "softmax" else None
            for layer in range(1, config.num_layers + 1)
        ]
        if params is None:
            params = init_parameters(config, generator)
        self.params = self._checked_parameters(params)

    # --- input checks --------------------------------------------------------------------------------------

    def _checked_parameters(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        expected = parameter_names(self.config)
        if sorted(params) != sorted(expected):
            raise ValueError(f"params: expected exactly the names {expected}; got {sorted(params)}")
        checked = {}
        for name in expected:
            layer = int(name[1:])
            shape = ((self.config.sizes[layer], self.config.sizes[layer - 1]) if name[0] == "W"
                     else (self.config.sizes[layer],))
            tensor = params[name]
            if not isinstance(tensor, Tensor):
                raise TypeError(f"params[{name!r}]: expected a tensor; got {type(tensor).__name__}")
            if tuple(tensor.shape) != shape:
                raise ValueError(f"params[{name!r}] (layer {layer}): expected shape {shape}; got {tuple(tensor.shape)}")
            if tensor.dtype != self.config.torch_dtype:
                raise TypeError(f"params[{name!r}] (layer {layer}): expected dtype {self.config.torch_dtype}; "
                                f"got {tensor.dtype}")
            if not _same_device(tensor.device, self.config.torch_device):
                raise ValueError(f"params[{name!r}] (layer {layer}): expected device {self.config.device}; "
                                 f"got {tensor.device}")
            checked[name] = tensor
        return checked

    def check_inputs(self, X: Tensor) -> None:
        """Raise a ValueError/TypeError naming the problem unless X is a (m >= 1, sizes[0]) finite batch."""
        config = self.config
        if not isinstance(X, Tensor):
            raise TypeError(f"X: expected a torch.Tensor of shape (m, {config.sizes[0]}); got {type(X).__name__}")
        if X.dim() != 2:
            raise ValueError(f"X: expected a 2-D batch of shape (m, {config.sizes[0]}); got shape {tuple(X.shape)}")
        if X.shape[0] == 0:
            raise ValueError(f"X: the batch is empty (shape {tuple(X.shape)}); need at least one sample")
        if X.shape[1] != config.sizes[0]:
            raise ValueError(f"X: layer 1 expects input width {config.sizes[0]}; got width {X.shape[1]} "
                             f"(shape {tuple(X.shape)})")
        if X.dtype != config.torch_dtype:
            raise TypeError(f"X: the model is {config.dtype}; got a {X.dtype} batch (convert it with "
                            f"X.to({config.torch_dtype}))")
        if not _same_device(X.device, config.torch_device):
            raise ValueError(f"X: the model is on {config.device}; got a batch on {X.device}")
        # One sum is a cheap screen (NaN and Inf propagate into it); only a non-finite sum, which a finite batch
        # can also overflow to, pays for the elementwise check that finds the entry.
        if not torch.isfinite(X.sum()) and not torch.isfinite(X).all():
            bad = (~torch.isfinite(X)).nonzero()[0].tolist()
            raise ValueError(f"X: contains NaN or Inf (first at row {bad[0]}, column {bad[1]}: {X[bad[0], bad[1]].item()})")

    def check_targets(self, target: Tensor, m: int) -> Tensor:
        """Return the target in the form the loss needs, or raise an error naming what is wrong.

        cross_entropy, hinge: int64 labels of shape (m,) in [0, k).
        mse: float targets (m, k) in the model's dtype, or int64 labels (m,) turned into one-hot rows
        (the course's MNIST lab trains MSE on one-hot labels).
        """
        config = self.config
        k = config.sizes[-1]
        if not isinstance(target, Tensor):
            raise TypeError(f"target: expected a torch.Tensor; got {type(target).__name__}")
        if not _same_device(target.device, config.torch_device):
            raise ValueError(f"target: the model is on {config.device}; got target on {target.device}")
        is_labels = not target.is_floating_point()
        if config.loss == "mse" and not is_labels:
            if tuple(target.shape) != (m, k):
                raise ValueError(f"target: mse expects float targets of shape ({m}, {k}); got {tuple(target.shape)}")
            if target.dtype != config.torch_dtype:
                raise TypeError(f"target: the model is {config.dtype}; got {target.dtype} targets")
            if not torch.isfinite(target).all():
                raise ValueError("target: contains NaN or Inf")
            return target
        if not is_labels:
            raise TypeError(f"target: {config.loss} expects int64 class labels of shape ({m},); got a "
                            f"{target.dtype} tensor of shape {tuple(target.shape)} (one-hot or probability "
                            f"targets are not accepted: pass the class indices)")
        if target.dtype != torch.int64:
            raise TypeError(f"target: expected int64 class labels; got dtype {target.dtype}")
        if tuple(target.shape) != (m,):
            raise ValueError(f"target: expected labels of shape ({m},) to match the batch; got {tuple(target.shape)}")
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= k:
            raise ValueError(f"target: labels must lie in [0, {k - 1}] for the {k} outputs of layer "
                             f"{config.num_layers}; got values in [{low}, {high}]")
        if config.loss == "mse":
            return torch.nn.functional.one_hot(target, k).to(config.torch_dtype)
        return target

    # --- forward / backward ---------------------------------------------------------------------------------

    def scores(self, X: Tensor) -> Tensor:
        """(m, k) the network's output without keeping caches: A_L, or the logits Z_L for a softmax output
        (softmax does not change the argmax)."""
        self.check_inputs(X)
        A = X
        for layer, activation in enumerate(self.activations, start=1):
            Z, _ = linear_forward(A, self.params[f"W{layer}"], self.params[f"b{layer}"])
            A = Z if activation is None else activation.forward_fn(Z)[0]
        return A

    def predict(self, X: Tensor) -> Tensor:
        """(m,) int64 predicted classes (argmax of the outputs)."""
        return self.scores(X).argmax(dim=1)

    def forward_pass(self, X: Tensor, target: Tensor) -> ForwardCache:
        """Run the forward pass and the loss, keeping every Z and A."""
        self.check_inputs(X)
        target = self.check_targets(target, X.shape[0])
        config = self.config
        Zs, As, linear_caches, activation_caches = [], [], [], []
        A = X  # A_0 = X
        for layer, activation in enumerate(self.activations, start=1):
            Z, linear_cache = linear_forward(A, self.params[f"W{layer}"], self.params[f"b{layer}"])
            if activation is None:  # softmax output, fused with the loss: A_L are the probabilities
                A, activation_cache = torch.softmax(Z, dim=1), None
            else:
                A, activation_cache = activation.forward_fn(Z)
            Zs.append(Z)
            As.append(A)
            linear_caches.append(linear_cache)
            activation_caches.append(activation_cache)

        if config.loss == "cross_entropy":
            data_loss, loss_cache = losses.softmax_cross_entropy_forward(Zs[-1], target)
        elif config.loss == "mse":
            data_loss, loss_cache = losses.mse_forward(As[-1], target, config.mse_convention)
        else:
            data_loss, loss_cache = losses.hinge_forward(As[-1], target)

        loss, l2_cache = data_loss, None
        if config.l2 > 0:
            weights = [self.params[f"W{layer}"] for layer in range(1, config.num_layers + 1)]
            penalty, l2_cache = losses.l2_forward(weights, config.l2)
            loss = data_loss + penalty
        return ForwardCache(Zs, As, linear_caches, activation_caches, loss, loss_cache, l2_cache)

    def backward_pass(self, cache: ForwardCache) -> Record:
        """Backpropagate from the loss to every layer; return the named record of values and gradients."""
        config = self.config
        layers: list[dict[str, Tensor]] = [{"Z": Z, "A": A} for Z, A in zip(cache.Z, cache.A)]
        l2_grads = losses.l2_backward(cache.l2_cache) if cache.l2_cache is not None else None

        # Output layer delta dL/dZ_L (lecture 000's delta^(L)).
        if config.loss == "cross_entropy":
            dZ = losses.softmax_cross_entropy_backward(cache.loss_cache)
        else:
            dA = (losses.mse_backward(cache.loss_cache) if config.loss == "mse"
                  else losses.hinge_backward(cache.loss_cache))
            layers[-1]["dA"] = dA
            dZ = self.activations[-1].backward_fn(dA, cache.activation_caches[-1])

        for layer in range(config.num_layers, 0, -1):
            record = layers[layer - 1]
            if layer < config.num_layers:
                record["dA"] = dA
                dZ = self.activations[layer - 1].backward_fn(dA, cache.activation_caches[layer - 1])
            record["dZ"] = dZ
            # dA becomes dL/dA_{layer-1}; the input X = A_0 needs none.
            dA, dW, db = linear_backward(dZ, cache.linear_caches[layer - 1], input_grad=layer > 1)
            if l2_grads is not None:
                # The weight gets two contributions, data term then penalty, summed like autograd sums them.
                dW = dW + l2_grads[layer - 1]
            record["dW"] = dW
            record["db"] = db
        return Record(loss=cache.loss, layers=layers)

    def loss_and_gradients(self, X: Tensor, target: Tensor) -> Record:
        """Forward, loss and backward in one call."""
        return self.backward_pass(self.forward_pass(X, target))

    def kink_pattern(self, cache: ForwardCache) -> Tensor:
        """A flat bool tensor saying on which side of every kink the pass landed.

        ReLU-like activations (and ELU with alpha != 1) have a jump in f' at z = 0, the hinge loss at
        margin 0. Two passes with equal patterns lie in the same smooth piece, where central differences
        are valid; the finite-difference oracle uses this to skip entries whose step crosses a kink.
        """
        parts = [cache.Z[i] > 0 for i, activation in enumerate(self.activations)
                 if activation is not None and activation.has_kink]
        if self.config.loss == "hinge":
            active, _, margins = cache.loss_cache
            parts.append(margins > 0)
        if not parts:
            return torch.zeros(0, dtype=torch.bool)
        return torch.cat([part.flatten() for part in parts])


def _same_device(a: torch.device, b: torch.device) -> bool:
    """'cuda' and 'cuda:0' name the same device when the current device is 0."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        current = torch.cuda.current_device() if a.type == "cuda" and torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index
