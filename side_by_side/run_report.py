"""What a side-by-side run reports: the evaluation and line at the end of each epoch, and the run's summary.

The summary is what ``--json`` and ``summary.json`` hold: the final metrics of both models, the history, the
parity tally and, for a data-parallel run, the group and its distance to the single-process gradient.
"""

from __future__ import annotations

import math

from side_by_side.evaluation import evaluate_engine, evaluate_twin
from side_by_side.parity_verdict import verdict_text
from side_by_side.tensorboard_writer import RunLogger, tensorboard_command

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
    run.history.append(entry)
    write_verdict(run, logger)
    logger.flush()
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


def verdict(run) -> str | None:
    """The parity verdict in words (None without a twin), with the last evaluation's accuracies."""
    if run.twin is None:
        return None
    last = run.history[-1] if run.history else {}
    accuracies = {model: last[model]["accuracy/test"] for model in ("manual", "autograd") if model in last}
    where = f"epoch {run.epoch} of {run.settings.epochs}, step {run.global_step}"
    return verdict_text(run.tally, run.policy, accuracies, where)


def write_verdict(run, logger: RunLogger) -> None:
    text = verdict(run)
    if text is not None:
        logger.verdict(run.global_step, text)


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
            "verdict": verdict(run),
            "checks": run.tally.checks,
            "bitwise_equal_checks": run.tally.bitwise_checks,
            "checks_out_of_policy": run.tally.failed_checks,
            "worst_per_tensor": run.tally.worst,
            "worst_weight_max_abs_diff": run.tally.worst_weight_diff,
            "worst_normwise": run.tally.worst_normwise,
            "first_out_of_policy": run.tally.first_failure,
            "policy": {"rtol": run.policy.rtol, "atol": run.policy.atol},
        },
        "tensorboard": tensorboard_command(run.run_dir.parent),
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


def print_summary(summary: dict, log) -> None:
    """The summary in the terminal, at the end of a run (train_mnist prints it; summary.json holds the same)."""
    log("")
    log("summary" + (f" (INTERRUPTED by {summary['interrupted']} after {summary['epochs_completed']} complete "
                     f"epochs: not a final result; continue with --resume {summary['checkpoint']})"
                     if summary["interrupted"] else ""))
    for model, values in summary["final"].items():
        log(f"  {model:9s} test accuracy {100 * values['test_accuracy']:.2f}%, test loss {values['test_loss']:.4f}")
    parity = summary["parity"]
    if parity.get("verdict"):
        log(f"  verdict: {parity['verdict']}")
    if parity["checks"]:
        log(f"  parity: {parity['bitwise_equal_checks']}/{parity['checks']} checks bitwise equal (gradients and "
            f"weights), {parity['checks_out_of_policy']} out of policy; largest weight difference "
            f"{parity['worst_weight_max_abs_diff']:.3g}")
        inexact = {key: worst for key, worst in parity["worst_per_tensor"].items() if worst["max_ulp"] > 0}
        if not inexact:
            log(f"  every one of the {len(parity['worst_per_tensor'])} compared tensors was bitwise equal "
                "at every check")
        for key, worst in inexact.items():
            log(f"    worst {key:12s} max abs {worst['max_abs']:.3g}  max rel {worst['max_rel']:.3g}  "
                f"max ulp {worst['max_ulp']:.0f}")
    single = summary.get("data_parallel", {}).get("vs_single_process", {})
    if single.get("checks"):
        worst = {name: metrics["max_abs_in_eps_of_max"] for name, metrics in single["worst"].items()}
        name = max(worst, key=worst.get)
        log(f"  data-parallel vs one process on the global batch: {single['bitwise_checks']}/{single['checks']} "
            f"checks bitwise equal; worst {name}: {worst[name]:.3g} eps of its largest entry")
    log(f"  {summary['steps']} steps in {summary['seconds']:.1f} s; run directory {summary['run_dir']}")
    log(f"  checkpoint {summary['checkpoint']}")
    log(f"  watch it: {summary['tensorboard']}")
