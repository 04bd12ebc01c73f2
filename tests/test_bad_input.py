"""Bad input gets an error that names the argument or layer, what was expected and what was given."""

import pytest
import torch

from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP
from manual_backprop.optim import SGD
from torch_reference.compare import compare_tensors, policy_for


@pytest.fixture
def model():
    return MLP(MLPConfig(sizes=(6, 5, 3)), generator=torch.Generator().manual_seed(0))


def good_batch(m=4):
    return torch.rand(m, 6), torch.tensor([0, 1, 2, 1])[:m]


@pytest.mark.parametrize("X, pattern", [
    (torch.rand(4, 7), r"X: layer 1 expects input width 6; got width 7"),
    (torch.rand(0, 6), r"X: the batch is empty"),
    (torch.rand(6), r"X: expected a 2-D batch of shape \(m, 6\); got shape \(6,\)"),
    (torch.tensor([[0.0, float("nan"), 0, 0, 0, 0]] * 4), r"X: contains NaN or Inf \(first at row 0, column 1"),
    (torch.tensor([[0.0, 0, 0, 0, 0, float("inf")]] * 4), r"X: contains NaN or Inf"),
])
def test_bad_inputs(model, X, pattern):
    with pytest.raises(ValueError, match=pattern):
        model.loss_and_gradients(X, torch.tensor([0, 1, 2, 1])[: max(1, X.shape[0])])


def test_input_dtype_mismatch_names_both(model):
    with pytest.raises(TypeError, match=r"X: the model is float32; got a torch.float64 batch"):
        model.loss_and_gradients(torch.rand(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1]))


def test_input_that_is_not_a_tensor(model):
    with pytest.raises(TypeError, match=r"X: expected a torch.Tensor of shape \(m, 6\); got list"):
        model.loss_and_gradients([[0.0] * 6], torch.tensor([0]))


@pytest.mark.parametrize("labels, error, pattern", [
    (torch.tensor([0, 1, 3, 1]), ValueError,
     r"target: labels must lie in \[0, 2\] for the 3 outputs of layer 2; got values in \[0, 3\]"),
    (torch.tensor([0, -1, 2, 1]), ValueError, r"got values in \[-1, 2\]"),
    (torch.tensor([0, 1, 2], dtype=torch.int64), ValueError,
     r"target: expected labels of shape \(4,\) to match the batch; got \(3,\)"),
    (torch.tensor([0, 1, 2, 1], dtype=torch.int32), TypeError,
     r"target: class labels must be int64 \(torch.long\) for every loss; got dtype torch.int32 "
     r"\(convert with target.long\(\)\)"),
    (torch.eye(3)[[0, 1, 2, 1]], TypeError,
     r"target: cross_entropy expects int64 class labels of shape \(4,\); got a torch.float32"),
])
def test_bad_labels_for_cross_entropy(model, labels, error, pattern):
    with pytest.raises(error, match=pattern):
        model.loss_and_gradients(torch.rand(4, 6), labels)


def test_float_targets_for_hinge_are_refused():
    model = MLP(MLPConfig(sizes=(6, 3), loss="hinge"))
    with pytest.raises(TypeError, match=r"target: hinge expects int64 class labels"):
        model.loss_and_gradients(torch.rand(2, 6), torch.rand(2, 3))


def test_mse_targets_must_have_the_output_shape_and_dtype():
    model = MLP(MLPConfig(sizes=(6, 3), loss="mse"))
    with pytest.raises(ValueError, match=r"target: mse expects float targets of shape \(2, 3\) "
                                         r"\(or int64 class labels of shape \(2,\)\); got \(2, 4\)"):
        model.loss_and_gradients(torch.rand(2, 6), torch.rand(2, 4))
    with pytest.raises(TypeError, match=r"target: the model is float32; got torch.float64 targets"):
        model.loss_and_gradients(torch.rand(2, 6), torch.rand(2, 3, dtype=torch.float64))
    # Integer labels are accepted and become one-hot rows (the course's MNIST lab).
    record = model.loss_and_gradients(torch.rand(2, 6), torch.tensor([0, 2]))
    assert record.loss.ndim == 0


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge", "mse", "l1", "bce"])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.bool])
def test_one_rule_for_integer_labels_of_every_loss(loss, dtype):
    """Class labels are int64 for every loss; any other integer dtype gets the same error, which says so."""
    model = MLP(MLPConfig(sizes=(6, 3), loss=loss))
    labels = torch.tensor([0, 1], dtype=dtype)
    with pytest.raises(TypeError, match=r"target: class labels must be int64 \(torch.long\) for every loss; "
                                        rf"got dtype {dtype}"):
        model.loss_and_gradients(torch.rand(2, 6), labels)
    assert model.loss_and_gradients(torch.rand(2, 6), labels.long()).loss.ndim == 0


def test_bce_targets():
    """bce: float targets in [0, 1] of the output shape; with one output, 0/1 labels; other labels refused."""
    multi = MLP(MLPConfig(sizes=(6, 3), loss="bce"))
    with pytest.raises(ValueError, match=r"target: bce expects targets in \[0, 1\] \(labels or probabilities\); "
                                         r"got values in \[-0.5, 1.0\]"):
        multi.loss_and_gradients(torch.rand(2, 6), torch.tensor([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"target: bce expects float targets of shape \(2, 3\)"):
        multi.loss_and_gradients(torch.rand(2, 6), torch.rand(2, 1))
    single = MLP(MLPConfig(sizes=(6, 1), loss="bce"))
    with pytest.raises(ValueError, match=r"target: labels must lie in \[0, 1\] for the 1 output of layer 1 "
                                         r"\(bce with one output: 0 or 1\); got values in \[0, 2\]"):
        single.loss_and_gradients(torch.rand(2, 6), torch.tensor([0, 2]))
    # 0/1 labels of a single output are the target column; soft targets in [0, 1] are accepted too.
    assert single.loss_and_gradients(torch.rand(2, 6), torch.tensor([0, 1])).loss.ndim == 0
    assert multi.loss_and_gradients(torch.rand(2, 6), torch.rand(2, 3)).loss.ndim == 0


@pytest.mark.parametrize("kwargs, pattern", [
    ({"activation": "swish"}, r"activation: expected one of relu, leaky_relu, sigmoid, tanh, elu, identity, maxout; "
                              r"got 'swish'"),
    ({"loss": "nll"}, r"loss: expected one of cross_entropy, mse, hinge, bce, l1; got 'nll'"),
    ({"sizes": (784, 10), "activation": "tanh"}, r"activation: the network \(784, 10\) has no hidden layer, so "
                                                 r"activation='tanh' would be ignored"),
    ({"sizes": (784, 10), "activation": "maxout"}, r"activation: the network \(784, 10\) has no hidden layer"),
    ({"activation": "maxout", "maxout_pieces": 1}, r"maxout_pieces: expected an int k >= 2"),
    ({"activation": "maxout", "maxout_pieces": 2.0}, r"maxout_pieces: expected an int k >= 2"),
    ({"maxout_pieces": 3}, r"maxout_pieces: only used with activation='maxout'"),
    ({"dropout": 1.0}, r"dropout: expected a drop probability in \[0, 1\); got 1.0"),
    ({"dropout": -0.1}, r"dropout: expected a drop probability in \[0, 1\)"),
    ({"dropout": float("nan")}, r"dropout: expected a drop probability"),
    ({"input_dropout": 1.5}, r"input_dropout: expected a drop probability in \[0, 1\); got 1.5"),
    ({"sizes": (784, 10), "dropout": 0.5}, r"dropout: the network \(784, 10\) has no hidden layer"),
    ({"max_norm": 0.0}, r"max_norm: expected a finite norm bound c > 0, or None for no constraint; got 0.0"),
    ({"max_norm": -3}, r"max_norm: expected a finite norm bound c > 0"),
    ({"max_norm": float("inf")}, r"max_norm: expected a finite norm bound"),
    ({"loss": "bce", "output_activation": "identity"}, r"output_activation: bce needs the sigmoid output"),
    ({"loss": "bce", "output_activation": "softmax"}, r"output_activation: softmax exists only fused with the "
                                                      r"cross_entropy"),
    ({"init": "he"}, r"init: expected one of torch_linear, course_normal, kaiming_uniform, kaiming_normal, "
                     r"xavier_uniform, xavier_normal; got 'he'"),
    ({"dtype": "float16"}, r"dtype: expected one of float32, float64; got 'float16'"),
    ({"sizes": (784,)}, r"sizes: need at least an input and an output width"),
    ({"sizes": (784, 0, 10)}, r"sizes\[1\]: expected a positive int; got 0"),
    ({"loss": "mse", "output_activation": "softmax"}, r"output_activation: softmax exists only fused with the "
                                                      r"cross_entropy"),
    ({"loss": "cross_entropy", "output_activation": "identity"}, r"cross_entropy needs the softmax output"),
    ({"l2": -1.0}, r"l2: expected a strength >= 0; got -1.0"),
    ({"l2": float("nan")}, r"l2: expected a finite number"),
    ({"device": "tpu9"}, r"device: expected a torch device"),
])
def test_bad_configs(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        MLPConfig(**kwargs)


def test_sizes_as_a_string_is_refused():
    with pytest.raises(TypeError, match=r"sizes: expected a sequence of ints"):
        MLPConfig(sizes="784,10")


def test_parameters_of_the_wrong_shape_dtype_or_device_name_the_layer():
    config = MLPConfig(sizes=(6, 5, 3))
    good = MLP(config).params
    with pytest.raises(ValueError, match=r"params\['W2'\] \(layer 2\): expected shape \(3, 5\); got \(5, 3\)"):
        MLP(config, {**good, "W2": torch.zeros(5, 3)})
    with pytest.raises(TypeError, match=r"params\['b1'\] \(layer 1\): expected dtype torch.float32; got torch.float64"):
        MLP(config, {**good, "b1": torch.zeros(5, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"params: expected exactly the names"):
        MLP(config, {"W1": good["W1"]})
    if not torch.cuda.is_available():
        return
    with pytest.raises(ValueError, match=r"params\['W1'\] \(layer 1\): expected device cpu; got cuda"):
        MLP(config, {**good, "W1": good["W1"].cuda()})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for a second device")
def test_batch_on_another_device():
    model = MLP(MLPConfig(sizes=(6, 3), device="cuda"))
    with pytest.raises(ValueError, match=r"X: the model is on cuda; got a batch on cpu"):
        model.loss_and_gradients(torch.rand(2, 6), torch.tensor([0, 1], device="cuda"))


def test_batch_on_a_meta_device_is_refused(model):
    """A second device exists everywhere: 'meta'. Mixed devices are refused before any arithmetic."""
    with pytest.raises(ValueError, match=r"X: the model is on cpu; got a batch on meta"):
        model.loss_and_gradients(torch.empty(4, 6, device="meta"), torch.tensor([0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"target: the model is on cpu; got target on meta"):
        model.loss_and_gradients(torch.rand(4, 6), torch.empty(4, dtype=torch.int64, device="meta"))


def test_comparison_refuses_mismatched_shapes_and_dtypes():
    policy = policy_for(torch.float32)
    with pytest.raises(ValueError, match=r"layer 2 dW: shapes differ, \(3, 4\) vs reference \(1, 4\) "
                                         r"\(no broadcasting\)"):
        compare_tensors(2, "dW", torch.zeros(3, 4), torch.zeros(1, 4), policy)
    with pytest.raises(TypeError, match=r"layer 1 db: dtypes differ, torch.float32 vs reference torch.float64"):
        compare_tensors(1, "db", torch.zeros(3), torch.zeros(3, dtype=torch.float64), policy)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"lr": 0.0}, r"lr: expected a finite learning rate > 0; got 0.0"),
    ({"lr": float("inf")}, r"lr: expected a finite learning rate"),
    ({"lr": 0.1, "momentum": 1.0}, r"momentum: expected 0 <= momentum < 1; got 1.0"),
])
def test_bad_optimizer_settings(model, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SGD(model.params, **kwargs)


def test_a_finite_batch_whose_sum_overflows_is_accepted(model):
    """The NaN/Inf screen sums the batch first; a finite batch that overflows that sum is still accepted."""
    X = torch.full((4, 6), 3e38)
    assert not torch.isfinite(X.sum())
    record = model.loss_and_gradients(X, torch.tensor([0, 1, 2, 1]))
    assert record.layers[0]["Z"].shape == (4, 5)
