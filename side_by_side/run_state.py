"""What a side-by-side run saves and restores: its whole state as a checkpoint, written by rank 0 and read back.

``save_run`` refuses a diverged state (a good checkpoint is never replaced by a bad one); ``restore_run`` checks
the file (checksums, schema, compatibility with this run) before any of it is used. Data-parallel, every rank
calls both at the same step: rank 0 writes or reads the file, the others learn the outcome and the state from it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from manual_backprop.optim_config import ScheduleConfig
from side_by_side.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
    validate_for_run,
)
from side_by_side.settings import TrainingError
from side_by_side.step_result import non_finite_parameter
from torch_reference.dp_parity import SingleProcessTally
from torch_reference.parity_tally import ParityTally


def run_state(run) -> dict:
    """Everything a resumed run needs to continue bitwise: models, optimizers, data order, RNGs, history."""
    return {
        "config": run.config.to_dict(),
        "settings": run.settings.identity(),
        "data": run.data_identity(),
        **run.models.state_dict(),
        "epoch": run.epoch,
        "global_step": run.global_step,
        "order": run.order.state_dict(),
        "torch_rng": torch.get_rng_state(),  # dropout's masks come from the default generators
        "cuda_rng": (torch.cuda.get_rng_state(run.config.torch_device) if run.config.torch_device.type == "cuda"
                     else torch.empty(0, dtype=torch.uint8)),
        "tally": asdict(run.tally),
        "history": run.history,
        "elapsed": run.elapsed,
        # the running averages of loss/train and of the epoch's loss, so a resumed run logs the same values
        "interval_losses": run.interval_losses,
        "epoch_losses": run.epoch_losses,
        "world_size": run.world_size(),
        "single_process_tally": run.single_tally.state_dict(),
    }


def save_run(run) -> Path:
    """Write the checkpoint (rank 0). Data-parallel, every rank calls this at the same step: the ranks' own
    dropout generators are gathered into it, and all learn whether rank 0's write worked."""
    path = run.checkpoint_path()
    for model, params in (("manual", run.engine.params), ("autograd", run.models.twin_params())):
        bad = non_finite_parameter(params)
        if bad:  # never replace a good checkpoint with a diverged state
            raise TrainingError(f"refusing to write {path}: the {model} model's {bad} is not finite")
    rank_rng = run.dp.gather_states(torch.get_rng_state()) if run.dp is not None else None
    failure = None
    if run.is_main:
        state = run_state(run)
        if rank_rng is not None:
            state["rank_rng"] = rank_rng
        try:
            save_checkpoint(path, state)
        except Exception as error:  # told to the other ranks first, then raised
            failure = error
    if run.dp is not None:
        message = run.dp.from_main(None if failure is None else str(failure))
        if message is not None and failure is None:
            raise TrainingError(f"rank 0 could not write the checkpoint, so every rank stops: {message}")
    if failure is not None:
        raise failure
    run.last_checkpoint, run.saved_step = path, run.global_step
    return path


def restore_run(run, path: Path) -> None:
    """Continue from a checkpoint. Data-parallel: rank 0 reads and checks it and sends it to the others (so
    they need no copy of the file); an error on rank 0 stops every rank with the same message."""
    state = failure = None
    if run.is_main:
        try:
            state = checked_checkpoint(run, path)
        except Exception as error:  # told to the other ranks first (they would wait for the state), then raised
            failure = error
    if run.dp is not None:
        state, message = run.dp.from_main((state, None if failure is None else str(failure)))
        if message is not None and failure is None:
            raise CheckpointError(message)
    if failure is not None:
        raise failure
    try:
        run.models.load_state_dict(state)
        run.order.load_state_dict(state["order"])
    except (KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"--resume {path}: the checkpoint does not fit this run ({error})") from error
    run.epoch, run.global_step = state["epoch"], state["global_step"]
    # A clone: set_rng_state reads a row of the stacked states from its storage's start (a view crashes it).
    torch.set_rng_state(state["rank_rng"][run.dp.rank].clone() if "rank_rng" in state else state["torch_rng"])
    if run.config.torch_device.type == "cuda" and state["cuda_rng"].numel():
        torch.cuda.set_rng_state(state["cuda_rng"], run.config.torch_device)
    run.tally = ParityTally(**state["tally"])
    run.history = list(state["history"])
    run.elapsed = state["elapsed"]
    run.interval_losses = {model: list(values) for model, values in state["interval_losses"].items()}
    run.epoch_losses = {model: list(values) for model, values in state["epoch_losses"].items()}
    run.single_tally = SingleProcessTally(**state.get("single_process_tally", {}))
    run.last_checkpoint, run.saved_step = Path(path), run.global_step


def schedule_identity(described) -> dict | None:
    """A saved schedule's identity (``ScheduleConfig.identity``), or None when it is not a valid schedule (then
    the full comparison names what differs)."""
    try:
        return ScheduleConfig.from_dict(described).identity()
    except (TypeError, ValueError, AttributeError, KeyError):
        return None


def checked_checkpoint(run, path: Path) -> dict:
    """The checkpoint at ``path``, read and checked against this run (world size, config, schema)."""
    state = load_checkpoint(path)
    saved_world = state.get("world_size", 1)  # checkpoints from before data-parallel runs: one process
    if saved_world != run.world_size():
        raise CheckpointError(
            f"--resume {path}: the checkpoint was written by a run of {saved_world} process"
            f"{'es' if saved_world != 1 else ''} (world size {saved_world}) and this run has {run.world_size()}; "
            f"resume with the same number of processes ("
            + (f"torchrun --nproc-per-node {saved_world} ..." if saved_world > 1 else "without torchrun")
            + "): each process's shard of every batch and its dropout generator depend on it")
    saved_settings, current_settings = dict(state["settings"]), run.settings.identity()
    saved_schedule = schedule_identity(saved_settings.get("schedule"))
    current_schedule = run.settings.schedule.identity()
    if (saved_schedule is not None and saved_schedule.get("name") == "cosine" and current_schedule["name"] == "cosine"
            and saved_schedule.get("t_max") != current_schedule["t_max"]
            and {**saved_schedule, "t_max": None} == {**current_schedule, "t_max": None}):
        raise CheckpointError(
            f"--resume {path}: the cosine schedule's half period (t_max) is {saved_schedule['t_max']} steps in the "
            f"checkpoint and {current_schedule['t_max']} in this run (without --lr-t-max the half period is every step "
            f"of the run after the warm-up, so it follows --epochs). To continue that schedule, add --lr-t-max "
            f"{saved_schedule['t_max']} (the rate then rises again after step {saved_schedule['t_max']}); for a longer "
            "cosine, start a new run")
    if saved_schedule is not None:  # fields a schedule never reads must not stop a resume (older checkpoints)
        if saved_schedule["name"] != current_schedule["name"]:  # then only the names (and warm-ups) are compared
            saved_schedule = {key: value for key, value in saved_schedule.items() if key in current_schedule}
            current_schedule = {key: value for key, value in current_schedule.items() if key in saved_schedule}
        saved_settings["schedule"], current_settings["schedule"] = saved_schedule, current_schedule
    check_compatible(path, {**state["config"], **saved_settings, **state["data"]},
                     {**run.config.to_dict(), **current_settings, **run.data_identity()})
    completed = state.get("epoch")
    step = state.get("global_step")
    if (isinstance(completed, int) and not isinstance(completed, bool) and completed > run.settings.epochs
            and isinstance(step, int) and step >= completed * run.batches_per_epoch):  # (else: a damaged file)
        raise CheckpointError(f"--resume {path}: the checkpoint has completed {completed} epochs, more than this "
                              f"run's --epochs {run.settings.epochs}; give --epochs {completed} or more")
    validate_for_run(path, state, run_state(run), run.order.n_train, run.batches_per_epoch, run.settings.epochs)
    return state
