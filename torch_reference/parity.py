"""One parity check: the engine and its twin on the same weights and batch, compared tensor by tensor."""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig
from manual_backprop.finite_differences import check_gradients
from manual_backprop.model import MLP
from torch_reference.compare import ParityReport, compare_records, policy_for
from torch_reference.twin import TwinMLP


def synthetic_batch(config: MLPConfig, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """An MNIST-like batch: inputs uniform in [0, 1) of shape (m, sizes[0]) and int64 labels (m,).

    Drawn on the CPU from ``generator`` and then moved, so a seed gives the same batch on every device.
    """
    X = torch.rand(batch_size, config.sizes[0], generator=generator, dtype=torch.float64)
    labels = torch.randint(0, config.sizes[-1], (batch_size,), generator=generator)
    return X.to(config.torch_dtype).to(config.torch_device), labels.to(config.torch_device)


def run_parity(config: MLPConfig, batch_size: int = 64, seed: int = 0, numeric: bool = False,
               require_exact: bool = False) -> ParityReport:
    """Initialise the engine from ``seed``, copy it into the twin, run both on one batch and compare.

    With ``numeric``, central finite differences in float64 check the engine's parameter gradients too.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected at least 1; got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    engine = MLP(config, generator=generator)
    twin = TwinMLP.from_engine(config, engine.params)
    X, labels = synthetic_batch(config, batch_size, generator)
    with torch.inference_mode():
        engine_record = engine.loss_and_gradients(X, labels)
    twin_record = twin.loss_and_gradients(X, labels)
    report = compare_records(engine_record, twin_record, policy_for(config.torch_dtype, require_exact))
    report.config = {**config.to_dict(), "batch_size": batch_size, "seed": seed}
    if numeric:
        with torch.inference_mode():
            report.numeric = check_gradients(engine, X, labels, generator=generator)
    return report
