"""Engine vs autograd twin, tensor by tensor, over random shapes, depths, batch sizes, activations and losses."""

import math
import random

import pytest
import torch

from manual_backprop.config import HIDDEN_ACTIVATIONS, INITS, LOSSES, POINTWISE_ACTIVATIONS, MLPConfig
from manual_backprop.model import MLP, init_parameters
from torch_reference.parity import run_parity, synthetic_batch
from torch_reference.twin import TwinMLP

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")])]


def random_config(seed: int, dtype: str, device: str) -> tuple[MLPConfig, int]:
    """A random network: 0 to 4 hidden layers of random widths, random activation (maxout with 2-4 pieces
    included), loss, L2, dropout on the hidden layers and the input, and init."""
    rng = random.Random(seed)
    depth = seed % 5  # every depth from 0 to 4 hidden layers, in turn
    loss = rng.choice(LOSSES)
    outputs = rng.choice((1, rng.randint(2, 12))) if loss in ("bce", "mse", "l1") else rng.randint(2, 12)
    sizes = (rng.randint(1, 40),) + tuple(rng.randint(1, 33) for _ in range(depth)) + (outputs,)
    activation = rng.choice(HIDDEN_ACTIVATIONS) if depth else "relu"  # no hidden layer: no hidden activation
    config = MLPConfig(
        sizes=sizes,
        activation=activation,
        maxout_pieces=rng.randint(2, 4) if activation == "maxout" else 2,
        dropout=rng.choice((0.0, 0.0, 0.3, 0.5)) if depth else 0.0,
        input_dropout=rng.choice((0.0, 0.0, 0.2)),
        init=rng.choice(INITS),
        loss=loss,
        mse_convention=rng.choice(("course", "mean")),
        l2=rng.choice((0.0, 0.0, 1e-3, 0.5)),
        leaky_slope=rng.choice((0.1, 0.01, 0.3)),
        elu_alpha=rng.choice((1.0, 0.5)),
        dtype=dtype,
        device=device,
    )
    batch_size = rng.choice((1, 2, 7, 33, 64, 257))
    return config, batch_size


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(40))
def test_float64_random_networks_match_autograd_tightly(seed, device):
    config, batch_size = random_config(seed, "float64", device)
    report = run_parity(config, batch_size=batch_size, seed=seed)
    assert report.policy.rtol == 1e-10 and report.policy.atol == 1e-12
    assert report.passed, f"{config}\n{report.table()}"


@pytest.mark.parametrize("seed", range(40))
def test_float32_random_networks_are_bitwise_equal_to_autograd_on_cpu(seed):
    """Every tensor bitwise equal, except downstream of an ELU backward whose tensor size leaves entries to
    the kernel's scalar tail (see elu_backward): there the policy must hold and the forward pass, the loss and
    the output layer's gradients (computed before any ELU backward) must still be exact."""
    config, batch_size = random_config(seed, "float32", "cpu")
    report = run_parity(config, batch_size=batch_size, seed=seed)
    inexact = [(row.layer, row.name, row.max_ulp) for row in report.rows if not row.exact]
    has_elu_backward = config.activation == "elu" and config.num_layers > 1
    if not has_elu_backward:
        assert not inexact, f"{config}\n{report.table()}"
        return
    assert report.passed, report.table()
    must_be_exact = [row for row in report.rows if row.name in ("loss", "Z", "A") or row.layer == config.num_layers]
    assert all(row.exact for row in must_be_exact), report.table()


def test_float32_elu_network_with_tail_free_sizes_is_bitwise_equal():
    """With every (m, n) a multiple of 64 entries (no scalar tail in any kernel chunk) ELU is exact too."""
    config = MLPConfig(sizes=(784, 256, 128, 10), activation="elu", elu_alpha=0.5, l2=1e-3)
    report = run_parity(config, batch_size=64, seed=5, require_exact=True)
    assert report.passed, report.table()


# Every pointwise activation with the course's three losses, and the issue-6 additions (maxout, bce, l1) in a
# few combinations (the random networks above mix them all; each default-network case costs seconds).
DEFAULT_NETWORK_CASES = [(activation, loss) for activation in POINTWISE_ACTIVATIONS
                         for loss in ("cross_entropy", "mse", "hinge")] + [
    ("maxout", "cross_entropy"), ("maxout", "bce"), ("relu", "bce"), ("relu", "l1"), ("tanh", "l1")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation, loss", DEFAULT_NETWORK_CASES)
def test_every_activation_and_loss_on_the_default_network(activation, loss, device):
    config = MLPConfig(activation=activation, loss=loss, l2=1e-4, dtype="float64", device=device)
    report = run_parity(config, batch_size=32, seed=1)
    assert report.passed, report.table()
    if device == "cpu":  # (32, 256) and (32, 128): no ELU scalar tail, so every tensor is exact
        report32 = run_parity(MLPConfig(activation=activation, loss=loss, l2=1e-4), batch_size=32, seed=1)
        assert report32.exact_count == len(report32.rows), report32.table()


@pytest.mark.parametrize("seed", range(10))
def test_finite_differences_agree_with_the_engine(seed):
    """The independent float64 oracle on small random networks (every parameter entry checked)."""
    config, batch_size = random_config(seed, "float64", "cpu")
    report = run_parity(config, batch_size=min(batch_size, 16), seed=seed, numeric=True)
    assert report.numeric, "the numeric oracle produced no rows"
    shapes = {(layer, kind): config.linear_shape(layer) if kind == "W" else config.linear_shape(layer)[:1]
              for layer in range(1, config.num_layers + 1) for kind in "Wb"}
    total = sum(math.prod(shape) for shape in shapes.values())
    for check in report.numeric:
        assert check.passed, (config, check)
        entries = math.prod(shapes[(check.layer, check.name)])
        # every entry of a small network, a sample of 24 per tensor of a larger one (maxout's k pieces count)
        assert check.checked + check.skipped == (entries if total <= 2000 else min(24, entries))


@pytest.mark.parametrize("seed", range(4))
def test_finite_differences_check_the_dropout_pass_with_its_masks_fixed(seed):
    """Dropout on the inputs and the hidden layers: the oracle differentiates the dropped-out network (one set of
    masks for the base pass and every +-h pass), and agrees with the engine's backward through the masks."""
    config = MLPConfig(sizes=(7, 6, 5, 3), dropout=0.4, input_dropout=0.3, dtype="float64")
    report = run_parity(config, batch_size=6, seed=seed, numeric=True)
    assert report.numeric and all(check.passed for check in report.numeric), report.numeric
    assert sum(check.checked for check in report.numeric) > 60


def test_finite_differences_with_masks_redrawn_at_every_pass_fail():
    """The control: were every +-h pass to draw new masks, the quotients would mean nothing, and the check must
    say so (it can fail)."""
    from manual_backprop import finite_differences

    config = MLPConfig(sizes=(7, 6, 5, 3), dropout=0.4, input_dropout=0.3, dtype="float64")
    model = MLP(config, init_parameters(config, torch.Generator().manual_seed(0)))
    X, y = synthetic_batch(config, 6, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fixed = finite_differences.check_gradients(model, X, y, train=True)
        original = finite_differences._check
        try:
            finite_differences._check = lambda *args: original(*args[:-1], lambda: None)  # no rewinding
            redrawn = finite_differences.check_gradients(model, X, y, train=True)
        finally:
            finite_differences._check = original
    assert all(check.passed for check in fixed)
    assert not any(check.passed for check in redrawn)


def test_the_oracle_leaves_the_generator_as_it_found_it():
    from manual_backprop.finite_differences import check_gradients

    config = MLPConfig(sizes=(5, 4, 3), dropout=0.5, dtype="float64")
    model = MLP(config, init_parameters(config, torch.Generator().manual_seed(0)))
    X, y = synthetic_batch(config, 4, torch.Generator().manual_seed(1))
    before = torch.get_rng_state()
    with torch.inference_mode():
        check_gradients(model, X, y, train=True)
    assert torch.equal(torch.get_rng_state(), before)


def test_finite_differences_on_the_large_default_network_sample_entries():
    report = run_parity(MLPConfig(dtype="float64"), batch_size=16, seed=3, numeric=True)
    assert [(c.layer, c.name) for c in report.numeric] == [(1, "W"), (1, "b"), (2, "W"), (2, "b"), (3, "W"), (3, "b")]
    assert all(c.passed and c.checked + c.skipped == min(24, n) for c, n in
               zip(report.numeric, (256 * 784, 256, 128 * 256, 128, 10 * 128, 10)))


def test_init_reproduces_nn_linear_default_exactly():
    config = MLPConfig(sizes=(784, 256, 128, 10))
    params = init_parameters(config, torch.Generator().manual_seed(123))
    state = torch.random.get_rng_state()
    torch.manual_seed(123)
    twin = TwinMLP(config)  # nn.Linear layers initialised from the global generator
    torch.random.set_rng_state(state)
    for name, tensor in twin.engine_parameters().items():
        assert torch.equal(params[name], tensor.detach()), name


def test_engine_runs_under_inference_mode_with_identical_results():
    config = MLPConfig(sizes=(20, 16, 8, 5), activation="tanh", l2=0.01)
    generator = torch.Generator().manual_seed(0)
    model = MLP(config, generator=generator)
    X, y = synthetic_batch(config, 9, generator)
    normal = model.loss_and_gradients(X, y)
    with torch.inference_mode():
        inference = model.loss_and_gradients(X, y)
    for (_, _, a), (_, _, b) in zip(normal.items(), inference.items()):
        assert torch.equal(a, b)
        assert not a.requires_grad and a.grad_fn is None


def test_engine_record_has_the_same_names_as_the_twin():
    config = MLPConfig(sizes=(6, 5, 4), loss="hinge")
    generator = torch.Generator().manual_seed(0)
    model = MLP(config, generator=generator)
    X, y = synthetic_batch(config, 3, generator)
    engine = model.loss_and_gradients(X, y)
    twin = TwinMLP.from_engine(config, model.params).loss_and_gradients(X, y)
    assert [(layer, name) for layer, name, _ in engine.items()] == [
        (layer, name) for layer, name, _ in twin.items()]
    assert [name for _, name, _ in engine.items()][:6] == ["Z", "A", "dA", "dZ", "dW", "db"]


def test_a_wrong_gradient_is_caught_by_both_oracles(monkeypatch):
    """The checks can fail: break the sigmoid derivative and both the twin and finite differences object."""
    import manual_backprop.activations as activations

    monkeypatch.setattr(activations, "sigmoid_backward", lambda da, a: da * a * a)  # wrong f'
    config = MLPConfig(sizes=(6, 5, 3), activation="sigmoid", dtype="float64")
    report = run_parity(config, batch_size=4, seed=0, numeric=True)
    assert not report.passed
    failing = {(row.layer, row.name) for row in report.rows if not row.passed}
    assert (1, "dZ") in failing and (1, "dW") in failing and (2, "dW") not in failing
    assert not next(c for c in report.numeric if (c.layer, c.name) == (1, "W")).passed


def test_kinks_are_skipped_not_passed():
    """A pre-activation sitting exactly on the ReLU kink: its entries must be reported as skipped."""
    from manual_backprop.finite_differences import check_gradients

    config = MLPConfig(sizes=(2, 2, 2), activation="relu", dtype="float64")
    params = {"W1": torch.tensor([[1.0, -1.0], [0.5, 0.25]], dtype=torch.float64),
              "b1": torch.tensor([0.0, 0.1], dtype=torch.float64),
              "W2": torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64),
              "b2": torch.zeros(2, dtype=torch.float64)}
    X = torch.tensor([[1.0, 1.0]], dtype=torch.float64)  # Z1[0, 0] = 1 - 1 + 0 = 0: on the kink
    checks = check_gradients(MLP(config, params), X, torch.tensor([1]))
    by_name = {(c.layer, c.name): c for c in checks}
    assert (by_name[(1, "W")].skipped, by_name[(1, "W")].checked) == (2, 2)  # row 0 of W1 moves Z1[0, 0]
    assert (by_name[(1, "b")].skipped, by_name[(1, "b")].checked) == (1, 1)
    assert (by_name[(2, "W")].skipped, by_name[(2, "W")].checked) == (0, 4)  # W2 does not move Z1
    assert all(c.passed for c in checks if c.checked)
