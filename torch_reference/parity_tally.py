"""The worst parity seen per tensor over a training run, and how many checks were bitwise equal throughout."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ParityTally:
    checks: int = 0
    bitwise_checks: int = 0
    worst: dict = field(default_factory=dict)  # "layer1.dW" -> {"max_abs", "max_rel", "max_ulp"}
    worst_weight_diff: float = 0.0
    failed_checks: int = 0

    def add(self, rows, after_rows) -> bool:
        """Record one check: the step's rows, and the rows compared after the update (weights, optimizer state,
        learning rate). Returns whether every tensor of the check was bitwise equal."""
        every = [*rows, *after_rows]
        self.checks += 1
        bitwise = all(row.exact for row in every)
        self.bitwise_checks += bitwise
        self.failed_checks += not all(row.passed for row in every)
        for row in every:
            key = f"layer{row.layer}.{row.name}" if row.layer not in ("loss", "lr") else row.name
            seen = self.worst.setdefault(key, {"max_abs": 0.0, "max_rel": 0.0, "max_ulp": 0.0})
            for metric in seen:
                seen[metric] = max(seen[metric], getattr(row, metric))
        weights = [row.max_abs for row in after_rows if row.name in ("W", "b")]
        self.worst_weight_diff = max([self.worst_weight_diff, *weights])
        return bitwise

    def worst_line(self) -> str:
        if not self.checks:
            return "no parity check yet"
        key, metrics = max(self.worst.items(), key=lambda item: (item[1]["max_ulp"], item[1]["max_abs"]))
        if metrics["max_ulp"] == 0:
            return f"all {self.checks} checks bitwise equal"
        return (f"{self.bitwise_checks}/{self.checks} checks bitwise equal, worst {key}: "
                f"{metrics['max_ulp']:.0f} ulp, max rel {metrics['max_rel']:.2e}")
