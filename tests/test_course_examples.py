"""The course's worked examples, with the course's own numbers (shared/seeds/)."""

import torch

from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP
from manual_backprop.optim import SGD
from torch_reference.compare import compare_records
from torch_reference.twin import TwinMLP

F64 = torch.float64


def t(values):
    return torch.tensor(values, dtype=F64)


def test_one_layer_relu_lab_lecture_000():
    """x=[1,2], W=[[3,2],[4,1],[5,2]], y=[1,4,4], y_hat = ReLU(x W^T), L = 1/2 ||y_hat - y||^2."""
    config = MLPConfig(sizes=(2, 3), output_activation="relu", loss="mse", dtype="float64")
    model = MLP(config, {"W1": t([[3, 2], [4, 1], [5, 2]]), "b1": t([0, 0, 0])})
    x, y = t([[1, 2]]), t([[1, 4, 4]])

    record = model.loss_and_gradients(x, y)
    layer = record.layers[0]
    assert torch.equal(layer["Z"], t([[7, 6, 9]]))
    assert torch.equal(layer["A"], t([[7, 6, 9]]))
    assert record.loss.item() == 32.5
    assert torch.equal(layer["dA"], t([[6, 2, 5]]))  # dL/dy_hat = y_hat - y
    assert torch.equal(layer["dZ"], t([[6, 2, 5]]))  # all z > 0, so delta = dL/dy_hat
    assert torch.equal(layer["dW"], t([[6, 12], [2, 4], [5, 10]]))  # delta^T x

    # The lab has no bias (z = x W^T), so only W takes the step.
    SGD({"W1": model.params["W1"]}, lr=0.1).step(record.gradients())
    assert torch.allclose(model.params["W1"], t([[2.4, 0.8], [3.8, 0.6], [4.5, 1.0]]), rtol=0, atol=1e-15)
    after = model.loss_and_gradients(x, y)
    assert torch.allclose(after.layers[0]["Z"], t([[4.0, 5.0, 6.5]]), rtol=0, atol=1e-14)
    assert abs(after.loss.item() - 8.125) < 1e-13


def course_two_layer_backward(X, Y, W1, b1, W2, b2):
    """Lecture 000's TwoLayerNet.backward (batch version), transcribed: the 1/m sits in dW and db."""
    m = X.shape[0]
    Z1 = X @ W1.T + b1
    H = torch.clamp(Z1, min=0)
    Y_hat = H @ W2.T + b2
    Diff = Y_hat - Y
    loss = 0.5 / m * (Diff**2).sum()
    Delta2 = Diff
    dW2 = Delta2.T @ H / m
    db2 = Delta2.mean(0)
    dH = Delta2 @ W2
    Delta1 = dH * (Z1 > 0).to(X.dtype)
    dW1 = Delta1.T @ X / m
    db1 = Delta1.mean(0)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def test_two_layer_batch_formulas_lecture_000():
    """The 2-3-3 TwoLayerNet on a batch of the quadratic-regression lab: targets (x1^2, x2^2, 2 x1 x2)."""
    generator = torch.Generator().manual_seed(0)
    config = MLPConfig(sizes=(2, 3, 3), activation="relu", loss="mse", dtype="float64", init="course_normal")
    model = MLP(config, generator=generator)
    X = torch.empty(37, 2, dtype=F64).uniform_(-10, 10, generator=generator)
    Y = torch.stack([X[:, 0] ** 2, X[:, 1] ** 2, 2 * X[:, 0] * X[:, 1]], dim=1)
    X = X / 20  # the lab scales the inputs

    record = model.loss_and_gradients(X, Y)
    loss, grads = course_two_layer_backward(X, Y, *(model.params[n] for n in ("W1", "b1", "W2", "b2")))
    assert torch.allclose(record.loss, loss, rtol=1e-12, atol=0)
    for name, expected in grads.items():
        assert torch.allclose(record.gradients()[name], expected, rtol=1e-10, atol=1e-12), name

    # And full-batch gradient descent makes the loss go down, as the lab asks to observe.
    optimizer = SGD(model.params, lr=0.01)
    losses = []
    for _ in range(50):
        step = model.loss_and_gradients(X, Y)
        losses.append(step.loss.item())
        optimizer.step(step.gradients())
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < 0.75 * losses[0]


def lecture_002_network():
    """The 5-7-4-3 sigmoid/softmax network of lecture 002, weights from torch.rand after manual_seed(0)
    (the seed that reproduces the notebook's printed A3)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    params = {"W1": torch.rand(7, 5), "b1": torch.rand(7), "W2": torch.rand(4, 7), "b2": torch.rand(4),
              "W3": torch.rand(3, 4), "b3": torch.rand(3)}
    torch.random.set_rng_state(state)
    X = torch.tensor([[-8.0, 1.0, -3.0, 5.0, 2.0], [-2.0, 2.0, -1.0, 5.0, 2.0],
                      [7.0, 1.0, 9.0, -5.0, -2.0], [3.0, 1.0, 9.0, 5.0, 2.0]])
    Y = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    config = MLPConfig(sizes=(5, 7, 4, 3), activation="sigmoid", loss="cross_entropy")
    return config, params, X, Y


def test_sigmoid_softmax_mlp_lecture_002():
    config, params, X, Y = lecture_002_network()
    labels = Y.argmax(dim=1)
    record = MLP(config, params).loss_and_gradients(X, labels)

    A3 = torch.tensor([[0.4358, 0.2137, 0.3505], [0.4785, 0.1890, 0.3325],
                       [0.4795, 0.1882, 0.3324], [0.4797, 0.1880, 0.3323]])
    assert torch.allclose(record.layers[2]["A"], A3, atol=5e-5, rtol=0)
    assert abs(record.loss.item() - 1.1394) < 5e-5  # L = -1/N sum(Y * log A3)
    # dL/dZ3 = (A3 - Y) / N, the notebook's Z3.grad
    dZ3 = torch.tensor([[0.1090, 0.0534, -0.1624], [-0.1304, 0.0473, 0.0831],
                        [0.1199, -0.2030, 0.0831], [0.1199, 0.0470, -0.1669]])
    assert torch.allclose(record.layers[2]["dZ"], dZ3, atol=5e-5, rtol=0)
    assert torch.allclose(record.layers[2]["dZ"], (record.layers[2]["A"] - Y) / 4, atol=1e-7, rtol=0)


def test_lecture_002_network_matches_its_autograd_twin():
    """The notebook's retain_grad() comparison, for every intermediate of the network, in float64."""
    config, params, X, Y = lecture_002_network()
    config = MLPConfig(sizes=config.sizes, activation="sigmoid", dtype="float64")
    params = {name: tensor.to(F64) for name, tensor in params.items()}
    labels = Y.argmax(dim=1)
    engine = MLP(config, params).loss_and_gradients(X.to(F64), labels)
    twin = TwinMLP.from_engine(config, params).loss_and_gradients(X.to(F64), labels)
    report = compare_records(engine, twin)
    assert report.passed, report.table()


def test_single_sigmoid_neuron_lecture_002():
    """z = x^T W^T + b, a = sigmoid(z) with W, b = torch.rand after manual_seed(1): z = -2.4591, a = 0.0788."""
    state = torch.random.get_rng_state()
    torch.manual_seed(1)
    W, b = torch.rand(5).view(1, 5), torch.rand(1)
    torch.random.set_rng_state(state)
    config = MLPConfig(sizes=(5, 1), output_activation="sigmoid", loss="mse")
    record = MLP(config, {"W1": W, "b1": b}).loss_and_gradients(
        torch.tensor([[-8.0, 1.0, -3.0, 5.0, 2.0]]), torch.zeros(1, 1))
    assert abs(record.layers[0]["Z"].item() - -2.4591) < 5e-5
    assert abs(record.layers[0]["A"].item() - 0.0788) < 5e-5
