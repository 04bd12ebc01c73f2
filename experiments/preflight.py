"""Checks the training script makes before it trains: anything that would fail later (after minutes of training,
or with a traceback from deep inside torch) is refused up front with a message naming the flag.

Each function raises ``ValueError("--flag ...: ...")``; the script turns it into ``error: ...`` and a non-zero exit.
The checks every command shares (numbers, seeds, paths) are in ``experiments/arguments.py``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from experiments import arguments
from manual_backprop.config import MLPConfig
from manual_backprop.optim_config import OptimizerConfig
from side_by_side.memory_estimate import available_bytes, estimate, human


def lr_fits_dtype(lr: float, dtype: torch.dtype) -> None:
    """The optimizers scale by ``-lr`` in the parameters' dtype: an lr beyond its range is an overflow error from
    deep inside torch ("value cannot be converted to type float without overflow") at the first update."""
    largest = torch.finfo(dtype).max
    if lr > largest:
        raise ValueError(f"--lr: expected a learning rate the {str(dtype).removeprefix('torch.')} parameters can "
                         f"hold (<= {largest:.3g}); got {lr:g}")


def existing_checkpoint(path: Path) -> None:
    """Before the run directory (the checkpoint's parent) is locked, so a mistyped path leaves nothing behind."""
    arguments.input_file(path, "--resume", "checkpoint file")


def resume_logdir(logdir: str, default: str, checkpoint: Path) -> None:
    """A resumed run continues in its checkpoint's directory; a different --logdir would be silently ignored, so it
    is refused (leaving --logdir out, or giving the checkpoint's parent directory, is fine)."""
    if logdir == default or not Path(checkpoint).is_file():
        return  # the default (not given) or a missing checkpoint (reported as such by the loader)
    run_parent = Path(checkpoint).resolve().parent.parent
    if Path(logdir).resolve() != run_parent:
        raise ValueError(f"--logdir {logdir}: --resume continues the run in its own directory, under {run_parent}; "
                         f"leave --logdir out (or give {run_parent})")


def memory_fits(config: MLPConfig, optimizer: OptimizerConfig, batch_size: int, eval_images: int, twin: bool,
                hidden_flag: str, batch_flag: str) -> None:
    """Refuse a run whose parameters or activations cannot be allocated, naming the flag that makes them large:
    --maxout-pieces when the run would fit with the default 2 pieces, else the batch when it would fit with a batch
    of 1, else the widths."""
    needed = estimate(config, optimizer, batch_size, eval_images, twin)
    free = available_bytes(config.torch_device)
    if free is None or needed.total <= free:
        return
    models = "both models" if twin else "the model"
    # The flag to change is the one whose smaller value makes the run fit: the maxout pieces (back to the default
    # 2), else the batch (down to 1), else the widths.
    flag = hidden_flag
    if estimate(config, optimizer, 1, eval_images, twin).total <= free:
        flag = batch_flag
    if config.activation == "maxout" and config.maxout_pieces > 2:
        fewer = estimate(replace(config, maxout_pieces=2), optimizer, batch_size, eval_images, twin)
        if fewer.total <= free:
            flag = f"--maxout-pieces {config.maxout_pieces}"
    raise ValueError(f"{flag}: the run needs about {human(needed.total)} of memory ({human(needed.parameters)} for the "
                     f"parameters, gradients, optimizer state and checkpoint of {models}, {human(needed.activations)} "
                     f"for the activations of a batch of {batch_size}"
                     + (f" and of an evaluation on {eval_images} images" if eval_images else "")
                     + f"); only {human(free)} is available")


def flags_without_effect(args, explicit: set[str]) -> None:
    """Refuse a flag given on the command line that this run would ignore (every flag acts or is refused); the
    optimizer's and the schedule's own are checked in experiments/optimizer_flags.py."""
    if "mse_convention" in explicit and args.loss != "mse":
        raise ValueError(f"--mse-convention: only the mse loss has one; this run's loss is {args.loss} (leave it out "
                         "or give --loss mse)")
    for dest, activation in (("maxout_pieces", "maxout"), ("leaky_slope", "leaky_relu"), ("elu_alpha", "elu")):
        if dest in explicit and args.activation != activation:
            raise ValueError(f"--{dest.replace('_', '-')}: only --activation {activation} uses it; this run's "
                             f"activation is {args.activation}")
    if "parity_every" in explicit and getattr(args, "no_twin", False):
        raise ValueError("--parity-every: --no-twin trains the engine alone, so there is no parity to check; leave "
                         "one of them out")


def schedule_past_the_run(schedule, total_steps: int, lr: float, explicit: set[str]) -> str | None:
    """A schedule that would not act within the run's ``total_steps``: a warm-up as long as the run (it never
    reaches --lr), a step size or a milestone past its end (the rate never decays). Refused when the user gave that
    flag or chose the schedule; a note (returned) when it all came from a preset."""
    after_warmup = total_steps - schedule.warmup_steps
    problem = flag = None
    if schedule.warmup_steps and schedule.warmup_steps >= total_steps:
        flag = "warmup_steps"
        problem = (f"--warmup-steps {schedule.warmup_steps}: the run has {total_steps} steps in all, so the warm-up "
                   f"never reaches --lr {lr:g}")
    elif schedule.name == "step" and schedule.step_size >= after_warmup:
        flag = "lr_step_size"
        problem = (f"--lr-step-size {schedule.step_size}: the run has {after_warmup} steps after its warm-up, so the "
                   "step schedule never decays the rate")
    elif schedule.name == "multistep" and schedule.milestones[-1] >= after_warmup:
        flag = "lr_milestones"
        late = [step for step in schedule.milestones if step >= after_warmup]
        problem = (f"--lr-milestones: {', '.join(map(str, late))} lie past the run's {after_warmup} steps after its "
                   "warm-up, so the rate never decays there")
    if problem is None:
        return None
    if flag in explicit or "lr_schedule" in explicit and flag != "warmup_steps":
        raise ValueError(f"{problem}; give a smaller value or more --epochs")
    return f"{problem} (the preset's value; give the flag to change it)"
