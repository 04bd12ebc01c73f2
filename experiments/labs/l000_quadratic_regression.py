"""Lecture 000's quadratic-feature regression: a 2-H-3 ReLU TwoLayerNet learns (x1^2, x2^2, 2 x1 x2) from
x uniform in [-10, 10]^2 (inputs scaled by 1/20), full-batch gradient descent at lr 0.01 on
L = 1/(2m) ||Y_hat - Y||^2, and predicts about [9, 1, -6] at x = (3, -1).

The course's run: H = 1000, m = 1000 samples, 10000 epochs, weights and data from np.random.seed(0).
``--fast``: H = 100, m = 200, 2000 epochs (same seed, same recipe).
"""

from __future__ import annotations

import numpy as np
import torch

from experiments.labs.common import Lab, model_writers, new_lab_run_dir, plot_curves, positive_float, positive_int
from experiments.labs.l000_two_layer_net import course_init
from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP
from manual_backprop.optim import SGD
from torch_reference.twin import TwinMLP

F64 = torch.float64
FULL = {"hidden": 1000, "samples": 1000, "epochs": 10000}
FAST = {"hidden": 100, "samples": 200, "epochs": 2000}


def course_data(hidden: int, samples: int):
    """The lecture's draws in its order: seed(0), W1, W2 (TwoLayerNet.__init__), then X from the same stream."""
    params = course_init(0, hidden_dim=hidden)
    rng = np.random.RandomState(0)
    rng.randn(hidden * 2 + 3 * hidden)  # skip the weights' draws, as the lecture's global stream has
    X = rng.uniform(-10, 10, size=(samples, 2))
    Y = np.column_stack((X[:, 0] ** 2, X[:, 1] ** 2, 2 * X[:, 0] * X[:, 1]))
    return params, torch.from_numpy(X / 20), torch.from_numpy(Y)


def add_arguments(parser) -> None:
    parser.add_argument("--hidden", type=positive_int, default=None, help="H (default: 1000, --fast 100)")
    parser.add_argument("--samples", type=positive_int, default=None, help="m (default: 1000, --fast 200)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="default: 10000, --fast 2000")
    parser.add_argument("--lr", type=positive_float, default=0.01)


def run(args, report) -> None:
    setting = dict(FAST if args.fast else FULL)
    setting.update({key: getattr(args, key) for key in setting if getattr(args, key) is not None})
    params, X, Y = course_data(setting["hidden"], setting["samples"])
    config = MLPConfig(sizes=(2, setting["hidden"], 3), activation="relu", loss="mse", dtype="float64")
    engine = MLP(config, {name: tensor.clone() for name, tensor in params.items()})
    engine_optimizer = SGD(engine.params, lr=args.lr)
    twin = TwinMLP.from_engine(config, params)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=args.lr, foreach=False)
    run_dir = report.run_dir = new_lab_run_dir(args, "quadratic_regression",
                                               f"H{setting['hidden']}_m{setting['samples']}")
    writers = model_writers(run_dir)
    report.say(f"2-{setting['hidden']}-3 ReLU net, m = {setting['samples']}, {setting['epochs']} full-batch epochs "
               f"at lr {args.lr}")
    curve = []
    for epoch in range(1, setting["epochs"] + 1):
        record = engine.loss_and_gradients(X, Y)
        engine_optimizer.step(record.gradients())
        twin_loss = twin.loss_and_gradients(X, Y).loss.item()
        twin_optimizer.step()
        if epoch % 10 == 0 or epoch == 1:
            writers["manual"].add_scalar("loss/train", record.loss.item(), epoch)
            writers["autograd"].add_scalar("loss/train", twin_loss, epoch)
            curve.append((epoch, record.loss.item()))
        if epoch % max(1, setting["epochs"] // 10) == 0:
            report.say(f"Epoch {epoch:5d} | Loss: {record.loss.item():.4f}")
    point = torch.tensor([[3 / 20, -1 / 20]], dtype=F64)
    engine_prediction = engine.scores(point)[0]
    with torch.no_grad():
        twin_prediction = twin(point)[0]
    writers["manual"].add_image("loss_curve", plot_curves({"log10 loss": (
        [e for e, _ in curve], [float(np.log10(v)) for _, v in curve])}, "full-batch training loss (log10)"), 0)
    for w in writers.values():
        w.close()
    report.say(f"prediction at (3, -1): {engine_prediction.tolist()} (the targets there are 9, 1, -6)")
    # "Expected [9, 1, -6]": the network approximates the targets; 0.5 is the closeness the lab's numbers claim.
    report.check("y_hat at (3, -1)", [9, 1, -6], engine_prediction, twin_prediction, tol=0.5)
    report.check("final training loss", None, record.loss, torch.tensor(twin_loss, dtype=F64))
    for name, tensor in twin.engine_parameters().items():
        report.check(f"{name} after training", None, engine.params[name], tensor.detach())
    report.values.update(prediction=engine_prediction, loss=record.loss.item(), setting=setting)


LAB = Lab("quadratic_regression", "000", "2-1000-3 net learns x1^2, x2^2, 2 x1 x2; y_hat(3, -1) ~ [9, 1, -6]",
          "15 min", run, add_arguments)
