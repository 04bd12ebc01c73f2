"""The model pair's steps on the fast path (the engine alone, ``manual_backprop/fast.py``): single-process, and
data-parallel with the bucketed all-reduce launched from inside the fast backward."""

from __future__ import annotations

import math

from torch import Tensor

from side_by_side.step_result import DivergenceError, StepResult, non_finite_parameter


class FastSteps:
    """Mixed into ``ModelPair``: needs ``self.fast``, ``self.engine``, ``self.engine_schedule``, ``self.averager``
    and ``self._agree``."""

    def _fast_step(self, X: Tensor, y: Tensor) -> StepResult:
        """The fast path updates the weights inside its backward, so a non-finite loss is seen after the update:
        the run stops there all the same, and the diverged weights never reach a checkpoint."""
        self.fast.lr = self.engine_schedule.lr
        loss = self.fast.step(X, y).item()
        if not math.isfinite(loss):
            raise DivergenceError(f"the manual model's loss became {loss} (fast path: this step's update is "
                                  "not kept)")
        self.engine_schedule.step()
        bad = non_finite_parameter(self.engine.params)
        if bad:
            raise DivergenceError(f"the manual model's {bad} became non-finite in the update (the loss before it "
                                  f"was {loss})")
        return StepResult(None, None, loss, None)

    def _fast_data_parallel_step(self, X: Tensor, y: Tensor, stop_requested: bool) -> StepResult:
        """The fast path in a data-parallel run: its gradients, each handed to the averager as soon as it is final
        (the bucket's all-reduce launches from inside the fast backward), the checks and the agreement of
        :meth:`step`, then the update from the averaged gradients. The same steps as the reference engine's."""
        self.fast.lr = self.engine_schedule.lr
        self.averager.start_step()
        loss, grads = self.fast.gradients(X, y, on_gradient=self.averager.mark_ready)
        self.averager.finish(grads)
        result = StepResult(None, None, loss.item(), None, stop_requested)
        problem = None
        if not math.isfinite(result.engine_loss):
            problem = f"the manual model's loss became {result.engine_loss}; stopping without updating the weights"
        else:
            bad = non_finite_parameter({"output scores Z": self.fast.output_scores(X.shape[0]),
                                        **{f"gradient d{name}": grad for name, grad in grads.items()}})
            if bad:
                problem = (f"the manual model's {bad} became non-finite (an overflow: the loss is still "
                           f"{result.engine_loss}); stopping without updating the weights")
        problem = self._agree(result, problem)
        if problem:
            raise DivergenceError(problem)
        result.engine_grads = {name: grad.clone() for name, grad in grads.items()}  # before the update reuses them
        self.fast.apply_gradients(grads)
        self.engine_schedule.step()
        bad = non_finite_parameter(self.engine.params)
        if bad:
            raise DivergenceError(f"the manual model's {bad} became non-finite in the update (the loss before it "
                                  f"was {result.engine_loss})")
        return result
