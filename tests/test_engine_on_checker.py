"""The engine checked through the public checker: every forward/backward pair of manual_backprop against the
twin's own PyTorch op, one op at a time (level 1). On the CPU every pair claims bitwise equality in float32, so
the contract is ``exact``; float64 runs under the default (normwise 1e-10)."""

import pytest
import torch
import torch.nn.functional as F

from manual_backprop import losses
from manual_backprop.activations import get_activation
from manual_backprop.config import POINTWISE_ACTIVATIONS, MLPConfig
from manual_backprop.dropout import dropout_backward, dropout_forward
from manual_backprop.linear import linear_backward, linear_forward
from manual_backprop.maxout import make_maxout
from torch_reference.checker import check_op
from torch_reference.twin import Maxout, _activation_module

DTYPES = [torch.float32, torch.float64]


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def check(forward, backward, reference, inputs, dtype, **kwargs):
    report = check_op(forward, backward, reference, inputs, exact=dtype == torch.float32, **kwargs)
    assert report.passed, report.failure_message()
    return report


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 7, 64])
def test_linear(dtype, m):
    def backward(dz, cache):
        dx, dW, db = linear_backward(dz, cache)
        return {"x": dx, "W": dW, "b": db}

    inputs = {"x": _randn(m, 30, seed=1, dtype=dtype), "W": _randn(20, 30, seed=2, dtype=dtype),
              "b": _randn(20, seed=3, dtype=dtype)}
    check(linear_forward, backward, lambda x, W, b: F.linear(x, W, b), inputs, dtype, name="linear")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", POINTWISE_ACTIVATIONS)
def test_pointwise_activations(dtype, name):
    config = MLPConfig(sizes=(4, 5, 3), activation=name, leaky_slope=0.1, elu_alpha=1.0)
    activation = get_activation(name, leaky_slope=config.leaky_slope, elu_alpha=config.elu_alpha)
    module = _activation_module(name, config, output=False)
    z = _randn(32, 17, seed=4, dtype=dtype)
    z[0, :5] = 0.0  # the kinks: ReLU's and leaky ReLU's derivative at exactly zero must match autograd's
    check(lambda z: activation.forward_fn(z), lambda da, cache: {"z": activation.backward_fn(da, cache)},
          lambda z: module(z), {"z": z}, dtype, name=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxout_with_ties(dtype):
    forward, backward = make_maxout(3)
    z = _randn(16, 12, seed=5, dtype=dtype)
    z[0, 1] = z[0, 0]  # a tie: the gradient goes to the first winning piece on both sides
    check(forward, lambda da, cache: {"z": backward(da, cache)}, Maxout(3), {"z": z}, dtype, name="maxout")


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_with_the_same_masks(dtype):
    def forward(x):
        torch.manual_seed(7)
        return dropout_forward(x, 0.3)

    def reference(x):
        torch.manual_seed(7)
        return F.dropout(x, 0.3, training=True)

    check(forward, lambda dout, noise: {"x": dropout_backward(dout, noise)}, reference,
          {"x": _randn(32, 20, seed=6, dtype=dtype)}, dtype, name="dropout")


def _loss_check(forward, backward, reference, inputs, dtype, constants=()):
    return check(forward, lambda g, cache: {"z": g * backward(cache)}, reference, inputs, dtype, name="loss",
                 constants=constants)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(dtype):
    labels = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(8))
    _loss_check(lambda z, y: losses.softmax_cross_entropy_forward(z, y), losses.softmax_cross_entropy_backward,
                lambda z, y: F.cross_entropy(z, y), {"z": _randn(64, 10, seed=9, dtype=dtype), "y": labels}, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", ["course", "mean"])
def test_mse(dtype, convention):
    m = 64
    reference = ((lambda z, t: F.mse_loss(z, t)) if convention == "mean"
                 else (lambda z, t: F.mse_loss(z, t, reduction="sum") / (2 * m)))
    _loss_check(lambda z, t: losses.mse_forward(z, t, convention), losses.mse_backward, reference,
                {"z": _randn(m, 10, seed=10, dtype=dtype), "t": _randn(m, 10, seed=11, dtype=dtype)}, dtype,
                constants=("t",))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_bce(dtype):
    targets = (_randn(64, 3, seed=12, dtype=dtype) > 0).to(dtype)
    _loss_check(lambda z, t: losses.sigmoid_bce_forward(z, t), losses.sigmoid_bce_backward,
                lambda z, t: F.binary_cross_entropy_with_logits(z, t),
                {"z": _randn(64, 3, seed=13, dtype=dtype), "t": targets}, dtype, constants=("t",))


@pytest.mark.parametrize("dtype", DTYPES)
def test_l1(dtype):
    z, t = _randn(64, 10, seed=14, dtype=dtype), _randn(64, 10, seed=15, dtype=dtype)
    t[0, :3] = z[0, :3]  # sgn's subgradient 0 where prediction equals target
    _loss_check(lambda z, t: losses.l1_forward(z, t), losses.l1_backward, lambda z, t: F.l1_loss(z, t),
                {"z": z, "t": t}, dtype, constants=("t",))


@pytest.mark.parametrize("dtype", DTYPES)
def test_hinge(dtype):
    labels = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(16))
    _loss_check(lambda z, y: losses.hinge_forward(z, y), losses.hinge_backward,
                lambda z, y: F.multi_margin_loss(z, y) * 10,
                {"z": _randn(64, 10, seed=17, dtype=dtype), "y": labels}, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_penalty(dtype):
    def forward(W1, W2):
        return losses.l2_forward([W1, W2], 1e-3)

    def backward(g, cache):
        dW1, dW2 = losses.l2_backward(cache)
        return {"W1": g * dW1, "W2": g * dW2}

    def reference(W1, W2):
        return 1e-3 * ((W1 * W1).sum() + (W2 * W2).sum())

    check(forward, backward, reference, {"W1": _randn(20, 30, seed=18, dtype=dtype),
                                         "W2": _randn(10, 20, seed=19, dtype=dtype)}, dtype, name="l2")


def test_a_broken_engine_pair_is_caught_as_a_formula_error():
    """The harness above can fail: the linear pair with dW off by the batch size is a formula error on dW."""
    def backward(dz, cache):
        dx, dW, db = linear_backward(dz, cache)
        return {"x": dx, "W": dW / dz.shape[0], "b": db}

    inputs = {"x": _randn(64, 30, seed=1), "W": _randn(20, 30, seed=2), "b": _randn(20, seed=3)}
    report = check_op(linear_forward, backward, lambda x, W, b: F.linear(x, W, b), inputs, exact=True, name="linear")
    assert not report.passed
    assert report.first_divergence.name == "linear.dW" and report.triage.verdict == "formula error"
