"""One frozen config describes a network; the manual engine and the autograd twin are both built from it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

HIDDEN_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "elu", "identity")
# The output layer takes any pointwise activation (the course's one-layer lab uses ReLU there), or softmax,
# which exists only fused with cross-entropy.
OUTPUT_ACTIVATIONS = HIDDEN_ACTIVATIONS + ("softmax",)
LOSSES = ("cross_entropy", "mse", "hinge")
# "course": L = 1/(2m) * ||Y_hat - Y||_F^2 (lecture 000); "mean": PyTorch's MSELoss, mean over all m*k entries.
MSE_CONVENTIONS = ("course", "mean")
# "torch_linear": nn.Linear's default (kaiming_uniform_(a=sqrt(5)) weights, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) biases);
# "course_normal": the course's TwoLayerNet, W ~ N(0, 1), b = 0.
INITS = ("torch_linear", "course_normal")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _choice(argument: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{argument}: expected one of {', '.join(map(str, allowed))}; got {value!r}")


@dataclass(frozen=True)
class MLPConfig:
    """A fully connected network ``sizes[0] -> ... -> sizes[-1]``.

    ``sizes`` lists the layer widths, input first and output last; two entries mean no hidden layer
    (the course's softmax classifier). Layer ``l`` (1-based, as in the course) computes
    ``Z_l = A_{l-1} W_l^T + b_l`` with ``W_l`` of shape ``(sizes[l], sizes[l-1])``, like ``nn.Linear``.
    """

    sizes: tuple[int, ...] = (784, 256, 128, 10)
    activation: str = "relu"
    output_activation: str | None = None  # None: "softmax" for cross-entropy, "identity" otherwise
    loss: str = "cross_entropy"
    mse_convention: str = "course"
    l2: float = 0.0  # adds l2 * sum_l ||W_l||_F^2 (weights only, not biases)
    leaky_slope: float = 0.1
    elu_alpha: float = 1.0
    init: str = "torch_linear"
    dtype: str = "float32"
    device: str = "cpu"

    def __post_init__(self):
        sizes = self.sizes
        if isinstance(sizes, str):
            raise TypeError(f"sizes: expected a sequence of ints such as (784, 256, 10); got the string {sizes!r}")
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes: need at least an input and an output width; got {sizes}")
        for position, width in enumerate(sizes):
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ValueError(f"sizes[{position}]: expected a positive int; got {width!r}")
        object.__setattr__(self, "sizes", sizes)

        _choice("activation", self.activation, HIDDEN_ACTIVATIONS)
        _choice("loss", self.loss, LOSSES)
        _choice("mse_convention", self.mse_convention, MSE_CONVENTIONS)
        _choice("init", self.init, INITS)
        _choice("dtype", self.dtype, tuple(DTYPES))
        output = self.output_activation
        if output is None:
            output = "softmax" if self.loss == "cross_entropy" else "identity"
            object.__setattr__(self, "output_activation", output)
        _choice("output_activation", output, OUTPUT_ACTIVATIONS)
        if (output == "softmax") != (self.loss == "cross_entropy"):
            raise ValueError(
                "output_activation: softmax exists only fused with the cross_entropy loss, and cross_entropy "
                f"needs the softmax output; got output_activation={output!r} with loss={self.loss!r}"
            )
        if self.loss in ("cross_entropy", "hinge") and sizes[-1] < 2:
            raise ValueError(f"sizes[-1]: {self.loss} needs at least 2 classes; got {sizes[-1]}")
        for name in ("l2", "leaky_slope", "elu_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number; got {value!r}")
        if self.l2 < 0:
            raise ValueError(f"l2: expected a strength >= 0; got {self.l2}")
        if self.elu_alpha <= 0:
            raise ValueError(f"elu_alpha: expected alpha > 0; got {self.elu_alpha}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"device: expected a torch device such as 'cpu' or 'cuda'; got {self.device!r}") from error

    @property
    def num_layers(self) -> int:
        """Number of linear layers (hidden layers + 1)."""
        return len(self.sizes) - 1

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def layer_activation(self, layer: int) -> str:
        """Activation of layer ``layer`` (1-based)."""
        return self.output_activation if layer == self.num_layers else self.activation

    def to_dict(self) -> dict:
        """JSON-ready description (sizes as a list)."""
        described = asdict(self)
        described["sizes"] = list(self.sizes)
        return described

    @classmethod
    def from_dict(cls, described: dict) -> "MLPConfig":
        return cls(**{**described, "sizes": tuple(described["sizes"])})

    def slug(self) -> str:
        """Short human-readable name, e.g. ``784-256-128-10_relu_cross_entropy``."""
        slug = "-".join(map(str, self.sizes)) + f"_{self.activation}_{self.loss}"
        if self.l2:
            slug += f"_l2-{self.l2:g}"
        return slug
