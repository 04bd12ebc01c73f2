"""How far one tensor is from another, element by element: the numbers every comparison in the project uses.

Bitwise equality is decided on the integer bit patterns, so -0.0 against +0.0 and two NaNs with different
payloads count as different (``torch.equal`` and ``assert_close`` call them equal). The ulp distance counts the
representable floats between two values (adjacent floats are 1 apart, +0.0 and -0.0 are 0 apart). The relative
error is CS231n's ``|a - b| / max(|a| + |b|, tiny)``: 0 for two zeros, 1 for a value against zero, never NaN.

``compare.py`` (the engine against its twin) and the public checker (``torch_reference.checker``) both measure
through :func:`measure`, so the project has one definition of each number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
            torch.bfloat16: torch.int16}
# Bins of the ulp histogram: 0, 1, 2-4, 5-16, more than 16 (the last also holds NaN/Inf mismatches).
ULP_BINS = ("0", "1", "2-4", "5-16", ">16")


def bit_patterns(x: Tensor) -> Tensor:
    """The tensor's bits as signed integers of the same width (a view of a contiguous copy)."""
    return x.detach().contiguous().view(INT_VIEW[x.dtype])


def bits_equal(mine: Tensor, ref: Tensor) -> Tensor:
    """Elementwise: are the two bit patterns identical?"""
    return bit_patterns(mine) == bit_patterns(ref)


def _ordered_bits(x: Tensor) -> Tensor:
    """Map floats to int64 so that adjacent floats map to adjacent integers (+0 and -0 both to 0)."""
    bits = bit_patterns(x).to(torch.int64)
    width = torch.finfo(x.dtype).bits
    magnitude = bits & ((1 << (width - 1)) - 1)  # drop the sign bit
    return torch.where(bits < 0, -magnitude, magnitude)


def ulp_distance(mine: Tensor, ref: Tensor) -> Tensor:
    """Elementwise number of representable floats between mine and ref, as float64 (exact below 2**53)."""
    a, b = _ordered_bits(mine), _ordered_bits(ref)
    same_sign = (a >= 0) == (b >= 0)
    # Within one sign the int64 difference cannot overflow; across signs add the magnitudes in float64.
    across = a.abs().to(torch.float64) + b.abs().to(torch.float64)
    return torch.where(same_sign, (a - b).abs().to(torch.float64), across)


def relative_error(mine: Tensor, ref: Tensor) -> Tensor:
    """|mine - ref| / max(|mine| + |ref|, tiny): CS231n's rel_error with a floor at the dtype's smallest
    normal number, so two zeros give 0 and a tiny value against zero gives 1, never NaN."""
    floor = torch.finfo(mine.dtype).tiny
    return (mine - ref).abs() / (mine.abs() + ref.abs()).clamp_min(floor)


def normwise_error(mine: Tensor, ref: Tensor, floor: float = 0.0) -> float:
    """max |mine - ref| / max(max |ref|, floor) (the infinity norms), computed in float64; 0 for two equal
    tensors and inf when the denominator is 0 and mine differs. Entries near zero cannot inflate it, unlike
    max_rel or max_ulp; ``floor`` keeps a tensor that is all near zero from being measured against itself."""
    if mine.numel() == 0:
        return 0.0
    difference = (mine.detach().double() - ref.detach().double()).abs().max().item()
    scale = max(ref.detach().double().abs().max().item(), floor)
    if difference == 0:
        return 0.0
    return difference / scale if scale > 0 else math.inf


@dataclass
class TensorStats:
    """Every number a report row shows about ``mine`` against ``ref`` (same shape and dtype)."""

    bitwise: bool
    max_abs: float
    max_rel: float
    max_ulp: float
    ulp_histogram: dict[str, int]
    differing: int  # elements whose bit patterns differ
    worst_index: list[int] | None  # of the largest ulp distance (a mismatch of NaN/Inf first); None when bitwise
    worst_mine: float | None
    worst_ref: float | None
    nan_mine: int
    nan_ref: int
    inf_mine: int
    inf_ref: int

    @property
    def finite(self) -> bool:
        return not (self.nan_mine or self.nan_ref or self.inf_mine or self.inf_ref)


def measure(mine: Tensor, ref: Tensor) -> TensorStats:
    """Compare two floating tensors of the same shape and dtype. Non-finite entries do not enter max_abs,
    max_rel or max_ulp when both sides hold the same value there (Inf against the same Inf, NaN against NaN);
    a non-finite entry against anything else makes them inf."""
    mine, ref = mine.detach(), ref.detach()
    equal_bits = bits_equal(mine, ref)
    differing = int((~equal_bits).sum())
    nan_mine, nan_ref = int(torch.isnan(mine).sum()), int(torch.isnan(ref).sum())
    inf_mine, inf_ref = int(torch.isinf(mine).sum()), int(torch.isinf(ref).sum())
    histogram = dict.fromkeys(ULP_BINS, 0)
    if mine.numel() == 0:
        return TensorStats(True, 0.0, 0.0, 0.0, histogram, 0, None, None, None, 0, 0, 0, 0)
    both_nan = torch.isnan(mine) & torch.isnan(ref)
    same_value = (mine == ref) | both_nan  # -0.0 == +0.0 here: their ulp distance is 0, their bits differ
    finite_pair = torch.isfinite(mine) & torch.isfinite(ref)
    broken = ~finite_pair & ~same_value  # a NaN or Inf on one side only, or Infs of opposite signs
    ulp = torch.where(finite_pair, ulp_distance(mine, ref), torch.zeros((), dtype=torch.float64))
    ulp = torch.where(broken, torch.full((), math.inf, dtype=torch.float64), ulp)
    abs_error = torch.where(finite_pair, (mine - ref).abs().double(), torch.zeros((), dtype=torch.float64))
    rel_error = torch.where(finite_pair, relative_error(mine, ref).double(), torch.zeros((), dtype=torch.float64))
    if bool(broken.any()):
        abs_error = torch.where(broken, torch.full((), math.inf, dtype=torch.float64), abs_error)
        rel_error = torch.where(broken, torch.full((), math.inf, dtype=torch.float64), rel_error)
    flat = ulp.flatten()
    histogram["0"] = int((flat == 0).sum())
    histogram["1"] = int((flat == 1).sum())
    histogram["2-4"] = int(((flat >= 2) & (flat <= 4)).sum())
    histogram["5-16"] = int(((flat >= 5) & (flat <= 16)).sum())
    histogram[">16"] = int((flat > 16).sum())
    worst_index = worst_mine = worst_ref = None
    if differing:
        # the element farthest in ulps; among equals (e.g. -0.0 against +0.0, 0 ulp apart) the first differing one
        key = torch.where(~equal_bits.flatten(), flat, torch.full((), -1.0, dtype=torch.float64))
        position = int(torch.argmax(key))
        worst_index = list(map(int, torch.unravel_index(torch.tensor(position), mine.shape))) if mine.dim() else []
        worst_mine = float(mine.flatten()[position])
        worst_ref = float(ref.flatten()[position])
    return TensorStats(
        bitwise=differing == 0, max_abs=float(abs_error.max()), max_rel=float(rel_error.max()),
        max_ulp=float(flat.max()), ulp_histogram=histogram, differing=differing, worst_index=worst_index,
        worst_mine=worst_mine, worst_ref=worst_ref, nan_mine=nan_mine, nan_ref=nan_ref, inf_mine=inf_mine,
        inf_ref=inf_ref)
