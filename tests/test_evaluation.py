"""The trainer's evaluation: loss and accuracy of either model, the same predictions from both."""

import pytest
import torch

from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP, init_parameters
from side_by_side.evaluation import evaluate_engine, evaluate_twin, predicted_classes
from torch_reference.twin import TwinMLP


def test_one_bce_output_predicts_by_the_sign_of_the_logit():
    logits = torch.tensor([[2.0], [-0.5], [0.0], [0.1]])
    assert predicted_classes(logits, "bce").tolist() == [1, 0, 0, 1]
    assert predicted_classes(torch.tensor([[0.1, 0.9], [3.0, -1.0]]), "bce").tolist() == [1, 0]


@pytest.mark.parametrize("loss, k", [("bce", 1), ("bce", 3), ("cross_entropy", 3), ("mse", 3), ("hinge", 3)])
def test_engine_and_twin_evaluate_alike(loss, k):
    config = MLPConfig(sizes=(5, 7, k), loss=loss, dtype="float64")
    params = init_parameters(config, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 2 if k == 1 else k, (40,), generator=generator)
    engine = evaluate_engine(MLP(config, params), X, y)
    twin = evaluate_twin(TwinMLP.from_engine(config, params), X, y)
    assert torch.equal(engine.predictions, twin.predictions)
    assert engine.loss == pytest.approx(twin.loss, rel=1e-12)
    assert engine.accuracy == twin.accuracy
    if loss == "bce" and k == 1:  # the sign of the logit (an argmax over one column would say 0 everywhere)
        expected = (MLP(config, params).scores(X)[:, 0] > 0).long()
        assert expected.any() and torch.equal(engine.predictions, expected)
        assert torch.equal(engine.predictions, MLP(config, params).predict(X))
