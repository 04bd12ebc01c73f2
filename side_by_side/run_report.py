"""What a side-by-side run reports: the evaluation and line at the end of each epoch, and the run's summary.

The summary is what ``--json`` and ``summary.json`` hold: the final metrics of both models, the history, the
parity tally and, for a data-parallel run, the group and its distance to the single-process gradient.
"""

from __future__ import annotations

import math

from side_by_side.evaluation import evaluate_engine, evaluate_twin
from side_by_side.tensorboard_writer import RunLogger

DRY_RUN_EVAL_IMAGES = 512


def end_of_epoch(run, logger: RunLogger, epoch_losses: dict[str, list[float]]) -> None:
    """Evaluate both models on the test (and validation) split, log the epoch and print its line."""
    data, step = run.data, run.global_step
    test_x, test_y = data.test_x, data.test_y
    if run.settings.dry_run:
        test_x, test_y = test_x[:DRY_RUN_EVAL_IMAGES], test_y[:DRY_RUN_EVAL_IMAGES]
    entry = {"epoch": run.epoch, "step": step}
    models = {"manual": (run.engine, evaluate_engine)}
    if run.twin is not None:
        models["autograd"] = (run.twin, evaluate_twin)
    for name, (model, evaluate) in models.items():
        test = evaluate(model, test_x, test_y)
        train_loss = sum(epoch_losses[name]) / max(len(epoch_losses[name]), 1)
        values = {"loss/train_epoch": train_loss, "loss/test": test.loss, "accuracy/test": test.accuracy}
        if data.val_x.shape[0]:
            val = evaluate(model, data.val_x, data.val_y)
            values.update({"loss/val": val.loss, "accuracy/val": val.accuracy})
        refuse_non_finite(run, name, values)
        logger.scalars(name, step, values)
        entry[name] = values
        logger.misclassified(step, test_x, test_y, test.predictions, model=name)
    logger.histograms("manual", step, run.engine.params, run.last_grads)
    logger.first_layer_images(step, run.engine.params["W1"])
    if run.twin is not None:
        twin_params = {name: tensor.detach() for name, tensor in run.twin.engine_parameters().items()}
        twin_grads = {name: tensor.grad for name, tensor in run.twin.engine_parameters().items()}
        logger.histograms("autograd", step, twin_params, twin_grads)
    logger.flush()
    run.history.append(entry)
    line = (f"epoch {run.epoch}/{run.settings.epochs}: train loss manual {entry['manual']['loss/train_epoch']:.4f}"
            f", test accuracy manual {100 * entry['manual']['accuracy/test']:.2f}%")
    if "autograd" in entry:
        line += (f" | autograd: train loss {entry['autograd']['loss/train_epoch']:.4f}, test accuracy "
                 f"{100 * entry['autograd']['accuracy/test']:.2f}% | parity: {run.tally.worst_line()}")
    run.log(line)


def refuse_non_finite(run, model: str, values: dict) -> None:
    """A NaN or Inf in an evaluation fails the run as one in training does: before this epoch's checkpoint, so the
    last good one is kept (finite weights can still overflow the loss, e.g. a huge --lr on a few images)."""
    bad = {key: value for key, value in values.items() if not math.isfinite(value)}
    if not bad:
        return
    from side_by_side.loop import divergence_hint
    from side_by_side.settings import TrainingError

    kept = (f"The last good checkpoint is {run.last_checkpoint} (step {run.saved_step})" if run.last_checkpoint
            else "No checkpoint had been written yet")
    raise TrainingError(f"the {model} model's " + ", ".join(f"{key} is {value}" for key, value in bad.items())
                        + f" at the end of epoch {run.epoch} (step {run.global_step}); the run stops. {kept}. "
                        + divergence_hint(run))


def summary(run, stopped_early: bool) -> dict:
    """The run's summary (``--json``, summary.json)."""
    last = run.history[-1] if run.history else {}
    final = {model: {"test_accuracy": last[model]["accuracy/test"], "test_loss": last[model]["loss/test"],
                     "train_loss": last[model]["loss/train_epoch"]}
             for model in ("manual", "autograd") if model in last}
    return {
        "config": run.config.to_dict(),
        "run": run.description,
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.last_checkpoint) if run.last_checkpoint else None,
        "epochs_completed": run.epoch,
        "steps": run.global_step,
        "stopped_early": stopped_early,
        "interrupted": run.interrupt.signal_name,  # "SIGINT" or "SIGTERM" when a signal stopped the run
        "optimizer": run.settings.optimizer.to_dict(),
        "schedule": run.settings.schedule.to_dict(),
        "final_lr": run.models.lr,
        "engine_path": run.models.path_note,
        "seconds": round(run.elapsed, 3),
        "final": final,
        "history": run.history,
        "parity": {
            "checks": run.tally.checks,
            "bitwise_equal_checks": run.tally.bitwise_checks,
            "checks_out_of_policy": run.tally.failed_checks,
            "worst_per_tensor": run.tally.worst,
            "worst_weight_max_abs_diff": run.tally.worst_weight_diff,
        },
        "tensorboard": f"tensorboard --logdir {run.run_dir.parent}",
        "world_size": run.world_size(),
        **({"data_parallel": data_parallel_summary(run)} if run.dp is not None else {}),
    }


def data_parallel_summary(run) -> dict:
    """What summary.json says about a data-parallel run: the group, and the two parity results (the engine's
    average against DDP's is the "parity" section above; against the single-process gradient here)."""
    no_dropout = run.config.dropout == 0 and run.config.input_dropout == 0
    return {**run.dp.describe(), "engine_averaging": run.models.averager.describe(),
            "twin": "DistributedDataParallel" if run.twin is not None else None,
            "vs_single_process": {**run.single_tally.state_dict(), "note": (
                "the averaged gradient against the gradient of the whole global batch in one process, at each "
                "parity check (max_ulp: float32 rounding of a differently grouped sum)") if no_dropout else
                "not compared: with dropout each rank draws its own masks"}}
