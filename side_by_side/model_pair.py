"""The two models of a side-by-side run, each with its own optimizer and learning-rate schedule.

The engine (hand-written backprop, ``manual_backprop.optim``, ``manual_backprop.schedules``) and the twin
(autograd, ``torch.optim``, ``torch.optim.lr_scheduler``) start from the same weights and are built from the same
``MLPConfig``, ``OptimizerConfig`` and ``ScheduleConfig``. :meth:`ModelPair.step` takes one step of each on the
same batch; :meth:`ModelPair.compare` reports how far apart they are, tensor by tensor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig
from manual_backprop.constraints import max_norm_
from manual_backprop.data_parallel import GradientAverager
from manual_backprop.fast import FastTrainer
from manual_backprop.model import MLP, init_parameters
from manual_backprop.optim import build_optimizer
from manual_backprop.optim_config import OptimizerConfig, ScheduleConfig
from manual_backprop.schedules import LRSchedule
from side_by_side.model_pair_fast import FastSteps
from side_by_side.model_pair_state import PairState
from side_by_side.process_group import DataParallel
from side_by_side.step_result import (  # noqa: F401 (re-exported)
    DivergenceError,
    StepResult,
    diverged_loss,
    non_finite_parameter,
    overflowed,
)
from torch_reference.compare import compare_records
from torch_reference.lockstep import lockstep_loss_and_gradients
from torch_reference.optim_parity import lr_row, state_rows, weight_rows
from torch_reference.optim_twin import (
    build_torch_optimizer,
    build_torch_schedule,
    current_lr,
)
from torch_reference.twin import TwinMLP


class ModelPair(FastSteps, PairState):
    """The engine and (with ``twin=True``) its autograd twin, with their optimizers and schedules.

    data_parallel: this process's place in a data-parallel group. Each step then averages the engine's gradients
    over the ranks (``GradientAverager``: all-reduces launched from the engine's backward) and trains the twin
    wrapped in ``DistributedDataParallel``; the ranks agree on the loss and on whether to stop.
    """

    def __init__(self, config: MLPConfig, optimizer: OptimizerConfig, schedule: ScheduleConfig, seed: int,
                 twin: bool = True, data_parallel: DataParallel | None = None):
        self.config, self.optimizer_config, self.schedule_config = config, optimizer, schedule
        self.dp = data_parallel
        self.engine = MLP(config, init_parameters(config, torch.Generator().manual_seed(seed)))
        self.engine_optimizer = build_optimizer(optimizer, self.engine.params)
        self.engine_schedule = LRSchedule(schedule, optimizer.lr)
        self.twin = self.twin_optimizer = self.twin_schedule = None
        # The engine alone trains with the fast path (manual_backprop/fast.py: same arithmetic, bitwise equal
        # weights, no record of intermediates) where it supports the config; otherwise with the reference pairs.
        self.fast, self.path_note = None, "reference engine (side by side with the twin)"
        self.averager = self.twin_wrapper = None
        if data_parallel is not None:
            self.averager = GradientAverager(self.engine.params, data_parallel.mode, data_parallel.bucket_bytes)
            self.path_note = (f"reference engine, data-parallel over {data_parallel.world_size} processes: "
                              f"{self.averager.describe()}")
        if not twin:
            try:
                self.fast = FastTrainer.from_optimizer_config(config, self.engine.params, optimizer,
                                                             refuse_divergence=True)
                self.path_note = "fast path (manual_backprop/fast.py)"
                if data_parallel is not None:
                    self.path_note += (f", data-parallel over {data_parallel.world_size} processes: "
                                       f"{self.averager.describe()}")
            except ValueError as why:
                self.path_note = f"reference engine (the fast path does not run this: {why})"
        if twin:
            self.twin = TwinMLP.from_engine(config, self.engine.params)
            # foreach=False: the per-tensor loop, whose arithmetic the engine's optimizers reproduce (the default
            # on CUDA is the multi-tensor path).
            self.twin_optimizer = build_torch_optimizer(optimizer, self.twin.engine_parameters(), foreach=False)
            self.twin_schedule = build_torch_schedule(schedule, self.twin_optimizer)
            if data_parallel is not None:
                from torch.nn.parallel import DistributedDataParallel
                # Buckets of the engine's size cap (DDP's own rule fills them differently; with 2 ranks the sums
                # are bitwise the same whatever the buckets, see docs/data_parallel.md).
                self.twin_wrapper = DistributedDataParallel(
                    self.twin, bucket_cap_mb=data_parallel.bucket_mb,
                    device_ids=[data_parallel.local_rank] if config.torch_device.type == "cuda" else None)

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.engine_schedule.lr

    def step(self, X: Tensor, y: Tensor, stop_requested: bool = False) -> StepResult:
        """Forward, backward and update of both models on the same batch, then a schedule step of each.

        A non-finite loss stops before any update; non-finite weights after the update stop too (the hinge loss,
        for one, stays finite while its margins overflow), so a diverged state never reaches a checkpoint.
        Data-parallel: X, y are this rank's shard; the gradients are averaged before the update, and
        ``stop_requested`` (this rank's wish to stop after this step) is shared: the result says whether any rank
        asked, so that all stop at the same step.
        """
        self.engine_optimizer.lr = self.engine_schedule.lr
        if self.fast is not None and self.dp is not None:
            return self._fast_data_parallel_step(X, y, stop_requested)
        if self.fast is not None:
            return self._fast_step(X, y)
        on_gradient = None
        if self.averager is not None:
            self.averager.start_step()
            on_gradient = self.averager.mark_ready
        if self.twin is not None:
            # Training mode (dropout active): both draw their masks from one generator state (see lockstep.py).
            record, twin_record = lockstep_loss_and_gradients(self.engine, self.twin, X, y, train=True,
                                                              on_gradient=on_gradient, wrapper=self.twin_wrapper)
        else:
            with torch.inference_mode():
                record = self.engine.loss_and_gradients(X, y, train=True, on_gradient=on_gradient)
            twin_record = None
        grads = record.gradients()
        if self.averager is not None:
            self.averager.finish(grads)  # every rank's record now holds the averaged dW, db
        result = StepResult(record, twin_record, record.loss.item(),
                            twin_record.loss.item() if twin_record is not None else None, stop_requested)
        problem = None
        for model, loss, model_record in (("manual", result.engine_loss, record),
                                          ("autograd", result.twin_loss, twin_record)):
            if loss is None or problem:
                continue
            if not math.isfinite(loss):
                problem = diverged_loss(model, loss)
                continue
            # The loss alone can hide an overflow: the hinge loss turns NaN margins into 0.
            model_grads = grads if model_record is record else model_record.gradients()
            bad = non_finite_parameter({"output scores Z": model_record.layers[-1]["Z"],
                                        **{f"gradient d{name}": grad for name, grad in model_grads.items()}})
            if bad:
                problem = overflowed(model, bad, loss)
        if self.dp is not None:
            problem, _ = self._agree(result, problem)
        if problem:
            raise DivergenceError(problem)
        with torch.inference_mode():
            self.engine_optimizer.step(grads)
        self.engine_schedule.step()
        if self.twin is not None:
            self.twin_optimizer.step()
            if self.twin_schedule is not None:
                self.twin_schedule.step()
        if self.config.max_norm is not None:  # the projection after each update (Srivastava et al. 2014)
            with torch.inference_mode():
                max_norm_(self.engine.params, self.config.max_norm, self.config)
            if self.twin is not None:
                self.twin.apply_max_norm(self.config.max_norm)
        for model, params in (("manual", self.engine.params), ("autograd", self.twin_params())):
            bad = non_finite_parameter(params)
            if bad:
                raise DivergenceError(f"the {model} model's {bad} became non-finite in the update (the loss before "
                                      f"it was {result.engine_loss if model == 'manual' else result.twin_loss})")
        return result

    def _agree(self, result: StepResult, problem: str | None,
               bad_local_gradient: bool = False) -> tuple[str | None, bool]:
        """One small all-reduce: the mean loss of each model over the ranks, whether any rank saw a diverged
        value, whether any rank asked to stop, and (the fast path's step, which agrees before its gradients are
        averaged) whether any rank's own gradients are non-finite. Returns (the problem to stop for: this rank's
        own, or another's; whether any rank had a non-finite gradient of its own)."""
        world_size = self.dp.world_size
        total = self.dp.agree([result.engine_loss, result.twin_loss or 0.0, float(problem is not None),
                               float(result.stop_requested), float(bad_local_gradient)])
        result.engine_loss = total[0] / world_size
        if result.twin_loss is not None:
            result.twin_loss = total[1] / world_size
        result.stop_requested = total[3] > 0
        if problem is None and total[2] > 0:
            problem = (f"{int(total[2])} of the {world_size} ranks saw a non-finite loss, output or gradient (rank 0 "
                       "or the rank's own error output names it); stopping without updating the weights")
        return problem, total[4] > 0

    def twin_params(self) -> dict[str, Tensor]:
        return {name: tensor.detach() for name, tensor in self.twin.engine_parameters().items()} if self.twin else {}

    def compare(self, result: StepResult, policy) -> tuple[list, list]:
        """(the step's loss, value and gradient rows; the weight, optimizer-state and lr rows after the update)."""
        rows = compare_records(result.engine_record, result.twin_record, policy).rows
        twin_params = self.twin.engine_parameters()
        after = weight_rows(self.engine.params, twin_params, policy)
        after += state_rows(self.engine_optimizer, self.twin_optimizer, twin_params, policy)
        after.append(lr_row(0, self.engine_schedule.lr, current_lr(self.twin_optimizer)))
        return rows, after
