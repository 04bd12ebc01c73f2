"""Maxout: the engine's pair against autograd (ties included), parameter shapes, and the numeric oracle."""

import pytest
import torch

from manual_backprop.config import MLPConfig
from manual_backprop.finite_differences import check_gradients
from manual_backprop.maxout import maxout_backward, maxout_forward
from manual_backprop.model import MLP, init_parameters
from torch_reference.parity import run_parity
from torch_reference.twin import Maxout, TwinMLP, state_dict_key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m, units, pieces", [(64, 256, 2), (1, 1, 2), (7, 5, 3), (33, 10, 5)])
def test_maxout_pair_matches_autograd(m, units, pieces, dtype):
    generator = torch.Generator().manual_seed(m + units + pieces)
    z = torch.randn(m, units * pieces, generator=generator, dtype=dtype)
    upstream = torch.randn(m, units, generator=generator, dtype=dtype)
    a, cache = maxout_forward(z, pieces)
    leaf = z.clone().requires_grad_(True)
    reference = Maxout(pieces)(leaf)
    reference.backward(upstream)
    assert torch.equal(a, reference.detach())
    dz = maxout_backward(upstream, cache)
    assert torch.equal(dz.view(torch.uint8), leaf.grad.view(torch.uint8))  # bitwise: +0.0 where autograd has it
    assert (dz != 0).sum() <= m * units  # one winning piece per unit


def test_ties_go_to_the_first_piece_as_in_autograd():
    z = torch.tensor([[1.0, 1.0, 0.0, 2.0, 2.0, 2.0]])  # unit 0: pieces 0 and 1 tie; unit 1: all three tie
    upstream = torch.tensor([[5.0, -7.0]])
    leaf = z.clone().requires_grad_(True)
    Maxout(3)(leaf.view(1, 6)).backward(upstream)
    a, cache = maxout_forward(z, 3)
    assert torch.equal(a, torch.tensor([[1.0, 2.0]]))
    assert torch.equal(maxout_backward(upstream, cache), torch.tensor([[5.0, 0.0, 0.0, -7.0, 0.0, 0.0]]))
    assert torch.equal(maxout_backward(upstream, cache), leaf.grad)


def test_lecture_001_two_piece_maxout():
    """max(w1^T x + b1, w2^T x + b2) with the course's two pieces: W1 rows are (w1, w2) of the one unit."""
    config = MLPConfig(sizes=(2, 1, 1), activation="maxout", loss="mse", dtype="float64")
    t = lambda values: torch.tensor(values, dtype=torch.float64)
    params = {"W1": t([[1.0, -1.0], [0.5, 2.0]]), "b1": t([0.0, -1.0]), "W2": t([[3.0]]), "b2": t([0.0])}
    model = MLP(config, params)
    x = t([[2.0, 1.0]])  # piece 1: 2 - 1 = 1; piece 2: 1 + 2 - 1 = 2 -> the unit outputs 2
    record = model.loss_and_gradients(x, t([[4.0]]))
    assert torch.equal(record.layers[0]["Z"], t([[1.0, 2.0]])) and torch.equal(record.layers[0]["A"], t([[2.0]]))
    # L = 1/2 (3*2 - 4)^2 = 2; dL/dA1 = (6 - 4) * 3 = 6, all of it to the winning piece 2
    assert record.loss.item() == 2.0
    assert torch.equal(record.layers[0]["dZ"], t([[0.0, 6.0]]))
    assert torch.equal(record.layers[0]["dW"], t([[0.0, 0.0], [12.0, 6.0]]))


def test_maxout_parameter_shapes_and_state_dict_mapping():
    config = MLPConfig(sizes=(7, 5, 4, 3), activation="maxout", maxout_pieces=3)
    assert [config.linear_shape(layer) for layer in (1, 2, 3)] == [(15, 7), (12, 5), (3, 4)]
    params = init_parameters(config, torch.Generator().manual_seed(0))
    assert {name: tuple(p.shape) for name, p in params.items()} == {
        "W1": (15, 7), "b1": (15,), "W2": (12, 5), "b2": (12,), "W3": (3, 4), "b3": (3,)}
    twin = TwinMLP.from_engine(config, params)
    state = twin.state_dict()
    for name, tensor in params.items():
        assert torch.equal(state[state_dict_key(name)], tensor)
    with pytest.raises(ValueError, match=r"params\['W1'\] \(layer 1\): expected shape \(15, 7\); got \(5, 7\)"):
        MLP(config, {**params, "W1": torch.zeros(5, 7)})


@pytest.mark.parametrize("pieces", [2, 3, 4])
def test_maxout_networks_are_bitwise_equal_to_the_twin(pieces):
    config = MLPConfig(sizes=(30, 17, 9, 4), activation="maxout", maxout_pieces=pieces, l2=1e-3)
    report = run_parity(config, batch_size=13, seed=pieces, require_exact=True, input_grad=True)
    assert report.passed, report.table()


def test_finite_differences_skip_entries_that_change_the_winning_piece():
    """Two pieces that tie exactly: a step in either moves the argmax, so those entries are skipped."""
    config = MLPConfig(sizes=(2, 1, 2), activation="maxout", dtype="float64")
    t = lambda values: torch.tensor(values, dtype=torch.float64)
    params = {"W1": t([[1.0, 1.0], [2.0, 0.0]]), "b1": t([0.0, 0.0]), "W2": t([[1.0], [-1.0]]), "b2": t([0.0, 0.0])}
    X = t([[1.0, 1.0]])  # both pieces give 2
    checks = {(c.layer, c.name): c for c in check_gradients(MLP(config, params), X, torch.tensor([0]))}
    assert checks[(1, "W")].skipped == 4 and checks[(1, "b")].skipped == 2
    assert checks[(2, "W")].checked == 2 and checks[(2, "W")].passed


def test_maxout_finite_differences_pass_in_general():
    config = MLPConfig(sizes=(6, 4, 3), activation="maxout", maxout_pieces=3, dtype="float64")
    report = run_parity(config, batch_size=5, seed=2, numeric=True)
    assert report.passed and all(c.checked > 0 for c in report.numeric), report.table()
