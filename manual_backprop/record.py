"""The named record of one forward/backward pass, the same shape for the engine and the autograd twin."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

# Per layer, in the order the parity table lists them: forward values, then gradients, each named after the
# tensor it is the gradient of (Z -> dZ, W -> dW). D is A after dropout (what layer l + 1 reads).
TENSOR_NAMES = ("Z", "A", "D", "dA", "dZ", "dW", "db")
# The input, "layer 0" (A_0 = X): X after input dropout, and dL/dX.
INPUT_TENSOR_NAMES = ("D", "dX")


@dataclass
class Record:
    """Everything one pass produced.

    loss: () the total loss (data term plus the L2 term when there is one).
    layers: one dict per layer l = 1..L (``layers[l - 1]``), with keys from TENSOR_NAMES:
        Z (m, n_l) pre-activations ((m, n_l * k) for a maxout layer: its k pieces per unit), A (m, n_l)
        activations, D (m, n_l) A after dropout (only in a training pass with dropout, hidden layers),
        dA (m, n_l) dL/dA, dZ dL/dZ (Z's shape), dW (W's shape), db (b's shape).
        The output layer of a fused network (softmax + cross-entropy, sigmoid + bce) has no dA: the fused loss
        is a function of Z, so the probabilities A are reported but no gradient flows through them.
    input: layer 0, with keys from INPUT_TENSOR_NAMES, each only when there is one:
        D (m, n_0) X after input dropout (training pass with input dropout), dX (m, n_0) dL/dX (asked for with
        ``input_grad=True``). Empty otherwise.
    """

    loss: Tensor
    layers: list[dict[str, Tensor]]
    input: dict[str, Tensor] = field(default_factory=dict)

    def items(self):
        """Yield (layer, name, tensor) in table order: the input (layer 0) first, then layers 1..L."""
        for name in INPUT_TENSOR_NAMES:
            if name in self.input:
                yield 0, name, self.input[name]
        for layer, tensors in enumerate(self.layers, start=1):
            for name in TENSOR_NAMES:
                if name in tensors:
                    yield layer, name, tensors[name]

    @property
    def input_gradient(self) -> Tensor | None:
        """(m, n_0) dL/dX when the pass was asked for it, else None."""
        return self.input.get("dX")

    def gradients(self) -> dict[str, Tensor]:
        """Parameter gradients keyed like the engine's parameters: {"W1": dW1, "b1": db1, ...}."""
        named = {}
        for layer, tensors in enumerate(self.layers, start=1):
            named[f"W{layer}"] = tensors["dW"]
            named[f"b{layer}"] = tensors["db"]
        return named
