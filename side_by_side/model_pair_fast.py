"""The model pair's steps on the fast path (the engine alone, ``manual_backprop/fast.py``): single-process, and
data-parallel with the bucketed all-reduce launched from inside the fast backward and each bucket's layers updated
as soon as its all-reduce completes."""

from __future__ import annotations

import math

from torch import Tensor

from manual_backprop.fast_screen import DivergedBeforeUpdate
from side_by_side.step_result import DivergenceError, StepResult, diverged_loss, non_finite_parameter, overflowed


class FastSteps:
    """Mixed into ``ModelPair``: needs ``self.fast``, ``self.engine``, ``self.engine_schedule``, ``self.averager``
    and ``self._agree``."""

    def _fast_step(self, X: Tensor, y: Tensor) -> StepResult:
        """The fast path updates the weights inside its backward; its screen of the loss and the output scores
        runs before the backward (``FastTrainer._screen_divergence``), so a step the reference refuses before its
        update is refused here before any update too, with the reference's message. A gradient that overflows
        under a finite loss and output (the reference checks the gradients too) shows up in the weights: the check
        after the update names them."""
        self.fast.lr = self.engine_schedule.lr
        try:
            loss = self.fast.step(X, y).item()
        except DivergedBeforeUpdate as diverged:
            if diverged.what == "loss":
                raise DivergenceError(diverged_loss("manual", diverged.loss)) from None
            raise DivergenceError(overflowed("manual", diverged.what, diverged.loss)) from None
        self.engine_schedule.step()
        bad = non_finite_parameter(self.engine.params)
        if bad:
            raise DivergenceError(f"the manual model's {bad} became non-finite in the update (the loss before it "
                                  f"was {loss})")
        return StepResult(None, None, loss, None)

    def _fast_data_parallel_step(self, X: Tensor, y: Tensor, stop_requested: bool) -> StepResult:
        """The fast path in a data-parallel run. X, y: this rank's shard, (s, n0) and (s,).

        1. ``fast.gradients``: the backward hands each final gradient to the averager, which launches a bucket's
           all-reduce from inside the backward as soon as the bucket's last gradient is in.
        2. The whole step's checks and the ranks' agreement (loss, stop), before any update: see below.
        3. Bucket by bucket, in launch order: wait for its all-reduce, then update its layers (optimizer,
           max-norm) while the buckets after it are still in flight. Every update reads only its own parameter,
           gradient and state, so the weights are bitwise the reference's (which updates all layers after
           ``finish``) and DDP's; what is counted once per step (the optimizer's step count, momentum's first
           step, the schedule) is done once, around the loop.

        Why the checks come before the averages: the reference (``ModelPair.step``) checks the loss, the output
        scores and the averaged gradients of the whole step, agrees with the other ranks, then updates; a
        divergence leaves the weights as they were, and the run stops with no checkpoint. Updating bucket by
        bucket, a non-finite average in the last bucket would be seen after the first bucket's layers had
        changed. So each rank checks its own gradients before they are averaged, and the agreement says whether
        any rank's were non-finite: a sum with a NaN or Inf in it is NaN or Inf, so then every average is, and
        every rank waits for all buckets and names the first non-finite averaged gradient, as the reference does
        (the same message, no update). When no rank's own gradient is non-finite the averages are finite, but for
        an overflow of the sum itself: impossible with 2 ranks (x/2 + y/2 of finite floats is finite), and each
        bucket is checked before its update all the same; should it happen, the run stops with the reference's
        message, the earlier buckets' layers updated, which nothing sees (after a divergence the loop writes no
        checkpoint and no summary, and a checkpoint of non-finite weights is refused anyway).
        """
        self.fast.lr = self.engine_schedule.lr
        self.averager.start_step()
        loss, grads = self.fast.gradients(X, y, on_gradient=self.averager.mark_ready)
        buckets = self.averager.end_step(grads)  # every bucket's all-reduce launched; none waited for yet
        result = StepResult(None, None, loss.item(), None, stop_requested)
        own_loss = result.engine_loss  # this rank's, before the agreement averages it
        problem = None
        if not math.isfinite(own_loss):
            problem = diverged_loss("manual", own_loss)
        else:
            bad = non_finite_parameter({"output scores Z": self.fast.output_scores(X.shape[0])})
            if bad:
                problem = overflowed("manual", bad, own_loss)
        own_problem = problem
        # Not yet averaged; checked even where the loss is bad: another rank's average is named from it.
        bad_local_gradient = non_finite_parameter(grads) is not None
        problem, any_bad_gradient = self._agree(result, problem, bad_local_gradient)
        if problem or any_bad_gradient:
            for index in range(len(buckets)):  # no collective left in flight; the averages to name
                self.averager.wait_bucket(index, grads)
            if own_problem is None and any_bad_gradient:  # the reference: this rank sees the averages' NaN itself
                bad = non_finite_parameter({f"gradient d{name}": grad for name, grad in grads.items()})
                # (a NaN or Inf always reaches the sum)
                problem = overflowed("manual", bad or "averaged gradient", own_loss)
            raise DivergenceError(problem)

        averaged, overflow = {}, False
        self.fast.start_update()
        for index, names in enumerate(buckets):
            self.averager.wait_bucket(index, grads)
            if overflow:
                continue  # waited for all the same, so that no collective is left in flight
            if non_finite_parameter({name: grads[name] for name in names}):
                overflow = True  # the sum itself overflowed (see the docstring): no further update
                continue
            averaged.update({name: grads[name].clone() for name in names})  # before the update may overwrite them
            self.fast.update_layers(grads, names)
        if overflow:
            bad = non_finite_parameter({f"gradient d{name}": averaged.get(name, grad) for name, grad in grads.items()})
            raise DivergenceError(overflowed("manual", bad, own_loss))
        self.fast.end_update()
        result.engine_grads = {name: averaged[name] for name in grads}
        self.engine_schedule.step()
        bad = non_finite_parameter(self.engine.params)
        if bad:
            raise DivergenceError(f"the manual model's {bad} became non-finite in the update (the loss before it "
                                  f"was {result.engine_loss})")
        return result

