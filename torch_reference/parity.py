"""One parity check: the engine and its twin on the same weights and batch, compared tensor by tensor."""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig
from manual_backprop.constraints import max_norm_
from manual_backprop.finite_differences import check_gradients
from manual_backprop.model import MLP
from torch_reference.compare import ParityReport, compare_records, compare_tensors, policy_for
from torch_reference.lockstep import lockstep_loss_and_gradients, rewound_rng
from torch_reference.twin import TwinMLP


def synthetic_batch(config: MLPConfig, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """An MNIST-like batch: inputs uniform in [0, 1) of shape (m, sizes[0]) and int64 labels (m,)
    (in [0, k), or 0/1 for bce with one output).

    Drawn on the CPU from ``generator`` and then moved, so a seed gives the same batch on every device.
    """
    X = torch.rand(batch_size, config.sizes[0], generator=generator, dtype=torch.float64)
    classes = 2 if config.loss == "bce" and config.sizes[-1] == 1 else config.sizes[-1]
    labels = torch.randint(0, classes, (batch_size,), generator=generator)
    return X.to(config.torch_dtype).to(config.torch_device), labels.to(config.torch_device)


def run_parity(config: MLPConfig, batch_size: int = 64, seed: int = 0, numeric: bool = False,
               require_exact: bool = False, input_grad: bool = False) -> ParityReport:
    """Initialise the engine from ``seed``, copy it into the twin, run both on one batch and compare.

    The pass is a training pass: with dropout in the config both sides drop units, with the same masks
    (lockstep.py), drawn from torch's default generator seeded with ``seed`` (the caller's generator state is
    left as it was). With ``config.max_norm`` both sides first apply the max-norm constraint to the initial
    weights, and the report starts with one row per constrained weight matrix (name "W").
    ``input_grad`` adds dL/dX (layer 0, "dX"). With ``numeric``, central finite differences in float64 check
    the engine's parameter gradients too: of the training pass with every difference taken under the masks the
    seed draws (finite differences need a fixed function), or of the evaluation pass without dropout.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected at least 1; got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    engine = MLP(config, generator=generator)
    twin = TwinMLP.from_engine(config, engine.params)
    policy = policy_for(config.torch_dtype, require_exact)
    weight_rows = []
    if config.max_norm is not None:
        with torch.inference_mode():
            max_norm_(engine.params, config.max_norm, config)
        twin.apply_max_norm(config.max_norm)
        twin_params = twin.engine_parameters()
        weight_rows = [compare_tensors(layer, "W", engine.params[f"W{layer}"], twin_params[f"W{layer}"], policy)
                       for layer in range(1, config.num_layers + 1)]
    X, labels = synthetic_batch(config, batch_size, generator)
    with rewound_rng(config.torch_device):
        torch.manual_seed(seed)
        engine_record, twin_record = lockstep_loss_and_gradients(engine, twin, X, labels, train=True,
                                                                 input_grad=input_grad)
    report = compare_records(engine_record, twin_record, policy)
    report.rows = weight_rows + report.rows
    report.config = {**config.to_dict(), "batch_size": batch_size, "seed": seed, "input_grad": input_grad}
    if numeric:
        # With dropout, the training pass, its masks drawn from the lockstep's seed (the float64 copy draws the same
        # masks as the model on this CPU); without dropout, the evaluation pass, which is the same function.
        dropout = bool(config.dropout or config.input_dropout)
        with rewound_rng(config.torch_device), torch.inference_mode():
            torch.manual_seed(seed)
            report.numeric = check_gradients(engine, X, labels, generator=generator, train=dropout)
    return report
