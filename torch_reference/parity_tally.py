"""The worst parity seen per tensor over a training run, how many checks were bitwise equal throughout, and the
first check that left the tolerance policy (which tensor, at which step, by how much)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

METRICS = ("max_abs", "max_rel", "max_ulp", "normwise")


def tensor_key(row) -> str:
    """'layer1.dW', or 'loss' / 'lr' for the run-wide tensors."""
    return f"layer{row.layer}.{row.name}" if row.layer not in ("loss", "lr") else row.name


@dataclass
class ParityTally:
    checks: int = 0
    bitwise_checks: int = 0
    worst: dict = field(default_factory=dict)  # "layer1.dW" -> {"max_abs", "max_rel", "max_ulp", "normwise"}
    worst_weight_diff: float = 0.0
    failed_checks: int = 0
    # Added later (a checkpoint of an earlier run lacks them and restores with these defaults):
    tensors: int = 0  # tensors compared at the last check
    worst_normwise: float = 0.0  # the largest max|mine - ref| / max|ref| over every tensor and check
    first_failure: dict | None = None  # {"step", "tensor", "max_abs", "max_rel", "max_ulp", "normwise"}

    def add(self, rows, after_rows, step: int | None = None) -> bool:
        """Record one check: the step's rows, and the rows compared after the update (weights, optimizer state,
        learning rate). Returns whether every tensor of the check was bitwise equal."""
        every = [*rows, *after_rows]
        self.checks += 1
        self.tensors = len(every)
        bitwise = all(row.exact for row in every)
        self.bitwise_checks += bitwise
        failed = [row for row in every if not row.passed]
        self.failed_checks += bool(failed)
        if failed and self.first_failure is None:
            # the tensor furthest out, normwise (NaN first: a non-finite value is the worst there is)
            row = max(failed, key=lambda row: math.inf if math.isnan(row.normwise) else row.normwise)
            self.first_failure = {"step": step, "tensor": tensor_key(row),
                                  **{metric: getattr(row, metric) for metric in METRICS}}
        for row in every:
            seen = self.worst.setdefault(tensor_key(row), {})
            for metric in METRICS:
                seen[metric] = max(seen.get(metric, 0.0), getattr(row, metric))
        self.worst_normwise = max([self.worst_normwise, *(row.normwise for row in every)])
        weights = [row.max_abs for row in after_rows if row.name in ("W", "b")]
        self.worst_weight_diff = max([self.worst_weight_diff, *weights])
        return bitwise

    def worst_line(self) -> str:
        if not self.checks:
            return "no parity check yet"
        key, metrics = max(self.worst.items(), key=lambda item: (item[1]["max_ulp"], item[1]["max_abs"]))
        if metrics["max_ulp"] == 0:
            return f"all {self.checks} checks bitwise equal"
        verdict = (f"{self.failed_checks} OUT OF POLICY" if self.failed_checks
                   else f"within tolerance, worst normwise error {self.worst_normwise:.2e}")
        return (f"{self.bitwise_checks}/{self.checks} checks bitwise equal, {verdict}; worst elementwise {key}: "
                f"{metrics['max_ulp']:.0f} ulp, max rel {metrics['max_rel']:.2e}")
