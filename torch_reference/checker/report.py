"""The checker's report: one row per tensor in graph order, the first divergence and why, and the environment.

Verdicts, per row:
    bitwise           the bit patterns are identical
    within contract   not bitwise, but the row's contract holds
    rounding          outside the contract, but the same op re-run in float64 on both sides agrees: the formula
                      is right and the float32 difference comes from the order of operations
    formula error     outside the contract, and the float64 re-run disagrees too: the math is wrong
    inherited         (networks) outside the contract, but the op is right on the inputs it received: the
                      difference comes from an earlier divergence carried down the graph
    shape mismatch, dtype mismatch, device mismatch, missing gradient, unexpected gradient, gradient for a
    non-differentiable input, wrong name, non-finite: the structure is wrong (the comparison cannot start)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from torch_reference.checker.fingerprint import BITWISE_SCOPE, describe

STRUCTURAL = ("shape mismatch", "dtype mismatch", "device mismatch", "missing gradient", "unexpected gradient",
              "gradient for a non-differentiable input", "wrong name", "non-finite", "wrong type", "unexpected state")
FAILING = ("formula error", "rounding", "inherited") + STRUCTURAL


@dataclass
class Row:
    """One compared tensor. ``mine`` is the user's side, ``ref`` autograd's at the same dtype."""

    name: str
    kind: str  # "forward", "loss", "gradient", "parameter" or "state"
    shape: list[int]
    dtype: str
    contract: str
    passed: bool
    verdict: str
    detail: str  # what the contract measured, or what is wrong with the structure
    bitwise: bool = False
    max_abs: float | None = None
    max_rel: float | None = None
    max_ulp: float | None = None
    ulp_histogram: dict | None = None
    differing: int | None = None
    numel: int = 0
    worst_index: list[int] | None = None
    worst_mine: float | None = None
    worst_ref: float | None = None
    nan_mine: int = 0
    nan_ref: int = 0
    inf_mine: int = 0
    inf_ref: int = 0
    error_vs_float64: float | None = None  # noise contract: max |mine - ref64|
    ref_error_vs_float64: float | None = None  # noise contract: max |ref - ref64|
    step: int | None = None  # training trajectories: the step after which the tensor was compared

    @property
    def label(self) -> str:
        return self.name if self.step is None else f"step {self.step} {self.name}"


@dataclass
class Triage:
    """Why the first divergence diverged: the op re-run in float64 on both sides from the same float64 inputs."""

    row: str
    verdict: str  # "rounding" or "formula error" (or a structural verdict, copied from the row)
    explanation: str
    float64_normwise_error: float | None = None  # the user's float64 result against the float64 reference
    farther_side: str | None = None  # formula error: "yours" or "autograd's" (farther from float64)
    worst_index: list[int] | None = None
    worst_mine: float | None = None
    worst_ref: float | None = None
    cause: str | None = None  # rounding: the likely cause


@dataclass
class Report:
    level: str  # "op", "layers" or "training"
    title: str
    rows: list[Row]
    fingerprint: dict
    triage: Triage | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    @property
    def first_divergence(self) -> Row | None:
        return next((row for row in self.rows if not row.passed), None)

    @property
    def structural(self) -> bool:
        """True when a row failed for its structure (shape, dtype, names...), not for its values."""
        return any(row.verdict in STRUCTURAL for row in self.rows)

    @property
    def bitwise_count(self) -> int:
        return sum(row.bitwise for row in self.rows)

    def summary(self) -> str:
        """One line: PASS/FAIL, the counts, and the first divergence with its verdict."""
        total = len(self.rows)
        head = (f"{self.bitwise_count}/{total} tensors bitwise equal, "
                f"{sum(row.passed for row in self.rows)}/{total} within contract")
        first = self.first_divergence
        if first is None:
            return f"PASS ({self.title}): {head}"
        verdict = self.triage.verdict if self.triage is not None and self.triage.row == first.label else first.verdict
        return f"FAIL ({self.title}): first divergence {first.label}: {verdict}; {head}"

    def failure_message(self) -> str:
        """What a failing test shows: the first divergence and its verdict first, then the table."""
        lines = [self.summary()]
        if self.triage is not None:
            lines.append(f"  why: {self.triage.explanation}")
        first = self.first_divergence
        if first is not None:
            lines.append(f"  {first.label}: {first.detail}")
            if first.worst_index is not None:
                lines.append(f"  farthest element in ulps {first.name}{first.worst_index}: yours {first.worst_mine!r}, "
                             f"autograd {first.worst_ref!r}")
        lines += ["", self.table()]
        return "\n".join(lines)

    def table(self) -> str:
        headers = ["tensor", "shape", "dtype", "contract", "bitwise", "max abs", "max rel", "max ulp",
                   "ulp 0/1/2-4/5-16/>16", "differ", "NaN/Inf", "verdict"]
        lines = []
        for row in self.rows:
            hist = "/".join(str(row.ulp_histogram[key]) for key in row.ulp_histogram) if row.ulp_histogram else ""
            non_finite = (f"{row.nan_mine}/{row.inf_mine}" + (f" (ref {row.nan_ref}/{row.inf_ref})"
                                                               if (row.nan_ref, row.inf_ref) != (0, 0) else ""))
            lines.append([row.label, "x".join(map(str, row.shape)) or "()", row.dtype, row.contract,
                          "yes" if row.bitwise else "no", _number(row.max_abs), _number(row.max_rel),
                          _number(row.max_ulp, ".0f"), hist,
                          "" if row.differing is None else f"{row.differing}/{row.numel}", non_finite,
                          row.verdict if row.passed else f"FAIL: {row.verdict}"])
        widths = [max(len(headers[i]), *(len(cells[i]) for cells in lines)) if lines else len(headers[i])
                  for i in range(len(headers))]
        render = lambda cells: "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
        out = [render(headers), render(["-" * width for width in widths]), *map(render, lines)]
        out.append(self.summary())
        if self.triage is not None:
            out.append(f"why: {self.triage.explanation}")
        out += [f"note: {note}" for note in self.notes]
        out.append(f"measured on: {describe(self.fingerprint)}; {BITWISE_SCOPE}")
        return "\n".join(out)

    def to_json(self) -> dict:
        first = self.first_divergence
        return {"level": self.level, "title": self.title, "passed": self.passed,
                "summary": self.summary(),
                "first_divergence": None if first is None else first.label,
                "triage": None if self.triage is None else asdict(self.triage),
                "rows": [_clean(asdict(row)) for row in self.rows], "notes": self.notes,
                "fingerprint": self.fingerprint, "bitwise_scope": BITWISE_SCOPE}

    def write_json(self, path) -> None:
        with open(path, "w") as handle:
            json.dump(self.to_json(), handle, indent=2)
            handle.write("\n")

    def __str__(self) -> str:
        return self.table()


def _number(value: float | None, form: str = ".3g") -> str:
    if value is None:
        return ""
    return "inf" if math.isinf(value) else "nan" if math.isnan(value) else format(value, form)


def _clean(value):
    """JSON has no inf or NaN: write them as strings, so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value
