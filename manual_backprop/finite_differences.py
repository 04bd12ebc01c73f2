"""A third, independent oracle: central finite differences of the engine's own loss, in float64.

dL/dp ~ (L(p + h) - L(p - h)) / (2h). It needs only forward passes, so it checks the hand-written backward
without trusting autograd either. Where a step moves some pre-activation across a ReLU-like kink (or a hinge
margin across 0), the two sides lie on different linear pieces and the difference quotient means nothing:
such entries are counted as skipped, never as passed.

With dropout (``train=True``) the loss is a fixed function only for fixed masks: every pass draws its masks from
the same generator state, so the quotient differentiates the very dropped-out network whose gradient the
backward computed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig
from manual_backprop.model import MLP

FLOAT64_EPS = torch.finfo(torch.float64).eps


@dataclass
class NumericCheck:
    """The result for one parameter tensor ("W" or "b" of one layer)."""

    layer: int
    name: str
    checked: int  # entries compared
    skipped: int  # entries whose +-h step crossed a kink
    max_abs: float  # max |numeric - analytic| over the checked entries
    max_rel: float  # max |numeric - analytic| / max(|numeric| + |analytic|, tiny)
    rtol: float
    atol: float
    passed: bool


def float64_copy(model: MLP) -> MLP:
    """The same network in float64 (the oracle always runs in float64, whatever the model's dtype)."""
    config = MLPConfig.from_dict({**model.config.to_dict(), "dtype": "float64"})
    params = {name: tensor.detach().to(torch.float64).clone() for name, tensor in model.params.items()}
    return MLP(config, params)


@contextlib.contextmanager
def _same_masks_every_pass(device: torch.device):
    """Yield a function that puts torch's default generator for ``device`` back to its state at entry (so the
    next training pass draws the same dropout masks); on exit the state is what it was at entry."""
    cuda = device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[index] if cuda else [], device_type="cuda"):  # the CPU generator always
        state = torch.cuda.get_rng_state(index) if cuda else torch.get_rng_state()

        def rewind():
            if cuda:
                torch.cuda.set_rng_state(state, index)
            else:
                torch.set_rng_state(state)
        yield rewind


def check_gradients(model: MLP, X: Tensor, target: Tensor, *, step: float = 1e-6,
                    max_entries: int = 24, all_entries_below: int = 2000,
                    generator: torch.Generator | None = None, train: bool = False) -> list[NumericCheck]:
    """Compare the float64 engine's gradients with central differences, parameter tensor by tensor.

    Networks with at most ``all_entries_below`` parameters are checked entry by entry; larger ones at
    ``max_entries`` entries per tensor drawn with ``generator``.
    Tolerance for step h: ``atol = 50 eps max(1, |L|) / h`` bounds the rounding error of the quotient
    (each loss carries about eps |L| of it, divided by 2h), ``rtol = 1e-6`` covers the truncation error
    h^2 |f'''| / 6 of smooth pieces with room to spare.
    ``train=True`` checks the training pass (the config's dropout applied), every pass with the masks drawn
    from torch's default generator as it is at the call; the generator is left as it was.
    """
    with _same_masks_every_pass(X.device) as rewind:
        return _check(model, X, target, step, max_entries, all_entries_below, generator, train, rewind)


def _check(model, X, target, step, max_entries, all_entries_below, generator, train, rewind) -> list[NumericCheck]:
    model64 = float64_copy(model)
    X64 = X.to(torch.float64)
    target64 = target.to(torch.float64) if target.is_floating_point() else target
    rewind()
    base = model64.forward_pass(X64, target64, train=train)
    analytic = model64.backward_pass(base).gradients()
    base_pattern = model64.kink_pattern(base)
    loss_scale = max(1.0, abs(base.loss.item()))
    atol = 50 * FLOAT64_EPS * loss_scale / step
    rtol = 1e-6

    total = sum(p.numel() for p in model64.params.values())
    checks = []
    for name, param in model64.params.items():
        flat = param.view(-1)  # params are contiguous, so writes through this view change the model
        if total <= all_entries_below:
            indices = range(flat.numel())
        else:
            count = min(max_entries, flat.numel())
            indices = torch.randperm(flat.numel(), generator=generator)[:count].tolist()
        grad = analytic[name].reshape(-1)
        checked = skipped = 0
        max_abs = max_rel = 0.0
        all_within = True
        for index in indices:
            original = flat[index].item()
            flat[index] = original + step
            rewind()
            plus = model64.forward_pass(X64, target64, train=train)
            flat[index] = original - step
            rewind()
            minus = model64.forward_pass(X64, target64, train=train)
            flat[index] = original
            if not (torch.equal(model64.kink_pattern(plus), base_pattern)
                    and torch.equal(model64.kink_pattern(minus), base_pattern)):
                skipped += 1
                continue
            numeric = (plus.loss.item() - minus.loss.item()) / (2 * step)
            exact = grad[index].item()
            error = abs(numeric - exact)
            max_abs = max(max_abs, error)
            max_rel = max(max_rel, error / max(abs(numeric) + abs(exact), torch.finfo(torch.float64).tiny))
            all_within &= error <= atol + rtol * abs(exact)
            checked += 1
        checks.append(NumericCheck(layer=int(name[1:]), name=name[0], checked=checked, skipped=skipped,
                                   max_abs=max_abs, max_rel=max_rel, rtol=rtol, atol=atol,
                                   passed=all_within and checked > 0))
    return checks
