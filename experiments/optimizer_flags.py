"""The optimizer and learning-rate-schedule flags, shared by the training and parity scripts.

Flags carry torch.optim's hyperparameter names; a flag left out takes torch.optim's default for the chosen
optimizer, except the learning rate of the SGD family (0.05 here: torch's 1e-3 barely moves in ten epochs).
"""

from __future__ import annotations

import argparse
import re

from manual_backprop.optim_config import EPS_PLACEMENTS, OPTIMIZERS, SCHEDULES, OptimizerConfig, ScheduleConfig

SGD_FAMILY_DEFAULT_LR = 0.05
# The argparse dests of the optimizer's hyperparameters (OptimizerConfig's fields of the same names).
OPTIMIZER_DESTS = ("lr", "momentum", "dampening", "weight_decay", "alpha", "eps", "centered", "lr_decay",
                   "initial_accumulator_value", "betas", "amsgrad")


def _betas(text: str) -> tuple[float, float]:
    try:
        betas = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers such as 0.9,0.999; got {text!r}")
    if len(betas) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers such as 0.9,0.999; got {text!r}")
    return betas


def _milestones(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step numbers such as 3000,6000; got {text!r}")


def add_optimizer_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("optimizer (torch.optim's names; unset: that optimizer's torch default)")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default="momentum",
                       help="momentum: the course's V <- beta V + G, W <- W - lr V")
    group.add_argument("--lr", type=float, default=None,
                       help=f"learning rate (default: {SGD_FAMILY_DEFAULT_LR} for sgd/momentum/nesterov, torch's "
                            "default for the others)")
    group.add_argument("--momentum", type=float, default=None,
                       help="momentum beta (default: 0.9 for momentum/nesterov, 0 for rmsprop; 0 gives plain SGD)")
    group.add_argument("--dampening", type=float, default=None, help="SGD dampening (default: 0)")
    group.add_argument("--weight-decay", type=float, default=None,
                       help="coupled weight decay added to the gradient (adamw: decoupled; default: 0, adamw 0.01)")
    group.add_argument("--no-decay-biases", action="store_true",
                       help="apply --weight-decay to the weights only (then weight_decay = 2*l2 equals --l2)")
    group.add_argument("--betas", type=_betas, default=None, help="adam/adamw beta1,beta2 (default: 0.9,0.999)")
    group.add_argument("--eps", type=float, default=None,
                       help="adaptive methods' eps (default: adagrad 1e-10, rmsprop/adam 1e-8)")
    group.add_argument("--alpha", type=float, default=None, help="rmsprop smoothing constant (default: 0.99)")
    group.add_argument("--centered", action="store_true", default=None, help="rmsprop: divide by the variance")
    group.add_argument("--lr-decay", type=float, default=None, help="adagrad learning-rate decay (default: 0)")
    group.add_argument("--initial-accumulator-value", type=float, default=None,
                       help="adagrad's starting sum of squares (default: 0)")
    group.add_argument("--amsgrad", action="store_true", default=None, help="adam/adamw: the AMSGrad variant")
    group.add_argument("--eps-placement", choices=EPS_PLACEMENTS, default="torch",
                       help="adagrad/rmsprop: torch divides by sqrt(v)+eps, course by sqrt(v+eps) (engine only)")

    schedule = parser.add_argument_group("learning-rate schedule (counted in optimizer steps)")
    schedule.add_argument("--lr-schedule", choices=SCHEDULES, default="constant",
                          help="step: x gamma every --lr-step-size steps; multistep: at --lr-milestones; "
                               "exponential: x gamma every step; cosine: down to --lr-eta-min over --lr-t-max steps")
    # The defaults of the flags below are None ("not given") so that a flag the schedule does not use is refused
    # rather than silently ignored; SCHEDULE_DEFAULTS fills in the rest.
    schedule.add_argument("--lr-gamma", type=float, default=None,
                          help=f"decay factor of step/multistep/exponential (default: {SCHEDULE_DEFAULTS['lr_gamma']})")
    schedule.add_argument("--lr-step-size", type=int, default=None,
                          help=f"steps between decays of the step schedule (default: "
                               f"{SCHEDULE_DEFAULTS['lr_step_size']})")
    schedule.add_argument("--lr-milestones", type=_milestones, default=None, help="multistep: steps such as 3000,6000")
    schedule.add_argument("--lr-t-max", type=int, default=None,
                          help="cosine: steps of the half period (default: every step of the run after the warm-up)")
    schedule.add_argument("--lr-eta-min", type=float, default=None,
                          help=f"cosine: the final learning rate (default: {SCHEDULE_DEFAULTS['lr_eta_min']})")
    schedule.add_argument("--warmup-steps", type=int, default=0,
                          help="linear warm-up steps before the schedule (0: none)")
    schedule.add_argument("--warmup-start-factor", type=float, default=None,
                          help=f"the warm-up starts at lr x this factor (default: "
                               f"{SCHEDULE_DEFAULTS['warmup_start_factor']})")


# What each schedule flag defaults to, and which schedules use it (a flag given to a schedule that does not use it
# is refused: it would change nothing).
SCHEDULE_DEFAULTS = {"lr_gamma": 0.1, "lr_step_size": 1000, "lr_milestones": (), "lr_t_max": None,
                     "lr_eta_min": 0.0, "warmup_start_factor": 0.1}
SCHEDULE_FLAG_USERS = {"lr_gamma": ("step", "multistep", "exponential"), "lr_step_size": ("step",),
                       "lr_milestones": ("multistep",), "lr_t_max": ("cosine",), "lr_eta_min": ("cosine",)}


def unused_schedule_flags(args: argparse.Namespace) -> list[str]:
    """The schedule flags given (not None) that ``args.lr_schedule`` does not use, as error texts."""
    unused = []
    for dest, users in SCHEDULE_FLAG_USERS.items():
        if getattr(args, dest, None) is not None and args.lr_schedule not in users:
            flag = "--" + dest.replace("_", "-")
            unused.append(f"{flag}: the {args.lr_schedule} schedule does not use it (only --lr-schedule "
                          f"{' or '.join(users)} does); leave it out or choose that schedule")
    if getattr(args, "warmup_start_factor", None) is not None and not args.warmup_steps:
        unused.append("--warmup-start-factor: there is no warm-up to start (--warmup-steps is 0); give "
                      "--warmup-steps N or leave it out")
    return unused


def unused_optimizer_flags(args: argparse.Namespace, optimizer: OptimizerConfig) -> list[str]:
    """Optimizer switches that would change nothing, as error texts (the hyperparameters an optimizer does not
    take are refused by OptimizerConfig itself)."""
    unused = []
    if getattr(args, "no_decay_biases", False) and not optimizer.weight_decay:
        unused.append(f"--no-decay-biases: {optimizer.name} runs without weight decay here (--weight-decay is 0), so "
                      "there is nothing to keep off the biases; give --weight-decay or leave it out")
    return unused


_FIELD_FLAGS = {"lr_schedule": "--lr-schedule", "lr_gamma": "--lr-gamma", "lr_step_size": "--lr-step-size",
                "lr_milestones": "--lr-milestones", "t_max": "--lr-t-max", "eta_min": "--lr-eta-min",
                "optimizer": "--optimizer", "sizes": "--hidden"}


def flag_named_error(error: Exception) -> str:
    """'betas[1]: expected ...' -> '--betas[1]: expected ...': errors of the configs name the CLI flag."""
    text = str(error)
    match = re.match(r"^([a-z_0-9]+)(\[\d+\])?:", text)
    if not match or text.startswith("--"):
        return text
    field = match.group(1)
    flag = _FIELD_FLAGS.get(field, "--" + field.replace("_", "-"))
    return flag + text[len(field):]


def optimizer_config(args: argparse.Namespace) -> OptimizerConfig:
    lr = args.lr
    if lr is None and args.optimizer in ("sgd", "momentum", "nesterov"):
        lr = SGD_FAMILY_DEFAULT_LR
    try:
        optimizer = OptimizerConfig(args.optimizer, lr=lr, momentum=args.momentum, dampening=args.dampening,
                                    weight_decay=args.weight_decay, alpha=args.alpha, eps=args.eps,
                                    centered=args.centered, lr_decay=args.lr_decay,
                                    initial_accumulator_value=args.initial_accumulator_value, betas=args.betas,
                                    amsgrad=args.amsgrad, eps_placement=args.eps_placement,
                                    decay_biases=not args.no_decay_biases)
    except ValueError as error:
        raise ValueError(flag_named_error(error)) from error
    unused = unused_optimizer_flags(args, optimizer)
    if unused:
        raise ValueError(unused[0])
    return optimizer


def schedule_config(args: argparse.Namespace, total_steps: int) -> ScheduleConfig:
    """``total_steps``: the run's planned number of optimizer steps, for the cosine schedule's default length (the
    other schedules do not use a length, so it is left at its default there: a longer run still resumes)."""
    unused = unused_schedule_flags(args)
    if unused:
        raise ValueError(unused[0])

    def value(dest):
        given = getattr(args, dest, None)
        return SCHEDULE_DEFAULTS[dest] if given is None else given

    t_max = ScheduleConfig.t_max
    if args.lr_schedule == "cosine":
        t_max = args.lr_t_max if args.lr_t_max is not None else max(total_steps - args.warmup_steps, 1)
    try:
        return ScheduleConfig(args.lr_schedule, gamma=value("lr_gamma"), step_size=value("lr_step_size"),
                              milestones=value("lr_milestones"), t_max=t_max, eta_min=value("lr_eta_min"),
                              warmup_steps=args.warmup_steps, warmup_start_factor=value("warmup_start_factor"))
    except ValueError as error:
        raise ValueError(flag_named_error(error)) from error
