"""Lecture 004's first-order optimizers on one MNIST network: SGD, SGD with momentum (V <- beta V + G,
W <- W - alpha V), AdaGrad, RMSprop and Adam, each the engine's hand-written optimizer
(``manual_backprop.optim``) beside the twin's torch.optim one, from the same ``OptimizerConfig``, on the same
batches from the same initial weights. Curves overlaid per optimizer in TensorBoard; the final test accuracy
and whether the engine's weights still equal the twin's bit for bit after training, in the table.
784-64-10 ReLU softmax network, batches of 64, one epoch; ``--fast``: 512 images.
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab, load_mnist, new_lab_run_dir, positive_int, writer
from experiments.labs.l004_batch_size import train_pair
from manual_backprop.config import MLPConfig
from manual_backprop.optim_config import OptimizerConfig

# The rates each optimizer is usually run with on this problem (the adaptive ones at torch's defaults).
OPTIMIZERS = {
    "sgd": OptimizerConfig("sgd", lr=0.1),
    "momentum": OptimizerConfig("momentum", lr=0.05, momentum=0.9),
    "adagrad": OptimizerConfig("adagrad", lr=0.01),
    "rmsprop": OptimizerConfig("rmsprop", lr=0.001),
    "adam": OptimizerConfig("adam", lr=0.001),
}


def add_arguments(parser) -> None:
    parser.add_argument("--epochs", type=positive_int, default=1)
    parser.add_argument("--limit", type=positive_int, default=None, help="training images (default: all; --fast 512)")
    parser.add_argument("--hidden", type=positive_int, default=64)
    parser.add_argument("--batch-size", type=positive_int, default=64)


def run(args, report) -> None:
    splits = load_mnist(args, limit=args.limit or (512 if args.fast else None))
    test = slice(0, 1000 if args.fast else None)
    data = {"train_x": splits.train_x, "train_y": splits.train_y, "test_x": splits.test_x[test],
            "test_y": splits.test_y[test]}
    config = MLPConfig(sizes=(784, args.hidden, 10))
    run_dir = report.run_dir = new_lab_run_dir(args, "optimizers", f"n{len(data['train_x'])}")
    for name, optimizer in OPTIMIZERS.items():
        log = writer(run_dir, name)
        pair, history = train_pair(config, optimizer, data, args.batch_size, args.epochs, args.seed, log,
                                   evaluations=4 if args.fast else 20)
        log.close()
        _, engine_eval, twin_eval = history[-1]
        twin_params = pair.twin_params()
        bitwise = all(torch.equal(pair.engine.params[key], tensor) for key, tensor in twin_params.items())
        report.say(f"{optimizer.slug():>22}: test accuracy {engine_eval.accuracy:.4f} (twin {twin_eval.accuracy:.4f}), "
                   f"weights bitwise equal after training: {bitwise}")
        report.check(f"{name}: test accuracy", None, engine_eval.accuracy, twin_eval.accuracy)
        report.check(f"{name}: test loss", None, engine_eval.loss, twin_eval.loss)
        for key, tensor in twin_params.items():
            report.check(f"{name}: {key}", None, pair.engine.params[key], tensor)
        report.values[name] = {"accuracy": engine_eval.accuracy, "bitwise": bitwise}


LAB = Lab("optimizers", "004", "SGD, momentum, AdaGrad, RMSprop, Adam on MNIST: engine vs torch.optim, curves",
          "14 s", run, add_arguments, uses_mnist=True)
