"""Initial parameters, drawn exactly as ``torch.nn`` draws them.

Each scheme is ``torch.nn.init``'s formula written out with the same float operations and the same draws
(W then b, layer by layer, from one generator), so that a CPU generator seeded with s gives bit for bit the
tensors that ``nn.init`` gives with a generator seeded with s (tests/test_init.py checks every scheme):

- "torch_linear": ``nn.Linear``'s own reset_parameters: ``kaiming_uniform_(W, a=sqrt(5))`` and
  b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
- "course_normal": the course's TwoLayerNet, W ~ N(0, 1), b = 0.
- "kaiming_uniform" / "kaiming_normal" (He et al. 2015): ``nn.init.kaiming_*_(W, mode="fan_in",
  nonlinearity="relu")``, std = sqrt(2) / sqrt(fan_in); b = 0. The ReLU gain is used whatever the activation:
  it is the scheme's point, and one fixed rule is easier to reproduce than a gain per activation.
- "xavier_uniform" / "xavier_normal" (Glorot & Bengio 2010): ``nn.init.xavier_*_(W, gain=1)``,
  std = sqrt(2 / (fan_in + fan_out)); b = 0.

fan_in and fan_out are W's (columns, rows); for a maxout layer fan_out counts all k pieces of each unit, as
``nn.init`` sees the (sizes[l] * k, sizes[l-1]) weight of the twin's nn.Linear.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig


def parameter_names(config: MLPConfig) -> list[str]:
    """["W1", "b1", "W2", "b2", ...]: the course's names, layer numbers 1-based."""
    return [f"{kind}{layer}" for layer in range(1, config.num_layers + 1) for kind in ("W", "b")]


def parameter_shape(config: MLPConfig, name: str) -> tuple[int, ...]:
    """W_l: (outputs, inputs) of the layer's linear map (``config.linear_shape``); b_l: (outputs,)."""
    outputs, inputs = config.linear_shape(int(name[1:]))
    return (outputs, inputs) if name[0] == "W" else (outputs,)


def _fill_weight(W: Tensor, scheme: str, generator: torch.Generator | None) -> None:
    """Draw W (fan_out, fan_in) in place; the float operations are nn.init's, line for line."""
    fan_out, fan_in = W.shape
    if scheme == "torch_linear":
        # kaiming_uniform_(W, a=sqrt(5)): calculate_gain("leaky_relu", sqrt(5)).
        gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
        bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
        W.uniform_(-bound, bound, generator=generator)
    elif scheme == "course_normal":
        W.normal_(generator=generator)
    elif scheme in ("kaiming_uniform", "kaiming_normal"):
        std = math.sqrt(2.0) / math.sqrt(fan_in)  # calculate_gain("relu") / sqrt(fan)
        if scheme == "kaiming_uniform":
            bound = math.sqrt(3.0) * std
            W.uniform_(-bound, bound, generator=generator)
        else:
            W.normal_(0, std, generator=generator)
    elif scheme in ("xavier_uniform", "xavier_normal"):
        std = 1.0 * math.sqrt(2.0 / float(fan_in + fan_out))
        if scheme == "xavier_uniform":
            a = math.sqrt(3.0) * std
            W.uniform_(-a, a, generator=generator)
        else:
            W.normal_(0.0, std, generator=generator)
    else:
        raise ValueError(f"init: unknown scheme {scheme!r}")


def init_parameters(config: MLPConfig, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Fresh parameters {"W1": (n1, n0), "b1": (n1,), ...} in the config's dtype and on its device
    (a maxout layer's W_l is (n_l * k, n_{l-1}), see ``MLPConfig.linear_shape``).

    The numbers are drawn on the CPU and then moved to the config's device, so a seed gives the same
    initial weights on every device.
    """
    dtype, cpu = config.torch_dtype, torch.device("cpu")
    params = {}
    for layer in range(1, config.num_layers + 1):
        fan_out, fan_in = config.linear_shape(layer)
        W = torch.empty(fan_out, fan_in, dtype=dtype, device=cpu)
        b = torch.empty(fan_out, dtype=dtype, device=cpu)
        _fill_weight(W, config.init, generator)
        if config.init == "torch_linear":
            bias_bound = 1 / math.sqrt(fan_in)
            b.uniform_(-bias_bound, bias_bound, generator=generator)
        else:
            b.zero_()
        params[f"W{layer}"] = W.to(config.torch_device)
        params[f"b{layer}"] = b.to(config.torch_device)
    return params
