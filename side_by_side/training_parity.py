"""N training steps of both models, compared after every step: ``python -m experiments.parity --steps N``.

The engine and the twin start from the same weights and take the same synthetic batches, each with its own
optimizer and schedule (a ``ModelPair``, exactly as in side-by-side training, dropout and max-norm included).
After every step the report holds one row per tensor: the step's loss, values and gradients, then the weights,
every optimizer state tensor and the learning rate after the update. Rows are labelled "step:layer".
"""

from __future__ import annotations

import torch

from manual_backprop.config import MLPConfig
from manual_backprop.optim_config import OptimizerConfig, ScheduleConfig
from side_by_side.model_pair import ModelPair
from torch_reference.compare import ParityReport, policy_for
from torch_reference.parity import synthetic_batch


def run_optimizer_parity(config: MLPConfig, optimizer: OptimizerConfig, schedule: ScheduleConfig | None = None,
                         steps: int = 10, batch_size: int = 64, seed: int = 0,
                         require_exact: bool = False) -> ParityReport:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an integer >= 1; got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1; got {batch_size!r}")
    schedule = schedule or ScheduleConfig()
    pair = ModelPair(config, optimizer, schedule, seed, twin=True)
    torch.manual_seed(seed)  # the dropout masks' generator, as a training run seeds it
    batches = torch.Generator().manual_seed(seed + 1)
    policy = policy_for(config.torch_dtype, require_exact)
    rows = []
    for step in range(1, steps + 1):
        X, labels = synthetic_batch(config, batch_size, batches)
        result = pair.step(X, labels)
        step_rows, after = pair.compare(result, policy)
        for row in [*step_rows, *after]:
            row.layer = f"{step}:{row.layer}"
        rows += step_rows + after
    report = ParityReport(rows=rows, policy=policy)
    report.config = {**config.to_dict(), "optimizer": optimizer.to_dict(), "schedule": schedule.to_dict(),
                     "steps": steps, "batch_size": batch_size, "seed": seed}
    return report
