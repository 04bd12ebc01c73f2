"""dL/dX (input_grad=True) against the twin's X.grad, and against the course's graph reasoning."""

import pytest
import torch

from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP
from torch_reference.compare import compare_records
from torch_reference.parity import run_parity, synthetic_batch
from torch_reference.twin import TwinMLP


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("settings", [
    dict(sizes=(784, 256, 128, 10)),
    dict(sizes=(10, 3), loss="hinge"),
    dict(sizes=(12, 8, 6, 4), activation="sigmoid", loss="mse", input_dropout=0.3),
    dict(sizes=(4, 1, 70), activation="identity", loss="mse"),
    dict(sizes=(1, 5, 3), activation="elu", loss="l1"),
    dict(sizes=(9, 6, 2), activation="maxout", loss="bce", dropout=0.5),
])
@pytest.mark.parametrize("batch_size", [1, 16])
def test_input_gradient_matches_the_twin(settings, batch_size, dtype):
    config = MLPConfig(dtype=dtype, **settings)
    report = run_parity(config, batch_size=batch_size, seed=batch_size, input_grad=True,
                        require_exact=dtype == "float32" and config.activation != "elu")
    assert report.passed, report.table()
    assert any((row.layer, row.name) == (0, "dX") for row in report.rows)


def test_without_input_grad_there_is_no_dX_and_the_record_layout_is_unchanged():
    config = MLPConfig(sizes=(6, 5, 3))
    generator = torch.Generator().manual_seed(0)
    model = MLP(config, generator=generator)
    X, y = synthetic_batch(config, 4, generator)
    record = model.loss_and_gradients(X, y)
    assert record.input == {} and record.input_gradient is None
    assert next(iter(record.items()))[:2] == (1, "Z")
    with_dX = model.loss_and_gradients(X, y, input_grad=True)
    assert next(iter(with_dX.items()))[:2] == (0, "dX") and with_dX.input_gradient.shape == X.shape
    for (_, _, a), (_, _, b) in zip(record.items(), list(with_dX.items())[1:]):
        assert torch.equal(a, b)  # asking for dX changes nothing else


def test_input_gradient_of_a_linear_model_is_the_weights_pulled_back():
    """Lecture 002's graph: for Z = X W^T + b and L = sum(Z) / m... here with mse "course" and targets 0,
    dL/dX = dZ W, so one sample with dL/dZ = z gives dX = z W."""
    config = MLPConfig(sizes=(3, 2), loss="mse", dtype="float64")
    W = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], dtype=torch.float64)
    model = MLP(config, {"W1": W, "b1": torch.zeros(2, dtype=torch.float64)})
    X = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    record = model.loss_and_gradients(X, torch.zeros(1, 2, dtype=torch.float64), input_grad=True)
    z = X @ W.T  # (6, -0.5)
    assert torch.equal(record.input_gradient, z @ W)


def test_compare_records_refuses_records_with_different_input_entries():
    config = MLPConfig(sizes=(6, 5, 3))
    generator = torch.Generator().manual_seed(0)
    model = MLP(config, generator=generator)
    X, y = synthetic_batch(config, 4, generator)
    twin = TwinMLP.from_engine(config, model.params)
    with pytest.raises(ValueError, match=r"layer 0 \(input\): the records hold different tensors, \['dX'\] vs "
                                         r"reference \[\]"):
        compare_records(model.loss_and_gradients(X, y, input_grad=True), twin.loss_and_gradients(X, y))
