"""Learning-rate schedules η_t (lecture 003 writes the step size as a schedule), over optimizer steps.

Each schedule is updated recursively, η_t from η_{t-1}, with the same float operations in the same order as
``torch.optim.lr_scheduler``'s ``get_lr`` (its "chainable" form), so the learning rate of every step is bitwise
the one the twin's scheduler gives. The closed forms (η_0 γ^⌊t/s⌋, ...) are equal in exact arithmetic but round
differently after a few hundred steps; the twin is the reference, so the engine follows its recursion:

    step         η_t = η_{t-1} γ            when t is a multiple of step_size, else η_{t-1}
    multistep    η_t = η_{t-1} γ            at each milestone
    exponential  η_t = η_{t-1} γ
    cosine       η_t = (1 + cos(π t/T)) / (1 + cos(π (t-1)/T)) (η_{t-1} − η_min) + η_min
                 (at t = T + 1 + 2kT, where that ratio is 0/0: η_t = η_{t-1} + (η_0 − η_min)(1 − cos(π/T))/2)
    warm-up      η_t = η_{t-1} (1 + (1 − f) / (W f + (t − 1)(1 − f)))   for t <= W, from η_0 f
                 (torch's LinearLR from f to 1); at t = W the schedule starts from its closed form at 0.
"""

from __future__ import annotations

import math

from manual_backprop.optim_config import ScheduleConfig


class LRSchedule:
    """``lr`` is the learning rate for the next optimizer step; call :meth:`step` after each optimizer step."""

    def __init__(self, config: ScheduleConfig, base_lr: float):
        if not isinstance(config, ScheduleConfig):
            raise TypeError(f"config: expected a ScheduleConfig; got {type(config).__name__}")
        config.check_against(base_lr)
        self.config = config
        self.base_lr = float(base_lr)
        self.steps = 0  # optimizer steps taken so far
        self.lr = self.base_lr * config.warmup_start_factor if config.warmup_steps else self.base_lr

    def step(self) -> float:
        """Advance by one optimizer step; return the learning rate for the next one."""
        self.steps += 1
        warmup = self.config.warmup_steps
        if warmup and (self.steps < warmup or (self.steps == warmup and self.config.name == "constant")):
            self.lr = self._warmup(self.lr, self.steps)
        elif warmup and self.steps == warmup:
            self.lr = self._start()
        elif self.steps > warmup:
            self.lr = self._decay(self.lr, self.steps - warmup)
        return self.lr

    def _warmup(self, lr: float, t: int) -> float:
        start, end, total = self.config.warmup_start_factor, 1.0, self.config.warmup_steps
        return lr * (1.0 + (end - start) / (total * start + (t - 1) * (end - start)))

    def _start(self) -> float:
        """The schedule's value at its own step 0, in the closed form torch uses when a SequentialLR hands over."""
        config, base = self.config, self.base_lr
        if config.name == "cosine":
            return config.eta_min + (base - config.eta_min) * (1 + math.cos(math.pi * 0 / config.t_max)) / 2
        return base * config.gamma ** 0

    def _decay(self, lr: float, t: int) -> float:
        """η_t from η_{t-1}, t >= 1 counted from the end of the warm-up."""
        config = self.config
        if config.name == "step":
            return lr * config.gamma if t % config.step_size == 0 else lr
        if config.name == "multistep":
            return lr * config.gamma ** 1 if t in config.milestones else lr
        if config.name == "exponential":
            return lr * config.gamma
        if config.name == "cosine":
            T, eta_min = config.t_max, config.eta_min
            if (t - 1 - T) % (2 * T) == 0:
                return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
            return (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) * (lr - eta_min) + eta_min
        return lr  # constant

    def state_dict(self) -> dict:
        return {"config": self.config.to_dict(), "base_lr": self.base_lr, "steps": self.steps, "lr": self.lr}

    def load_state_dict(self, saved: dict) -> None:
        try:  # fields the schedule never reads may differ (older checkpoints stored hidden defaults there)
            same = ScheduleConfig.from_dict(saved.get("config")).identity() == self.config.identity()
        except (TypeError, ValueError, AttributeError):
            same = False
        if not same or saved.get("base_lr") != self.base_lr:
            raise ValueError(f"schedule state: saved for {saved.get('config')} from lr {saved.get('base_lr')}; this "
                             f"schedule is {self.config.to_dict()} from lr {self.base_lr}")
        steps, lr = saved.get("steps"), saved.get("lr")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"schedule state: expected a step count >= 0; got {steps!r}")
        if not isinstance(lr, float) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"schedule state: expected a finite learning rate >= 0; got {lr!r}")
        self.steps, self.lr = steps, lr
