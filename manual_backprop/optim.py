"""The course's optimizers, and the ones users expect beside them, written out by hand (lectures 000, 003, 004).

    sgd        W <- W - lr G
    momentum   V <- beta V + (1 - dampening) G,  W <- W - lr V          (the course's V <- beta V + G, W <- W - alpha V)
    nesterov   V as momentum,                    W <- W - lr (G + beta V)
    adagrad    S <- S + G*G,                     W <- W - lr_t G / (sqrt(S) + eps),  lr_t = lr / (1 + (t - 1) lr_decay)
    rmsprop    E <- alpha E + (1 - alpha) G*G,   W <- W - lr G / (sqrt(E) + eps)    (+ momentum, centered options)
    adam       M <- lerp(M, G, 1 - b1),  V <- b2 V + (1 - b2) G*G,
               W <- W - lr/(1 - b1^t) M / (sqrt(V)/sqrt(1 - b2^t) + eps)   (amsgrad: max of all V so far)
    adamw      adam with the weight decay taken out of G: W <- W (1 - lr wd) first

Coupled ``weight_decay`` adds ``wd W`` to the gradient (biases included unless ``decay_biases=False``), as
torch.optim does. State lives in plain tensors under torch.optim's state keys (``momentum_buffer``, ``sum``,
``square_avg``, ``grad_avg``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``step``), one dict per
parameter name. Every update is written with the same tensor operations, in the same order, as torch.optim's
per-tensor loop (``foreach=False``), so on the CPU the engine's weights and state stay bitwise equal to the
twin's: an ``add_(x, alpha=a)`` is one fused multiply-add per entry, where ``add_(a * x)`` would round twice.
The engine never imports torch.optim.
"""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop.optim_config import OptimizerConfig


class Optimizer:
    """Updates ``params`` (a dict of tensors owned by the model) in place from a dict of gradients.

    ``lr`` is the learning rate of the next step; a schedule sets it between steps, as an lr_scheduler sets a
    torch optimizer's ``param_groups[i]["lr"]``.
    """

    def __init__(self, params: dict[str, Tensor], config: OptimizerConfig):
        if not isinstance(config, OptimizerConfig):
            raise TypeError(f"config: expected an OptimizerConfig; got {type(config).__name__}")
        self.params = params
        self.config = config
        self.lr = config.lr
        self.state: dict[str, dict[str, Tensor]] = {name: {} for name in params}

    def weight_decay_for(self, name: str) -> float:
        if not self.config.weight_decay or (name.startswith("b") and not self.config.decay_biases):
            return 0.0
        return self.config.weight_decay

    def step(self, grads: dict[str, Tensor]) -> None:
        """One update of every parameter. ``grads`` must hold a gradient for each, of the same shape."""
        missing = sorted(set(self.params) - set(grads))
        if missing:
            raise ValueError(f"grads: missing gradients for {missing}")
        for name, param in self.params.items():
            grad = grads[name]
            if grad.shape != param.shape:
                raise ValueError(f"grads[{name!r}]: expected shape {tuple(param.shape)}; got {tuple(grad.shape)}")
            self.update(param, grad, self.state[name], self.weight_decay_for(name))

    def update(self, param: Tensor, grad: Tensor, state: dict[str, Tensor], weight_decay: float) -> None:
        raise NotImplementedError

    @staticmethod
    def _new_step_count() -> Tensor:
        # torch.optim keeps the step count as a float32 scalar tensor on the CPU and reads it with .item().
        return torch.tensor(0.0, dtype=torch.float32)

    # --- checkpoints -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Plain data: the config, the current lr and every state tensor (cloned, on the CPU)."""
        return {"config": self.config.to_dict(), "lr": self.lr,
                "state": {name: {key: tensor.detach().cpu().clone() for key, tensor in entries.items()}
                          for name, entries in self.state.items()}}

    def load_state_dict(self, saved: dict) -> None:
        """Restore from :meth:`state_dict`; refuses a state saved with another optimizer or for other tensors."""
        if saved.get("config") != self.config.to_dict():
            raise ValueError(f"optimizer state: saved for {saved.get('config')}; this optimizer is "
                             f"{self.config.to_dict()}")
        state = saved.get("state")
        if not isinstance(state, dict) or sorted(state) != sorted(self.params):
            raise ValueError(f"optimizer state: expected state for the parameters {sorted(self.params)}; "
                             f"got {sorted(state) if isinstance(state, dict) else type(state).__name__}")
        restored = {}
        for name, entries in state.items():
            param = self.params[name]
            restored[name] = {}
            for key, tensor in entries.items():
                if not isinstance(tensor, Tensor):
                    raise ValueError(f"optimizer state[{name!r}][{key!r}]: expected a tensor; "
                                     f"got {type(tensor).__name__}")
                if key == "step":
                    if tensor.shape != () or not torch.isfinite(tensor) or tensor.item() < 0:
                        raise ValueError(f"optimizer state[{name!r}]['step']: expected a count >= 0; got {tensor}")
                    restored[name][key] = tensor.to(torch.float32).clone()
                    continue
                if tensor.shape != param.shape:
                    raise ValueError(f"optimizer state[{name!r}][{key!r}]: expected shape {tuple(param.shape)}; "
                                     f"got {tuple(tensor.shape)}")
                restored[name][key] = tensor.to(param.device, param.dtype).clone()
        lr = saved.get("lr")
        if not isinstance(lr, float) or not lr > 0:
            raise ValueError(f"optimizer state: expected a learning rate > 0; got {lr!r}")
        self.state, self.lr = restored, lr


class SGD(Optimizer):
    """sgd, momentum and nesterov (torch.optim.SGD). ``SGD(params, lr=0.1, momentum=0.9)`` is a shorthand for
    ``SGD(params, OptimizerConfig("momentum", lr=0.1, momentum=0.9))``."""

    def __init__(self, params: dict[str, Tensor], config: OptimizerConfig | None = None, *,
                 lr: float | None = None, momentum: float = 0.0):
        if config is None:
            config = OptimizerConfig("momentum" if momentum else "sgd", lr=lr, momentum=momentum)
        elif config.name not in ("sgd", "momentum", "nesterov"):
            raise ValueError(f"config: SGD runs sgd, momentum or nesterov; got {config.name!r}")
        super().__init__(params, config)

    def update(self, param, grad, state, weight_decay):
        config = self.config
        if weight_decay:
            grad = grad.add(param, alpha=weight_decay)
        if config.momentum:
            buffer = state.get("momentum_buffer")
            if buffer is None:  # V_0 = 0, so V_1 = G (torch takes G whole, without the dampening factor)
                state["momentum_buffer"] = buffer = grad.clone()
            else:
                buffer.mul_(config.momentum).add_(grad, alpha=1 - config.dampening)
            grad = grad.add(buffer, alpha=config.momentum) if config.name == "nesterov" else buffer
        param.add_(grad, alpha=-self.lr)


class Adagrad(Optimizer):
    """torch.optim.Adagrad; with ``eps_placement="course"`` the denominator is sqrt(S + eps)."""

    def update(self, param, grad, state, weight_decay):
        config = self.config
        if not state:
            state["step"] = self._new_step_count()
            state["sum"] = torch.full_like(param, config.initial_accumulator_value)
        state["step"] += 1
        step = state["step"].item()
        if weight_decay:
            grad = grad.add(param, alpha=weight_decay)
        # Python float arithmetic, as torch computes it: the decayed rate is a scalar, not a tensor op.
        decayed_lr = self.lr / (1 + (step - 1) * config.lr_decay)
        state["sum"].addcmul_(grad, grad, value=1)
        if config.eps_placement == "course":
            std = state["sum"].add(config.eps).sqrt_()
        else:
            std = state["sum"].sqrt().add_(config.eps)
        param.addcdiv_(grad, std, value=-decayed_lr)


class RMSprop(Optimizer):
    """torch.optim.RMSprop with its ``momentum`` and ``centered`` options; ``eps_placement="course"`` puts eps
    under the square root."""

    def update(self, param, grad, state, weight_decay):
        config = self.config
        if not state:
            state["step"] = self._new_step_count()
            state["square_avg"] = torch.zeros_like(param)
            if config.momentum > 0:
                state["momentum_buffer"] = torch.zeros_like(param)
            if config.centered:
                state["grad_avg"] = torch.zeros_like(param)
        state["step"] += 1
        if weight_decay:
            grad = grad.add(param, alpha=weight_decay)
        square_avg = state["square_avg"]
        square_avg.mul_(config.alpha).addcmul_(grad, grad, value=1 - config.alpha)
        if config.centered:  # variance instead of the raw second moment: E[G^2] - E[G]^2
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, 1 - config.alpha)
            second_moment = square_avg.addcmul(grad_avg, grad_avg, value=-1)
        else:
            second_moment = square_avg
        if config.eps_placement == "course":
            avg = second_moment.add(config.eps).sqrt_()
        else:
            avg = second_moment.sqrt().add_(config.eps)
        if config.momentum > 0:
            buffer = state["momentum_buffer"]
            buffer.mul_(config.momentum).addcdiv_(grad, avg)
            param.add_(buffer, alpha=-self.lr)
        else:
            param.addcdiv_(grad, avg, value=-self.lr)


class Adam(Optimizer):
    """torch.optim.Adam, and AdamW (``name="adamw"``: decoupled weight decay)."""

    def update(self, param, grad, state, weight_decay):
        config = self.config
        beta1, beta2 = config.betas
        if not state:
            state["step"] = self._new_step_count()
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
            if config.amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(param)
        state["step"] += 1
        if weight_decay:
            if config.name == "adamw":  # decoupled: shrink W directly, G is left alone
                param.mul_(1 - self.lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        # lerp, not mul_ + add_: M + (1 - b1)(G - M) is what torch computes, and rounds differently.
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = state["step"].item()
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        step_size = self.lr / bias_correction1
        if config.amsgrad:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second_moment = state["max_exp_avg_sq"]
        else:
            second_moment = exp_avg_sq
        denominator = (second_moment.sqrt() / bias_correction2_sqrt).add_(config.eps)
        param.addcdiv_(exp_avg, denominator, value=-step_size)


OPTIMIZER_CLASSES = {"sgd": SGD, "momentum": SGD, "nesterov": SGD, "adagrad": Adagrad, "rmsprop": RMSprop,
                     "adam": Adam, "adamw": Adam}


def build_optimizer(config: OptimizerConfig, params: dict[str, Tensor]) -> Optimizer:
    """The engine's optimizer for ``config``, updating ``params`` in place."""
    return OPTIMIZER_CLASSES[config.name](params, config)
