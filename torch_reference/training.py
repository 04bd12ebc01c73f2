"""Train the engine's MLP and its autograd twin side by side on the same batches, checking parity as they go.

The pieces: ``BatchOrder`` (which images each step sees), ``ModelPair`` (both models, each with its own optimizer
and schedule built from one shared config), ``RunLogger`` (TensorBoard), ``checkpoint`` (atomic files) and
``ParityTally``; this module holds the settings and the loop that drives them. Every ``parity_every`` steps the
step's values and gradients are compared tensor by tensor, and after the update the weights, every optimizer
state tensor and the learning rate; on the CPU all are expected to stay bitwise equal for the whole run.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig
from mnist_data import DatasetSplits
from torch_reference.batch_order import BatchOrder
from torch_reference.checkpoint import (CHECKPOINT_NAME, CheckpointError, check_compatible, load_checkpoint,
                                        save_checkpoint, validate_for_run)
from torch_reference.compare import policy_for
from torch_reference.distributed import DataParallel, SilentLogger
from torch_reference.dp_parity import SingleProcessTally, single_process_gradients
from torch_reference.evaluation import evaluate_engine, evaluate_twin
from torch_reference.guarded_logger import GuardedLogger
from torch_reference.interrupt import DeferredInterrupt
from torch_reference.model_pair import DivergenceError, ModelPair, non_finite_parameter
from torch_reference.parity_tally import ParityTally
from torch_reference.run_logging import RunLogger
from torch_reference.run_lock import RunLock
from torch_reference.train_settings import TrainingError, TrainSettings  # noqa: F401 (re-exported)

DRY_RUN_BATCHES = 3
DRY_RUN_EVAL_IMAGES = 512


class SideBySideRun:
    """One training run: the data order, the model pair, logging and checkpoints, and the loop that drives them."""

    def __init__(self, config: MLPConfig, settings: TrainSettings, data: DatasetSplits, run_dir: Path,
                 description: dict, log: Callable[[str], None] = print, progress: bool = True,
                 data_parallel: DataParallel | None = None):
        """data_parallel: this process's rank in a data-parallel run (see torch_reference/distributed.py); every
        rank builds the same run, takes its shard of each global batch, and only rank 0 logs and writes files."""
        self.config, self.settings, self.data = config, settings, data
        self.dp = data_parallel
        self.is_main = data_parallel is None or data_parallel.is_main
        self.run_dir, self.description, self.log, self.progress = Path(run_dir), description, log, progress
        self.order = BatchOrder(data.train_x.shape[0], settings.batch_size, settings.seed,
                                DRY_RUN_BATCHES if settings.dry_run else None)
        self.batches_per_epoch = self.order.batches_per_epoch
        self.models = ModelPair(config, settings.optimizer, settings.schedule, settings.seed, twin=settings.twin,
                                data_parallel=data_parallel)
        # Dropout draws its masks from torch's default generator (nn.Dropout can use no other): seed it, so a run
        # is reproducible from --seed alone; its state goes into checkpoints (every rank's, data-parallel).
        torch.manual_seed(data_parallel.dropout_seed(settings.seed) if data_parallel else settings.seed)
        self.single_tally = SingleProcessTally()  # data-parallel: the average against the global batch's gradient
        self.policy = policy_for(config.torch_dtype)
        self.tally = ParityTally()
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.history: list[dict] = []
        self.elapsed = 0.0
        self.last_checkpoint: Path | None = None
        self.saved_step = 0
        self.last_grads: dict[str, Tensor] = {}  # the engine's latest gradients, for the histograms
        self.interrupt = DeferredInterrupt()
        self.stop_requested = False  # what the last step's ranks agreed (data-parallel), else the local signal
        self.interval_losses = {"manual": [], "autograd": []}  # losses since the last loss/train point
        self.epoch_losses = {"manual": [], "autograd": []}  # losses of the current epoch

    @property
    def engine(self):
        return self.models.engine

    @property
    def twin(self):
        return self.models.twin

    # --- checkpoints ---------------------------------------------------------------------------------------

    def world_size(self) -> int:
        return self.dp.world_size if self.dp is not None else 1

    def data_identity(self) -> dict:
        """What a resumed run's data must share with the checkpoint's (limit and val-size show in train_size)."""
        return {"dataset": self.data.name, "train_size": self.data.train_x.shape[0],
                "standardize": self.data.standardize}

    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def state(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "settings": self.settings.identity(),
            "data": self.data_identity(),
            **self.models.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "order": self.order.state_dict(),
            "torch_rng": torch.get_rng_state(),  # dropout's masks come from the default generators
            "cuda_rng": (torch.cuda.get_rng_state(self.config.torch_device) if self.config.torch_device.type == "cuda"
                         else torch.empty(0, dtype=torch.uint8)),
            "tally": asdict(self.tally),
            "history": self.history,
            "elapsed": self.elapsed,
            # the running averages of loss/train and of the epoch's loss, so a resumed run logs the same values
            "interval_losses": self.interval_losses,
            "epoch_losses": self.epoch_losses,
            "world_size": self.world_size(),
            "single_process_tally": self.single_tally.state_dict(),
        }

    def save(self) -> Path:
        """Write the checkpoint (rank 0). Data-parallel, every rank calls this at the same step: the ranks' own
        dropout generators are gathered into it, and all learn whether rank 0's write worked."""
        path = self.checkpoint_path()
        for model, params in (("manual", self.engine.params), ("autograd", self.models.twin_params())):
            bad = non_finite_parameter(params)
            if bad:  # never replace a good checkpoint with a diverged state
                raise TrainingError(f"refusing to write {path}: the {model} model's {bad} is not finite")
        rank_rng = self.dp.gather_states(torch.get_rng_state()) if self.dp is not None else None
        failure = None
        if self.is_main:
            state = self.state()
            if rank_rng is not None:
                state["rank_rng"] = rank_rng
            try:
                save_checkpoint(path, state)
            except Exception as error:  # told to the other ranks first, then raised
                failure = error
        if self.dp is not None:
            message = self.dp.from_main(None if failure is None else str(failure))
            if message is not None and failure is None:
                raise TrainingError(f"rank 0 could not write the checkpoint, so every rank stops: {message}")
        if failure is not None:
            raise failure
        self.last_checkpoint, self.saved_step = path, self.global_step
        return path

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint. Data-parallel: rank 0 reads and checks it and sends it to the others (so
        they need no copy of the file); an error on rank 0 stops every rank with the same message."""
        state = failure = None
        if self.is_main:
            try:
                state = self._checked_checkpoint(path)
            except Exception as error:  # told to the other ranks first (they would wait for the state), then raised
                failure = error
        if self.dp is not None:
            state, message = self.dp.from_main((state, None if failure is None else str(failure)))
            if message is not None and failure is None:
                raise CheckpointError(message)
        if failure is not None:
            raise failure
        try:
            self.models.load_state_dict(state)
            self.order.load_state_dict(state["order"])
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"--resume {path}: the checkpoint does not fit this run ({error})") from error
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        # A clone: set_rng_state reads a row of the stacked states from its storage's start (a view crashes it).
        torch.set_rng_state(state["rank_rng"][self.dp.rank].clone() if "rank_rng" in state else state["torch_rng"])
        if self.config.torch_device.type == "cuda" and state["cuda_rng"].numel():
            torch.cuda.set_rng_state(state["cuda_rng"], self.config.torch_device)
        self.tally = ParityTally(**state["tally"])
        self.history = list(state["history"])
        self.elapsed = state["elapsed"]
        self.interval_losses = {model: list(values) for model, values in state["interval_losses"].items()}
        self.epoch_losses = {model: list(values) for model, values in state["epoch_losses"].items()}
        self.single_tally = SingleProcessTally(**state.get("single_process_tally", {}))
        self.last_checkpoint, self.saved_step = Path(path), self.global_step

    def _checked_checkpoint(self, path: Path) -> dict:
        state = load_checkpoint(path)
        saved_world = state.get("world_size", 1)  # checkpoints from before data-parallel runs: one process
        if saved_world != self.world_size():
            raise CheckpointError(
                f"--resume {path}: the checkpoint was written by a run of {saved_world} process"
                f"{'es' if saved_world != 1 else ''} (world size {saved_world}) and this run has {self.world_size()}; "
                f"resume with the same number of processes ("
                + (f"torchrun --nproc-per-node {saved_world} ..." if saved_world > 1 else "without torchrun")
                + "): each process's shard of every batch and its dropout generator depend on it")
        check_compatible(path, {**state["config"], **state["settings"], **state["data"]},
                         {**self.config.to_dict(), **self.settings.identity(), **self.data_identity()})
        validate_for_run(path, state, self.state(), self.order.n_train, self.batches_per_epoch, self.settings.epochs)
        return state

    # --- training --------------------------------------------------------------------------------------------

    def step(self, index: Tensor, logger: RunLogger) -> tuple[float, float | None]:
        """One optimizer step of each model on the batch of training images ``index`` (data-parallel: the global
        batch, of which this rank takes its shard); returns the two losses."""
        lr = self.models.lr
        parity_step = (self.global_step + 1) % self.settings.parity_every == 0 or self.global_step == 0
        data = self.data
        single = None
        if self.dp is not None:
            if parity_step and self.is_main and self.config.dropout == 0 and self.config.input_dropout == 0:
                single = single_process_gradients(self.engine, data.train_x[index], data.train_y[index])
            index = self.dp.shard(index)
        try:
            result = self.models.step(data.train_x[index], data.train_y[index],
                                      stop_requested=self.interrupt.requested)
        except DivergenceError as error:
            kept = (f"The last good checkpoint is {self.last_checkpoint} (step {self.saved_step})"
                    if self.last_checkpoint else "No checkpoint had been written yet")
            raise TrainingError(f"{error} at epoch {self.epoch + 1}, step {self.global_step + 1} (lr {lr:g}). "
                                f"{kept}. Try a smaller --lr.") from error
        self.global_step += 1
        self.stop_requested = result.stop_requested
        if single is not None:
            distances = self.single_tally.add(result.engine_record.gradients(), single)
            logger.scalars("manual", self.global_step,
                           # normwise (in eps of each tensor's largest entry): entry by entry, sums that cancel
                           # to almost zero are thousands of ulps apart and would hide the trend
                           {"parity_detail/dp_vs_single_process_eps_of_max":
                                max(d["max_abs_in_eps_of_max"] for d in distances.values()),
                            "parity_detail/dp_vs_single_process_max_rel": max(d["max_rel"] for d in distances.values())})
        if self.twin is not None and parity_step and self.is_main:  # rank 0 reports the parity of a data-parallel run
            rows, after = self.models.compare(result, self.policy)
            bitwise = self.tally.add(rows, after)
            weights = {f"{row.name}{row.layer}": row.max_abs for row in after if row.name in ("W", "b")}
            logger.parity(self.global_step, rows, weights, bitwise, weight_rows=after)
        if result.engine_record is not None:  # the fast path keeps no gradients to draw
            self.last_grads = result.engine_record.gradients()
        self.last_lr = lr
        return result.engine_loss, result.twin_loss

    def run(self, logger: RunLogger) -> dict:
        with self.interrupt:
            try:
                return self._run(logger)
            except RuntimeError as error:
                if self.dp is None:
                    raise
                # A collective failed: another rank died, hung past --dist-timeout, or its connection broke.
                kept = (f"the last good checkpoint is {self.last_checkpoint} (step {self.saved_step}): resume from it"
                        if self.last_checkpoint else "no checkpoint had been written yet")
                raise TrainingError(f"rank {self.dp.rank} of {self.dp.world_size}: a collective failed at step "
                                    f"{self.global_step + 1}, so the data-parallel run stops ({error}). Another "
                                    f"process probably died or hung (torchrun's log names the first failure); "
                                    f"{kept}.") from error

    def _run(self, logger: RunLogger) -> dict:
        from tqdm import tqdm

        settings, order = self.settings, self.order
        started = time.perf_counter() - self.elapsed
        while self.epoch < settings.epochs:
            if order.start_epoch_if_needed():
                self.epoch_losses = {"manual": [], "autograd": []}
            bar = tqdm(total=self.batches_per_epoch, initial=order.batch_in_epoch, disable=not self.progress,
                       desc=f"epoch {self.epoch + 1}/{settings.epochs}", unit="batch", leave=False)
            epoch_started = time.perf_counter()
            images_this_epoch = 0
            while not order.epoch_finished:
                index = order.next_batch().to(self.data.train_x.device)
                engine_loss, twin_loss = self.step(index, logger)
                images_this_epoch += index.numel()
                for model, loss in (("manual", engine_loss), ("autograd", twin_loss)):
                    if loss is not None:
                        self.interval_losses[model].append(loss)
                        self.epoch_losses[model].append(loss)
                if self.global_step % settings.log_interval == 0:
                    for model, losses in self.interval_losses.items():
                        if losses:
                            logger.scalars(model, self.global_step, {"loss/train": sum(losses) / len(losses),
                                                                     "lr": self.last_lr})
                    self.interval_losses = {"manual": [], "autograd": []}
                bar.update(1)
                rate = images_this_epoch / max(time.perf_counter() - epoch_started, 1e-9)
                bar.set_postfix(loss=f"{engine_loss:.4f}", img_per_s=f"{rate:.0f}", refresh=False)  # redrawn by update

                # The end of an epoch comes before any stop, so a checkpoint never holds a finished epoch
                # that was not counted and evaluated.
                epoch_done = order.epoch_finished
                if epoch_done:
                    bar.close()
                    self.epoch += 1
                    if self.is_main:  # rank 0 evaluates and logs; the others go on to the next collective
                        self.end_of_epoch(logger, self.epoch_losses)
                stop = None
                if settings.max_steps is not None and self.global_step >= settings.max_steps:
                    stop = f"stopped after --max-steps {settings.max_steps}"
                # Data-parallel: only the flag the ranks agreed on in the step, or a signal that came later would
                # stop this rank alone.
                elif self.stop_requested if self.dp is not None else self.interrupt.requested:
                    stop = (f"interrupted by {self.interrupt.signal_name}" if self.interrupt.requested
                            else "stopped because another rank was interrupted")
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
            "interrupted": self.interrupt.signal_name,  # "SIGINT" or "SIGTERM" when a signal stopped the run
            "optimizer": self.settings.optimizer.to_dict(),
            "schedule": self.settings.schedule.to_dict(),
            "final_lr": self.models.lr,
            "engine_path": self.models.path_note,
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
            "world_size": self.world_size(),
            **({"data_parallel": self.data_parallel_summary()} if self.dp is not None else {}),
        }

    def data_parallel_summary(self) -> dict:
        """What summary.json says about a data-parallel run: the group, and the two parity results (the engine's
        average against DDP's is the "parity" section above; against the single-process gradient here)."""
        no_dropout = self.config.dropout == 0 and self.config.input_dropout == 0
        return {**self.dp.describe(), "engine_averaging": self.models.averager.describe(),
                "twin": "DistributedDataParallel" if self.twin is not None else None,
                "vs_single_process": {**self.single_tally.state_dict(), "note": (
                    "the averaged gradient against the gradient of the whole global batch in one process, at each "
                    "parity check (max_ulp: float32 rounding of a differently grouped sum)") if no_dropout else
                    "not compared: with dropout each rank draws its own masks"}}


def train(config: MLPConfig, settings: TrainSettings, data: DatasetSplits, run_dir: Path, description: dict,
          resume: Path | None = None, log: Callable[[str], None] = print, progress: bool = True,
          data_parallel: DataParallel | None = None) -> dict:
    """Run (or resume) a side-by-side training in ``run_dir`` and return its summary.

    A resumed run continues in the checkpoint's run directory; TensorBoard events that the interrupted run
    wrote after its checkpoint are purged so the curves continue without duplicates. One process at a time per run
    directory (``run_lock``): a second one fails at once with RunLockError naming the first one's pid; a new
    directory of a run that fails before its first step is removed again.
    Data-parallel (``data_parallel``): every rank calls this; rank 0 does all of the above, the others train
    their shards silently and write nothing.
    """
    if data_parallel is not None and not data_parallel.is_main:
        run = SideBySideRun(config, settings, data, run_dir, description, log=lambda line: None, progress=False,
                            data_parallel=data_parallel)
        if resume is not None:
            run.restore(resume)
        return run.run(SilentLogger())
    lock = RunLock(run_dir, fresh=resume is None).acquire()  # a second process on this run directory stops here
    for orphan in lock.removed_orphans:
        log(f"removed {orphan.name}, a temporary checkpoint file left by a killed write")
    run = None
    try:
        run = SideBySideRun(config, settings, data, run_dir, description, log=log, progress=progress,
                            data_parallel=data_parallel)
        log(f"engine: {run.models.path_note}")
        if resume is not None:
            run.restore(resume)
            log(f"resumed from {resume}: epoch {run.epoch + 1}, step {run.global_step}")
        logger = GuardedLogger(run_dir, lambda: RunLogger(run_dir, purge_step=run.global_step + 1 if resume is not None
                                                          else None, twin=settings.twin,
                                                          validation=data.val_x.shape[0] > 0))
        try:
            if resume is None:
                logger.config_text(description)
            summary = run.run(logger)
            if not summary["stopped_early"]:
                hparams = {**config.to_dict(), **settings.hparams()}
                logger.hparams(hparams, {model: {"test_accuracy": values["test_accuracy"],
                                                 "test_loss": values["test_loss"]}
                                         for model, values in summary["final"].items()})
        finally:
            logger.close()
    except BaseException:
        if lock.release(failed=True, steps=run.global_step if run is not None else 0):
            log(f"removed the new run directory {run_dir}: the run failed before its first step")
        raise
    finally:
        lock.release()
    return summary
