"""Every init scheme draws exactly what torch.nn.init draws from the same generator state."""

import math

import pytest
import torch
from torch import nn

from manual_backprop.config import INITS, MLPConfig
from manual_backprop.model import init_parameters

REFERENCE = {
    "kaiming_uniform": lambda W, g: nn.init.kaiming_uniform_(W, mode="fan_in", nonlinearity="relu", generator=g),
    "kaiming_normal": lambda W, g: nn.init.kaiming_normal_(W, mode="fan_in", nonlinearity="relu", generator=g),
    "xavier_uniform": lambda W, g: nn.init.xavier_uniform_(W, gain=1.0, generator=g),
    "xavier_normal": lambda W, g: nn.init.xavier_normal_(W, gain=1.0, generator=g),
    "course_normal": lambda W, g: nn.init.normal_(W, 0.0, 1.0, generator=g),
    # nn.Linear.reset_parameters, written with the generator
    "torch_linear": lambda W, g: nn.init.kaiming_uniform_(W, a=math.sqrt(5), generator=g),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "maxout"])
@pytest.mark.parametrize("init", INITS)
def test_init_matches_nn_init_bitwise(init, activation, dtype):
    config = MLPConfig(sizes=(784, 256, 128, 10), init=init, activation=activation,
                       maxout_pieces=3 if activation == "maxout" else 2, dtype=dtype)
    params = init_parameters(config, torch.Generator().manual_seed(123))
    generator = torch.Generator().manual_seed(123)
    for layer in range(1, config.num_layers + 1):
        layer_module = nn.Linear(*reversed(config.linear_shape(layer)), dtype=config.torch_dtype)
        with torch.no_grad():
            REFERENCE[init](layer_module.weight, generator)
            if init == "torch_linear":
                bound = 1 / math.sqrt(layer_module.in_features)
                nn.init.uniform_(layer_module.bias, -bound, bound, generator=generator)
            else:
                nn.init.zeros_(layer_module.bias)
        assert torch.equal(params[f"W{layer}"], layer_module.weight.detach()), (init, layer)
        assert torch.equal(params[f"b{layer}"], layer_module.bias.detach()), (init, layer)


@pytest.mark.parametrize("init, std", [("kaiming_normal", math.sqrt(2 / 784)), ("kaiming_uniform", math.sqrt(2 / 784)),
                                       ("xavier_normal", math.sqrt(2 / (784 + 256))),
                                       ("xavier_uniform", math.sqrt(2 / (784 + 256)))])
def test_init_has_the_scheme_spread(init, std):
    """The formulas, not only the draws: the first layer's empirical std is the scheme's."""
    W1 = init_parameters(MLPConfig(init=init, dtype="float64"), torch.Generator().manual_seed(0))["W1"]
    assert abs(W1.std().item() / std - 1) < 0.01 and abs(W1.mean().item()) < 3 * std / math.sqrt(W1.numel())


def test_different_schemes_give_different_weights():
    drawn = {init: init_parameters(MLPConfig(sizes=(8, 6, 3), init=init), torch.Generator().manual_seed(0))["W1"]
             for init in INITS}
    assert len({tuple(W.flatten().tolist()) for W in drawn.values()}) == len(INITS)
