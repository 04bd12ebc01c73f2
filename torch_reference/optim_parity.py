"""Optimizer parity: the engine's optimizer state against torch.optim's, tensor by tensor, and an N-step check.

``run_optimizer_parity`` trains the engine and the twin from the same weights on the same batches for N steps,
each with its own optimizer and schedule, and after every step compares the weights, every optimizer state
tensor and the learning rate, one row per tensor and step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP
from manual_backprop.optim import Optimizer, build_optimizer
from manual_backprop.optim_config import OptimizerConfig, ScheduleConfig
from manual_backprop.schedules import LRSchedule
from torch_reference.compare import ParityReport, TensorComparison, TolerancePolicy, compare_tensors, policy_for
from torch_reference.optim_twin import build_torch_optimizer, build_torch_schedule, current_lr
from torch_reference.parity import synthetic_batch
from torch_reference.twin import TwinMLP


def weight_rows(engine_params: dict[str, Tensor], twin_params: dict[str, Tensor],
                policy: TolerancePolicy) -> list[TensorComparison]:
    """The two models' parameters, name by name (rows named "W" and "b" of each layer)."""
    return [compare_tensors(int(name[1:]), name[0], engine_params[name], twin_params[name].detach(), policy)
            for name in engine_params]


def state_rows(engine_optimizer: Optimizer, torch_optimizer: torch.optim.Optimizer,
               twin_params: dict[str, Tensor], policy: TolerancePolicy) -> list[TensorComparison]:
    """Every optimizer state tensor (rows named like "exp_avg(W)" of each layer); a key held by one side only
    is an error, since the two optimizers must keep the same state."""
    rows = []
    for name, param in twin_params.items():
        mine = engine_optimizer.state[name]
        theirs = {key: value for key, value in torch_optimizer.state[param].items() if isinstance(value, Tensor)}
        if set(mine) != set(theirs):
            raise ValueError(f"optimizer state of {name}: the engine keeps {sorted(mine)}, torch.optim keeps "
                             f"{sorted(theirs)}")
        for key in sorted(mine):
            reference = theirs[key].to(mine[key].device)
            rows.append(compare_tensors(int(name[1:]), f"{key}({name[0]})", mine[key], reference, policy))
    return rows


def lr_row(step: int, engine_lr: float, torch_lr: float) -> TensorComparison:
    """The learning rate of the step as a float64 'tensor', so it is reported like every other value."""
    return compare_tensors("lr", "lr", torch.tensor(engine_lr, dtype=torch.float64),
                           torch.tensor(torch_lr, dtype=torch.float64), policy_for(torch.float64, require_exact=True))


def run_optimizer_parity(config: MLPConfig, optimizer: OptimizerConfig, schedule: ScheduleConfig | None = None,
                         steps: int = 10, batch_size: int = 64, seed: int = 0,
                         require_exact: bool = False) -> ParityReport:
    """N training steps of both models on synthetic batches; a row per (step, tensor) for weights, optimizer
    state and learning rate. The row's ``layer`` field reads "step 3 / layer 1" style: see ``ParityReport``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an integer >= 1; got {steps!r}")
    schedule = schedule or ScheduleConfig()
    generator = torch.Generator().manual_seed(seed)
    engine = MLP(config, generator=generator)
    twin = TwinMLP.from_engine(config, engine.params)
    twin_params = twin.engine_parameters()
    engine_optimizer = build_optimizer(optimizer, engine.params)
    engine_schedule = LRSchedule(schedule, optimizer.lr)
    torch_optimizer = build_torch_optimizer(optimizer, twin_params)
    torch_schedule = build_torch_schedule(schedule, torch_optimizer)
    policy = policy_for(config.torch_dtype, require_exact)
    rows = []
    for step in range(1, steps + 1):
        X, labels = synthetic_batch(config, batch_size, generator)
        engine_optimizer.lr = engine_schedule.lr
        step_rows = [lr_row(step, engine_optimizer.lr, current_lr(torch_optimizer))]
        with torch.inference_mode():
            engine_optimizer.step(engine.loss_and_gradients(X, labels).gradients())
        twin.loss_and_gradients(X, labels)
        torch_optimizer.step()
        engine_schedule.step()
        if torch_schedule is not None:
            torch_schedule.step()
        step_rows += weight_rows(engine.params, twin_params, policy)
        step_rows += state_rows(engine_optimizer, torch_optimizer, twin_params, policy)
        for row in step_rows:
            row.layer = f"{step}:{row.layer}"
        rows += step_rows
    report = ParityReport(rows=rows, policy=policy)
    report.config = {**config.to_dict(), "optimizer": optimizer.to_dict(), "schedule": schedule.to_dict(),
                     "steps": steps, "batch_size": batch_size, "seed": seed}
    return report
