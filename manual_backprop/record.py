"""The named record of one forward/backward pass, the same shape for the engine and the autograd twin."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

# Per layer, in the order the parity table lists them: forward values, then gradients, each named after the
# tensor it is the gradient of (Z -> dZ, W -> dW).
TENSOR_NAMES = ("Z", "A", "dA", "dZ", "dW", "db")


@dataclass
class Record:
    """Everything one pass produced.

    loss: () the total loss (data term plus the L2 term when there is one).
    layers: one dict per layer l = 1..L (``layers[l - 1]``), with keys from TENSOR_NAMES:
        Z (m, n_l) pre-activations, A (m, n_l) activations, dA (m, n_l) dL/dA, dZ (m, n_l) dL/dZ,
        dW (n_l, n_{l-1}), db (n_l,).
        The output layer of a softmax + cross-entropy network has no dA: the fused loss is a function of Z
        (through log_softmax), so the probabilities A are reported but no gradient flows through them.
    """

    loss: Tensor
    layers: list[dict[str, Tensor]]

    def items(self):
        """Yield (layer, name, tensor) in table order; layer is 1-based."""
        for layer, tensors in enumerate(self.layers, start=1):
            for name in TENSOR_NAMES:
                if name in tensors:
                    yield layer, name, tensors[name]

    def gradients(self) -> dict[str, Tensor]:
        """Parameter gradients keyed like the engine's parameters: {"W1": dW1, "b1": db1, ...}."""
        named = {}
        for layer, tensors in enumerate(self.layers, start=1):
            named[f"W{layer}"] = tensors["dW"]
            named[f"b{layer}"] = tensors["db"]
        return named
