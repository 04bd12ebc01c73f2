"""The settings of a training run (everything but the network, which is the MLPConfig), and its error."""

from __future__ import annotations

from dataclasses import dataclass, field

from manual_backprop.optim_config import OptimizerConfig, ScheduleConfig


class TrainingError(Exception):
    """The run cannot go on (the loss diverged, say); the message says why and what was kept."""


class NothingToTrain(Exception):
    """The resumed run is already where it was asked to stop (``--max-steps`` at or below the checkpoint's step):
    nothing was trained and nothing in the run directory was changed. The message says where it is."""


@dataclass(frozen=True)
class TrainSettings:
    """Everything about a run except the network itself (that is the MLPConfig)."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig("momentum", lr=0.05, momentum=0.9))
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
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
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected an integer >= 1; got {value!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"--checkpoint-every: expected an integer >= 0; got {self.checkpoint_every}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max-steps: expected an integer >= 1; got {self.max_steps}")
        if not isinstance(self.optimizer, OptimizerConfig) or not isinstance(self.schedule, ScheduleConfig):
            raise TypeError("optimizer, schedule: expected an OptimizerConfig and a ScheduleConfig")
        self.schedule.check_against(self.optimizer.lr)

    def identity(self) -> dict:
        """The settings a resumed run must share with its checkpoint (epochs and logging may change)."""
        return {"batch_size": self.batch_size, "optimizer": self.optimizer.to_dict(),
                "schedule": self.schedule.to_dict(), "seed": self.seed, "twin": self.twin, "dry_run": self.dry_run}

    def hparams(self) -> dict:
        """Flat hyperparameters for TensorBoard's HPARAMS tab: the optimizer's by torch.optim's names."""
        flat = {"optimizer": self.optimizer.name, **{key: (str(value) if isinstance(value, tuple) else value)
                                                      for key, value in self.optimizer.hyperparameters().items()},
                "lr_schedule": self.schedule.name, "warmup_steps": self.schedule.warmup_steps}
        return {**flat, "batch_size": self.batch_size, "seed": self.seed, "epochs": self.epochs}
