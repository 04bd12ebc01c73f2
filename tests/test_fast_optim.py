"""The fast path trains every engine optimizer, schedule, dropout and max-norm bitwise like the reference engine.

After N steps on the CPU in float32: the weights and every optimizer-state tensor (momentum buffers, sums,
moments, step counts) equal the reference engine's (MLP + manual_backprop.optim + schedules), bit for bit; a run
stopped and resumed from the exported state equals an uninterrupted one.
"""

import pytest
import torch
from fast_handoff import train_handing_over

from manual_backprop.config import MLPConfig
from manual_backprop.fast import FastTrainer
from manual_backprop.model import MLP, init_parameters
from manual_backprop.optim import build_optimizer
from manual_backprop.optim_config import OptimizerConfig, ScheduleConfig
from manual_backprop.schedules import LRSchedule
from torch_reference.parity import synthetic_batch

STEPS = 7

OPTIMIZERS = {
    "sgd": OptimizerConfig("sgd", lr=0.1),
    "sgd-wd": OptimizerConfig("sgd", lr=0.1, weight_decay=0.01),
    "momentum": OptimizerConfig("momentum", lr=0.05, momentum=0.9),
    "momentum-wd-dampening": OptimizerConfig("momentum", lr=0.05, momentum=0.9, weight_decay=1e-3, dampening=0.3),
    "nesterov": OptimizerConfig("nesterov", lr=0.05, weight_decay=1e-3),
    "adagrad": OptimizerConfig("adagrad", lr=0.05, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.1),
    "adagrad-course": OptimizerConfig("adagrad", lr=0.05, eps_placement="course"),
    "rmsprop": OptimizerConfig("rmsprop", lr=1e-3),
    "rmsprop-centered-momentum": OptimizerConfig("rmsprop", lr=1e-3, momentum=0.5, centered=True, weight_decay=1e-3),
    "rmsprop-course": OptimizerConfig("rmsprop", lr=1e-3, centered=True, eps_placement="course"),
    "adam": OptimizerConfig("adam", lr=1e-3, weight_decay=1e-3),
    "adam-amsgrad": OptimizerConfig("adam", lr=1e-3, amsgrad=True),
    "adamw": OptimizerConfig("adamw", lr=1e-3, weight_decay=0.05, decay_biases=False),
    "adamw-amsgrad": OptimizerConfig("adamw", lr=1e-3, amsgrad=True),
}

SCHEDULES = {
    "constant": ScheduleConfig(),
    "step-warmup": ScheduleConfig("step", gamma=0.5, step_size=2, warmup_steps=2),
    "cosine-warmup": ScheduleConfig("cosine", t_max=4, eta_min=1e-5, warmup_steps=3),
    "multistep": ScheduleConfig("multistep", milestones=(2, 5), gamma=0.3),
    "exponential": ScheduleConfig("exponential", gamma=0.9),
}


def batches(config, count, m=9, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [synthetic_batch(config, m, generator) for _ in range(count)]


def reference_run(config, params, data, optimizer_config, schedule_config, rng_seed=5):
    """The reference engine: MLP.loss_and_gradients(train=True) + optimizer + schedule + max-norm, as ModelPair."""
    from manual_backprop.constraints import max_norm_

    model = MLP(config, {name: t.clone() for name, t in params.items()})
    optimizer = build_optimizer(optimizer_config, model.params)
    schedule = LRSchedule(schedule_config, optimizer_config.lr)
    torch.manual_seed(rng_seed)
    losses = []
    for X, y in data:
        optimizer.lr = schedule.lr
        with torch.inference_mode():
            record = model.loss_and_gradients(X, y, train=True)
            optimizer.step(record.gradients())
            if config.max_norm is not None:
                max_norm_(model.params, config.max_norm, config)
        schedule.step()
        losses.append(record.loss)
    return model.params, optimizer.state, losses


def fast_run(config, params, data, optimizer_config, schedule_config, rng_seed=5, trainer=None, schedule=None):
    trainer = trainer or FastTrainer.from_optimizer_config(config, {n: t.clone() for n, t in params.items()},
                                                           optimizer_config)
    schedule = schedule or LRSchedule(schedule_config, optimizer_config.lr)
    if rng_seed is not None:
        torch.manual_seed(rng_seed)
    losses = []
    for X, y in data:
        trainer.lr = schedule.lr
        losses.append(trainer.step(X, y))
        schedule.step()
    return trainer, losses


def assert_state_bitwise(fast_state, reference_state):
    assert sorted(fast_state) == sorted(reference_state)
    for name, entries in reference_state.items():
        assert sorted(fast_state[name]) == sorted(entries), name
        for key, tensor in entries.items():
            assert fast_state[name][key].dtype == tensor.dtype, (name, key)
            assert torch.equal(fast_state[name][key], tensor), f"{key} of {name} differs from the reference"


def assert_bitwise(trainer, fast_losses, ref_params, ref_state, ref_losses):
    for name, tensor in ref_params.items():
        assert torch.equal(trainer.params[name], tensor), f"{name} differs from the reference"
    assert_state_bitwise(trainer.optimizer_state(), ref_state)
    assert all(torch.equal(a, b) for a, b in zip(fast_losses, ref_losses))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("sizes, activation, l2", [((20, 16, 12, 5), "relu", 0.0), ((20, 16, 12, 5), "relu", 0.002),
                                                   ((10, 8, 4), "tanh", 0.0)])
def test_every_optimizer_bitwise_after_n_steps(name, sizes, activation, l2):
    config = MLPConfig(sizes=sizes, activation=activation, l2=l2)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, STEPS)
    schedule = SCHEDULES["constant"]
    ref = reference_run(config, params, data, OPTIMIZERS[name], schedule)
    trainer, losses = fast_run(config, params, data, OPTIMIZERS[name], schedule)
    assert_bitwise(trainer, losses, *ref)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("name", ["momentum", "nesterov", "adagrad", "rmsprop-centered-momentum", "adam-amsgrad",
                                  "adamw"])
def test_every_schedule_and_warmup_bitwise(name, schedule):
    config = MLPConfig(sizes=(20, 16, 12, 5))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, STEPS)
    ref = reference_run(config, params, data, OPTIMIZERS[name], SCHEDULES[schedule])
    trainer, losses = fast_run(config, params, data, OPTIMIZERS[name], SCHEDULES[schedule])
    assert_bitwise(trainer, losses, *ref)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resume_from_the_exported_state_equals_an_uninterrupted_run(name):
    """Export after 3 steps, through the reference optimizer's state_dict / load_state_dict (a checkpoint's
    round trip), into a new trainer: the same weights and state as 7 uninterrupted steps."""
    config = MLPConfig(sizes=(20, 16, 12, 5))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, STEPS)
    optimizer_config, schedule_config = OPTIMIZERS[name], SCHEDULES["cosine-warmup"]
    whole, _ = fast_run(config, params, data, optimizer_config, schedule_config)
    first, _ = fast_run(config, params, data[:3], optimizer_config, schedule_config)
    schedule = LRSchedule(schedule_config, optimizer_config.lr)
    for _ in range(3):
        schedule.step()
    saved_params = {n: t.clone() for n, t in first.params.items()}
    reference_optimizer = build_optimizer(optimizer_config, saved_params)
    reference_optimizer.state = first.optimizer_state()
    reference_optimizer.lr = schedule.lr
    checkpoint = reference_optimizer.state_dict()
    restored = build_optimizer(optimizer_config, saved_params)
    restored.load_state_dict(checkpoint)
    second = FastTrainer.from_optimizer_config(config, saved_params, optimizer_config)
    second.load_optimizer_state(restored.state)
    second, _ = fast_run(config, params, data[3:], optimizer_config, schedule_config, rng_seed=None, trainer=second,
                         schedule=schedule)
    for param_name in params:
        assert torch.equal(second.params[param_name], whole.params[param_name])
    assert_state_bitwise(second.optimizer_state(), whole.optimizer_state())


def test_state_moves_between_the_reference_and_the_fast_path():
    """Reference Adam for 3 steps, fast path for 3 (from its state), reference again: the same as 9 reference steps."""
    config = MLPConfig(sizes=(20, 16, 12, 5))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, 9)
    optimizer_config = OPTIMIZERS["adam-amsgrad"]
    ref_params, ref_state, _ = reference_run(config, params, data, optimizer_config, SCHEDULES["constant"])
    model = MLP(config, {n: t.clone() for n, t in params.items()})
    optimizer = build_optimizer(optimizer_config, model.params)
    trainer = FastTrainer.from_optimizer_config(config, model.params, optimizer_config)
    train_handing_over(model, optimizer, trainer, data)
    for name in params:
        assert torch.equal(model.params[name], ref_params[name])
    assert_state_bitwise(optimizer.state, ref_state)


def test_bad_state_is_refused_with_the_name():
    config = MLPConfig(sizes=(6, 4, 3))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    trainer = FastTrainer.from_optimizer_config(config, params, OPTIMIZERS["adam"])
    assert trainer.optimizer_state() == {name: {} for name in params}
    with pytest.raises(ValueError, match="expected state for the parameters"):
        trainer.load_optimizer_state({"W1": {}})
    good = {name: {"step": torch.tensor(2.0), "exp_avg": torch.zeros_like(t), "exp_avg_sq": torch.zeros_like(t)}
            for name, t in params.items()}
    wrong_shape = {**good, "b2": {**good["b2"], "exp_avg": torch.zeros(5)}}
    with pytest.raises(ValueError, match=r"state\['b2'\]\['exp_avg'\]"):
        trainer.load_optimizer_state(wrong_shape)
    with pytest.raises(ValueError, match="step counts differ"):
        trainer.load_optimizer_state({**good, "b1": {**good["b1"], "step": torch.tensor(3.0)}})
    with pytest.raises(ValueError, match="only some"):
        trainer.load_optimizer_state({**good, "b1": {}})
    for options, match in (({"fuse_velocity": True}, "fuse_velocity"), ({"cuda_graph": True}, "cuda_graph")):
        with pytest.raises(ValueError, match=match):
            FastTrainer.from_optimizer_config(config, params, OPTIMIZERS["adam"], **options)


def test_the_update_runs_inside_the_backward_and_reuses_the_gradient_buffer():
    """Adam on the default network: each W_l is updated from the workspace's one dW buffer (no per-layer dW), and
    the step leaves nothing behind but the workspace and the optimizer state."""
    config = MLPConfig()
    params = init_parameters(config, torch.Generator().manual_seed(0))
    trainer = FastTrainer.from_optimizer_config(config, params, OPTIMIZERS["adam"])
    X, y = batches(config, 1, m=32)[0]
    seen = []
    update = trainer._optimizer.update

    def spy(name, param, grad):
        seen.append((name, grad.data_ptr()))
        update(name, param, grad)

    trainer._optimizer.update = spy
    trainer.step(X, y)
    assert [name for name, _ in seen] == ["W3", "b3", "W2", "b2", "W1", "b1"]
    workspace = trainer._workspaces[32]
    assert {ptr for name, ptr in seen if name.startswith("W")} == {workspace.dW_buffer.data_ptr()}


# --- dropout and max-norm ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["momentum", "sgd", "adam", "nesterov"])
# low_memory on the MNIST network (its row blocks of dW have 32 rows; on a toy network they have 2, and a GEMM of 2
# rows need not round as the whole product does: that form is not bitwise there, with or without dropout).
@pytest.mark.parametrize("sizes, activation, low_memory, m", [((20, 16, 12, 5), "relu", False, 9),
                                                              ((784, 256, 128, 10), "relu", True, 300),
                                                              ((20, 16, 12, 5), "tanh", False, 9)])
def test_dropout_and_max_norm_bitwise_with_the_reference_masks(name, sizes, activation, low_memory, m):
    """Dropout on the input and the hidden layers with the masks the reference draws from torch's default generator,
    max-norm after every update: weights, state and losses bitwise, and the generator left where the reference
    leaves it."""
    config = MLPConfig(sizes=sizes, activation=activation, dropout=0.3, input_dropout=0.2, max_norm=0.45)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, STEPS if m < 100 else 3, m=m)
    schedule = SCHEDULES["cosine-warmup"]
    ref = reference_run(config, params, data, OPTIMIZERS[name], schedule)
    ref_generator = torch.get_rng_state()
    trainer = FastTrainer.from_optimizer_config(config, {n: t.clone() for n, t in params.items()}, OPTIMIZERS[name],
                                                low_memory=low_memory)
    trainer, losses = fast_run(config, params, data, OPTIMIZERS[name], schedule, trainer=trainer)
    assert_bitwise(trainer, losses, *ref)
    assert torch.equal(torch.get_rng_state(), ref_generator)
    constrained = torch.linalg.vector_norm(trainer.params["W1"], dim=1)
    assert 0.449 < constrained.max() <= 0.45  # the bound did bite


def test_a_refused_batch_with_dropout_draws_no_mask():
    """The reference checks X and the labels before it draws a mask; so does the fast step with dropout on."""
    config = MLPConfig(sizes=(6, 4, 3), dropout=0.5, input_dropout=0.2)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    trainer = FastTrainer(config, {n: t.clone() for n, t in params.items()}, 0.1, 0.9)
    reference = MLP(config, {n: t.clone() for n, t in params.items()})
    bad_X = torch.rand(2, 6)
    bad_X[1, 3] = float("nan")
    for X, y, match in ((bad_X, torch.tensor([0, 1]), "X: contains NaN"),
                        (torch.rand(2, 6), torch.tensor([0, 3]), "target: labels must lie in")):
        messages = []
        for model in (reference, trainer):
            torch.manual_seed(3)
            with pytest.raises(ValueError, match=match) as raised:
                if model is reference:
                    with torch.inference_mode():
                        model.loss_and_gradients(X, y, train=True)
                else:
                    model.step(X, y)
            messages.append(str(raised.value))
            assert torch.equal(torch.get_rng_state(), torch.manual_seed(3).get_state())
        assert messages[0] == messages[1]
    for name, tensor in params.items():
        assert torch.equal(trainer.params[name], tensor)


def test_cuda_graphs_and_dropout_are_refused():
    config = MLPConfig(sizes=(6, 4, 3), dropout=0.5)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="cuda_graph"):
        FastTrainer(config, params, 0.1, 0.9, cuda_graph=True)


# --- maxout, bce, l1 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["momentum", "sgd", "adam", "rmsprop-centered-momentum"])
@pytest.mark.parametrize("overrides", [{"activation": "maxout", "maxout_pieces": 3},
                                       {"loss": "bce"}, {"loss": "l1"},
                                       {"activation": "maxout", "loss": "bce", "dropout": 0.2, "max_norm": 0.45},
                                       {"loss": "l1", "dropout": 0.3, "input_dropout": 0.1, "l2": 0.001}])
def test_maxout_bce_and_l1_bitwise(name, overrides):
    config = MLPConfig(sizes=(20, 16, 12, 5), **overrides)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, STEPS)
    schedule = SCHEDULES["step-warmup"]
    ref = reference_run(config, params, data, OPTIMIZERS[name], schedule)
    trainer, losses = fast_run(config, params, data, OPTIMIZERS[name], schedule)
    assert_bitwise(trainer, losses, *ref)


@pytest.mark.parametrize("loss", ["bce", "l1"])
def test_float_targets_and_bad_targets_as_the_reference(loss):
    """bce and l1 take labels (made one-hot) or float targets; a bad target is refused with the reference's words."""
    config = MLPConfig(sizes=(6, 4, 3), loss=loss)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    X = torch.rand(4, 6)
    targets = torch.rand(4, 3)
    ref = reference_run(config, params, [(X, targets)], OPTIMIZERS["adam"], SCHEDULES["constant"])
    trainer, losses = fast_run(config, params, [(X, targets)], OPTIMIZERS["adam"], SCHEDULES["constant"])
    assert_bitwise(trainer, losses, *ref)
    reference = MLP(config, {n: t.clone() for n, t in params.items()})
    for bad in (torch.tensor([0, 1, 2, 3]), torch.full((4, 3), float("nan")), torch.rand(4, 2)):
        with pytest.raises((ValueError, TypeError)) as expected:
            reference.check_targets(bad, 4)
        with pytest.raises(type(expected.value)) as raised:
            trainer.step(X, bad)
        assert str(raised.value) == str(expected.value)


# --- the split step of data-parallel training ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["momentum", "sgd", "adam", "nesterov"])
@pytest.mark.parametrize("overrides", [{}, {"dropout": 0.3, "input_dropout": 0.1, "max_norm": 0.45, "l2": 0.001},
                                       {"activation": "maxout", "loss": "bce"}])
def test_the_split_step_hands_over_the_reference_gradients_in_its_order(name, overrides):
    """gradients(on_gradient=...) then apply_gradients(grads), with the gradients changed in between (as an
    all-reduce would: here halved): the reference's on_gradient order and values, and the same weights and state
    as the reference's step on the same changed gradients."""
    from manual_backprop.constraints import max_norm_

    config = MLPConfig(sizes=(20, 16, 12, 5), **overrides)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    model = MLP(config, {n: t.clone() for n, t in params.items()})
    optimizer = build_optimizer(OPTIMIZERS[name], model.params)
    trainer = FastTrainer.from_optimizer_config(config, {n: t.clone() for n, t in params.items()}, OPTIMIZERS[name])
    for step, (X, y) in enumerate(batches(config, 4)):
        seen = {"reference": [], "fast": []}
        torch.manual_seed(step)
        with torch.inference_mode():
            record = model.loss_and_gradients(X, y, train=True,
                                              on_gradient=lambda n, g: seen["reference"].append((n, g.clone())))
            grads = {n: g * 0.5 for n, g in record.gradients().items()}
            optimizer.step(grads)
            if config.max_norm is not None:
                max_norm_(model.params, config.max_norm, config)
        torch.manual_seed(step)
        loss, fast_grads = trainer.gradients(X, y, on_gradient=lambda n, g: seen["fast"].append((n, g.clone())))
        assert torch.equal(loss, record.loss)
        assert sorted(n for n, _ in seen["fast"]) == sorted(n for n, _ in seen["reference"])
        assert [n[0] for n, _ in seen["fast"]] and [int(n[1:]) for n, _ in seen["fast"]] == sorted(
            (int(n[1:]) for n, _ in seen["fast"]), reverse=True)  # output layer first
        reference_seen = dict(seen["reference"])
        assert all(torch.equal(g, reference_seen[n]) for n, g in seen["fast"])
        trainer.apply_gradients({n: g.mul_(0.5) for n, g in fast_grads.items()})
    for param_name in params:
        assert torch.equal(trainer.params[param_name], model.params[param_name]), param_name
    assert_state_bitwise(trainer.optimizer_state(), optimizer.state)
