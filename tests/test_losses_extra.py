"""Sigmoid + binary cross-entropy and L1: the engine's pairs against PyTorch's losses, bit for bit."""

import math

import pytest
import torch
import torch.nn.functional as F

from manual_backprop import losses
from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP
from torch_reference.parity import run_parity
from torch_reference.twin import TwinMLP

SHAPES = [(1, 1), (7, 1), (64, 10), (33, 128), (1000, 10), (5, 3), (300, 333)]
DTYPES = [torch.float32, torch.float64]


def bits(x):
    return x.reshape(-1).contiguous().view(torch.uint8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k", SHAPES)
@pytest.mark.parametrize("soft", [False, True])
def test_bce_matches_binary_cross_entropy_with_logits_bitwise(m, k, soft, dtype):
    generator = torch.Generator().manual_seed(m * k)
    logits = torch.randn(m, k, generator=generator, dtype=dtype) * 4
    targets = (torch.rand(m, k, generator=generator, dtype=dtype) if soft
               else torch.randint(0, 2, (m, k), generator=generator).to(dtype))
    loss, cache = losses.sigmoid_bce_forward(logits, targets)
    leaf = logits.clone().requires_grad_(True)
    reference = F.binary_cross_entropy_with_logits(leaf, targets)
    reference.backward()
    assert torch.equal(bits(loss), bits(reference.detach()))
    assert torch.equal(bits(losses.sigmoid_bce_backward(cache)), bits(leaf.grad))


def test_bce_is_stable_for_large_logits_and_is_the_textbook_formula():
    logits = torch.tensor([[3000.0, -2000.0], [0.0, 40.0]], dtype=torch.float64)
    targets = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    loss, cache = losses.sigmoid_bce_forward(logits, targets)
    assert abs(loss.item() - (3000.0 + 2000.0 + math.log(2.0) + math.log1p(math.exp(-40.0))) / 4) < 1e-9
    grad = losses.sigmoid_bce_backward(cache)
    assert torch.allclose(grad, (torch.sigmoid(logits) - targets) / 4, rtol=0, atol=1e-17)
    small = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (6, 3)).to(torch.float64)
    p = torch.sigmoid(small)
    textbook = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert torch.allclose(losses.sigmoid_bce_forward(small, y)[0], textbook, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k", SHAPES)
def test_l1_matches_l1_loss_bitwise(m, k, dtype):
    generator = torch.Generator().manual_seed(m + k)
    predictions = torch.randn(m, k, generator=generator, dtype=dtype)
    targets = torch.randn(m, k, generator=generator, dtype=dtype)
    targets[0, 0] = predictions[0, 0]  # on the kink: PyTorch's subgradient there is 0
    loss, cache = losses.l1_forward(predictions, targets)
    leaf = predictions.clone().requires_grad_(True)
    reference = F.l1_loss(leaf, targets)
    reference.backward()
    assert torch.equal(bits(loss), bits(reference.detach()))
    grad = losses.l1_backward(cache)
    assert torch.equal(bits(grad), bits(leaf.grad))
    assert grad[0, 0].item() == 0.0 and not torch.signbit(grad[0, 0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss, sizes", [("bce", (12, 9, 1)), ("bce", (12, 9, 7, 4)), ("l1", (12, 9, 3)),
                                          ("bce", (12, 4)), ("l1", (12, 1))])
def test_networks_with_the_new_losses_match_the_twin(loss, sizes, dtype):
    config = MLPConfig(sizes=sizes, loss=loss, activation="tanh" if len(sizes) > 2 else "relu", l2=1e-3,
                       dtype=dtype)
    report = run_parity(config, batch_size=17, seed=len(sizes), input_grad=True,
                        require_exact=dtype == "float32", numeric=dtype == "float64")
    assert report.passed, report.table()
    assert report.numeric or dtype == "float32"


def test_bce_output_reports_probabilities_and_no_output_dA():
    config = MLPConfig(sizes=(5, 4, 2), loss="bce")
    model = MLP(config, generator=torch.Generator().manual_seed(0))
    record = model.loss_and_gradients(torch.rand(3, 5), torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    output = record.layers[-1]
    assert "dA" not in output and torch.equal(output["A"], torch.sigmoid(output["Z"]))


def test_one_output_bce_predicts_the_sign_of_the_logit():
    config = MLPConfig(sizes=(3, 1), loss="bce", dtype="float64")
    model = MLP(config, {"W1": torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64),
                         "b1": torch.zeros(1, dtype=torch.float64)})
    X = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0]], dtype=torch.float64)
    assert model.predict(X).tolist() == [1, 0]
    twin = TwinMLP.from_engine(config, model.params)
    assert torch.equal(twin(X).detach(), model.scores(X))


def test_labels_become_one_hot_rows_for_l1_and_bce():
    """int64 labels: one-hot targets (the rule mse already had), for l1 and for bce with several outputs."""
    for loss in ("l1", "bce"):
        config = MLPConfig(sizes=(4, 3), loss=loss, dtype="float64")
        model = MLP(config, generator=torch.Generator().manual_seed(1))
        X = torch.rand(2, 4, dtype=torch.float64)
        labels = torch.tensor([2, 0])
        one_hot = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
        assert torch.equal(model.loss_and_gradients(X, labels).loss, model.loss_and_gradients(X, one_hot).loss)
