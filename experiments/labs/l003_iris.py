"""Lecture 003's iris classifier: the first two features (sepal length and width), centred, three classes, a
2-10-3 ReLU network with softmax cross-entropy, weights drawn as the lecture draws them (np.random.seed(0),
randn for W1 (2, 10), b1, W2 (10, 3), b2, stored here in the engine's (out, in) layout), trained with
mini-batch SGD. Accuracy on the 150 flowers is reported (the lecture states none; with two sepal features,
versicolor and virginica overlap, so about 80 % is what such a model reaches), and the decision regions
are drawn as an image into TensorBoard.

The data: scikit-learn's bundled iris.csv (the version with Fisher's corrections of samples 35 and 38), shipped
byte for byte in experiments/labs/data/iris.csv and checked by SHA-256 on every load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from experiments.labs.common import Lab, model_writers, new_lab_run_dir, positive_float, positive_int
from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP
from manual_backprop.optim import SGD
from side_by_side.evaluation import evaluate_engine, evaluate_twin
from torch_reference.twin import TwinMLP

F64 = torch.float64
IRIS_CSV = Path(__file__).resolve().parent / "data" / "iris.csv"
IRIS_SHA256 = "f9e3809b56cc0f2f2f69554b7a0ea04e94d0e2c21343c86593eaf5581551dab6"  # sklearn/datasets/data/iris.csv
CLASS_COLOURS = torch.tensor([[250, 200, 200], [200, 250, 200], [200, 200, 250]], dtype=torch.uint8)
POINT_COLOURS = torch.tensor([[200, 0, 0], [0, 150, 0], [0, 0, 200]], dtype=torch.uint8)


def load_iris(path: Path = IRIS_CSV) -> tuple[torch.Tensor, torch.Tensor]:
    """(150, 4) float64 features and (150,) int64 labels; the file must be the known one."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != IRIS_SHA256:
        raise ValueError(f"{path}: SHA-256 {digest} is not the one of scikit-learn's iris.csv ({IRIS_SHA256})")
    rows = [line.split(",") for line in data.decode().splitlines()[1:] if line]
    features = torch.tensor([[float(value) for value in row[:4]] for row in rows], dtype=F64)
    return features, torch.tensor([int(row[4]) for row in rows])


def lecture_data() -> tuple[torch.Tensor, torch.Tensor]:
    X, y = load_iris()
    X = X[:, :2]                       # keep only the first two features
    return X - X.mean(0), y            # centre the data


def lecture_init(hidden: int = 10) -> dict[str, torch.Tensor]:
    """init_params(2, hidden, 3) of the lecture, transposed to (out, in)."""
    rng = np.random.RandomState(0)
    W1, b1 = rng.randn(2, hidden), rng.randn(hidden)
    W2, b2 = rng.randn(hidden, 3), rng.randn(3)
    return {"W1": torch.from_numpy(W1.T.copy()), "b1": torch.from_numpy(b1), "W2": torch.from_numpy(W2.T.copy()),
            "b2": torch.from_numpy(b2)}


def decision_regions(engine: MLP, X: torch.Tensor, y: torch.Tensor, size: int = 200) -> torch.Tensor:
    """(3, size, size) uint8: the predicted class of every pixel, the flowers as dots in their class colour."""
    low, high = X.min(0).values - 0.5, X.max(0).values + 0.5
    u = torch.linspace(0, 1, size, dtype=F64)
    grid_x, grid_y = torch.meshgrid(low[0] + u * (high[0] - low[0]), high[1] - u * (high[1] - low[1]), indexing="xy")
    predicted = engine.predict(torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)).reshape(size, size)
    image = CLASS_COLOURS[predicted].permute(2, 0, 1).clone()
    columns = ((X[:, 0] - low[0]) / (high[0] - low[0]) * (size - 1)).round().long()
    rows = ((high[1] - X[:, 1]) / (high[1] - low[1]) * (size - 1)).round().long()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            image[:, (rows + dr).clamp(0, size - 1), (columns + dc).clamp(0, size - 1)] = POINT_COLOURS[y].T
    return image


def train_side_by_side(X, y, epochs: int, batch_size: int, lr, seed: int, hidden: int = 10):
    """Mini-batch SGD of the engine and the twin from the lecture's weights, on the same shuffled batches.
    ``lr`` is a number or a function of the step t (a schedule eta_t)."""
    config = MLPConfig(sizes=(2, hidden, 3), activation="relu", loss="cross_entropy", dtype="float64")
    params = lecture_init(hidden)
    engine = MLP(config, {name: tensor.clone() for name, tensor in params.items()})
    twin = TwinMLP.from_engine(config, params)
    engine_optimizer = SGD(engine.params, lr=lr if isinstance(lr, float) else lr(0))
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=engine_optimizer.lr, foreach=False)
    generator = torch.Generator().manual_seed(seed)
    history, t = [], 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(X), generator=generator)
        for start in range(0, len(X), batch_size):
            index = order[start:start + batch_size]
            rate = lr if isinstance(lr, float) else lr(t)      # eta_t
            engine_optimizer.lr = rate
            twin_optimizer.param_groups[0]["lr"] = rate
            record = engine.loss_and_gradients(X[index], y[index])
            engine_optimizer.step(record.gradients())
            twin.loss_and_gradients(X[index], y[index])
            twin_optimizer.step()
            t += 1
        history.append((epoch, t, evaluate_engine(engine, X, y), evaluate_twin(twin, X, y)))
    return engine, twin, history


def add_arguments(parser) -> None:
    parser.add_argument("--epochs", type=positive_int, default=None, help="default: 200, --fast 20")
    parser.add_argument("--batch-size", type=positive_int, default=10)
    parser.add_argument("--lr", type=positive_float, default=0.05)


def run(args, report) -> None:
    X, y = lecture_data()
    epochs = args.epochs or (20 if args.fast else 200)
    engine, twin, history = train_side_by_side(X, y, epochs, args.batch_size, args.lr, args.seed)
    run_dir = report.run_dir = new_lab_run_dir(args, "iris")
    writers = model_writers(run_dir)
    for epoch, _, engine_eval, twin_eval in history:
        for name, evaluation in (("manual", engine_eval), ("autograd", twin_eval)):
            writers[name].add_scalar("loss/train", evaluation.loss, epoch)
            writers[name].add_scalar("accuracy/train", evaluation.accuracy, epoch)
    writers["manual"].add_image("decision_regions", decision_regions(engine, X, y), epochs)
    for w in writers.values():
        w.close()
    _, _, engine_eval, twin_eval = history[-1]
    report.say(f"iris, 2 features, 2-10-3 ReLU net, SGD batches of {args.batch_size} at lr {args.lr}, {epochs} epochs: "
               f"loss {engine_eval.loss:.4f}, accuracy {engine_eval.accuracy:.4f} on the 150 flowers")
    per_class = torch.bincount(y).tolist()
    report.claim(f"the data holds {per_class} flowers per class, iris's 50 of each", per_class == [50, 50, 50])
    report.check("training accuracy", None, engine_eval.accuracy, twin_eval.accuracy)
    report.check("training loss", None, engine_eval.loss, twin_eval.loss)
    for name, tensor in twin.engine_parameters().items():
        report.check(f"{name} after training", None, engine.params[name], tensor.detach())
    report.values.update(accuracy=engine_eval.accuracy, loss=engine_eval.loss)


LAB = Lab("iris", "003", "iris, 2 features, 3 classes, hidden 10, SGD: accuracy and decision regions image",
          "13 s", run, add_arguments)
