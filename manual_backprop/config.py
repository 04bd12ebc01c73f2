"""One frozen config describes a network; the manual engine and the autograd twin are both built from it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

POINTWISE_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "elu", "identity")
# Maxout (lecture 001) takes the max over k linear pieces per unit, so it exists for hidden layers only: its layer's
# linear map has sizes[l] * k outputs (see ``MLPConfig.linear_shape``).
HIDDEN_ACTIVATIONS = POINTWISE_ACTIVATIONS + ("maxout",)
# The output layer takes any pointwise activation (the course's one-layer lab uses ReLU there), or softmax,
# which exists only fused with cross-entropy. A sigmoid output is fused with the bce loss (and is an ordinary
# pointwise activation with the other losses).
OUTPUT_ACTIVATIONS = POINTWISE_ACTIVATIONS + ("softmax",)
# bce: sigmoid output fused with binary cross-entropy, PyTorch's mean over all m*k entries (multi-label, or one
# output with 0/1 labels). l1: mean absolute error over all m*k entries (PyTorch's L1Loss), for regression.
LOSSES = ("cross_entropy", "mse", "hinge", "bce", "l1")
# Losses fused with their output activation: the loss is a function of the logits Z_L.
FUSED_OUTPUTS = {"cross_entropy": "softmax", "bce": "sigmoid"}
# "course": L = 1/(2m) * ||Y_hat - Y||_F^2 (lecture 000); "mean": PyTorch's MSELoss, mean over all m*k entries.
MSE_CONVENTIONS = ("course", "mean")
# "torch_linear": nn.Linear's default (kaiming_uniform_(a=sqrt(5)) weights, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) biases);
# "course_normal": the course's TwoLayerNet, W ~ N(0, 1), b = 0;
# "kaiming_uniform"/"kaiming_normal": nn.init.kaiming_*_(W, mode="fan_in", nonlinearity="relu") (He et al.'s gain
# sqrt(2)), b = 0; "xavier_uniform"/"xavier_normal": nn.init.xavier_*_(W, gain=1), b = 0 (see init.py).
INITS = ("torch_linear", "course_normal", "kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal")
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
    # Regularisers and layers of issue 6 (defaults keep the plain network). Inverted dropout (Srivastava et al.
    # 2014) on every hidden layer's output and on the input, in training only; maxout's number of pieces k;
    # max-norm c, applied by the training loop after each update (constraints.py), None for none.
    dropout: float = 0.0
    input_dropout: float = 0.0
    maxout_pieces: int = 2
    max_norm: float | None = None

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
            output = FUSED_OUTPUTS.get(self.loss, "identity")
            object.__setattr__(self, "output_activation", output)
        _choice("output_activation", output, OUTPUT_ACTIVATIONS)
        if (output == "softmax") != (self.loss == "cross_entropy"):
            raise ValueError(
                "output_activation: softmax exists only fused with the cross_entropy loss, and cross_entropy "
                f"needs the softmax output; got output_activation={output!r} with loss={self.loss!r}"
            )
        if self.loss == "bce" and output != "sigmoid":
            raise ValueError("output_activation: bce needs the sigmoid output (fused with the loss, as softmax is "
                             f"with cross_entropy); got output_activation={output!r}")
        if self.loss in ("cross_entropy", "hinge") and sizes[-1] < 2:
            raise ValueError(f"sizes[-1]: {self.loss} needs at least 2 classes; got {sizes[-1]}")
        if len(sizes) == 2 and self.activation != "relu":
            # The hidden activation would be silently ignored; the output layer's is output_activation.
            raise ValueError(f"activation: the network {sizes} has no hidden layer, so activation="
                             f"{self.activation!r} would be ignored; leave it at 'relu' and set output_activation "
                             "for the output layer")
        if isinstance(self.maxout_pieces, bool) or not isinstance(self.maxout_pieces, int) or self.maxout_pieces < 2:
            raise ValueError(f"maxout_pieces: expected an int k >= 2 (a maxout unit takes the max of k linear "
                             f"pieces); got {self.maxout_pieces!r}")
        if self.maxout_pieces != 2 and self.activation != "maxout":
            raise ValueError(f"maxout_pieces: only used with activation='maxout'; got maxout_pieces="
                             f"{self.maxout_pieces} with activation={self.activation!r}")
        for name in ("dropout", "input_dropout"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or not 0 <= value < 1):
                raise ValueError(f"{name}: expected a drop probability in [0, 1); got {value!r}")
        if self.dropout and len(sizes) == 2:
            raise ValueError(f"dropout: the network {sizes} has no hidden layer to drop units from; use "
                             "input_dropout for the input")
        if self.max_norm is not None and (
                isinstance(self.max_norm, bool) or not isinstance(self.max_norm, (int, float))
                or not math.isfinite(self.max_norm) or self.max_norm <= 0):
            raise ValueError(f"max_norm: expected a finite norm bound c > 0, or None for no constraint; "
                             f"got {self.max_norm!r}")
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

    @property
    def fused_output(self) -> bool:
        """Whether the output activation is fused with the loss (softmax + cross_entropy, sigmoid + bce)."""
        return self.loss in FUSED_OUTPUTS

    def linear_shape(self, layer: int) -> tuple[int, int]:
        """(outputs, inputs) of layer ``layer``'s weight W_l, the ``nn.Linear`` layout.

        A maxout layer's linear map produces k pieces per unit: W_l is (sizes[l] * k, sizes[l-1]), and rows
        j*k .. j*k + k-1 are unit j's pieces (the twin's ``view(m, sizes[l], k)``).
        """
        if not 1 <= layer <= self.num_layers:
            raise ValueError(f"layer: expected 1..{self.num_layers}; got {layer}")
        outputs = self.sizes[layer]
        if self.layer_activation(layer) == "maxout":
            outputs *= self.maxout_pieces
        return outputs, self.sizes[layer - 1]

    def to_dict(self) -> dict:
        """JSON-ready description (sizes as a list)."""
        described = asdict(self)
        described["sizes"] = list(self.sizes)
        return described

    @classmethod
    def from_dict(cls, described: dict) -> "MLPConfig":
        return cls(**{**described, "sizes": tuple(described["sizes"])})

    def slug(self) -> str:
        """Short human-readable name, e.g. ``784-256-128-10_relu_cross_entropy``, with the non-default
        regularisers and init appended (``_maxout3_drop-0.5_indrop-0.2_maxnorm-3_init-kaiming_normal``)."""
        activation = f"maxout{self.maxout_pieces}" if self.activation == "maxout" else self.activation
        slug = "-".join(map(str, self.sizes)) + f"_{activation}_{self.loss}"
        if self.l2:
            slug += f"_l2-{self.l2:g}"
        if self.dropout:
            slug += f"_drop-{self.dropout:g}"
        if self.input_dropout:
            slug += f"_indrop-{self.input_dropout:g}"
        if self.max_norm is not None:
            slug += f"_maxnorm-{self.max_norm:g}"
        if self.init != "torch_linear":
            slug += f"_init-{self.init}"
        return slug
