"""The training loop of a side-by-side run: one step of both models, and the epochs that repeat it.

Every ``parity_every`` steps (and at the first) the step's values and gradients are compared tensor by tensor, and
after the update the weights, every optimizer state tensor and the learning rate; on the CPU all are expected to
stay bitwise equal for the whole run. The end of an epoch comes before any stop, so a checkpoint never holds a
finished epoch that was not counted and evaluated.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from side_by_side.gradient_flow import flow_scalars, snapshot
from side_by_side.settings import TrainingError
from side_by_side.step_result import DivergenceError
from side_by_side.tensorboard_layout import DP_TAGS
from side_by_side.tensorboard_writer import RunLogger
from torch_reference.dp_parity import single_process_gradients


def train_step(run, index: Tensor, logger: RunLogger) -> tuple[float, float | None]:
    """One optimizer step of each model on the batch of training images ``index`` (data-parallel: the global
    batch, of which this rank takes its shard); returns the two losses."""
    lr = run.models.lr
    parity_step = (run.global_step + 1) % run.settings.parity_every == 0 or run.global_step == 0
    data = run.data
    single = None
    if run.dp is not None:
        if parity_step and run.is_main and run.config.dropout == 0 and run.config.input_dropout == 0:
            single = single_process_gradients(run.engine, data.train_x[index], data.train_y[index])
        index = run.dp.shard(index)
    flow_step = run.is_main and (run.global_step + 1) % run.settings.log_interval == 0
    before = {}
    if flow_step:  # the weights before the step, for the update's size (gradient flow)
        before["manual"] = snapshot(run.engine.params)
        if run.twin is not None:
            before["autograd"] = snapshot(run.twin.engine_parameters())
    try:
        result = run.models.step(data.train_x[index], data.train_y[index], stop_requested=run.interrupt.requested)
    except DivergenceError as error:
        kept = (f"The last good checkpoint is {run.last_checkpoint} (step {run.saved_step})"
                if run.last_checkpoint else "No checkpoint had been written yet")
        raise TrainingError(f"{error} at epoch {run.epoch + 1}, step {run.global_step + 1} (lr {lr:g}). "
                            f"{kept}. {divergence_hint(run)}") from error
    run.global_step += 1
    run.stop_requested = result.stop_requested
    if single is not None:
        averaged = result.engine_record.gradients() if result.engine_record is not None else result.engine_grads
        distances = run.single_tally.add(averaged, single)
        logger.run_scalars(run.global_step,
                           # normwise (in eps of each tensor's largest entry): entry by entry, sums that cancel
                           # to almost zero are thousands of ulps apart and would hide the trend
                           {DP_TAGS[0]: max(d["max_abs_in_eps_of_max"] for d in distances.values()),
                            DP_TAGS[1]: max(d["max_rel"] for d in distances.values())})
    if run.twin is not None and parity_step and run.is_main:  # rank 0 reports the parity of a data-parallel run
        rows, after = run.models.compare(result, run.policy)
        bitwise = run.tally.add(rows, after, step=run.global_step)
        weights = {f"{row.name}{row.layer}": row.max_abs for row in after if row.name in ("W", "b")}
        logger.parity(run.global_step, rows, weights, bitwise, weight_rows=after,
                      checks_out_of_policy=run.tally.failed_checks, rtol=run.policy.rtol)
    if result.engine_record is not None:  # the fast path keeps no gradients to draw
        run.last_grads = result.engine_record.gradients()
    if flow_step:
        grads = run.last_grads if result.engine_record is not None else {}
        logger.scalars("manual", run.global_step, flow_scalars(before["manual"], run.engine.params, grads))
        if run.twin is not None:
            twin_params = run.twin.engine_parameters()
            logger.scalars("autograd", run.global_step, flow_scalars(
                before["autograd"], twin_params, {name: tensor.grad for name, tensor in twin_params.items()}))
    run.last_lr = lr
    return result.engine_loss, result.twin_loss


def divergence_hint(run) -> str:
    """What to change: --l2 when its penalty alone overflows the dtype (then the learning rate is not the cause),
    else the learning rate."""
    if run.config.l2 > 0:
        squares = sum(float(tensor.detach().double().square().sum())
                      for name, tensor in run.engine.params.items() if name.startswith("W"))
        penalty = run.config.l2 * squares
        if not math.isfinite(penalty) or penalty > torch.finfo(run.config.torch_dtype).max:
            return f"The --l2 {run.config.l2:g} penalty alone overflows {run.config.dtype}: try a smaller --l2."
    return "Try a smaller --lr."


def run_epochs(run, logger: RunLogger) -> dict:
    """Train until the last epoch, ``--max-steps`` or a stop signal; checkpoint as configured; return the summary."""
    from tqdm import tqdm

    settings, order = run.settings, run.order
    started = time.perf_counter() - run.elapsed
    while run.epoch < settings.epochs:
        if order.start_epoch_if_needed():
            run.epoch_losses = {"manual": [], "autograd": []}
        bar = tqdm(total=run.batches_per_epoch, initial=order.batch_in_epoch, disable=not run.progress,
                   desc=f"epoch {run.epoch + 1}/{settings.epochs}", unit="batch", leave=False)
        epoch_started = time.perf_counter()
        images_this_epoch = 0
        while not order.epoch_finished:
            index = order.next_batch().to(run.data.train_x.device)
            engine_loss, twin_loss = run.step(index, logger)
            images_this_epoch += index.numel()
            for model, loss in (("manual", engine_loss), ("autograd", twin_loss)):
                if loss is not None:
                    run.interval_losses[model].append(loss)
                    run.epoch_losses[model].append(loss)
            if run.global_step % settings.log_interval == 0:
                for model, losses in run.interval_losses.items():
                    if losses:
                        logger.scalars(model, run.global_step, {"loss/train": sum(losses) / len(losses),
                                                                "lr": run.last_lr})
                run.interval_losses = {"manual": [], "autograd": []}
            bar.update(1)
            rate = images_this_epoch / max(time.perf_counter() - epoch_started, 1e-9)
            bar.set_postfix(loss=f"{engine_loss:.4f}", img_per_s=f"{rate:.0f}", refresh=False)  # redrawn by update

            epoch_done = order.epoch_finished
            if epoch_done:
                bar.close()
                run.epoch += 1
                if run.is_main:  # rank 0 evaluates and logs; the others go on to the next collective
                    run.end_of_epoch(logger, run.epoch_losses)
            stop = None
            if settings.max_steps is not None and run.global_step >= settings.max_steps:
                stop = f"stopped after --max-steps {settings.max_steps}"
            # Data-parallel: only the flag the ranks agreed on in the step, or a signal that came later would
            # stop this rank alone.
            elif run.stop_requested if run.dp is not None else run.interrupt.requested:
                stop = (f"interrupted by {run.interrupt.signal_name}" if run.interrupt.requested
                        else "stopped because another rank was interrupted")
            if stop or epoch_done or (settings.checkpoint_every and run.global_step % settings.checkpoint_every == 0):
                run.elapsed = time.perf_counter() - started
                run.save()
            if stop:
                bar.close()
                if run.is_main and not epoch_done:  # an epoch's end wrote the verdict already
                    run.write_verdict(logger)
                run.log(f"{stop} at step {run.global_step}; resume with --resume {run.last_checkpoint}")
                return run.summary(stopped_early=run.epoch < settings.epochs)
    return run.summary(stopped_early=False)
