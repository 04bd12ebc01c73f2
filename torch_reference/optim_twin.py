"""The twin's optimizer and schedule: ``torch.optim`` and ``torch.optim.lr_scheduler`` built from the same
``OptimizerConfig`` and ``ScheduleConfig`` as the engine's hand-written ones."""

from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor

from manual_backprop.optim_config import OptimizerConfig, ScheduleConfig

# State keys torch.optim keeps per parameter, for each optimizer (the engine uses the same names).
STATE_KEYS = ("step", "momentum_buffer", "sum", "square_avg", "grad_avg", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def parameter_groups(config: OptimizerConfig, named_params: dict[str, Tensor]) -> list[dict]:
    """One group, or two when the biases are excluded from weight decay (``decay_biases=False``)."""
    if config.decay_biases or not config.weight_decay:
        return [{"params": list(named_params.values())}]
    weights = [tensor for name, tensor in named_params.items() if name.startswith("W")]
    biases = [tensor for name, tensor in named_params.items() if name.startswith("b")]
    return [{"params": weights}, {"params": biases, "weight_decay": 0.0}]


def build_torch_optimizer(config: OptimizerConfig, named_params: dict[str, Tensor],
                          foreach: bool | None = False) -> torch.optim.Optimizer:
    """``named_params`` uses the engine's names ("W1", "b1", ...), e.g. ``TwinMLP.engine_parameters()``.

    ``foreach=False`` selects torch.optim's per-tensor loop, whose arithmetic the engine reproduces bit for bit;
    ``foreach=True`` is the multi-tensor path (CUDA's default), which rounds differently in places; ``None`` lets
    torch.optim choose, as a user's code does.
    """
    groups = parameter_groups(config, named_params)
    hyper = config.hyperparameters()
    name = config.name
    if name in ("sgd", "momentum", "nesterov"):
        return torch.optim.SGD(groups, **hyper, nesterov=name == "nesterov", foreach=foreach)
    if config.eps_placement != "torch":
        raise ValueError(f"eps_placement: torch.optim has no {config.eps_placement!r} form of {name}; the twin "
                         f"can only check eps_placement='torch'")
    if name == "adagrad":
        return torch.optim.Adagrad(groups, **hyper, foreach=foreach)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, **hyper, foreach=foreach)
    if name == "adam":
        return torch.optim.Adam(groups, **hyper, foreach=foreach)
    return torch.optim.AdamW(groups, **hyper, foreach=foreach)


def build_torch_schedule(config: ScheduleConfig, optimizer: torch.optim.Optimizer):
    """The lr_scheduler for ``config``, or None for a constant rate without warm-up. Step it once per
    optimizer step."""
    lr_scheduler = torch.optim.lr_scheduler
    if config.name == "constant":
        main = None
    elif config.name == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    elif config.name == "multistep":
        main = lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones), gamma=config.gamma)
    elif config.name == "exponential":
        main = lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma)
    else:
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.t_max, eta_min=config.eta_min)
    if not config.warmup_steps:
        return main
    # LinearLR is constructed after `main` would reset the rate; SequentialLR resets it to the initial rate
    # and restarts the first scheduler, so the construction order does not matter for the values.
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=config.warmup_start_factor, end_factor=1.0,
                                   total_iters=config.warmup_steps)
    if main is None:
        return warmup
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[config.warmup_steps])


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


def schedule_state(scheduler) -> dict | None:
    """The scheduler's state_dict in plain types (MultiStepLR keeps a Counter, which weights_only loading
    refuses)."""
    if scheduler is None:
        return None
    return _plain(scheduler.state_dict())


def load_schedule_state(scheduler, state: dict | None) -> None:
    if scheduler is None:
        if state is not None:
            raise ValueError("schedule state: the checkpoint has a scheduler state but this run has no schedule")
        return
    if state is None:
        raise ValueError("schedule state: this run has a schedule but the checkpoint holds no scheduler state")
    scheduler.load_state_dict(_counters_back(state))


def _plain(value):
    if isinstance(value, Counter):
        return {"__counter__": {str(key): count for key, count in value.items()}}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _counters_back(value):
    if isinstance(value, dict):
        if set(value) == {"__counter__"}:
            return Counter({int(key): count for key, count in value["__counter__"].items()})
        return {key: _counters_back(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_counters_back(item) for item in value]
    return value
