"""Train the engine's MLP and its autograd twin side by side on the same batches, checking parity as they go.

Both models start from the same weights, see the same batches in the same order (one shuffling generator),
and each has its own optimizer: the engine's SGD and torch.optim.SGD with the same settings. Every
``parity_every`` steps the step's gradients are compared tensor by tensor and the two models' weights after
the update; on the CPU both are expected to stay bitwise equal for the whole run.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig
from mnist_data import DatasetSplits
from manual_backprop.model import MLP, init_parameters
from manual_backprop.optim import SGD
from torch_reference.checkpoint import CHECKPOINT_NAME, check_compatible, load_checkpoint, save_checkpoint
from torch_reference.compare import compare_records, compare_tensors, policy_for
from torch_reference.run_logging import RunLogger
from torch_reference.twin import TwinMLP

DRY_RUN_BATCHES = 3
DRY_RUN_EVAL_IMAGES = 512


class DeferredInterrupt:
    """While active, a first Ctrl-C only sets ``requested``; the loop stops after the current step with a
    checkpoint, so both models are saved in a consistent state. A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False


class TrainingError(Exception):
    """The run cannot go on (the loss diverged, say); the message says why and what was kept."""


@dataclass(frozen=True)
class TrainSettings:
    """Everything about a run except the network itself (that is the MLPConfig)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    log_interval: int = 100
    parity_every: int = 100
    twin: bool = True
    dry_run: bool = False
    checkpoint_every: int = 0  # steps between checkpoints; 0: at the end of every epoch only
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in total

    def __post_init__(self):
        for name in ("epochs", "batch_size", "log_interval", "parity_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected an integer >= 1; got {value!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"--checkpoint-every: expected an integer >= 0; got {self.checkpoint_every}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max-steps: expected an integer >= 1; got {self.max_steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr: expected a finite learning rate > 0; got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"--momentum: expected 0 <= momentum < 1; got {self.momentum}")

    def identity(self) -> dict:
        """The settings a resumed run must share with its checkpoint (epochs and logging may change)."""
        return {key: getattr(self, key) for key in ("batch_size", "lr", "momentum", "seed", "twin", "dry_run")}


@dataclass
class ParityTally:
    """Worst parity seen per tensor over the run, and how many checks were bitwise equal throughout."""

    checks: int = 0
    bitwise_checks: int = 0
    worst: dict = field(default_factory=dict)  # "layer1.dW" -> {"max_abs", "max_rel", "max_ulp"}
    worst_weight_diff: float = 0.0
    failed_checks: int = 0

    def add(self, rows, weight_rows) -> bool:
        self.checks += 1
        bitwise = all(row.exact for row in rows) and all(row.exact for row in weight_rows)
        self.bitwise_checks += bitwise
        self.failed_checks += not all(row.passed for row in [*rows, *weight_rows])
        for row in [*rows, *weight_rows]:
            key = f"layer{row.layer}.{row.name}" if row.layer != "loss" else "loss"
            seen = self.worst.setdefault(key, {"max_abs": 0.0, "max_rel": 0.0, "max_ulp": 0.0})
            for metric in seen:
                seen[metric] = max(seen[metric], getattr(row, metric))
        self.worst_weight_diff = max([self.worst_weight_diff, *(row.max_abs for row in weight_rows)])
        return bitwise

    def worst_line(self) -> str:
        if not self.checks:
            return "no parity check yet"
        key, metrics = max(self.worst.items(), key=lambda item: (item[1]["max_ulp"], item[1]["max_abs"]))
        if metrics["max_ulp"] == 0:
            return f"all {self.checks} checks bitwise equal"
        return (f"{self.bitwise_checks}/{self.checks} checks bitwise equal, worst {key}: "
                f"{metrics['max_ulp']:.0f} ulp, max rel {metrics['max_rel']:.2e}")


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: Tensor


def evaluate_engine(engine: MLP, X: Tensor, y: Tensor) -> Evaluation:
    with torch.inference_mode():
        cache = engine.forward_pass(X, y)
        outputs = cache.Z[-1] if engine.config.output_activation == "softmax" else cache.A[-1]
        predictions = outputs.argmax(dim=1)
        return Evaluation(cache.loss.item(), (predictions == y).double().mean().item(), predictions)


def evaluate_twin(twin: TwinMLP, X: Tensor, y: Tensor) -> Evaluation:
    with torch.no_grad():
        outputs = twin(X)
        loss = twin.loss(outputs, y)
        if twin.config.l2 > 0:
            loss = loss + twin.l2_penalty()
        predictions = outputs.argmax(dim=1)
        return Evaluation(loss.item(), (predictions == y).double().mean().item(), predictions)


def weight_rows(engine: MLP, twin: TwinMLP, policy):
    """Compare the two models' parameters, name by name, after an update."""
    twin_params = twin.engine_parameters()
    return [compare_tensors(int(name[1:]), name[0], engine.params[name], twin_params[name].detach(), policy)
            for name in engine.params]


class SideBySideRun:
    """One training run: data, both models and optimizers, the shuffling generator, logging and checkpoints."""

    def __init__(self, config: MLPConfig, settings: TrainSettings, data: DatasetSplits, run_dir: Path,
                 description: dict, log: Callable[[str], None] = print, progress: bool = True):
        self.config, self.settings, self.data = config, settings, data
        self.run_dir, self.description, self.log, self.progress = Path(run_dir), description, log, progress
        n_train = data.train_x.shape[0]
        if settings.batch_size > n_train:
            raise ValueError(f"--batch-size: {settings.batch_size} is larger than the {n_train} training images")
        self.batches_per_epoch = math.ceil(n_train / settings.batch_size)
        if settings.dry_run:
            self.batches_per_epoch = min(self.batches_per_epoch, DRY_RUN_BATCHES)

        self.shuffle = torch.Generator().manual_seed(settings.seed)
        init_generator = torch.Generator().manual_seed(settings.seed)
        self.engine = MLP(config, init_parameters(config, init_generator))
        self.engine_optimizer = SGD(self.engine.params, lr=settings.lr, momentum=settings.momentum)
        self.twin = self.twin_optimizer = None
        if settings.twin:
            self.twin = TwinMLP.from_engine(config, self.engine.params)
            # foreach=False: the per-tensor loop, whose arithmetic the engine's SGD reproduces (the default on
            # CUDA is the multi-tensor path).
            self.twin_optimizer = torch.optim.SGD(self.twin.parameters(), lr=settings.lr,
                                                  momentum=settings.momentum, foreach=False)
        self.policy = policy_for(config.torch_dtype)
        self.tally = ParityTally()
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # batches done in the current epoch
        self.global_step = 0
        self.permutation: Tensor | None = None
        self.history: list[dict] = []
        self.elapsed = 0.0
        self.last_checkpoint: Path | None = None
        self.saved_step = 0
        self.last_grads: dict[str, Tensor] = {}  # the engine's latest gradients, for the histograms
        self.interrupt = DeferredInterrupt()
        self.interval_losses = {"manual": [], "autograd": []}  # losses since the last loss/train point
        self.epoch_losses = {"manual": [], "autograd": []}  # losses of the current epoch

    # --- checkpoints ---------------------------------------------------------------------------------------

    def data_identity(self) -> dict:
        """What a resumed run's data must share with the checkpoint's (limit and val-size show in train_size)."""
        return {"dataset": self.data.name, "train_size": self.data.train_x.shape[0],
                "standardize": self.data.standardize}

    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def state(self) -> dict:
        cpu = lambda tensors: {name: tensor.detach().cpu() for name, tensor in tensors.items()}
        engine_optimizer = self.engine_optimizer.state_dict()
        state = {
            "config": self.config.to_dict(),
            "settings": self.settings.identity(),
            "data": self.data_identity(),
            "engine": cpu(self.engine.params),
            "engine_optimizer": {**engine_optimizer, "velocity": cpu(engine_optimizer["velocity"])},
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "permutation": self.permutation.cpu() if self.permutation is not None else torch.empty(0, dtype=torch.int64),
            "shuffle_generator": self.shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
            "tally": asdict(self.tally),
            "history": self.history,
            "elapsed": self.elapsed,
            # the running averages of loss/train and of the epoch's loss, so a resumed run logs the same values
            "interval_losses": self.interval_losses,
            "epoch_losses": self.epoch_losses,
        }
        if self.twin is not None:
            state["twin"] = {key: value.detach().cpu() for key, value in self.twin.state_dict().items()}
            state["twin_optimizer"] = self.twin_optimizer.state_dict()
        return state

    def save(self) -> Path:
        path = self.checkpoint_path()
        save_checkpoint(path, self.state())
        self.last_checkpoint, self.saved_step = path, self.global_step
        return path

    def restore(self, path: Path) -> None:
        state = load_checkpoint(path)
        check_compatible(path, {**state["config"], **state["settings"], **state["data"]},
                         {**self.config.to_dict(), **self.settings.identity(), **self.data_identity()})
        device = self.config.torch_device
        for name, tensor in state["engine"].items():
            self.engine.params[name].copy_(tensor.to(device))
        self.engine_optimizer.load_state_dict(state["engine_optimizer"])
        if self.twin is not None:
            self.twin.load_state_dict(state["twin"])
            self.twin_optimizer.load_state_dict(state["twin_optimizer"])
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        self.global_step = state["global_step"]
        self.permutation = state["permutation"] if state["permutation"].numel() else None
        self.shuffle.set_state(state["shuffle_generator"])
        torch.set_rng_state(state["torch_rng"])
        self.tally = ParityTally(**state["tally"])
        self.history = list(state["history"])
        self.elapsed = state["elapsed"]
        self.interval_losses = {model: list(values) for model, values in state["interval_losses"].items()}
        self.epoch_losses = {model: list(values) for model, values in state["epoch_losses"].items()}
        self.last_checkpoint, self.saved_step = Path(path), self.global_step

    # --- training --------------------------------------------------------------------------------------------

    def step(self, X: Tensor, y: Tensor, logger: RunLogger) -> tuple[float, float | None]:
        """One optimizer step of each model on the same batch; returns the two losses."""
        with torch.inference_mode():
            record = self.engine.loss_and_gradients(X, y)
        twin_record = self.twin.loss_and_gradients(X, y) if self.twin is not None else None
        engine_loss = record.loss.item()
        twin_loss = twin_record.loss.item() if twin_record is not None else None
        for model, loss in (("manual", engine_loss), ("autograd", twin_loss)):
            if loss is not None and not math.isfinite(loss):
                kept = (f"the last good checkpoint is {self.last_checkpoint} (step {self.saved_step})"
                        if self.last_checkpoint else "no checkpoint had been written yet")
                raise TrainingError(
                    f"the {model} model's loss became {loss} at epoch {self.epoch + 1}, step {self.global_step + 1}; "
                    f"stopping without updating the weights. {kept}. Try a smaller --lr.")
        grads = record.gradients()
        with torch.inference_mode():
            self.engine_optimizer.step(grads)
        if self.twin is not None:
            self.twin_optimizer.step()
        self.global_step += 1

        if self.twin is not None and (self.global_step % self.settings.parity_every == 0 or self.global_step == 1):
            rows = compare_records(record, twin_record, self.policy).rows
            weights = weight_rows(self.engine, self.twin, self.policy)
            bitwise = self.tally.add(rows, weights)
            logger.parity(self.global_step, rows, {f"{row.name}{row.layer}": row.max_abs for row in weights}, bitwise,
                          weight_rows=weights)
        self.last_grads = grads
        return engine_loss, twin_loss

    def run(self, logger: RunLogger) -> dict:
        with self.interrupt:
            return self._run(logger)

    def _run(self, logger: RunLogger) -> dict:
        from tqdm import tqdm

        settings = self.settings
        n_train = self.data.train_x.shape[0]
        started = time.perf_counter() - self.elapsed
        while self.epoch < settings.epochs:
            if self.permutation is None or self.batch_in_epoch >= self.batches_per_epoch:
                self.permutation = torch.randperm(n_train, generator=self.shuffle)
                self.batch_in_epoch = 0
                self.epoch_losses = {"manual": [], "autograd": []}
            order = self.permutation.to(self.data.train_x.device)
            bar = tqdm(total=self.batches_per_epoch, initial=self.batch_in_epoch, disable=not self.progress,
                       desc=f"epoch {self.epoch + 1}/{settings.epochs}", unit="batch", leave=False)
            epoch_started = time.perf_counter()
            images_this_epoch = 0
            while self.batch_in_epoch < self.batches_per_epoch:
                start = self.batch_in_epoch * settings.batch_size
                index = order[start:start + settings.batch_size]
                engine_loss, twin_loss = self.step(self.data.train_x[index], self.data.train_y[index], logger)
                self.batch_in_epoch += 1
                images_this_epoch += index.numel()
                for model, loss in (("manual", engine_loss), ("autograd", twin_loss)):
                    if loss is not None:
                        self.interval_losses[model].append(loss)
                        self.epoch_losses[model].append(loss)
                if self.global_step % settings.log_interval == 0:
                    for model, losses in self.interval_losses.items():
                        if losses:
                            logger.scalars(model, self.global_step, {"loss/train": sum(losses) / len(losses)})
                    self.interval_losses = {"manual": [], "autograd": []}
                bar.update(1)
                rate = images_this_epoch / max(time.perf_counter() - epoch_started, 1e-9)
                bar.set_postfix(loss=f"{engine_loss:.4f}", img_per_s=f"{rate:.0f}", refresh=False)  # redrawn by update

                # The end of an epoch comes before any stop, so a checkpoint never holds a finished epoch
                # that was not counted and evaluated.
                epoch_done = self.batch_in_epoch == self.batches_per_epoch
                if epoch_done:
                    bar.close()
                    self.epoch += 1
                    self.end_of_epoch(logger, self.epoch_losses)
                stop = None
                if settings.max_steps is not None and self.global_step >= settings.max_steps:
                    stop = f"stopped after --max-steps {settings.max_steps}"
                elif self.interrupt.requested:
                    stop = "interrupted"
                if stop or epoch_done or (settings.checkpoint_every and self.global_step % settings.checkpoint_every == 0):
                    self.elapsed = time.perf_counter() - started
                    self.save()
                if stop:
                    bar.close()
                    self.log(f"{stop} at step {self.global_step}; resume with --resume {self.last_checkpoint}")
                    return self.summary(stopped_early=self.epoch < settings.epochs)
        return self.summary(stopped_early=False)

    def end_of_epoch(self, logger: RunLogger, epoch_losses: dict[str, list[float]]) -> None:
        data, step = self.data, self.global_step
        test_x, test_y = data.test_x, data.test_y
        if self.settings.dry_run:
            test_x, test_y = test_x[:DRY_RUN_EVAL_IMAGES], test_y[:DRY_RUN_EVAL_IMAGES]
        entry = {"epoch": self.epoch, "step": step}
        models = {"manual": (self.engine, evaluate_engine)}
        if self.twin is not None:
            models["autograd"] = (self.twin, evaluate_twin)
        for name, (model, evaluate) in models.items():
            test = evaluate(model, test_x, test_y)
            train_loss = sum(epoch_losses[name]) / max(len(epoch_losses[name]), 1)
            values = {"loss/train_epoch": train_loss, "loss/test": test.loss, "accuracy/test": test.accuracy}
            if data.val_x.shape[0]:
                val = evaluate(model, data.val_x, data.val_y)
                values.update({"loss/val": val.loss, "accuracy/val": val.accuracy})
            logger.scalars(name, step, values)
            entry[name] = values
            logger.misclassified(step, test_x, test_y, test.predictions, model=name)
        logger.histograms("manual", step, self.engine.params, self.last_grads)
        logger.first_layer_images(step, self.engine.params["W1"])
        if self.twin is not None:
            twin_params = {name: tensor.detach() for name, tensor in self.twin.engine_parameters().items()}
            twin_grads = {name: tensor.grad for name, tensor in self.twin.engine_parameters().items()}
            logger.histograms("autograd", step, twin_params, twin_grads)
        logger.flush()
        self.history.append(entry)
        line = (f"epoch {self.epoch}/{self.settings.epochs}: train loss manual {entry['manual']['loss/train_epoch']:.4f}"
                f", test accuracy manual {100 * entry['manual']['accuracy/test']:.2f}%")
        if "autograd" in entry:
            line += (f" | autograd: train loss {entry['autograd']['loss/train_epoch']:.4f}, test accuracy "
                     f"{100 * entry['autograd']['accuracy/test']:.2f}% | parity: {self.tally.worst_line()}")
        self.log(line)

    def summary(self, stopped_early: bool) -> dict:
        last = self.history[-1] if self.history else {}
        final = {model: {"test_accuracy": last[model]["accuracy/test"], "test_loss": last[model]["loss/test"],
                         "train_loss": last[model]["loss/train_epoch"]}
                 for model in ("manual", "autograd") if model in last}
        return {
            "config": self.config.to_dict(),
            "run": self.description,
            "run_dir": str(self.run_dir),
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "epochs_completed": self.epoch,
            "steps": self.global_step,
            "stopped_early": stopped_early,
            "seconds": round(self.elapsed, 3),
            "final": final,
            "history": self.history,
            "parity": {
                "checks": self.tally.checks,
                "bitwise_equal_checks": self.tally.bitwise_checks,
                "checks_out_of_policy": self.tally.failed_checks,
                "worst_per_tensor": self.tally.worst,
                "worst_weight_max_abs_diff": self.tally.worst_weight_diff,
            },
            "tensorboard": f"tensorboard --logdir {self.run_dir.parent}",
        }


def train(config: MLPConfig, settings: TrainSettings, data: DatasetSplits, run_dir: Path, description: dict,
          resume: Path | None = None, log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Run (or resume) a side-by-side training in ``run_dir`` and return its summary.

    A resumed run continues in the checkpoint's run directory; TensorBoard events that the interrupted run
    wrote after its checkpoint are purged so the curves continue without duplicates.
    """
    run = SideBySideRun(config, settings, data, run_dir, description, log=log, progress=progress)
    if resume is not None:
        run.restore(resume)
        log(f"resumed from {resume}: epoch {run.epoch + 1}, step {run.global_step}")
    logger = RunLogger(run_dir, purge_step=run.global_step + 1 if resume is not None else None, twin=settings.twin)
    try:
        if resume is None:
            logger.config_text(description)
        summary = run.run(logger)
        if not summary["stopped_early"]:
            hparams = {**config.to_dict(), **settings.identity(), "epochs": settings.epochs}
            logger.hparams(hparams, {model: {"test_accuracy": values["test_accuracy"], "test_loss": values["test_loss"]}
                                     for model, values in summary["final"].items()})
    finally:
        logger.close()
    return summary
