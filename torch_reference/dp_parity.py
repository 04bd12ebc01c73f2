"""Data-parallel parity: the averaged gradient of N shards against the single-process gradient of the global batch.

The mean loss over a global batch of m = N·s samples has the gradient (1/m) Σ_i g_i; the ranks compute (1/s) Σ over
their own s samples, and the average over the ranks, (1/N) Σ_r, is the same sum grouped differently. In float64
the two agree to a few units in the last place (the test asserts 1e-12); in float32 they differ by rounding, and
this reports by how much. Rank 0 computes the reference at each parity check from the same weights (before the
update), on the whole global batch, without dropout (with dropout each rank draws its own masks, so there is no
single-process run to compare with).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from manual_backprop.model import MLP
from torch_reference.compare import compare_tensors, policy_for


def single_process_gradients(engine: MLP, X: Tensor, y: Tensor) -> dict[str, Tensor]:
    """{"W1": dW1, ...}: the gradient of the whole global batch (X, y) at the engine's current weights."""
    with torch.inference_mode():
        return engine.loss_and_gradients(X, y, train=False).gradients()


@dataclass
class SingleProcessTally:
    """The worst distance seen per gradient between the data-parallel average and the single-process gradient."""

    checks: int = 0
    bitwise_checks: int = 0
    # name -> {"max_abs", "max_abs_in_eps_of_max" (max_abs / (eps · max |single-process gradient|)), "max_rel",
    # "max_ulp" (entry by entry: large where a sum cancels to almost zero)}
    worst: dict = field(default_factory=dict)

    def add(self, averaged: dict[str, Tensor], single: dict[str, Tensor]) -> dict[str, dict]:
        """Compare one step's gradients; returns this check's distances by name."""
        distances, exact = {}, True
        for name, reference in single.items():
            row = compare_tensors("dp", name, averaged[name], reference, policy_for(reference.dtype))
            scale = torch.finfo(reference.dtype).eps * reference.abs().max().item()
            distances[name] = {"max_abs": row.max_abs,
                               # the normwise view: entries that cancel to almost 0 have huge ulp distances
                               "max_abs_in_eps_of_max": row.max_abs / scale if scale > 0 else 0.0,
                               "max_rel": row.max_rel, "max_ulp": row.max_ulp}
            exact = exact and row.exact
            worst = self.worst.setdefault(name, dict.fromkeys(distances[name], 0.0))
            for key, value in distances[name].items():
                worst[key] = max(worst[key], value)
        self.checks += 1
        self.bitwise_checks += exact
        return distances

    def state_dict(self) -> dict:
        return asdict(self)
