"""The fast path's optimizer: every engine optimizer (manual_backprop/optim.py), one parameter at a time, so that
the fast step can update each layer as soon as its gradient is final (lecture 004's order).

Bitwise with the reference: each update runs the very tensor operations of ``optim.py``'s ``update``, on the same
operands, in the same order, with the same Python-float scalars; only where the reference makes a new tensor
(``grad.add(param)``, ``sum.sqrt()``, ``second.sqrt() / c``) this writes the same kernel's result into a buffer
(``out=`` or in place on a copy that nobody else reads), which changes no bit: an elementwise kernel computes each
entry from the same inputs whether or not its output is new. tests/test_fast_optim.py checks weights and every
state tensor after N steps against the reference engine for each optimizer and option.

State is kept in the reference's layout (``Optimizer.state``: {name: {"momentum_buffer" | "sum" | ... : tensor}})
and made on a parameter's first update, as the reference makes it. The one difference: the reference counts steps
in a float32 0-dim tensor per parameter and reads it back with ``.item()`` at every update; here one Python count
is kept (all parameters are updated every step, so their counts are equal) and written into the "step" tensors on
export. ``float(step)`` is the value ``.item()`` returns for any count below 2^24.
"""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop.optim_config import OptimizerConfig


class FastOptimizer:
    """``update(name, param, grad)`` for one parameter at a time; ``grad`` may be overwritten (it is the step's
    scratch). Call ``start_step()`` once per step before the first update. ``lr`` is the next step's rate."""

    def __init__(self, config: OptimizerConfig, params: dict[str, Tensor]):
        if not isinstance(config, OptimizerConfig):
            raise TypeError(f"optimizer: expected an OptimizerConfig; got {type(config).__name__}")
        self.config = config
        self.lr = float(config.lr)
        self.params = params
        self.state: dict[str, dict[str, Tensor]] = {name: {} for name in params}
        self.steps = 0  # completed steps; the step being taken is steps after start_step()
        self._decay = {name: self._weight_decay_for(name) for name in params}
        self._scratch, self._scratch_views = None, {}  # made by the first step (see _make_scratch)
        self._step_scalars = ()
        update = {"sgd": self._sgd, "momentum": self._sgd, "nesterov": self._sgd, "adagrad": self._adagrad,
                  "rmsprop": self._rmsprop, "adam": self._adam, "adamw": self._adam}
        self.update_fn = update[config.name]

    def _weight_decay_for(self, name: str) -> float:
        """optim.Optimizer.weight_decay_for."""
        if not self.config.weight_decay or (name.startswith("b") and not self.config.decay_biases):
            return 0.0
        return self.config.weight_decay

    def _make_scratch(self) -> None:
        """One flat scratch of the largest parameter's size for the denominators (sqrt(S) + eps, ...) and the centred
        second moment, and its view in each parameter's shape, made once (at small batches a view costs as much as
        an op). Not for plain SGD, which needs none."""
        if self.config.name in ("sgd", "momentum", "nesterov"):
            return
        largest = max(tensor.numel() for tensor in self.params.values())
        any_param = next(iter(self.params.values()))
        self._scratch = torch.empty(largest, dtype=any_param.dtype, device=any_param.device)
        self._scratch_views = {name: self._scratch[:tensor.numel()].view(tensor.shape)
                               for name, tensor in self.params.items()}

    def scratch_bytes(self) -> int:
        return 0 if self._scratch is None else self._scratch.numel() * self._scratch.element_size()

    def release_scratch(self) -> None:
        """Drop the scratch (the next step makes it again): a step's peak memory then counts it."""
        self._scratch, self._scratch_views = None, {}

    def start_step(self) -> None:
        """Count the step and form the scalars every parameter's update shares (Python floats, as the reference's)."""
        if self._scratch is None:
            self._make_scratch()
        self.steps += 1
        step, config = float(self.steps), self.config
        if config.name == "adagrad":
            self._step_scalars = (self.lr / (1 + (step - 1) * config.lr_decay),)
        elif config.name in ("adam", "adamw"):
            beta1, beta2 = config.betas
            bias_correction1 = 1 - beta1 ** step
            bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
            self._step_scalars = (self.lr / bias_correction1, bias_correction2_sqrt)

    def update(self, name: str, param: Tensor, grad: Tensor) -> None:
        self.update_fn(param, grad, self.state[name], self._decay[name], self._scratch_views.get(name))

    # --- the updates, op for op as manual_backprop/optim.py --------------------------------------------------------

    def _sgd(self, param: Tensor, grad: Tensor, state: dict, weight_decay: float, scratch: None) -> None:
        config = self.config
        if weight_decay:
            grad = grad.add_(param, alpha=weight_decay)  # optim: grad.add(param, alpha=wd)
        if config.momentum:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                state["momentum_buffer"] = buffer = grad.clone()
            else:
                buffer.mul_(config.momentum).add_(grad, alpha=1 - config.dampening)
            grad = grad.add_(buffer, alpha=config.momentum) if config.name == "nesterov" else buffer
        param.add_(grad, alpha=-self.lr)

    def _adagrad(self, param: Tensor, grad: Tensor, state: dict, weight_decay: float, scratch: Tensor) -> None:
        config = self.config
        if not state:
            state["sum"] = torch.full_like(param, config.initial_accumulator_value)
        if weight_decay:
            grad = grad.add_(param, alpha=weight_decay)
        (decayed_lr,) = self._step_scalars
        state["sum"].addcmul_(grad, grad, value=1)
        std = scratch
        if config.eps_placement == "course":
            torch.add(state["sum"], config.eps, out=std).sqrt_()
        else:
            torch.sqrt(state["sum"], out=std).add_(config.eps)
        param.addcdiv_(grad, std, value=-decayed_lr)

    def _rmsprop(self, param: Tensor, grad: Tensor, state: dict, weight_decay: float, scratch: Tensor) -> None:
        config = self.config
        if not state:
            state["square_avg"] = torch.zeros_like(param)
            if config.momentum > 0:
                state["momentum_buffer"] = torch.zeros_like(param)
            if config.centered:
                state["grad_avg"] = torch.zeros_like(param)
        if weight_decay:
            grad = grad.add_(param, alpha=weight_decay)
        square_avg = state["square_avg"]
        square_avg.mul_(config.alpha).addcmul_(grad, grad, value=1 - config.alpha)
        avg = scratch
        if config.centered:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, 1 - config.alpha)
            second_moment = torch.addcmul(square_avg, grad_avg, grad_avg, value=-1, out=avg)
        else:
            second_moment = square_avg
        if config.eps_placement == "course":
            torch.add(second_moment, config.eps, out=avg).sqrt_()
        else:
            torch.sqrt(second_moment, out=avg).add_(config.eps)
        if config.momentum > 0:
            buffer = state["momentum_buffer"]
            buffer.mul_(config.momentum).addcdiv_(grad, avg)
            param.add_(buffer, alpha=-self.lr)
        else:
            param.addcdiv_(grad, avg, value=-self.lr)

    def _adam(self, param: Tensor, grad: Tensor, state: dict, weight_decay: float, scratch: Tensor) -> None:
        config = self.config
        beta1, beta2 = config.betas
        if not state:
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
            if config.amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(param)
        if weight_decay:
            if config.name == "adamw":
                param.mul_(1 - self.lr * weight_decay)
            else:
                grad = grad.add_(param, alpha=weight_decay)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size, bias_correction2_sqrt = self._step_scalars
        if config.amsgrad:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second_moment = state["max_exp_avg_sq"]
        else:
            second_moment = exp_avg_sq
        denominator = torch.sqrt(second_moment, out=scratch).div_(bias_correction2_sqrt).add_(config.eps)
        param.addcdiv_(exp_avg, denominator, value=-step_size)

    # --- state in and out, in the reference's layout ---------------------------------------------------------------

    def export_state(self) -> dict[str, dict[str, Tensor]]:
        """Copies of the state in ``optim.Optimizer.state``'s layout, "step" tensors included where the reference
        keeps them (adagrad, rmsprop, adam, adamw); {} per parameter before the first step."""
        counted = self.config.name in ("adagrad", "rmsprop", "adam", "adamw")
        exported = {}
        for name, entries in self.state.items():
            exported[name] = {}
            if entries and counted:
                exported[name]["step"] = torch.tensor(float(self.steps), dtype=torch.float32)
            exported[name].update({key: tensor.clone() for key, tensor in entries.items()})
        return exported

    def import_state(self, state: dict[str, dict[str, Tensor]]) -> None:
        """Take the state of a reference optimizer of the same config (``Optimizer.state``, e.g. after its
        ``load_state_dict`` checked names and shapes)."""
        if not isinstance(state, dict) or sorted(state) != sorted(self.params):
            raise ValueError(f"optimizer state: expected state for the parameters {sorted(self.params)}; got "
                             f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        counts = {float(entries["step"]) for entries in state.values() if "step" in entries}
        if len(counts) > 1:
            raise ValueError(f"optimizer state: the parameters' step counts differ ({sorted(counts)}); the fast "
                             "path updates every parameter every step")
        started = [name for name, entries in state.items() if entries]
        if started and len(started) != len(state):
            raise ValueError(f"optimizer state: state for only some parameters ({sorted(started)})")
        restored = {}
        for name, entries in state.items():
            param = self.params[name]
            restored[name] = {}
            for key, tensor in entries.items():
                if key == "step":
                    continue
                if not isinstance(tensor, Tensor) or tensor.shape != param.shape:
                    raise ValueError(f"optimizer state[{name!r}][{key!r}]: expected a tensor of shape "
                                     f"{tuple(param.shape)}")
                restored[name][key] = tensor.to(param.device, param.dtype).clone()
        self.state = restored
        if counts:
            self.steps = int(counts.pop())
        elif not started:
            self.steps = 0
