"""Train the engine's MLP and its autograd twin side by side on the same batches, checking parity as they go.

``SideBySideRun`` coordinates the pieces, each in its own module: ``BatchOrder`` (which images each step sees),
``ModelPair`` (both models, each with its own optimizer and schedule built from one shared config), the loop
(``loop.py``), the checkpoint of the run's state (``run_state.py``), the epoch report and summary
(``run_report.py``), TensorBoard (``tensorboard_writer.py``) and the run directory's lock (``run_directory.py``).
``train`` is the entry point: lock, logger, run, HParams.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig
from mnist_data import DatasetSplits
from side_by_side.batch_order import BatchOrder
from side_by_side.checkpoint import CHECKPOINT_NAME
from side_by_side.guarded_logger import GuardedLogger
from side_by_side.loop import run_epochs, train_step
from side_by_side.model_pair import ModelPair
from side_by_side.process_group import DataParallel, SilentLogger
from side_by_side.run_directory import RunLock
from side_by_side.run_report import DRY_RUN_EVAL_IMAGES, end_of_epoch, summary, write_verdict
from side_by_side.run_state import restore_run, run_state, save_run
from side_by_side.settings import NothingToTrain, TrainingError, TrainSettings
from side_by_side.signals import DeferredInterrupt, signals_held
from side_by_side.tensorboard_writer import RunLogger
from torch_reference.compare import policy_for
from torch_reference.dp_parity import SingleProcessTally
from torch_reference.parity_tally import ParityTally

__all__ = ["DRY_RUN_BATCHES", "DRY_RUN_EVAL_IMAGES", "SideBySideRun", "TrainSettings", "TrainingError", "train"]

DRY_RUN_BATCHES = 3


class SideBySideRun:
    """One training run: the data order, the model pair, logging and checkpoints, and the loop that drives them."""

    def __init__(self, config: MLPConfig, settings: TrainSettings, data: DatasetSplits, run_dir: Path,
                 description: dict, log: Callable[[str], None] = print, progress: bool = True,
                 data_parallel: DataParallel | None = None):
        """data_parallel: this process's rank in a data-parallel run (see side_by_side/process_group.py); every
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

    # --- checkpoints (side_by_side/run_state.py) --------------------------------------------------------------

    def world_size(self) -> int:
        return self.dp.world_size if self.dp is not None else 1

    def data_identity(self) -> dict:
        """What a resumed run's data must share with the checkpoint's (limit and val-size show in train_size)."""
        return {"dataset": self.data.name, "train_size": self.data.train_x.shape[0],
                "standardize": self.data.standardize}

    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def state(self) -> dict:
        return run_state(self)

    def save(self) -> Path:
        return save_run(self)

    def restore(self, path: Path) -> None:
        restore_run(self, path)

    # --- training (side_by_side/loop.py) and reports (side_by_side/run_report.py) -----------------------------

    def step(self, index: Tensor, logger: RunLogger) -> tuple[float, float | None]:
        return train_step(self, index, logger)

    def run(self, logger: RunLogger) -> dict:
        with self.interrupt:
            try:
                return run_epochs(self, logger)
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

    def end_of_epoch(self, logger: RunLogger, epoch_losses: dict[str, list[float]]) -> None:
        end_of_epoch(self, logger, epoch_losses)

    def summary(self, stopped_early: bool) -> dict:
        return summary(self, stopped_early)

    def write_verdict(self, logger: RunLogger) -> None:
        write_verdict(self, logger)


def data_hparams(description: dict) -> dict:
    """The HParams columns of the data and the process group, so two runs that differ only there (a --limit, another
    dataset, standardisation, a validation split, two processes) get different rows. Every column has a value in
    every row: a blank cell would read as "unknown", not as the default."""
    group = description.get("data_parallel") or {}
    return {"dataset": description.get("dataset"), "limit": description.get("limit") or "none",
            "train_images": description.get("train_images"), "standardize": description.get("standardize"),
            "val_size": description.get("val_size"), "world_size": group.get("world_size", 1),
            "dp_mode": group.get("mode", "none")}


def already_there(run: SideBySideRun, resume: Path) -> None:
    """--max-steps at or below the checkpoint's step: stop before training, with nothing changed (every rank of a
    data-parallel run restores the same step, so all stop here together). A finished run resumed with the same
    --epochs still writes its summary (and --json): that is how to get a finished run's summary again."""
    max_steps = run.settings.max_steps
    if max_steps is not None and run.global_step >= max_steps:
        raise NothingToTrain(f"the checkpoint {resume} is at step {run.global_step}, at or past --max-steps "
                             f"{max_steps}; nothing was changed (give a --max-steps above {run.global_step} to "
                             "train on)")


def last_checkpoint_summary(run: SideBySideRun, log: Callable[[str], None]) -> dict:
    """After a second Ctrl-C stopped the run at once: the run as its last checkpoint holds it (restored, with
    further signals held back), so that summary.json, written next, describes that checkpoint. Without a checkpoint
    (or data-parallel, where the other ranks are mid-step) the interrupt goes on up."""
    if run.last_checkpoint is None or run.dp is not None:
        raise KeyboardInterrupt
    if run.interrupt.signal_number is None:  # a KeyboardInterrupt with no signal noted first: Ctrl-C all the same
        run.interrupt.signal_number = signal.SIGINT
    with signals_held():
        restore_run(run, run.last_checkpoint)
        log(f"stopped at once by a second signal; the run is as its last checkpoint {run.last_checkpoint} holds it "
            f"(step {run.global_step})")
        return run.summary(stopped_early=True)


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
            already_there(run, resume)
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
            already_there(run, resume)  # before the logger, which would purge events past the checkpoint
            log(f"resumed from {resume}: epoch {run.epoch + 1}, step {run.global_step}")
        logger = GuardedLogger(run_dir, lambda: RunLogger(run_dir, purge_step=run.global_step + 1 if resume is not None
                                                          else None, twin=settings.twin,
                                                          validation=data.val_x.shape[0] > 0,
                                                          layers=len(config.sizes) - 1))
        try:
            if logger.legacy_writers:
                old = ", ".join(f"{name}/" for name in logger.legacy_writers)
                log(f"{run_dir} has the old TensorBoard layout ({old}, kept as they are): the resumed steps go to "
                    f"the run directory itself, one TensorBoard run with both models")
            if resume is None:
                logger.config_text(description)
            try:
                summary = run.run(logger)
            except KeyboardInterrupt:  # a second Ctrl-C: the step in flight is dropped, the last checkpoint is kept
                summary = last_checkpoint_summary(run, log)
            if not summary["stopped_early"]:
                hparams = {**config.to_dict(), **settings.hparams(), **data_hparams(description)}
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
