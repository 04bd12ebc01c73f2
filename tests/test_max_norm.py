"""Max-norm: the engine's projection against torch.renorm and the twin's apply_max_norm, bit for bit."""

import pytest
import torch

from manual_backprop.config import MLPConfig
from manual_backprop.constraints import max_norm_
from manual_backprop.model import init_parameters
from torch_reference.parity import run_parity
from torch_reference.twin import TwinMLP


def bits(x):
    return x.reshape(-1).contiguous().view(torch.uint8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("c", [0.3, 1.0, 2.5, 3.0])
@pytest.mark.parametrize("activation", ["relu", "maxout"])
def test_max_norm_matches_the_twin_bitwise(activation, c, dtype):
    config = MLPConfig(sizes=(50, 40, 30, 10), activation=activation, init="course_normal", dtype=dtype)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    for W in params.values():  # rows of several norms, some above c and some below
        W.mul_(torch.linspace(0.01, 0.5, W.shape[0], dtype=W.dtype).reshape(-1, *([1] * (W.dim() - 1))))
    twin = TwinMLP.from_engine(config, params)
    before = {name: tensor.clone() for name, tensor in params.items()}
    max_norm_(params, c, config)
    twin.apply_max_norm(c)
    theirs = twin.engine_parameters()
    constrained = 0
    for name, tensor in params.items():
        assert torch.equal(bits(tensor), bits(theirs[name].detach())), name
        if name[0] == "b":
            assert torch.equal(tensor, before[name])  # biases are not constrained
            continue
        norms, old = torch.linalg.vector_norm(tensor, dim=1), torch.linalg.vector_norm(before[name], dim=1)
        # <= c up to rounding: the rescaled row's recomputed norm can land an ulp or two above c (as renorm's)
        assert (norms <= c * (1 + 4 * torch.finfo(tensor.dtype).eps)).all()
        assert torch.equal(tensor[old <= c], before[name][old <= c])  # rows within the bound are untouched
        assert torch.allclose(norms[old > c], torch.full_like(norms[old > c], c), rtol=1e-6)
        constrained += int((old > c).sum())
    assert constrained > 0


def test_max_norm_is_torch_renorm():
    W = torch.randn(64, 100) * 0.3
    mine = W.clone()
    max_norm_({"W1": mine, "b1": torch.zeros(64)}, 2.0, MLPConfig(sizes=(100, 64)))
    assert torch.equal(bits(mine), bits(torch.renorm(W, 2, 0, 2.0)))


def test_max_norm_rejects_a_bound_that_is_not_positive():
    config = MLPConfig(sizes=(4, 3))
    params = init_parameters(config)
    with pytest.raises(ValueError, match=r"max_norm: expected a norm bound c > 0; got 0"):
        max_norm_(params, 0, config)
    with pytest.raises(ValueError, match=r"max_norm: expected a norm bound c > 0; got -1"):
        TwinMLP.from_engine(config, params).apply_max_norm(-1)


def test_parity_with_max_norm_compares_the_constrained_weights():
    report = run_parity(MLPConfig(sizes=(30, 20, 5), max_norm=0.5), batch_size=8, seed=0, require_exact=True)
    assert report.passed, report.table()
    assert [(row.layer, row.name) for row in report.rows[:2]] == [(1, "W"), (2, "W")]
