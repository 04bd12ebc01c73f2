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


class MLP:
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

    # --- input checks --------------------------------------------------------------------------------------

    def _checked_parameters(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        expected = parameter_names(self.config)
        if sorted(params) != sorted(expected):
            raise ValueError(f"params: expected exactly the names {expected}; got {sorted(params)}")
        checked = {}
        for name in expected:
            layer = int(name[1:])
            shape = parameter_shape(self.config, name)
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
            raise ValueError(f"X: contains NaN or Inf (first at row {bad[0]}, column {bad[1]}: "
                             f"{X[bad[0], bad[1]].item()})")

    def check_targets(self, target: Tensor, m: int) -> Tensor:
        """Return the target in the form the loss needs, or raise an error naming what is wrong.

        One rule for integer targets, every loss: class labels are int64 of shape (m,) in [0, k) (other
        integer dtypes are refused, whatever the loss). cross_entropy and hinge use them as class indices;
        mse, l1 and bce turn them into one-hot rows (the course's MNIST lab trains MSE on one-hot labels; bce
        then trains k one-vs-rest outputs), except that bce with a single output (k = 1) takes 0/1 labels as
        the target column itself.
        Float targets (m, k) in the model's dtype: mse and l1 (any finite values), bce (values in [0, 1]).
        """
        config = self.config
        k = config.sizes[-1]
        if not isinstance(target, Tensor):
            raise TypeError(f"target: expected a torch.Tensor; got {type(target).__name__}")
        if not _same_device(target.device, config.torch_device):
            raise ValueError(f"target: the model is on {config.device}; got target on {target.device}")
        float_targets = config.loss in ("mse", "l1", "bce")
        if target.is_floating_point():
            if not float_targets:
                raise TypeError(f"target: {config.loss} expects int64 class labels of shape ({m},); got a "
                                f"{target.dtype} tensor of shape {tuple(target.shape)} (one-hot or probability "
                                f"targets are not accepted: pass the class indices)")
            if tuple(target.shape) != (m, k):
                raise ValueError(f"target: {config.loss} expects float targets of shape ({m}, {k}) (or int64 "
                                 f"class labels of shape ({m},)); got {tuple(target.shape)}")
            if target.dtype != config.torch_dtype:
                raise TypeError(f"target: the model is {config.dtype}; got {target.dtype} targets")
            if not torch.isfinite(target).all():
                raise ValueError("target: contains NaN or Inf")
            if config.loss == "bce" and not ((target >= 0) & (target <= 1)).all():
                raise ValueError(f"target: bce expects targets in [0, 1] (labels or probabilities); got values "
                                 f"in [{target.min().item()}, {target.max().item()}]")
            return target
        if target.dtype != torch.int64:
            raise TypeError(f"target: class labels must be int64 (torch.long) for every loss; got dtype "
                            f"{target.dtype} (convert with target.long())")
        if tuple(target.shape) != (m,):
            raise ValueError(f"target: expected labels of shape ({m},) to match the batch; got {tuple(target.shape)}")
        classes = 2 if config.loss == "bce" and k == 1 else k  # one bce output: labels 0 and 1
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= classes:
            raise ValueError(f"target: labels must lie in [0, {classes - 1}] for the {k} output"
                             f"{'s' if k > 1 else ''} of layer {config.num_layers}"
                             f"{' (bce with one output: 0 or 1)' if classes != k else ''}; "
                             f"got values in [{low}, {high}]")
        if not float_targets:
            return target
        if config.loss == "bce" and k == 1:
            return target.to(config.torch_dtype).unsqueeze(1)
        return torch.nn.functional.one_hot(target, k).to(config.torch_dtype)

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


def _same_device(a: torch.device, b: torch.device) -> bool:
    """'cuda' and 'cuda:0' name the same device when the current device is 0."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        current = torch.cuda.current_device() if a.type == "cuda" and torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index
