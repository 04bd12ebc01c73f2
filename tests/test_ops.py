"""Each forward/backward pair on its own against autograd, on shapes with and without vector tails."""

import pytest
import torch
import torch.nn.functional as F

from manual_backprop import losses
from manual_backprop.activations import get_activation
from manual_backprop.linear import linear_backward, linear_forward
from manual_backprop.vectorised_exp import vectorised_exp
from torch_reference.compare import ulp_distance

SHAPES = [(64, 256), (64, 10), (1, 7), (33, 128), (5, 3), (17, 31), (300, 333)]
DTYPES = [torch.float32, torch.float64]
TORCH_ACTIVATIONS = {
    "relu": torch.relu, "leaky_relu": lambda z: F.leaky_relu(z, 0.1), "sigmoid": torch.sigmoid,
    "tanh": torch.tanh, "elu": lambda z: F.elu(z, 0.5), "identity": lambda z: z * 1,
}


def autograd_grad(function, inputs, upstream):
    inputs = inputs.clone().requires_grad_(True)
    function(inputs).backward(upstream)
    return inputs.grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(TORCH_ACTIVATIONS))
def test_activation_backward_matches_autograd(name, shape, dtype):
    generator = torch.Generator().manual_seed(sum(shape))
    z = torch.randn(shape, generator=generator, dtype=dtype) * 3
    z[0, 0] = 0.0  # the kink itself: PyTorch's subgradient choice must match
    upstream = torch.randn(shape, generator=generator, dtype=dtype)
    activation = get_activation(name, leaky_slope=0.1, elu_alpha=0.5)
    a, cache = activation.forward_fn(z)
    assert torch.equal(a, TORCH_ACTIVATIONS[name](z))
    mine = activation.backward_fn(upstream, cache)
    reference = autograd_grad(TORCH_ACTIVATIONS[name], z, upstream)
    tail_free = z.numel() % 64 == 0 and z.numel() < 32768
    if name != "elu" or tail_free:
        assert torch.equal(mine.view(-1).view(torch.int8), reference.view(-1).view(torch.int8)), (
            ulp_distance(mine, reference).max())
    else:  # the kernel's scalar tail uses the C library's exp: at most an ulp of exp, two after the products
        assert ulp_distance(mine, reference).max().item() <= 2


def test_relu_backward_gives_plus_zero_like_autograd():
    z = torch.tensor([[-1.0, 2.0]])
    upstream = torch.tensor([[-3.0, 4.0]])
    mine = get_activation("relu").backward_fn(upstream, torch.relu(z))
    assert mine[0, 0].item() == 0.0 and not torch.signbit(mine[0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n_in, n_out, transposed", [
    (64, 784, 256, False), (1, 5, 7, False), (33, 3, 3, False), (17, 31, 29, False),
    (1, 1, 70, False),  # a column-major (1, 1) input: autograd computes dx as (W^T dz^T)^T
    (1, 1, 300, False), (5, 1, 70, False), (1, 3, 70, False),
    (40, 30, 70, True),  # a transposed (column-major) input batch takes that path too
])
def test_linear_matches_nn_linear(m, n_in, n_out, transposed, dtype):
    generator = torch.Generator().manual_seed(m + n_out)
    x = (torch.randn(n_in, m, generator=generator, dtype=dtype).t() if transposed
         else torch.randn(m, n_in, generator=generator, dtype=dtype))
    layer = torch.nn.Linear(n_in, n_out, dtype=dtype)
    z, cache = linear_forward(x, layer.weight.detach(), layer.bias.detach())
    x_leaf = x.detach().requires_grad_(True)  # the same layout as x (clone could change the strides)
    z_ref = layer(x_leaf)
    assert torch.equal(z, z_ref.detach())
    dz = torch.randn(m, n_out, generator=generator, dtype=dtype)
    z_ref.backward(dz)
    dx, dW, db = linear_backward(dz, cache)
    assert torch.equal(dx, x_leaf.grad) and torch.equal(dW, layer.weight.grad) and torch.equal(db, layer.bias.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k", [(1, 10), (7, 10), (64, 10), (1000, 10), (33, 128), (5, 3)])
def test_cross_entropy_matches_autograd_bitwise(m, k, dtype):
    generator = torch.Generator().manual_seed(m * k)
    logits = torch.randn(m, k, generator=generator, dtype=dtype) * 4
    labels = torch.randint(0, k, (m,), generator=generator)
    loss, cache = losses.softmax_cross_entropy_forward(logits, labels)
    leaf = logits.clone().requires_grad_(True)
    reference = F.cross_entropy(leaf, labels)
    reference.backward()
    assert torch.equal(loss, reference.detach())
    assert torch.equal(losses.softmax_cross_entropy_backward(cache), leaf.grad)


def test_cross_entropy_is_stable_for_logits_in_the_thousands():
    logits = torch.tensor([[5000.0, -3000.0, 0.0], [-4000.0, 4000.0, 3999.0]])
    labels = torch.tensor([1, 2])
    loss, cache = losses.softmax_cross_entropy_forward(logits, labels)
    grad = losses.softmax_cross_entropy_backward(cache)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert abs(loss.item() - (8000.0 + 1.0 + torch.log1p(torch.exp(torch.tensor(-1.0))).item()) / 2) < 1e-3
    assert torch.allclose(grad.sum(1), torch.zeros(2), atol=1e-7)  # softmax minus one-hot sums to zero per row


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k", [(1, 7), (64, 10), (33, 128), (5, 3), (1000, 10)])
def test_hinge_matches_scaled_multi_margin_loss_bitwise(m, k, dtype):
    generator = torch.Generator().manual_seed(m + k)
    scores = torch.randn(m, k, generator=generator, dtype=dtype)
    labels = torch.randint(0, k, (m,), generator=generator)
    loss, cache = losses.hinge_forward(scores, labels)
    leaf = scores.clone().requires_grad_(True)
    reference = F.multi_margin_loss(leaf, labels) * k
    reference.backward()
    assert torch.equal(loss, reference.detach())
    assert torch.equal(losses.hinge_backward(cache), leaf.grad)
    # and it is the course's formula
    margins = (scores - scores.gather(1, labels[:, None]) + 1).clamp(min=0)
    course = (margins.sum(1) - 1).mean()  # the j = y_i term is exactly max(0, 1) = 1
    assert torch.allclose(loss, course, rtol=1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", ["course", "mean"])
def test_mse_matches_autograd_bitwise(convention, dtype):
    generator = torch.Generator().manual_seed(0)
    predictions = torch.randn(33, 10, generator=generator, dtype=dtype)
    targets = torch.randn(33, 10, generator=generator, dtype=dtype)
    loss, cache = losses.mse_forward(predictions, targets, convention)
    leaf = predictions.clone().requires_grad_(True)
    reference = (F.mse_loss(leaf, targets) if convention == "mean"
                 else F.mse_loss(leaf, targets, reduction="sum") / (2 * 33))
    reference.backward()
    assert torch.equal(loss, reference.detach())
    assert torch.equal(losses.mse_backward(cache), leaf.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vectorised_exp_is_exp(dtype):
    x = -torch.rand(10007, dtype=dtype) * 80
    assert ulp_distance(vectorised_exp(x), torch.exp(x)).max().item() <= 1
    assert vectorised_exp(torch.zeros(3, dtype=dtype)).eq(1).all()
