"""Dropout: the engine's pair against nn.Dropout, the same masks on both sides, and training in lockstep."""

import pytest
import torch
from torch import nn

from manual_backprop.config import MLPConfig
from manual_backprop.constraints import max_norm_
from manual_backprop.dropout import dropout_backward, dropout_forward
from manual_backprop.model import MLP
from manual_backprop.optim import SGD
from torch_reference.compare import compare_records
from torch_reference.lockstep import lockstep_loss_and_gradients, rewound_rng
from torch_reference.parity import synthetic_batch
from torch_reference.twin import TwinMLP


def bitwise(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.contiguous().view(torch.uint8),
                                                                      b.contiguous().view(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 1 / 3, 0.8])
@pytest.mark.parametrize("shape", [(64, 256), (1, 1), (33, 7), (300, 333)])
def test_dropout_pair_matches_nn_dropout_bitwise(shape, p, dtype):
    """Same generator state in, same output, same gradient, and the generator left in the same state."""
    generator = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=generator, dtype=dtype)
    upstream = torch.randn(shape, generator=generator, dtype=dtype)
    with rewound_rng("cpu"):
        torch.manual_seed(7)
        out, noise = dropout_forward(x, p)
        mine = dropout_backward(upstream, noise)
        engine_state = torch.get_rng_state()
        torch.manual_seed(7)
        leaf = x.clone().requires_grad_(True)
        reference = nn.Dropout(p).train()(leaf)
        reference.backward(upstream)
        assert torch.equal(engine_state, torch.get_rng_state())
    assert bitwise(out, reference.detach()) and bitwise(mine, leaf.grad)
    kept = noise != 0
    assert 0 < kept.float().mean() < 1 or x.numel() == 1  # it does drop, and keeps, something
    assert torch.equal(out[~kept], torch.zeros_like(out[~kept]))


def test_zero_probability_draws_nothing_like_nn_dropout():
    x = torch.randn(5, 4)
    state = torch.get_rng_state()
    out, noise = dropout_forward(x, 0.0)
    assert out is x and noise is None and torch.equal(state, torch.get_rng_state())
    assert dropout_backward(x, None) is x


def test_dropout_keeps_the_expected_activation():
    """Inverted dropout: kept entries are scaled by 1/(1-p), so the mean over many draws is x."""
    x = torch.full((2000, 100), 3.0, dtype=torch.float64)
    with rewound_rng("cpu"):
        torch.manual_seed(0)
        out, noise = dropout_forward(x, 0.4)
    assert set(out.unique().tolist()) == {0.0, 3.0 / 0.6}
    assert abs(out.mean().item() - 3.0) < 0.02


def network(dtype="float32", **overrides):
    settings = dict(sizes=(20, 16, 12, 5), dropout=0.5, input_dropout=0.2, dtype=dtype)
    return MLPConfig(**{**settings, **overrides})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "maxout"])
def test_a_training_pass_applies_the_same_masks_on_both_sides(activation, dtype):
    config = network(dtype, activation=activation)
    generator = torch.Generator().manual_seed(1)
    engine = MLP(config, generator=generator)
    twin = TwinMLP.from_engine(config, engine.params)
    X, y = synthetic_batch(config, 9, generator)
    ours, theirs = lockstep_loss_and_gradients(engine, twin, X, y, train=True, input_grad=True)
    report = compare_records(ours, theirs)
    assert report.exact_count == len(report.rows), report.table()
    names = {(layer, name) for layer, name, _ in ours.items()}
    assert {(0, "D"), (0, "dX"), (1, "D"), (2, "D")} <= names and (3, "D") not in names
    # dropped units get no gradient: dA is zero wherever D is (and A is not)
    A, D, dA = ours.layers[0]["A"], ours.layers[0]["D"], ours.layers[0]["dA"]
    dropped = (D == 0) & (A != 0)
    assert dropped.any() and (dA[dropped] == 0).all()


def test_evaluation_passes_drop_nothing_and_draw_nothing():
    config = network()
    generator = torch.Generator().manual_seed(2)
    engine = MLP(config, generator=generator)
    twin = TwinMLP.from_engine(config, engine.params)
    X, y = synthetic_batch(config, 6, generator)
    state = torch.get_rng_state()
    record = engine.loss_and_gradients(X, y)
    assert not any(name == "D" for _, name, _ in record.items())
    assert not twin.training  # a twin starts in evaluation mode
    with torch.no_grad():
        assert torch.equal(twin(X), engine.scores(X))
    twin.loss_and_gradients(X, y, train=True)
    assert not twin.training  # and goes back to it after a training pass
    assert not torch.equal(state, torch.get_rng_state())  # that training pass did draw
    state = torch.get_rng_state()
    engine.predict(X)
    engine.forward_pass(X, y)
    twin.loss_and_gradients(X, y)
    assert torch.equal(state, torch.get_rng_state())


def test_lockstep_advances_the_generator_as_far_as_the_engine_alone():
    """With or without the twin, a training step consumes the same random numbers (runs with --no-twin
    draw the same masks)."""
    config = network()
    generator = torch.Generator().manual_seed(3)
    engine = MLP(config, generator=generator)
    twin = TwinMLP.from_engine(config, engine.params)
    X, y = synthetic_batch(config, 4, generator)
    torch.manual_seed(11)
    lockstep_loss_and_gradients(engine, twin, X, y, train=True)
    with_twin = torch.get_rng_state()
    torch.manual_seed(11)
    with torch.inference_mode():
        engine.loss_and_gradients(X, y, train=True)
    assert torch.equal(with_twin, torch.get_rng_state())


def test_without_the_rewind_the_masks_differ():
    """The lockstep is what makes them equal: two passes from successive generator states disagree."""
    config = network()
    generator = torch.Generator().manual_seed(4)
    engine = MLP(config, generator=generator)
    twin = TwinMLP.from_engine(config, engine.params)
    X, y = synthetic_batch(config, 8, generator)
    with torch.inference_mode():
        ours = engine.loss_and_gradients(X, y, train=True)
    theirs = twin.loss_and_gradients(X, y, train=True)
    assert not torch.equal(ours.input["D"], theirs.input["D"])


@pytest.mark.parametrize("activation, loss", [("relu", "cross_entropy"), ("maxout", "bce")])
def test_training_with_dropout_and_max_norm_stays_bitwise_equal(activation, loss):
    """Ten SGD steps with momentum, dropout on the input and the hidden layers, and max-norm after every step:
    gradients and weights bitwise equal to the twin's (torch.optim.SGD, nn.Dropout, renorm) at every step."""
    config = network(activation=activation, loss=loss, max_norm=0.6, maxout_pieces=3 if activation == "maxout" else 2)
    generator = torch.Generator().manual_seed(5)
    engine = MLP(config, generator=generator)
    twin = TwinMLP.from_engine(config, engine.params)
    engine_optimizer = SGD(engine.params, lr=0.5, momentum=0.9)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.5, momentum=0.9, foreach=False)
    torch.manual_seed(0)
    constrained = 0
    for step in range(10):
        X, y = synthetic_batch(config, 16, generator)
        ours, theirs = lockstep_loss_and_gradients(engine, twin, X, y, train=True)
        with torch.inference_mode():
            engine_optimizer.step(ours.gradients())
            before = engine.params["W1"].clone()
            max_norm_(engine.params, config.max_norm, config)
            constrained += int(not torch.equal(before, engine.params["W1"]))
        twin_optimizer.step()
        twin.apply_max_norm(config.max_norm)
        twin_params = twin.engine_parameters()
        for name, gradient in ours.gradients().items():
            assert bitwise(gradient, twin_params[name].grad), (step, name)
            assert bitwise(engine.params[name], twin_params[name].detach()), (step, name)
        norms = torch.linalg.vector_norm(engine.params["W2"], dim=1)
        assert (norms <= config.max_norm * (1 + 4 * torch.finfo(torch.float32).eps)).all()
    assert constrained > 0  # the constraint did bite


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_takes_the_fused_kernel_and_draws_the_same_masks():
    """On CUDA nn.Dropout runs native_dropout; the engine does too, so the masks agree (float64 tolerance:
    GPU kernels are not reproduced bit for bit). Not run on the CPU-only development machine."""
    config = network("float64", device="cuda")
    generator = torch.Generator().manual_seed(6)
    engine = MLP(config, generator=generator)
    twin = TwinMLP.from_engine(config, engine.params)
    X, y = synthetic_batch(config, 32, generator)
    ours, theirs = lockstep_loss_and_gradients(engine, twin, X, y, train=True, input_grad=True)
    assert torch.equal(ours.input["D"] != 0, theirs.input["D"] != 0)
    report = compare_records(ours, theirs)
    assert report.passed, report.table()
