"""Tensor-by-tensor comparison of two records (the engine's and the twin's), with a tolerance policy per dtype.

Each compared tensor gets: max absolute error, max relative error (robust near zero), the largest distance in
ulps, and whether the two are bitwise equal. Shapes and dtypes must match exactly; nothing is broadcast.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from manual_backprop.record import Record
from torch_reference.tensor_metrics import measure, normwise_error, relative_error, ulp_distance  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class TolerancePolicy:
    """Pass when every entry satisfies ``|mine - ref| <= atol + rtol * |ref|`` (and, if ``require_exact``,
    when the tensors are bitwise equal)."""

    rtol: float
    atol: float
    require_exact: bool = False


# float64: the targets of the foundation issue. float32: a one-step float32 computation is expected to sit
# within a few ulps of another formulation; these bounds catch real bugs (wrong sign, scale, missing term)
# and let float32 reformulations pass while exactness is reported separately, row by row.
DEFAULT_POLICIES = {
    torch.float64: TolerancePolicy(rtol=1e-10, atol=1e-12),
    torch.float32: TolerancePolicy(rtol=1e-4, atol=1e-6),
}


def policy_for(dtype: torch.dtype, require_exact: bool = False) -> TolerancePolicy:
    if dtype not in DEFAULT_POLICIES:
        raise ValueError(f"dtype: no tolerance policy for {dtype}; expected float32 or float64")
    policy = DEFAULT_POLICIES[dtype]
    return TolerancePolicy(policy.rtol, policy.atol, require_exact) if require_exact else policy


@dataclass
class TensorComparison:
    layer: int | str
    name: str
    shape: list[int]
    dtype: str
    max_abs: float
    max_rel: float
    max_ulp: float
    exact: bool
    passed: bool
    # max |mine - ref| / max |ref|: the error measured against the tensor's largest entry. Entry by entry (max_rel,
    # max_ulp) an entry that cancels to almost zero can be many ulps or a whole relative unit away after an honest
    # rounding difference; normwise it is one rounding error of the tensor's scale.
    normwise: float = 0.0


def compare_tensors(layer, name: str, mine: Tensor, ref: Tensor, policy: TolerancePolicy) -> TensorComparison:
    """Compare one tensor against its reference; refuse mismatched shapes, dtypes or devices outright."""
    where = f"layer {layer} {name}"
    if not isinstance(mine, Tensor) or not isinstance(ref, Tensor):
        raise TypeError(f"{where}: expected two tensors; got {type(mine).__name__} and {type(ref).__name__}")
    if mine.shape != ref.shape:
        raise ValueError(f"{where}: shapes differ, {tuple(mine.shape)} vs reference {tuple(ref.shape)} "
                         f"(no broadcasting)")
    if mine.dtype != ref.dtype:
        raise TypeError(f"{where}: dtypes differ, {mine.dtype} vs reference {ref.dtype}")
    if mine.device != ref.device:
        raise ValueError(f"{where}: devices differ, {mine.device} vs reference {ref.device}")
    if not mine.is_floating_point():
        raise TypeError(f"{where}: expected floating-point tensors; got {mine.dtype}")
    mine, ref = mine.detach(), ref.detach()
    stats = measure(mine, ref)  # the one definition of bitwise, max abs, max rel and ulp (tensor_metrics.py)
    exact = stats.bitwise
    if mine.numel() == 0:
        max_abs = max_rel = max_ulp = normwise = 0.0
        within = True
    elif not stats.finite:  # a policy on values says nothing about NaN or Inf: the row fails, shown as NaN
        max_abs = max_rel = max_ulp = normwise = math.nan
        within = False
    else:
        max_abs, max_rel, max_ulp = stats.max_abs, stats.max_rel, stats.max_ulp
        normwise = normwise_error(mine, ref, floor=torch.finfo(ref.dtype).tiny)
        within = bool(((mine - ref).abs() <= policy.atol + policy.rtol * ref.abs()).all())
    passed = within and (exact or not policy.require_exact)
    return TensorComparison(layer, name, list(mine.shape), str(mine.dtype).replace("torch.", ""),
                            max_abs, max_rel, max_ulp, exact, passed, normwise)


@dataclass
class ParityReport:
    """The rows of a comparison and the verdict; prints as a table and serialises to JSON."""

    rows: list[TensorComparison]
    policy: TolerancePolicy
    config: dict = field(default_factory=dict)
    numeric: list = field(default_factory=list)  # finite-difference rows (see finite_differences.py)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows) and all(row.passed for row in self.numeric)

    @property
    def exact_count(self) -> int:
        return sum(row.exact for row in self.rows)

    def to_json(self) -> dict:
        return {
            "config": self.config,
            "policy": asdict(self.policy),
            "tensors": [asdict(row) for row in self.rows],
            "numeric": [asdict(row) for row in self.numeric],
            "exact": self.exact_count,
            "total": len(self.rows),
            "passed": self.passed,
        }

    def write_json(self, path) -> None:
        with open(path, "w") as handle:
            json.dump(self.to_json(), handle, indent=2, allow_nan=True)
            handle.write("\n")

    def table(self) -> str:
        numeric_by_key = {(row.layer, row.name): row for row in self.numeric}
        headers = ["layer", "name", "shape", "max abs", "max rel", "max ulp", "exact"]
        if self.numeric:
            headers.append("fd max rel (checked/skipped)")
        headers.append("ok")
        lines = []
        for row in self.rows:
            cells = [str(row.layer), row.name, "x".join(map(str, row.shape)) or "()",
                     f"{row.max_abs:.3g}", f"{row.max_rel:.3g}", f"{row.max_ulp:.0f}",
                     "yes" if row.exact else "no"]
            if self.numeric:
                fd = numeric_by_key.get((row.layer, row.name.removeprefix("d")))
                cells.append("" if fd is None else f"{fd.max_rel:.2e} ({fd.checked}/{fd.skipped})"
                             + ("" if fd.passed else " FAIL"))
            cells.append("ok" if row.passed else "FAIL")
            lines.append(cells)
        widths = [max(len(headers[i]), *(len(cells[i]) for cells in lines)) for i in range(len(headers))]
        render = lambda cells: "  ".join(cell.rjust(width) for cell, width in zip(cells, widths))
        out = [render(headers), render(["-" * width for width in widths])]
        out += [render(cells) for cells in lines]
        verdict = "PASS" if self.passed else "FAIL"
        # Bitwise-equal tensors can still fail (both models overflowing to the same inf/NaN): say why it failed.
        failed = [row for row in self.rows if not row.passed]
        groups = {"non-finite values in": [row for row in failed if math.isnan(row.max_abs)],
                  "not bitwise equal (exact required):": [row for row in failed if not math.isnan(row.max_abs)
                                                          and self.policy.require_exact and not row.exact],
                  "out of tolerance:": [row for row in failed if not math.isnan(row.max_abs)
                                        and not (self.policy.require_exact and not row.exact)],
                  "finite differences disagree:": [row for row in self.numeric if not row.passed]}
        label_of = lambda row: "loss" if row.layer == "loss" else f"{row.layer}.{row.name}"
        why = "; ".join(f"{label} " + ", ".join(label_of(row) for row in rows)
                        for label, rows in groups.items() if rows)
        equal = f"{self.exact_count}/{len(self.rows)} tensors bitwise equal"
        if why:
            equal += f" but out of policy: {why}" if self.exact_count == len(self.rows) else f"; out of policy: {why}"
        out.append(f"{verdict}: {equal}; policy rtol={self.policy.rtol:g} atol={self.policy.atol:g}"
                   + (" exact required" if self.policy.require_exact else ""))
        return "\n".join(out)


def compare_records(mine: Record, ref: Record, policy: TolerancePolicy | None = None) -> ParityReport:
    """Walk both records tensor by tensor (loss first, then the input's D and dX when present, then each
    layer's Z, A, D, dA, dZ, dW, db)."""
    if policy is None:
        policy = policy_for(mine.loss.dtype)
    if len(mine.layers) != len(ref.layers):
        raise ValueError(f"records differ in depth: {len(mine.layers)} layers vs reference {len(ref.layers)}")
    rows = [compare_tensors("loss", "loss", mine.loss, ref.loss, policy)]
    if set(mine.input) != set(ref.input):
        raise ValueError(f"layer 0 (input): the records hold different tensors, {sorted(mine.input)} vs reference "
                         f"{sorted(ref.input)}")
    for layer, (ours, theirs) in enumerate(zip(mine.layers, ref.layers), start=1):
        if set(ours) != set(theirs):
            raise ValueError(f"layer {layer}: the records hold different tensors, {sorted(ours)} vs reference "
                             f"{sorted(theirs)}")
    ref_items = {(layer, name): tensor for layer, name, tensor in ref.items()}
    for layer, name, tensor in mine.items():
        rows.append(compare_tensors(layer, name, tensor, ref_items[(layer, name)], policy))
    return ParityReport(rows=rows, policy=policy)
