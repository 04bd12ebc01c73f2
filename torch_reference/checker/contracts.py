"""Contracts: what each compared tensor must satisfy, written as short strings and chosen per tensor by pattern.

=================  ===========================================================================================
``"bitwise"``      the bit patterns are identical (-0.0 against +0.0 and NaN payloads count)
``"ulp<=K"``       no element is more than K representable floats away from the reference
``"rtol=R,atol=A"`` every element: ``|mine - ref| <= A + R |ref|`` (either part may be left out: 0)
``"norm<=E"``      normwise: ``max|mine - ref| / max|ref| <= E`` (the default in float64, with E = 1e-10)
``"noise"``        the float32 default, "no worse than autograd's own rounding": see :class:`Noise`
``"noise<=K"``     the same with factor K
=================  ===========================================================================================

The noise floor, after the FlashAttention and TorchDynamo test suites: float32 cannot be compared with a fixed
tolerance that fits every op (a sum of 10^6 terms rounds far more than a ReLU), so the yardstick is autograd's
own float32 result. Both sides are measured against the float64 reference run from the same inputs, and the
user's error may be at most ``K x`` autograd's error, plus ``2 eps |ref|_max`` so that an op autograd happens to
compute exactly (error 0) still admits a result one rounding away. K = 4: two correct float32 formulations
each carry a random-walk rounding error of similar size, and over the few elements of a small tensor (a bias
gradient of 3 entries) the ratio of their maxima swings more than over large ones (FlashAttention's factor 2 is
measured on outputs of millions of elements); 4 keeps every correct reformulation we tried inside while a
formula error, wrong by O(1) relative, is still 10^5 times outside.

Patterns: a dict ``{"*.dW": "bitwise", "loss": "ulp<=2"}`` sets contracts by tensor name (``fnmatch`` rules;
the last matching pattern wins); tensors no pattern matches take the dtype's default.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor

from torch_reference.tensor_metrics import TensorStats, normwise_error

NOISE_FACTOR = 4.0
NOISE_ABS_EPS = 2.0  # the absolute term, in eps of the reference's largest magnitude
FLOAT64_NORM = 1e-10


class ContractError(ValueError):
    """A contract string or pattern that cannot be understood."""


@dataclass(frozen=True)
class Outcome:
    passed: bool
    measured: str  # what was measured against what was allowed, in words
    mine_error: float | None = None  # noise: max |mine - ref64|
    ref_error: float | None = None  # noise: max |ref - ref64|
    allowed: float | None = None


class Contract:
    spec: str

    def check(self, mine: Tensor, ref: Tensor, ref64: Tensor | None, stats: TensorStats,
              scale: float = 0.0) -> Outcome:
        """stats: ``measure(mine, ref)``, already computed for the report's row (bits and ulps are not counted
        twice). scale: the magnitude of the quantities the tensor is computed from (the largest reference tensor of
        the check, the upstream gradient); a floor for the normwise measure, so a gradient that is analytically
        zero (cancellation noise on both sides) is not judged relative to its own noise."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.spec


def _same_non_finite(mine: Tensor, ref: Tensor) -> bool:
    """NaN where the reference has NaN, the same Inf where it has Inf (value contracts compare the rest)."""
    if mine.numel() == 0 or (bool(torch.isfinite(mine.sum())) and bool(torch.isfinite(ref.sum()))):
        return True  # both finite everywhere (a finite sum has no NaN or Inf term)
    return bool(torch.equal(torch.isnan(mine), torch.isnan(ref))
                and torch.equal(torch.where(torch.isinf(ref), ref, 0), torch.where(torch.isinf(mine), mine, 0)))


def _max_abs(x: Tensor) -> float:
    return float(_finite_part(x).abs().max()) if x.numel() else 0.0


def _finite_part(x: Tensor) -> Tensor:
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):  # a finite sum: no NaN or Inf anywhere (one cheap pass)
        return x
    return torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype, device=x.device))


@dataclass(frozen=True)
class Bitwise(Contract):
    spec: str = "bitwise"

    def check(self, mine, ref, ref64, stats, scale=0.0):
        return Outcome(stats.bitwise, "bitwise equal" if stats.bitwise
                       else f"{stats.differing} of {mine.numel()} elements differ in their bits")


@dataclass(frozen=True)
class Ulp(Contract):
    limit: float
    spec: str = ""

    def check(self, mine, ref, ref64, stats, scale=0.0):
        # measure() gives a NaN or Inf on one side only an infinite distance, and the same one on both sides 0
        if math.isinf(stats.max_ulp):
            return Outcome(False, "NaN or Inf where the reference has none (or the reverse)")
        return Outcome(stats.max_ulp <= self.limit, f"max {stats.max_ulp:.0f} ulp, allowed {self.limit:.0f}")


@dataclass(frozen=True)
class Tolerance(Contract):
    rtol: float
    atol: float
    spec: str = ""

    def check(self, mine, ref, ref64, stats, scale=0.0):
        if not _same_non_finite(mine, ref):
            return Outcome(False, "NaN or Inf where the reference has none (or the reverse)")
        mine_f, ref_f = _finite_part(mine).double(), _finite_part(ref).double()
        excess = (mine_f - ref_f).abs() - (self.atol + self.rtol * ref_f.abs())
        bad = int((excess > 0).sum())
        return Outcome(bad == 0, f"{bad} element(s) outside atol={self.atol:g} + rtol={self.rtol:g}·|ref|"
                       if bad else f"every element within atol={self.atol:g} + rtol={self.rtol:g}·|ref|")


@dataclass(frozen=True)
class Norm(Contract):
    limit: float
    spec: str = ""

    def check(self, mine, ref, ref64, stats, scale=0.0):
        if not _same_non_finite(mine, ref):
            return Outcome(False, "NaN or Inf where the reference has none (or the reverse)")
        error = normwise_error(_finite_part(mine), _finite_part(ref), floor=scale)
        return Outcome(error <= self.limit, f"normwise error {error:.2e}, allowed {self.limit:.0e}"
                       + (" (relative to the check's scale, as this tensor is near zero)"
                          if scale > _max_abs(ref) else ""))


@dataclass(frozen=True)
class Noise(Contract):
    factor: float = NOISE_FACTOR
    spec: str = "noise"

    def check(self, mine, ref, ref64, stats, scale=0.0):
        if ref64 is None:
            raise ContractError("the noise contract needs the float64 reference; none was computed")
        if not _same_non_finite(mine, ref64.to(mine.dtype)):
            return Outcome(False, "NaN or Inf where the float64 reference has none (or the reverse)")
        exact = _finite_part(ref64).double()
        mine_error = (_finite_part(mine).double() - exact).abs().max().item() if mine.numel() else 0.0
        ref_error = (_finite_part(ref).double() - exact).abs().max().item() if mine.numel() else 0.0
        scale = exact.abs().max().item() if mine.numel() else 0.0
        allowed = self.factor * ref_error + NOISE_ABS_EPS * torch.finfo(mine.dtype).eps * scale
        return Outcome(mine_error <= allowed,
                       f"error vs float64 {mine_error:.2e}, autograd's {ref_error:.2e}, allowed {allowed:.2e} "
                       f"({self.factor:g}x autograd's + {NOISE_ABS_EPS:g} eps·max|ref|)",
                       mine_error, ref_error, allowed)


_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def parse(spec: str | Contract) -> Contract:
    """A contract from its string form (see the module docstring); a Contract passes through."""
    if isinstance(spec, Contract):
        return spec
    if not isinstance(spec, str):
        raise ContractError(f"contract: expected a string such as 'bitwise', 'ulp<=4', 'rtol=1e-5,atol=1e-8', "
                            f"'norm<=1e-10' or 'noise'; got {spec!r}")
    text = spec.replace(" ", "").lower()
    if text == "bitwise":
        return Bitwise()
    if text == "noise":
        return Noise()
    if match := re.fullmatch(r"noise<=" + _NUMBER, text):
        return Noise(float(match[1]), spec=text)
    if match := re.fullmatch(r"ulp<=" + _NUMBER, text):
        return Ulp(float(match[1]), spec=text)
    if match := re.fullmatch(r"norm<=" + _NUMBER, text):
        return Norm(float(match[1]), spec=text)
    parts = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    if parts and set(parts) <= {"rtol", "atol"} and len(parts) == len(text.split(",")):
        try:
            rtol, atol = float(parts.get("rtol", 0)), float(parts.get("atol", 0))
        except ValueError:
            rtol = atol = math.nan
        if math.isfinite(rtol) and math.isfinite(atol) and rtol >= 0 and atol >= 0:
            return Tolerance(rtol, atol, spec=text)
    raise ContractError(f"contract {spec!r}: expected 'bitwise', 'ulp<=K', 'rtol=R,atol=A', 'norm<=E', 'noise' "
                        f"or 'noise<=K' (K, R, A, E non-negative numbers)")


def default_for(dtype: torch.dtype) -> Contract:
    """float64: normwise 1e-10 against the reference; float32 (and lower): the noise floor."""
    return Norm(FLOAT64_NORM, spec=f"norm<={FLOAT64_NORM:g}") if dtype == torch.float64 else Noise()


class ContractBook:
    """Contracts by tensor name: patterns in order (the last match wins), else the dtype's default; an ``exact``
    book makes every tensor bitwise unless a pattern says otherwise."""

    def __init__(self, patterns: dict[str, str | Contract] | str | Contract | None = None, exact: bool = False):
        if isinstance(patterns, (str, Contract)):
            patterns = {"*": patterns}
        if patterns is not None and not isinstance(patterns, dict):
            raise ContractError(f"contracts: expected a dict {{pattern: contract}} or one contract string; got "
                                f"{type(patterns).__name__}")
        self.patterns = [(str(pattern), parse(spec)) for pattern, spec in (patterns or {}).items()]
        self.exact = exact

    def for_tensor(self, name: str, dtype: torch.dtype) -> Contract:
        chosen = Bitwise() if self.exact else default_for(dtype)
        for pattern, contract in self.patterns:
            if fnmatch.fnmatchcase(name, pattern):
                chosen = contract
        return chosen

    def unused_patterns(self, names: list[str]) -> list[str]:
        """Patterns that matched no tensor (most likely a typo the user wants to hear about)."""
        return [pattern for pattern, _ in self.patterns if not any(fnmatch.fnmatchcase(n, pattern) for n in names)]
