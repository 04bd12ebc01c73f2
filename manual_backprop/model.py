"""The MLP of the course, trained by hand-written backpropagation: it only chains forward/backward pairs.

No autograd anywhere (DEVELOPERS.md): every derivative below is written out, and the whole engine runs under
``torch.inference_mode()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from manual_backprop import losses
from manual_backprop.activations import Activation, get_activation
from manual_backprop.config import MLPConfig
from manual_backprop.dropout import dropout_backward, dropout_forward

# init_parameters and parameter_names live in init.py; imported here too, where callers have found them so far.
from manual_backprop.init import init_parameters, parameter_names, parameter_shape  # noqa: F401 (re-exported)
from manual_backprop.linear import linear_backward, linear_forward
from manual_backprop.model_checks import ModelChecks
from manual_backprop.record import Record


@dataclass
class ForwardCache:
    """What the backward needs: per layer the linear and activation caches, Z and A, and the loss caches.

    For l = 0..L-1 (the output layer is never dropped): dropout_noise[l] is the scaled mask applied to A_l
    (A_0 = X), None where nothing was dropped (evaluation, p = 0); D[l] the tensor layer l + 1 read (A_l
    itself where nothing was dropped).
    """

    Z: list[Tensor]
    A: list[Tensor]
    linear_caches: list
    activation_caches: list
    loss: Tensor
    loss_cache: object
    l2_cache: object | None
    dropout_noise: list | None = None
    D: list | None = None


class MLP(ModelChecks):
    """A fully connected network built from an ``MLPConfig``, with its parameters in ``params``.

    ``params`` maps "W1", "b1", ... to the parameter tensors, which the optimizer and max-norm update in place.
    Passed in, they are kept, not copied: the model and the caller share them, so the caller sees every update
    (and a change the caller makes is the model's). Pass ``{name: t.clone() for name, t in params.items()}``
    to start an independent model from the same values. Without ``params``, ``init_parameters(config,
    generator)`` draws fresh ones.
    """

    def __init__(self, config: MLPConfig, params: dict[str, Tensor] | None = None,
                 generator: torch.Generator | None = None):
        self.config = config
        # The output activation of a fused network (softmax + cross-entropy, sigmoid + bce) is part of the loss:
        # None here.
        self.activations: list[Activation | None] = [
            None if layer == config.num_layers and config.fused_output else
            get_activation(config.layer_activation(layer), leaky_slope=config.leaky_slope,
                           elu_alpha=config.elu_alpha, maxout_pieces=config.maxout_pieces)
            for layer in range(1, config.num_layers + 1)
        ]
        if params is None:
            params = init_parameters(config, generator)
        self.params = self._checked_parameters(params)

    # --- forward / backward ---------------------------------------------------------------------------------

    def scores(self, X: Tensor) -> Tensor:
        """(m, k) the network's output without keeping caches or dropping anything (evaluation): A_L, or the
        logits Z_L for a fused output (softmax or bce's sigmoid: neither changes the ranking)."""
        self.check_inputs(X)
        A = X
        for layer, activation in enumerate(self.activations, start=1):
            Z, _ = linear_forward(A, self.params[f"W{layer}"], self.params[f"b{layer}"])
            A = Z if activation is None else activation.forward_fn(Z)[0]
        return A

    def predict(self, X: Tensor) -> Tensor:
        """(m,) int64 predicted classes: the argmax of the outputs, or for bce with one output the label
        sigmoid(z) > 1/2, i.e. z > 0."""
        scores = self.scores(X)
        if self.config.loss == "bce" and scores.shape[1] == 1:
            return (scores[:, 0] > 0).long()
        return scores.argmax(dim=1)

    def forward_pass(self, X: Tensor, target: Tensor, *, train: bool = False) -> ForwardCache:
        """Run the forward pass and the loss, keeping every Z and A.

        ``train=True`` applies dropout (config.input_dropout to X, config.dropout to each hidden layer's A),
        drawing the masks from torch's default generator exactly as the twin's nn.Dropout does (dropout.py);
        the default evaluation pass drops nothing and draws nothing.
        """
        self.check_inputs(X)
        if not isinstance(train, bool):
            raise TypeError(f"train: expected True or False; got {train!r}")
        target = self.check_targets(target, X.shape[0])
        config = self.config
        Zs, As, linear_caches, activation_caches = [], [], [], []
        input_p = config.input_dropout if train else 0.0
        hidden_p = config.dropout if train else 0.0
        D, noise = dropout_forward(X, input_p)  # D_0: what layer 1 reads
        Ds, noises = [D], [noise]
        for layer, activation in enumerate(self.activations, start=1):
            Z, linear_cache = linear_forward(D, self.params[f"W{layer}"], self.params[f"b{layer}"])
            if activation is None:  # fused output: A_L are the probabilities, the loss reads Z_L
                A = torch.softmax(Z, dim=1) if config.loss == "cross_entropy" else torch.sigmoid(Z)
                activation_cache = None
            else:
                A, activation_cache = activation.forward_fn(Z)
            Zs.append(Z)
            As.append(A)
            linear_caches.append(linear_cache)
            activation_caches.append(activation_cache)
            if layer < config.num_layers:
                D, noise = dropout_forward(A, hidden_p)
                Ds.append(D)
                noises.append(noise)

        if config.loss == "cross_entropy":
            data_loss, loss_cache = losses.softmax_cross_entropy_forward(Zs[-1], target)
        elif config.loss == "bce":
            data_loss, loss_cache = losses.sigmoid_bce_forward(Zs[-1], target)
        elif config.loss == "mse":
            data_loss, loss_cache = losses.mse_forward(As[-1], target, config.mse_convention)
        elif config.loss == "l1":
            data_loss, loss_cache = losses.l1_forward(As[-1], target)
        else:
            data_loss, loss_cache = losses.hinge_forward(As[-1], target)

        loss, l2_cache = data_loss, None
        if config.l2 > 0:
            weights = [self.params[f"W{layer}"] for layer in range(1, config.num_layers + 1)]
            penalty, l2_cache = losses.l2_forward(weights, config.l2)
            loss = data_loss + penalty
        return ForwardCache(Zs, As, linear_caches, activation_caches, loss, loss_cache, l2_cache, noises, Ds)

    def backward_pass(self, cache: ForwardCache, *, input_grad: bool = False,
                      on_gradient: Callable[[str, Tensor], None] | None = None) -> Record:
        """Backpropagate from the loss to every layer; return the named record of values and gradients.

        ``input_grad=True`` also carries the gradient down to the input: dL/dX in ``record.input["dX"]``.
        ``on_gradient(name, grad)`` is called as soon as a parameter's gradient is final ("b3", "W3", then
        "b2", ...), while the layers below are still to come: data-parallel training launches its all-reduce
        there (manual_backprop/data_parallel.py). The callback may change the tensor in place only after the
        backward has returned (the record holds the same tensor).
        """
        config = self.config
        layers: list[dict[str, Tensor]] = [{"Z": Z, "A": A} for Z, A in zip(cache.Z, cache.A)]
        noises = cache.dropout_noise or [None] * config.num_layers
        for layer in range(1, config.num_layers):
            if noises[layer] is not None:
                layers[layer - 1]["D"] = cache.D[layer]
        l2_grads = losses.l2_backward(cache.l2_cache) if cache.l2_cache is not None else None

        # Output layer delta dL/dZ_L (lecture 000's delta^(L)).
        if config.loss == "cross_entropy":
            dZ = losses.softmax_cross_entropy_backward(cache.loss_cache)
        elif config.loss == "bce":
            dZ = losses.sigmoid_bce_backward(cache.loss_cache)
        else:
            if config.loss == "mse":
                dA = losses.mse_backward(cache.loss_cache)
            elif config.loss == "l1":
                dA = losses.l1_backward(cache.loss_cache)
            else:
                dA = losses.hinge_backward(cache.loss_cache)
            layers[-1]["dA"] = dA
            dZ = self.activations[-1].backward_fn(dA, cache.activation_caches[-1])

        dD = None  # dL/dD_l of the layer above, set at the end of each iteration (the output layer has none)
        for layer in range(config.num_layers, 0, -1):
            record = layers[layer - 1]
            if layer < config.num_layers:
                dA = dropout_backward(dD, noises[layer])  # dL/dA_l from dL/dD_l
                record["dA"] = dA
                dZ = self.activations[layer - 1].backward_fn(dA, cache.activation_caches[layer - 1])
            record["dZ"] = dZ
            # dD becomes dL/dD_{layer-1}; the input X = A_0 needs one only when asked for.
            dD, dW, db = linear_backward(dZ, cache.linear_caches[layer - 1], input_grad=layer > 1 or input_grad)
            if l2_grads is not None:
                # The weight gets two contributions, data term then penalty, summed like autograd sums them.
                dW = dW + l2_grads[layer - 1]
            record["dW"] = dW
            record["db"] = db
            if on_gradient is not None:  # both are final; the bias first, as a small one tops up a bucket
                on_gradient(f"b{layer}", db)
                on_gradient(f"W{layer}", dW)
        inputs = {}
        if noises[0] is not None:
            inputs["D"] = cache.D[0]
        if input_grad:
            inputs["dX"] = dropout_backward(dD, noises[0])
        return Record(loss=cache.loss, layers=layers, input=inputs)

    def loss_and_gradients(self, X: Tensor, target: Tensor, *, train: bool = False, input_grad: bool = False,
                           on_gradient: Callable[[str, Tensor], None] | None = None) -> Record:
        """Forward, loss and backward in one call.

        train: apply dropout (see forward_pass); input_grad: also return dL/dX; on_gradient: see backward_pass.
        """
        return self.backward_pass(self.forward_pass(X, target, train=train), input_grad=input_grad,
                                  on_gradient=on_gradient)

    def kink_pattern(self, cache: ForwardCache) -> Tensor:
        """A flat bool tensor saying on which side of every kink the pass landed.

        ReLU-like activations (and ELU with alpha != 1) have a jump in f' at z = 0, maxout where the
        winning piece changes, the hinge loss at margin 0, L1 where a prediction meets its target. Two passes
        with equal patterns lie in the same smooth piece, where central differences are valid; the
        finite-difference oracle uses this to skip entries whose step crosses a kink.
        """
        parts = []
        for i, activation in enumerate(self.activations):
            if activation is None:
                continue
            if activation.name == "maxout":
                winner, pieces = cache.activation_caches[i]
                parts.append(winner.unsqueeze(2) == torch.arange(pieces, device=winner.device))
            elif activation.has_kink:
                parts.append(cache.Z[i] > 0)
        if self.config.loss == "hinge":
            active, _, margins = cache.loss_cache
            parts.append(margins > 0)
        if self.config.loss == "l1":
            diff = cache.loss_cache
            parts += [diff > 0, diff < 0]
        if not parts:
            return torch.zeros(0, dtype=torch.bool)
        return torch.cat([part.flatten() for part in parts])
