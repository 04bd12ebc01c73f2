"""Optimizer parity rows: the two models' weights, the engine's optimizer state against torch.optim's, tensor by
tensor, and the learning rate."""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop.optim import Optimizer
from torch_reference.compare import TensorComparison, TolerancePolicy, compare_tensors, policy_for


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
