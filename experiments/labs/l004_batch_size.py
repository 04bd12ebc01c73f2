"""Lecture 004's mini-batch slide on MNIST: SGD (batch size 1), mini-batch (64) and full gradient (batch = n),
each allowed the same number of per-sample gradient evaluations (``--epochs`` passes over the n images).

SGD makes n updates per pass, each cheap and noisy; the mini-batch makes n/64 updates of averaged gradients;
full gradient descent makes one update per pass, so with the same budget it barely moves ("neural network: it
doesn't work!"). 784-32-10 ReLU softmax network, engine and twin side by side (``ModelPair``: the engine's SGD
against torch.optim.SGD), test accuracy and loss curves overlaid per batch size in TensorBoard, x axis =
gradient evaluations. ``--fast``: 300 images, 1 pass, evaluated on 1000 test images.
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab, load_mnist, new_lab_run_dir, positive_int, writer
from manual_backprop.config import MLPConfig
from manual_backprop.optim_config import OptimizerConfig, ScheduleConfig
from side_by_side.evaluation import evaluate_engine, evaluate_twin
from side_by_side.model_pair import ModelPair

# Each batch size gets the rate it trains well with (a larger averaged batch tolerates a larger step).
RATES = {1: 0.01, 64: 0.1, "full": 0.5}


def train_pair(config: MLPConfig, optimizer: OptimizerConfig, data: dict, batch_size: int, epochs: int, seed: int,
               log, evaluations: int = 20) -> tuple[ModelPair, list]:
    """Train the engine and the twin on the same shuffled batches; evaluate on the test set about
    ``evaluations`` times; log loss/test and accuracy/test against the number of samples seen.
    ``data``: train_x, train_y, test_x, test_y."""
    pair = ModelPair(config, optimizer, ScheduleConfig(), seed)
    generator = torch.Generator().manual_seed(seed)
    n = len(data['train_x'])
    steps_per_epoch = -(-n // batch_size)
    every = max(1, epochs * steps_per_epoch // evaluations)
    history, step, seen = [], 0, 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            pair.step(data['train_x'][index], data['train_y'][index])
            step, seen = step + 1, seen + len(index)
            if step % every == 0 or (start + batch_size >= n and _ == epochs - 1):
                engine_eval = evaluate_engine(pair.engine, data['test_x'], data['test_y'])
                twin_eval = evaluate_twin(pair.twin, data['test_x'], data['test_y'])
                log.add_scalar("loss/test", engine_eval.loss, seen)
                log.add_scalar("accuracy/test", engine_eval.accuracy, seen)
                history.append((seen, engine_eval, twin_eval))
    return pair, history


def add_arguments(parser) -> None:
    parser.add_argument("--epochs", type=positive_int, default=1, help="passes over the training images")
    parser.add_argument("--limit", type=positive_int, default=None, help="training images (default: all; --fast 300)")
    parser.add_argument("--hidden", type=positive_int, default=32)


def run(args, report) -> None:
    splits = load_mnist(args, limit=args.limit or (300 if args.fast else None))
    test = slice(0, 1000 if args.fast else None)  # the fast form evaluates on the first 1000 test images
    data = {"train_x": splits.train_x, "train_y": splits.train_y, "test_x": splits.test_x[test],
            "test_y": splits.test_y[test]}
    n = len(data["train_x"])
    config = MLPConfig(sizes=(784, args.hidden, 10))
    run_dir = report.run_dir = new_lab_run_dir(args, "batch_size", f"n{n}_epochs{args.epochs}")
    for label, lr in RATES.items():
        batch_size = n if label == "full" else label
        log = writer(run_dir, f"batch_{label}")
        pair, history = train_pair(config, OptimizerConfig("sgd", lr=lr), data, batch_size, args.epochs, args.seed, log,
                                   evaluations=4 if args.fast else 20)
        log.close()
        seen, engine_eval, twin_eval = history[-1]
        updates = args.epochs * -(-n // batch_size)
        report.say(f"batch {label!s:>4} (lr {lr}): {updates:6d} updates, {seen} gradient evaluations, "
                   f"test accuracy {engine_eval.accuracy:.4f}, test loss {engine_eval.loss:.4f}")
        report.check(f"batch {label}: test accuracy", None, engine_eval.accuracy, twin_eval.accuracy)
        for name, tensor in pair.twin_params().items():
            report.check(f"batch {label}: {name}", None, pair.engine.params[name], tensor)
        report.values[label] = {"accuracy": engine_eval.accuracy, "updates": updates}


LAB = Lab("batch_size", "004", "SGD vs mini-batch vs full batch on MNIST for the same gradient evaluations",
          "1 min", run, add_arguments, uses_mnist=True)
