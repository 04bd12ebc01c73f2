"""One frozen description of an optimizer and one of a learning-rate schedule.

The engine's hand-written optimizers (``manual_backprop.optim``) and the twin's ``torch.optim`` optimizers are
both built from the same ``OptimizerConfig``, as both models are built from one ``MLPConfig``; likewise the
engine's schedules (``manual_backprop.schedules``) and ``torch.optim.lr_scheduler`` from one ``ScheduleConfig``.
Hyperparameters carry ``torch.optim``'s names; ``None`` means "``torch.optim``'s default for this optimizer".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")

# torch.optim's defaults, per optimizer. "momentum" and "nesterov" are torch.optim.SGD with momentum
# (0.9 here: torch's SGD default of 0 would make them plain SGD).
DEFAULTS = {
    "sgd": {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
    "momentum": {"lr": 1e-3, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0},
    "nesterov": {"lr": 1e-3, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0},
    "adagrad": {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10},
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False},
    "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False},
    "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False},
}
# Where eps sits for the adaptive methods: "torch" divides by sqrt(v) + eps; "course" by sqrt(v + eps), the form of
# the optimizer overview the course points to (Ruder, "An overview of gradient descent optimization algorithms").
EPS_PLACEMENTS = ("torch", "course")

SCHEDULES = ("constant", "step", "multistep", "exponential", "cosine")


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number; got {value!r}")
    return float(value)


def _unit_interval(name: str, value, closed_top: bool = False) -> None:
    """0 <= value < 1 (or <= 1)."""
    value = _number(name, value)
    if not (0.0 <= value <= 1.0 if closed_top else 0.0 <= value < 1.0):
        raise ValueError(f"{name}: expected 0 <= {name} {'<=' if closed_top else '<'} 1; got {value!r}")


@dataclass(frozen=True)
class OptimizerConfig:
    """An optimizer and its hyperparameters; fields that do not apply to ``name`` must stay ``None``.

    ``decay_biases=False`` puts the biases in a parameter group without weight decay (the engine skips them),
    which makes ``weight_decay = 2 λ`` the same update as the model's ``l2 = λ`` penalty.
    """

    name: str = "momentum"
    lr: float | None = None
    momentum: float | None = None
    dampening: float | None = None
    weight_decay: float | None = None
    alpha: float | None = None
    eps: float | None = None
    centered: bool | None = None
    lr_decay: float | None = None
    initial_accumulator_value: float | None = None
    betas: tuple[float, float] | None = None
    amsgrad: bool | None = None
    eps_placement: str = "torch"
    decay_biases: bool = True

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}; got {self.name!r}")
        defaults = DEFAULTS[self.name]
        for field in fields(self):
            if field.name in ("name", "eps_placement", "decay_biases"):
                continue
            value = getattr(self, field.name)
            if value is None:
                object.__setattr__(self, field.name, defaults.get(field.name))
            elif field.name not in defaults:
                raise ValueError(f"{field.name}: {self.name} has no {field.name} hyperparameter "
                                 f"(it takes {', '.join(defaults)})")
        if self.betas is not None:
            betas = tuple(self.betas)
            if len(betas) != 2:
                raise ValueError(f"betas: expected two numbers (beta1, beta2); got {self.betas!r}")
            object.__setattr__(self, "betas", tuple(float(beta) for beta in betas))
        self._validate()

    def _validate(self) -> None:
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr: expected a finite learning rate > 0; got {lr!r}")
        if self.momentum is not None:
            _unit_interval("momentum", self.momentum)
            if self.name == "nesterov" and self.momentum == 0:
                raise ValueError("momentum: nesterov needs momentum > 0 (with 0 it is plain sgd)")
        if self.dampening is not None:
            _unit_interval("dampening", self.dampening, closed_top=True)
            if self.name == "nesterov" and self.dampening != 0:
                raise ValueError(f"dampening: nesterov needs dampening 0 (as torch.optim.SGD); got {self.dampening}")
        if self.weight_decay is not None and _number("weight_decay", self.weight_decay) < 0:
            raise ValueError(f"weight_decay: expected >= 0; got {self.weight_decay!r}")
        if self.alpha is not None:
            _unit_interval("alpha", self.alpha)
        if self.eps is not None and _number("eps", self.eps) <= 0:
            raise ValueError(f"eps: expected eps > 0; got {self.eps!r}")
        if self.lr_decay is not None and _number("lr_decay", self.lr_decay) < 0:
            raise ValueError(f"lr_decay: expected >= 0; got {self.lr_decay!r}")
        if self.initial_accumulator_value is not None and _number(
                "initial_accumulator_value", self.initial_accumulator_value) < 0:
            raise ValueError(f"initial_accumulator_value: expected >= 0; got {self.initial_accumulator_value!r}")
        if self.betas is not None:
            for index, beta in enumerate(self.betas):
                _unit_interval(f"betas[{index}]", beta)
        for flag in ("centered", "amsgrad", "decay_biases"):
            value = getattr(self, flag)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{flag}: expected True or False; got {value!r}")
        if self.eps_placement not in EPS_PLACEMENTS:
            raise ValueError(f"eps_placement: expected one of {', '.join(EPS_PLACEMENTS)}; got {self.eps_placement!r}")
        if self.eps_placement == "course" and self.name not in ("adagrad", "rmsprop"):
            raise ValueError(f"eps_placement: the course's sqrt(v + eps) form exists for adagrad and rmsprop only; "
                             f"got optimizer {self.name!r}")

    def hyperparameters(self) -> dict:
        """The hyperparameters that apply to this optimizer, by torch.optim's names."""
        return {key: getattr(self, key) for key in DEFAULTS[self.name]}

    def to_dict(self) -> dict:
        described = asdict(self)
        if described["betas"] is not None:
            described["betas"] = list(described["betas"])
        return described

    @classmethod
    def from_dict(cls, described: dict) -> "OptimizerConfig":
        described = dict(described)
        if described.get("betas") is not None:
            described["betas"] = tuple(described["betas"])
        return cls(**described)

    def with_lr(self, lr: float) -> "OptimizerConfig":
        return replace(self, lr=lr)

    def slug(self) -> str:
        """'adam-lr0.001', 'momentum0.9-lr0.05': the name and what most often differs between runs."""
        name = f"{self.name}{self.momentum:g}" if self.name in ("momentum", "nesterov") else self.name
        slug = f"{name}-lr{self.lr:g}"
        if self.weight_decay:
            slug += f"-wd{self.weight_decay:g}"
        return slug


@dataclass(frozen=True)
class ScheduleConfig:
    """A learning-rate schedule over optimizer steps (not epochs), optionally after a linear warm-up.

    constant: lr throughout. step: lr × gamma every ``step_size`` steps. multistep: lr × gamma at each of
    ``milestones``. exponential: lr × gamma every step. cosine: from lr down to ``eta_min`` over ``t_max`` steps
    (half a cosine). ``warmup_steps`` > 0 first ramps linearly from ``lr × warmup_start_factor`` to lr, then runs
    the schedule from its start (torch: ``SequentialLR([LinearLR, schedule], milestones=[warmup_steps])``).
    """

    name: str = "constant"
    gamma: float = 0.1
    step_size: int = 1000
    milestones: tuple[int, ...] = ()
    t_max: int = 1000
    eta_min: float = 0.0
    warmup_steps: int = 0
    warmup_start_factor: float = 0.1

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"lr_schedule: expected one of {', '.join(SCHEDULES)}; got {self.name!r}")
        gamma = _number("gamma", self.gamma)
        if self.name in ("step", "multistep", "exponential") and not 0 < gamma <= 1:
            raise ValueError(f"lr_gamma: a {self.name} schedule needs 0 < gamma <= 1 (a decay); got {self.gamma!r}")
        for name in ("step_size", "t_max", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}: expected an integer; got {value!r}")
        if self.step_size < 1:
            raise ValueError(f"lr_step_size: expected >= 1 step; got {self.step_size}")
        if self.t_max < 1:
            raise ValueError(f"t_max: expected >= 1 step; got {self.t_max}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: expected >= 0; got {self.warmup_steps}")
        milestones = tuple(self.milestones)
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones):
            raise ValueError(f"lr_milestones: expected positive integer steps; got {list(milestones)}")
        if list(milestones) != sorted(set(milestones)):
            raise ValueError(f"lr_milestones: expected strictly increasing steps; got {list(milestones)}")
        if self.name == "multistep" and not milestones:
            raise ValueError("lr_milestones: a multistep schedule needs at least one milestone")
        object.__setattr__(self, "milestones", milestones)
        if _number("eta_min", self.eta_min) < 0:
            raise ValueError(f"eta_min: expected >= 0; got {self.eta_min!r}")
        start = _number("warmup_start_factor", self.warmup_start_factor)
        if not 0 < start <= 1:
            raise ValueError(f"warmup_start_factor: expected 0 < factor <= 1 (torch's LinearLR); got {start!r}")

    def check_against(self, lr: float) -> None:
        """Errors that need the base learning rate."""
        if self.name == "cosine" and self.eta_min >= lr:
            raise ValueError(f"eta_min: a cosine schedule decays from lr={lr:g} to eta_min, which must be smaller; "
                             f"got eta_min={self.eta_min:g}")

    def to_dict(self) -> dict:
        described = asdict(self)
        described["milestones"] = list(self.milestones)
        return described

    # The fields each schedule reads (besides the warm-up's, which every schedule reads).
    USED_FIELDS = {"constant": (), "step": ("gamma", "step_size"), "multistep": ("gamma", "milestones"),
                   "exponential": ("gamma",), "cosine": ("t_max", "eta_min")}

    def identity(self) -> dict:
        """``to_dict`` without the fields this schedule never reads: two schedules with the same identity give the
        same learning rates (a constant schedule's t_max, say, is a hidden default that must not stop a resume)."""
        used = {"name", "warmup_steps", *self.USED_FIELDS[self.name]}
        if self.warmup_steps:
            used.add("warmup_start_factor")
        return {key: value for key, value in self.to_dict().items() if key in used}

    @classmethod
    def from_dict(cls, described: dict) -> "ScheduleConfig":
        return cls(**{**described, "milestones": tuple(described.get("milestones", ()))})
