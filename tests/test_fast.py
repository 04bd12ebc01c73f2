"""The fast path (manual_backprop/fast.py) trains exactly like the reference engine and the autograd twin.

Default mode: after N steps the weights and momentum buffers equal the reference engine's (MLP +
manual_backprop.optim.SGD) and the twin's (nn.Module + torch.optim.SGD(foreach=False)) bit for bit in float32 on
the CPU. fuse_velocity=True changes the rounding of the momentum update (the GEMM adds beta V itself): float64
within 1e-12 of the reference, float32 within the bounds below.
"""

import pytest
import torch
from fast_handoff import train_handing_over

from manual_backprop.config import MLPConfig
from manual_backprop.fast import FastTrainer, check_supported
from manual_backprop.model import MLP, init_parameters
from manual_backprop.optim import SGD
from torch_reference.parity import synthetic_batch
from torch_reference.twin import TwinMLP

STEPS = 6
# fuse_velocity, float32, after the 6 steps of the test below (measured 04:30 UTC, torch 2.14.1, MKL): the
# weights within 6 ulps entry by entry; the momentum buffers, whose small entries are differences of large ones,
# up to 512 ulps entry by entry but within 6.8 eps * max|V| of the reference. docs/benchmark.md has more.
FUSED_FLOAT32_MAX_WEIGHT_ULPS = 64
FUSED_FLOAT32_MAX_VELOCITY_EPS = 16


def batches(config, sizes, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [synthetic_batch(config, m, generator) for m in sizes]


def reference_run(config, params, data, lr, momentum, lrs=None):
    """(params, momentum buffers, losses) after training the reference engine on ``data``."""
    model = MLP(config, {name: t.clone() for name, t in params.items()})
    optimizer = SGD(model.params, lr=lr, momentum=momentum)
    step_losses = []
    for step, (X, y) in enumerate(data):
        if lrs:
            optimizer.lr = lrs[step]
        with torch.inference_mode():
            record = model.loss_and_gradients(X, y)
            optimizer.step(record.gradients())
        step_losses.append(record.loss)
    buffers = {name: state["momentum_buffer"] for name, state in optimizer.state.items() if state}
    return model.params, buffers, step_losses


def fast_run(config, params, data, lr, momentum, lrs=None, **options):
    trainer = FastTrainer(config, {name: t.clone() for name, t in params.items()}, lr, momentum, **options)
    step_losses = []
    for step, (X, y) in enumerate(data):
        if lrs:
            trainer.lr = lrs[step]
        step_losses.append(trainer.step(X, y))
    return trainer, step_losses


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest number of float32 values between matching entries (same-sign entries; 0 for equal tensors)."""
    assert a.dtype == b.dtype == torch.float32
    ai, bi = a.view(torch.int32).to(torch.int64), b.view(torch.int32).to(torch.int64)
    ai = torch.where(ai < 0, -(ai & 0x7FFFFFFF), ai)  # a monotone integer line through -0 and +0
    bi = torch.where(bi < 0, -(bi & 0x7FFFFFFF), bi)
    return int((ai - bi).abs().max())


def assert_bitwise(trainer, reference_params, reference_buffers, momentum):
    for name, tensor in reference_params.items():
        assert torch.equal(trainer.params[name], tensor), f"{name} differs from the reference"
    velocity = trainer.velocity()
    assert sorted(velocity) == (sorted(reference_buffers) if momentum else [])
    for name, buffer in reference_buffers.items():
        assert torch.equal(velocity[name], buffer), f"momentum buffer of {name} differs from the reference"


# --- bitwise parity with the reference engine -------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh", "elu", "identity"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "hinge"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_bitwise_equal_to_the_reference_engine(activation, loss, momentum):
    config = MLPConfig(sizes=(20, 16, 12, 5), activation=activation, loss=loss)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, [7] * STEPS)
    ref_params, ref_buffers, ref_losses = reference_run(config, params, data, 0.1, momentum)
    trainer, losses = fast_run(config, params, data, 0.1, momentum)
    assert_bitwise(trainer, ref_params, ref_buffers, momentum)
    for step, (mine, theirs) in enumerate(zip(losses, ref_losses)):
        assert torch.equal(mine, theirs), f"loss of step {step + 1}"


@pytest.mark.parametrize("l2, low_memory", [(0.0, False), (0.003, False), (0.0, True), (0.003, True)])
def test_default_network_bitwise_with_l2_changing_lr_and_batch_sizes(l2, low_memory):
    """784-256-128-10 ReLU + softmax CE, momentum 0.9: batches of 1, 64, 300 (above MKL's blocking size; with
    low_memory in row blocks) and a partial one, each size with its own workspace, and an lr that changes."""
    config = MLPConfig(l2=l2)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, [64, 1, 300, 64, 13, 300])
    lrs = [0.05, 0.05, 0.02, 0.02, 0.01, 0.01]
    ref_params, ref_buffers, ref_losses = reference_run(config, params, data, 0.05, 0.9, lrs)
    trainer, losses = fast_run(config, params, data, 0.05, 0.9, lrs, low_memory=low_memory)
    assert_bitwise(trainer, ref_params, ref_buffers, 0.9)
    assert [float(loss) for loss in losses] == [float(loss) for loss in ref_losses]
    assert len(trainer._workspaces) == 4
    assert (trainer._workspaces[300].row_chunk < 300) == low_memory  # the blocked path really ran


def test_no_hidden_layer_and_float64():
    config = MLPConfig(sizes=(9, 4), dtype="float64")
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, [5] * STEPS)
    ref_params, ref_buffers, _ = reference_run(config, params, data, 0.1, 0.9)
    trainer, _ = fast_run(config, params, data, 0.1, 0.9)
    assert_bitwise(trainer, ref_params, ref_buffers, 0.9)


# --- the autograd twin -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("momentum, l2", [(0.9, 0.0), (0.0, 0.0), (0.9, 0.002)])
def test_bitwise_equal_to_the_twin_with_torch_optim(momentum, l2):
    config = MLPConfig(sizes=(30, 24, 16, 10), l2=l2)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, [8, 8, 3, 8, 8, 8])
    twin = TwinMLP.from_engine(config, params)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=momentum, foreach=False)
    for X, y in data:
        optimizer.zero_grad()
        loss = twin.loss(twin(X), y)
        (loss + twin.l2_penalty() if l2 else loss).backward()
        optimizer.step()
    trainer, _ = fast_run(config, params, data, 0.1, momentum)
    twin_params = twin.engine_parameters()
    velocity = trainer.velocity()
    for name, tensor in twin_params.items():
        assert torch.equal(trainer.params[name], tensor.detach()), f"{name} differs from the twin's"
        if momentum:
            assert torch.equal(velocity[name], optimizer.state[tensor]["momentum_buffer"]), name


# --- fused velocity: rounding changes, bounded -------------------------------------------------------------------


def test_fused_velocity_float64_close_and_float32_within_documented_ulps():
    for dtype, check in (("float64", "tolerance"), ("float32", "ulps")):
        config = MLPConfig(sizes=(64, 48, 32, 10), dtype=dtype, l2=0.001)
        params = init_parameters(config, torch.Generator().manual_seed(0))
        data = batches(config, [256, 256, 7, 256, 256, 256])  # 256 > 192: MKL splits the batch sum
        ref_params, ref_buffers, _ = reference_run(config, params, data, 0.05, 0.9)
        trainer, _ = fast_run(config, params, data, 0.05, 0.9, fuse_velocity=True)
        velocity = trainer.velocity()
        weights = [(trainer.params[n], ref_params[n]) for n in ref_params]
        buffers = [(velocity[n], ref_buffers[n]) for n in ref_buffers]
        if check == "tolerance":
            for mine, theirs in weights + buffers:
                torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-12)
        else:
            assert max(ulp_distance(mine, theirs) for mine, theirs in weights) <= FUSED_FLOAT32_MAX_WEIGHT_ULPS
            eps = torch.finfo(torch.float32).eps
            assert max(float((mine - theirs).abs().max() / (eps * theirs.abs().max()))
                       for mine, theirs in buffers) <= FUSED_FLOAT32_MAX_VELOCITY_EPS
            if torch.backends.mkl.is_available():  # MKL splits a 256-row batch sum (measured); other BLAS may not
                assert any(not torch.equal(m, t) for m, t in weights + buffers), "the fused rounding should show"


def test_fused_plain_sgd_close_in_float64():
    config = MLPConfig(sizes=(20, 16, 5), dtype="float64", l2=0.01)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, [9] * STEPS)
    ref_params, _, _ = reference_run(config, params, data, 0.1, 0.0)
    trainer, _ = fast_run(config, params, data, 0.1, 0.0, fuse_velocity=True)
    for name, tensor in ref_params.items():
        torch.testing.assert_close(trainer.params[name], tensor, rtol=0, atol=1e-12)


# --- optimizer state in and out ----------------------------------------------------------------------------------


def test_resume_from_exported_state_equals_an_uninterrupted_run():
    config = MLPConfig(sizes=(20, 16, 12, 5))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, [7] * 6)
    whole, _ = fast_run(config, params, data, 0.1, 0.9)
    first, _ = fast_run(config, params, data[:3], 0.1, 0.9)
    state = first.optimizer_state()
    assert sorted(state) == sorted(params) and all(list(entry) == ["momentum_buffer"] for entry in state.values())
    second = FastTrainer(config, {n: t.clone() for n, t in first.params.items()}, 0.1, 0.9)
    second.load_optimizer_state(state)
    for X, y in data[3:]:
        second.step(X, y)
    for name in params:
        assert torch.equal(second.params[name], whole.params[name])
        assert torch.equal(second.velocity()[name], whole.velocity()[name])


def test_state_moves_between_the_engine_optimizer_and_the_fast_path():
    """Engine SGD for 3 steps, fast path for 3 (from SGD.state), engine again (from optimizer_state()): the
    same as 9 engine steps."""
    config = MLPConfig(sizes=(20, 16, 12, 5))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, [7] * 9)
    ref_params, ref_buffers, _ = reference_run(config, params, data, 0.1, 0.9)
    model = MLP(config, {n: t.clone() for n, t in params.items()})
    optimizer = SGD(model.params, lr=0.1, momentum=0.9)
    trainer = FastTrainer(config, model.params, 0.1, 0.9)  # shares the model's tensors
    train_handing_over(model, optimizer, trainer, data)
    for name in params:
        assert torch.equal(model.params[name], ref_params[name])
        assert torch.equal(optimizer.state[name]["momentum_buffer"], ref_buffers[name])


def test_state_before_the_first_step_and_without_momentum():
    config = MLPConfig(sizes=(6, 4, 3))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    assert FastTrainer(config, params, 0.1, 0.9).optimizer_state() == {name: {} for name in params}
    plain = FastTrainer(config, params, 0.1)
    X, y = batches(config, [4])[0]
    plain.step(X, y)
    assert plain.velocity() == {}
    with pytest.raises(ValueError, match="momentum 0"):
        plain.load_velocity({name: torch.zeros_like(t) for name, t in params.items()})


def test_bad_state_is_refused_with_the_name():
    config = MLPConfig(sizes=(6, 4, 3))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    trainer = FastTrainer(config, params, 0.1, 0.9)
    with pytest.raises(ValueError, match="velocity: expected buffers"):
        trainer.load_velocity({"W1": torch.zeros(4, 6)})
    wrong = {name: torch.zeros_like(t) for name, t in params.items()}
    wrong["b2"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"velocity\['b2'\]"):
        trainer.load_velocity(wrong)
    with pytest.raises(ValueError, match="only some"):
        trainer.load_optimizer_state({"W1": {"momentum_buffer": torch.zeros(4, 6)}, "b1": {}, "W2": {}, "b2": {}})


# --- what the step keeps, and what it never runs ------------------------------------------------------------------


def test_the_workspace_is_reused_and_nothing_else_is_kept():
    config = MLPConfig()
    params = init_parameters(config, torch.Generator().manual_seed(0))
    trainer = FastTrainer(config, params, 0.01, 0.9)
    X, y = batches(config, [32])[0]
    trainer.step(X, y)
    workspace = trainer._workspaces[32]
    held = trainer.workspace_bytes()
    pointers = [t.data_ptr() for t in workspace.A.values()]
    for _ in range(3):
        trainer.step(X, y)
    assert trainer.workspace_bytes() == held and trainer._workspaces[32] is workspace
    assert [t.data_ptr() for t in workspace.A.values()] == pointers
    # One scratch of the largest layer's dW (784 x 256), not one per layer: lecture 004's freed gradients.
    assert workspace.dW_buffer is None and workspace.scratch.numel() == 784 * 256
    trainer.release_workspaces()
    assert trainer.workspace_bytes() == 0


@pytest.mark.parametrize("fuse_velocity, low_memory, largest_scratch", [
    (False, True, 784 * 256 // 8), (True, True, 64 * 256),
    (False, False, 784 * 256), (True, False, 512 * 256)])  # whole: the larger of dW1 and dA1, one shared scratch
def test_a_large_batch_keeps_only_the_activations_and_row_blocks(fuse_velocity, low_memory, largest_scratch):
    """Batch 512: the workspace is A_1, A_2, Z_3 and dZ_3 plus one scratch (of row blocks with low_memory);
    no Z, and never a dW or dA per layer."""
    config = MLPConfig()
    trainer = FastTrainer(config, init_parameters(config, torch.Generator().manual_seed(0)), 0.01, 0.9,
                          fuse_velocity=fuse_velocity, low_memory=low_memory)
    X, y = batches(config, [512])[0]
    trainer.step(X, y)
    workspace = trainer._workspaces[512]
    assert workspace.scratch.numel() == largest_scratch
    activations = 512 * (256 + 128 + 10 + 10) * 4
    assert trainer.workspace_bytes() <= activations + 4 * largest_scratch + 8192


def test_no_backward_kernel_runs():
    from tests.test_no_autograd import RecordOps

    config = MLPConfig(sizes=(12, 9, 7, 4), l2=0.01)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    trainer = FastTrainer(config, params, 0.1, 0.9)
    X, y = batches(config, [5])[0]
    recorder = RecordOps()
    with recorder:
        trainer.step(X, y)
        trainer.step(X, y)
    assert any("addmm" in op for op in recorder.ops)
    assert not sorted(op for op in recorder.ops if "backward" in op)


# --- bad input -----------------------------------------------------------------------------------------------------


def test_unsupported_settings_are_named():
    config = MLPConfig(sizes=(6, 4, 3))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    for kwargs, match in (({"lr": 0.0}, "lr"), ({"lr": 0.1, "momentum": 1.0}, "momentum"),
                          ({"lr": 0.1, "momentum": -0.5}, "momentum"), ({"lr": 0.1, "cuda_graph": True}, "cuda_graph")):
        lr = kwargs.pop("lr")
        with pytest.raises(ValueError, match=match):
            FastTrainer(config, params, lr, **kwargs)
    with pytest.raises(TypeError, match="config"):
        FastTrainer({"sizes": (6, 4, 3)}, params, 0.1)
    with pytest.raises(ValueError, match="params"):
        FastTrainer(config, {"W1": params["W1"]}, 0.1)


@pytest.mark.parametrize("setting, value", [("activation", "maxout"), ("loss", "bce"), ("loss", "l1"),
                                            ("dropout", 0.5), ("max_norm", 3.0)])
def test_every_config_is_accepted(setting, value):
    """The fast path trains every MLPConfig (tests/test_fast_optim.py checks maxout, bce, l1 bitwise)."""
    check_supported(MLPConfig(sizes=(6, 4, 3), **{setting: value}))


def test_bad_batches_are_named():
    config = MLPConfig(sizes=(6, 4, 3))
    trainer = FastTrainer(config, init_parameters(config, torch.Generator().manual_seed(0)), 0.1, 0.9)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="X"):
        trainer.step(torch.zeros(2, 5), y)
    with pytest.raises(TypeError, match="X"):
        trainer.step(torch.zeros(2, 6, dtype=torch.float64), y)
    with pytest.raises(ValueError, match="y"):
        trainer.step(torch.zeros(2, 6), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="target"):
        trainer.step(torch.zeros(2, 6), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="NaN"):
        trainer.step(torch.full((2, 6), float("nan")), y)



@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("sizes", [(6, 4, 3), (6, 3)])  # with a hidden ReLU layer, and without (Z_1 = Z_out)
def test_a_non_finite_input_is_refused_even_where_relu_would_hide_it(bad, sizes):
    """The screen reads Z_1 before the activation: an Inf at X[1, 2] whose weights W_1[:, 2] are all of one sign
    makes Z_1's row all +Inf or all -Inf, and ReLU would turn -Inf into 0. Nothing is updated."""
    config = MLPConfig(sizes=sizes)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    params["W1"][:, 2] = -0.5  # X[1, 2] = +Inf gives Z_1[1, :] = -Inf, which ReLU maps to 0
    before = {name: tensor.clone() for name, tensor in params.items()}
    trainer = FastTrainer(config, params, 0.1, 0.9)
    X = torch.ones(2, 6)
    X[1, 2] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf \(first at row 1, column 2"):
        trainer.step(X, torch.tensor([0, 1]))
    assert all(torch.equal(params[name], before[name]) for name in params)
    assert trainer.velocity() == {}


def test_a_finite_batch_whose_first_layer_overflows_trains_as_the_reference_does():
    """Z_1 overflows to Inf from finite inputs: the screen's full check passes the batch, as the reference's
    check does, and both train on to the same (non-finite) numbers."""
    config = MLPConfig(sizes=(6, 4, 3))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    params["W1"].abs_().add_(0.5)  # every term of Z_1 = X W_1^T + b_1 is above 1.5e38: the sums overflow
    data = [(torch.full((2, 6), 3e38), torch.tensor([0, 1]))]
    ref_params, ref_buffers, _ = reference_run(config, params, data, 0.1, 0.9)
    trainer, _ = fast_run(config, params, data, 0.1, 0.9)
    X = data[0][0]
    assert not torch.isfinite(X @ params["W1"].t() + params["b1"]).all()  # the screen did see a non-finite Z_1
    for name, tensor in ref_params.items():
        torch.testing.assert_close(trainer.params[name], tensor, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge"])
def test_refuse_divergence_stops_before_any_update(loss):
    """With refuse_divergence (what a training run sets) a batch whose loss or output scores are not finite is
    refused after the forward, before the backward updates anything; without it the trainer updates on, as the
    bare reference engine does."""
    from manual_backprop.fast_screen import DivergedBeforeUpdate

    config = MLPConfig(sizes=(6, 4, 3), loss=loss)
    params = init_parameters(config, torch.Generator().manual_seed(0))
    params["W1"].abs_()
    params["W2"].fill_(3e38)  # finite weights whose output scores overflow: Z_2 = A_1 W_2^T + b_2, A_1 > 0
    X, y = torch.full((2, 6), 10.0), torch.tensor([0, 1])
    trainer = FastTrainer(config, {name: tensor.clone() for name, tensor in params.items()}, 0.1, 0.9,
                          refuse_divergence=True)
    with pytest.raises(DivergedBeforeUpdate) as refused:
        trainer.step(X, y)
    assert refused.value.what == ("loss" if loss == "cross_entropy" else "output scores Z")
    for name, tensor in params.items():
        assert torch.equal(trainer.params[name], tensor), name
    bare = FastTrainer(config, {name: tensor.clone() for name, tensor in params.items()}, 0.1, 0.9)
    bare.step(X, y)  # trains on into the overflow, no refusal
    if loss == "cross_entropy":  # (the hinge loss's NaN margins give no gradient: nothing moves)
        assert not all(torch.equal(bare.params[name], tensor) for name, tensor in params.items())


# --- CUDA graphs ---------------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("fuse_velocity", [False, True])
def test_cuda_graph_step_equals_the_eager_step(fuse_velocity):
    """Eager and graph-replayed steps run the same kernels on the same data, through warm-up, capture, replay, a
    second batch size and an lr change (which captures again). cuBLAS may pick its algorithms differently
    under capture, so the comparison allows float32 rounding rather than demanding equality."""
    config = MLPConfig(sizes=(784, 256, 128, 10), device="cuda")
    params = init_parameters(config, torch.Generator().manual_seed(0))
    data = batches(config, [64, 64, 64, 64, 32, 32, 32, 32, 64, 64])
    lrs = [0.05] * 8 + [0.02, 0.02]
    eager, eager_losses = fast_run(config, params, data, 0.05, 0.9, lrs, fuse_velocity=fuse_velocity)
    graph, graph_losses = fast_run(config, params, data, 0.05, 0.9, lrs, fuse_velocity=fuse_velocity,
                                   cuda_graph=True)
    assert len(graph._graphs.graphs) == 2  # batch 64 (captured again at the new lr) and batch 32
    for name in params:
        torch.testing.assert_close(graph.params[name], eager.params[name])
        torch.testing.assert_close(graph.velocity()[name], eager.velocity()[name])
    torch.testing.assert_close(torch.stack(graph_losses), torch.stack(eager_losses))
    reference, _, _ = reference_run(config, params, data, 0.05, 0.9, lrs)
    for name in params:  # the reference engine on CUDA: the same math in its own kernels
        torch.testing.assert_close(graph.params[name], reference[name], rtol=1e-4, atol=1e-6)


def test_built_from_an_optimizer_config_or_refused_with_the_setting():
    from manual_backprop.optim_config import OptimizerConfig

    config = MLPConfig(sizes=(6, 4, 3))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    trainer = FastTrainer.from_optimizer_config(config, params, OptimizerConfig("momentum", lr=0.1, momentum=0.8))
    assert (trainer.lr, trainer.momentum) == (0.1, 0.8)
    assert FastTrainer.from_optimizer_config(config, params, OptimizerConfig("sgd", lr=0.1)).momentum == 0.0
    assert trainer._optimizer is None  # the tuned SGD route
    # Every other optimizer or setting: the general route (tests/test_fast_optim.py checks it bitwise).
    for optimizer in (OptimizerConfig("nesterov", lr=0.1), OptimizerConfig("adam", lr=0.1),
                      OptimizerConfig("momentum", lr=0.1, dampening=0.5),
                      OptimizerConfig("sgd", lr=0.1, weight_decay=0.01)):
        general = FastTrainer.from_optimizer_config(config, params, optimizer)
        assert general._optimizer is not None and general._optimizer.config == optimizer
    with pytest.raises(TypeError, match="optimizer"):
        FastTrainer.from_optimizer_config(config, params, "adam")


@pytest.mark.parametrize("bad_label", [3, -1, -100])
def test_a_bad_label_is_named_and_changes_nothing(bad_label):
    config = MLPConfig(sizes=(6, 4, 3))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    trainer = FastTrainer(config, {n: t.clone() for n, t in params.items()}, 0.1, 0.9)
    with pytest.raises(ValueError, match="target: labels must lie in"):
        trainer.step(torch.rand(2, 6), torch.tensor([0, bad_label]))
    for name, tensor in params.items():
        assert torch.equal(trainer.params[name], tensor)
