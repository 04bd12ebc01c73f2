"""Building report rows: structure first (shape, dtype, device, finiteness), then the numbers and the contract,
and the triage that tells rounding from a formula error by re-running in float64."""

from __future__ import annotations

import torch
from torch import Tensor

from torch_reference.checker.contracts import NOISE_FACTOR, Contract
from torch_reference.checker.report import Row, Triage
from torch_reference.tensor_metrics import bits_equal, measure, normwise_error, ulp_distance

FLOAT64_AGREEMENT = 1e-10  # normwise: a float64 re-run this close to the float64 reference means "rounding"


def structural_row(name: str, kind: str, verdict: str, detail: str, tensor: Tensor | None = None,
                   step: int | None = None) -> Row:
    shape = list(tensor.shape) if isinstance(tensor, Tensor) else []
    dtype = str(tensor.dtype).replace("torch.", "") if isinstance(tensor, Tensor) else ""
    return Row(name=name, kind=kind, shape=shape, dtype=dtype, contract="", passed=False, verdict=verdict,
               detail=detail, step=step)


def compare_row(name: str, kind: str, mine, ref: Tensor, ref64: Tensor | None, contract: Contract,
                step: int | None = None, scale: float = 0.0) -> Row:
    """One row: ``mine`` (the user's) against ``ref`` (autograd's at the same dtype); ``ref64`` is the float64
    reference (the noise contract needs it). Structural problems give a failing row with their own verdict."""
    if not isinstance(mine, Tensor):
        return structural_row(name, kind, "wrong type", f"expected a tensor; got {type(mine).__name__}", step=step)
    if tuple(mine.shape) != tuple(ref.shape):
        return structural_row(name, kind, "shape mismatch", f"yours has shape {tuple(mine.shape)}, the reference "
                              f"{tuple(ref.shape)} (nothing is broadcast)", mine, step)
    if mine.dtype != ref.dtype:
        return structural_row(name, kind, "dtype mismatch", f"yours is {mine.dtype}, the reference {ref.dtype}",
                              mine, step)
    if mine.device != ref.device:
        return structural_row(name, kind, "device mismatch", f"yours is on {mine.device}, the reference on "
                              f"{ref.device}", mine, step)
    mine = mine.detach()
    stats = measure(mine, ref)
    row = Row(name=name, kind=kind, shape=list(mine.shape), dtype=str(mine.dtype).replace("torch.", ""),
              contract=str(contract), passed=False, verdict="", detail="", bitwise=stats.bitwise,
              max_abs=stats.max_abs, max_rel=stats.max_rel, max_ulp=stats.max_ulp,
              ulp_histogram=stats.ulp_histogram, differing=stats.differing, numel=mine.numel(),
              worst_index=stats.worst_index, worst_mine=stats.worst_mine, worst_ref=stats.worst_ref,
              nan_mine=stats.nan_mine, nan_ref=stats.nan_ref, inf_mine=stats.inf_mine, inf_ref=stats.inf_ref,
              step=step)
    mine_bad = (~torch.isfinite(mine) & torch.isfinite(ref)) if not stats.finite else None
    if mine_bad is not None and bool(mine_bad.any()):
        row.verdict = "non-finite"
        row.detail = (f"{stats.nan_mine} NaN and {stats.inf_mine} Inf in yours where the reference is finite "
                      f"({int(mine_bad.sum())} such elements)")
        return row
    outcome = contract.check(mine, ref, ref64, stats, scale=scale)
    row.passed = outcome.passed
    row.detail = outcome.measured
    row.error_vs_float64, row.ref_error_vs_float64 = outcome.mine_error, outcome.ref_error
    row.verdict = "bitwise" if stats.bitwise else "within contract" if outcome.passed else "outside contract"
    return row


def rounding_cause(mine: Tensor, ref: Tensor) -> str:
    """The likely reason two float32 results of a correct formula differ, read from where and how they differ."""
    differ = ~bits_equal(mine, ref)
    if not bool(differ.any()):
        return "none (bitwise equal)"
    zeros = (mine == 0) & (ref == 0)
    if bool((zeros | ~differ).all()):
        return ("the sign of zero: -0.0 against +0.0 (e.g. x * mask against where(mask, x, 0), or 0 * negative); "
                "equal as numbers, different bits")
    nans = torch.isnan(mine) & torch.isnan(ref)
    if bool((nans | ~differ).all()):
        return "NaN payloads: both are NaN at the same places, with different bit patterns"
    finite = torch.isfinite(mine) & torch.isfinite(ref)
    ulps = ulp_distance(torch.where(finite, mine, 0), torch.where(finite, ref, 0))
    fraction = float(differ.float().mean())
    if float(ulps.max()) <= 2 and fraction < 0.25:
        return (f"single roundings in {fraction:.0%} of the elements (at most {float(ulps.max()):.0f} ulp): the "
                "same terms associated differently, or a fused multiply-add where the reference rounds twice")
    return (f"a different order of additions in {fraction:.0%} of the elements (up to {float(ulps.max()):.0f} ulp): "
            "a reduction or matrix product summed in another order or split into other blocks")


def triage_row(row: Row, mine: Tensor, ref: Tensor, ref64: Tensor, mine64: Tensor | None,
               other_refs64: dict[str, Tensor] | None = None, other_mine64: dict[str, Tensor] | None = None,
               scale: float = 0.0) -> Triage:
    """Decide why ``row`` left its contract: ``mine64`` is the user's op re-run in float64 from the float64
    copies of the inputs it received, ``ref64`` the reference's float64 result from the same inputs.
    Sets ``row.verdict`` and returns the explanation."""
    if row.verdict not in ("outside contract", "non-finite"):
        return Triage(row.label, row.verdict, f"{row.label}: {row.verdict}: {row.detail}")
    if mine64 is None or not isinstance(mine64, Tensor) or tuple(mine64.shape) != tuple(ref64.shape):
        row.verdict = "formula error"
        return Triage(row.label, "formula error", f"{row.label}: the float64 re-run of your op gives no tensor "
                      f"of the reference's shape, so the float32 difference cannot be rounding")
    error64 = normwise_error(mine64, ref64, floor=scale)
    mine_error = (mine.detach().double() - ref64.double()).abs()
    ref_error = (ref.detach().double() - ref64.double()).abs()
    if error64 <= FLOAT64_AGREEMENT and row.verdict != "non-finite":
        row.verdict = "rounding"
        cause = rounding_cause(mine, ref)
        worst_mine, worst_ref = _max_finite(mine_error), _max_finite(ref_error)
        ratio = f"{worst_mine / worst_ref:.1f}x" if worst_ref > 0 else "more than"
        explanation = (f"{row.label} is rounding, not a formula error: re-run in float64 from the same inputs, yours "
                       f"agrees with the reference to {error64:.1e} (normwise, <= {FLOAT64_AGREEMENT:g}). In "
                       f"{row.dtype} yours is {worst_mine:.2e} from float64 (max abs), autograd's {worst_ref:.2e} "
                       f"({ratio} autograd's). Likely cause: {cause}."
                       + (" Your formula is right but less accurate than autograd's in this precision (a sequential "
                          "sum such as ones @ x, or a cancellation such as E[x^2] - E[x]^2, rounds more than "
                          "torch's pairwise sums)." if worst_ref > 0 and worst_mine > NOISE_FACTOR * worst_ref
                          else ""))
        return Triage(row.label, "rounding", explanation, error64, None, row.worst_index, row.worst_mine,
                      row.worst_ref, cause)
    if row.verdict == "non-finite" and error64 <= FLOAT64_AGREEMENT:
        row.verdict = "non-finite"
        return Triage(row.label, "non-finite", f"{row.label}: your {row.dtype} result overflows to NaN/Inf where "
                      f"autograd's does not, though in float64 yours agrees ({error64:.1e}): an intermediate value "
                      f"exceeds the {row.dtype} range (rescale it, e.g. subtract the max before exp)", error64)
    if other_refs64:
        for other, tensor in other_refs64.items():
            # A wrong name is a swap (what came back under the other name is this one's gradient) or a gradient
            # filed under this name while the other is missing; a sign error that happens to equal another
            # input's gradient (the two sides of a difference) is still a formula error.
            theirs = (other_mine64 or {}).get(other)
            swapped = theirs is None or (isinstance(theirs, Tensor) and theirs.shape == ref64.shape
                                         and normwise_error(theirs, ref64, floor=scale) <= FLOAT64_AGREEMENT)
            if swapped and tensor.shape == mine64.shape and normwise_error(mine64, tensor, floor=scale) \
                    <= FLOAT64_AGREEMENT:
                row.verdict = "wrong name"
                return Triage(row.label, "wrong name", f"{row.label} holds the gradient of {other!r}: in float64 it "
                              f"equals the reference's {other} (returned under the wrong name)", error64)
    row.verdict = "formula error" if row.verdict != "non-finite" else "non-finite"
    position = int(torch.argmax(torch.nan_to_num((mine64.double() - ref64.double()).abs(), nan=float("inf"))))
    index = list(map(int, torch.unravel_index(torch.tensor(position), ref64.shape))) if ref64.dim() else []
    worst_mine, worst_ref = _max_finite(mine_error), _max_finite(ref_error)
    farther = "yours" if worst_mine >= worst_ref else "autograd's"
    explanation = (f"{row.label} is a formula error: re-run in float64 from the same inputs, yours is still "
                   f"{error64:.2e} (normwise) from the reference, far above rounding (<= {FLOAT64_AGREEMENT:g}). "
                   f"Farther from float64: {farther} ({worst_mine:.2e} against autograd's {worst_ref:.2e}). "
                   f"Worst element {index}: yours {float(mine64.flatten()[position]):.6g}, "
                   f"the reference {float(ref64.flatten()[position]):.6g} (float64).")
    return Triage(row.label, row.verdict, explanation, error64, farther, index,
                  float(mine64.flatten()[position]), float(ref64.flatten()[position]))


def _max_finite(values: Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.max()) if finite.numel() else float("inf")
