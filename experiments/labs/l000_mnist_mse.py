"""Lecture 000's last lab: the TwoLayerNet on MNIST with MSE on one-hot labels, full batch.

784-32-10, ReLU hidden, linear output, L = 1/(2m) ||Y_hat - Y||^2 on one-hot Y, W ~ N(0, 1) and b = 0
(np.random.seed(0)), pixels in [0, 1] standardised per pixel with the training set's mean and std (std floored
at 1e-6), one gradient step per epoch on all 60000 images at lr 5e-4, 1000 epochs. The course prints the loss
and a test accuracy but states no number; this lab reports what it gives.

Why it learns slowly: with N(0, 1) weights and standardised inputs, each of the 32 hidden pre-activations has a
standard deviation near sqrt(784) = 28 and the outputs near 28 sqrt(32 / 2) = 110, so the first loss is in the
thousands and only a tiny rate (5e-4) keeps the steps stable. Full batch then means one step per pass over
the data: 1000 epochs are 1000 updates, where mini-batches of 64 would make 937 updates in one epoch. And MSE on
one-hot targets asks every output to hit 0 or 1 exactly instead of only ranking the true class first, so much of
each step is spent on outputs that are already classified correctly.
Measured on all 60000 images: loss 0.58 and 36.9 % test accuracy after 100 epochs, 0.3755 and 57.8 % after 200,
then a crawl to 0.3738 and 57.0 % train / 58.0 % test after the course's 1000: the rate that keeps the first steps
stable is far too small once the outputs are near their targets. ``--fast``: the first 2000 training images,
40 epochs (still at chance).
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab, load_mnist, model_writers, new_lab_run_dir, positive_float, positive_int
from experiments.labs.l000_two_layer_net import course_init
from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP
from manual_backprop.optim import SGD
from side_by_side.evaluation import evaluate_engine, evaluate_twin
from torch_reference.twin import TwinMLP


def normalize_fit(X: torch.Tensor):
    """The lecture's per-pixel statistics: mean and (population) std over the training images, std >= 1e-6."""
    mean = X.mean(0, keepdim=True)
    std = X.std(0, keepdim=True, correction=0).clamp(min=1e-6)
    return mean, std


def add_arguments(parser) -> None:
    parser.add_argument("--epochs", type=positive_int, default=None, help="default: 1000, --fast 40")
    parser.add_argument("--limit", type=positive_int, default=None, help="training images (default: all, --fast 2000)")
    parser.add_argument("--hidden", type=positive_int, default=32)
    parser.add_argument("--lr", type=positive_float, default=5e-4)


def run(args, report) -> None:
    epochs = args.epochs or (40 if args.fast else 1000)
    limit = args.limit or (2000 if args.fast else None)
    data = load_mnist(args, limit=limit)
    mean, std = normalize_fit(data.train_x)
    X_train, X_test = (data.train_x - mean) / std, (data.test_x - mean) / std
    config = MLPConfig(sizes=(784, args.hidden, 10), activation="relu", loss="mse", init="course_normal")
    params = {name: tensor.float() for name, tensor in course_init(0, 784, args.hidden, 10).items()}
    engine = MLP(config, {name: tensor.clone() for name, tensor in params.items()})
    engine_optimizer = SGD(engine.params, lr=args.lr)
    twin = TwinMLP.from_engine(config, params)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=args.lr, foreach=False)
    run_dir = report.run_dir = new_lab_run_dir(args, "mnist_mse", f"{len(X_train)}x{epochs}")
    writers = model_writers(run_dir)
    report.say(f"784-{args.hidden}-10, MSE on one-hot labels, full batch of {len(X_train)}, lr {args.lr}, "
               f"{epochs} epochs")
    for epoch in range(1, epochs + 1):
        with torch.inference_mode():
            record = engine.loss_and_gradients(X_train, data.train_y)  # one-hot targets built from the labels
            engine_optimizer.step(record.gradients())
        twin_loss = twin.loss_and_gradients(X_train, data.train_y).loss.item()
        twin_optimizer.step()
        if epoch == 1 or epoch % max(1, epochs // 20) == 0 or epoch == epochs:
            engine_test, twin_test = (evaluate_engine(engine, X_test, data.test_y),
                                      evaluate_twin(twin, X_test, data.test_y))
            for name, loss, test in (("manual", record.loss.item(), engine_test), ("autograd", twin_loss, twin_test)):
                writers[name].add_scalar("loss/train", loss, epoch)
                writers[name].add_scalar("accuracy/test", test.accuracy, epoch)
            report.say(f"Epoch {epoch:4d} | Loss: {record.loss.item():.4f} | test accuracy {engine_test.accuracy:.4f}")
    for w in writers.values():
        w.close()
    train_accuracy = evaluate_engine(engine, X_train, data.train_y).accuracy
    report.say(f"final: train accuracy {train_accuracy:.4f}, test accuracy {engine_test.accuracy:.4f} "
               "(the course states no number; see the module docstring for why full-batch MSE learns slowly)")
    report.check("test accuracy", None, engine_test.accuracy, twin_test.accuracy, parity=0.0)
    report.check("final training loss", None, record.loss.item(), twin_loss)
    for name, tensor in twin.engine_parameters().items():
        report.check(f"{name} after training", None, engine.params[name], tensor.detach())
    report.values.update(train_accuracy=train_accuracy, test_accuracy=engine_test.accuracy, loss=record.loss.item())


LAB = Lab("mnist_mse", "000", "MNIST 784-32-10, MSE on one-hot labels, full batch, lr 5e-4, N(0,1) init",
          "15 min", run, add_arguments, uses_mnist=True)
