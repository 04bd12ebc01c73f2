"""Functions the data-parallel tests run in each of their spawned processes (spawn pickles them by module name,
so they live in a module of their own). Each writes what rank 0 saw into ``out`` (a path) for the test to check."""

from __future__ import annotations

import gc

import torch
import torch.distributed as dist

from manual_backprop.config import MLPConfig
from manual_backprop.data_parallel import GradientAverager
from manual_backprop.model import MLP, init_parameters
from manual_backprop.optim_config import OptimizerConfig, ScheduleConfig
from side_by_side.model_pair import ModelPair
from side_by_side.process_group import DataParallel
from torch_reference.dp_parity import SingleProcessTally, single_process_gradients
from torch_reference.parity import synthetic_batch
from torch_reference.twin import TwinMLP

SIZES = (784, 64, 32, 10)
GLOBAL_BATCH = 24


def join(rank: int, world_size: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)


def gradients_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One step's gradients, both averaging modes and DDP, against the global batch's, in float64 and float32."""
    join(rank, world_size, port)
    results = {}
    for dtype in ("float64", "float32"):
        config = MLPConfig(sizes=SIZES, dtype=dtype)
        params = init_parameters(config, torch.Generator().manual_seed(0))
        X, y = synthetic_batch(config, GLOBAL_BATCH, torch.Generator().manual_seed(1))
        shard = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
        engine = MLP(config, {name: tensor.clone() for name, tensor in params.items()})
        averaged = {}
        for mode in ("simple", "bucketed"):
            averager = GradientAverager(engine.params, mode, bucket_bytes=16 * 2**10)  # several buckets
            averager.start_step()
            with torch.inference_mode():
                grads = engine.loss_and_gradients(X[shard], y[shard], on_gradient=averager.mark_ready).gradients()
            averager.finish(grads)
            averaged[mode] = {name: grad.clone() for name, grad in grads.items()}
            results[f"{dtype}_{mode}_buckets"] = len(averager.buckets)
        from torch.nn.parallel import DistributedDataParallel
        twin = TwinMLP.from_engine(config, params)
        wrapper = DistributedDataParallel(twin)
        ddp_grads = twin.loss_and_gradients(X[shard], y[shard], wrapper=wrapper).gradients()
        del wrapper
        gathered = [None] * world_size
        dist.all_gather_object(gathered, {name: grad.clone() for name, grad in averaged["bucketed"].items()})
        if rank == 0:
            single = single_process_gradients(MLP(config, params), X, y)
            tally = SingleProcessTally()
            results[dtype] = {
                "vs_single": tally.add(averaged["bucketed"], single),
                "simple_equals_bucketed": all(torch.equal(averaged["simple"][n], averaged["bucketed"][n])
                                              for n in single),
                "engine_equals_ddp": all(torch.equal(averaged["bucketed"][n], ddp_grads[n].detach()) for n in single),
                "ranks_agree": all(torch.equal(other[n], averaged["bucketed"][n])
                                   for other in gathered for n in single),
            }
    if rank == 0:
        torch.save(results, out)
    leave()


def training_worker(rank: int, world_size: int, port: int, out: str, mode: str, dropout: float,
                    optimizer: str = "adam", bucket_mb: float = 0.02) -> None:
    """Several steps of the model pair (engine averaged by hand, twin in DDP) and, on the same shards and dropout
    masks, of a fast-path pair (``twin=False``: FastTrainer, each bucket updated once its all-reduce is in):
    compare after every step, and record the order of the fast step's launches, waits and updates."""
    join(rank, world_size, port)
    config = MLPConfig(sizes=SIZES, dropout=dropout, max_norm=3.0 if dropout else None)
    data_parallel = DataParallel(rank, world_size, rank, "gloo", mode, bucket_mb=bucket_mb)
    torch.manual_seed(data_parallel.dropout_seed(0))
    optimizer_config = (OptimizerConfig("adam", lr=1e-3) if optimizer == "adam"
                        else OptimizerConfig("momentum", lr=0.05, momentum=0.9))
    pair = ModelPair(config, optimizer_config, ScheduleConfig(), seed=0, data_parallel=data_parallel)
    fast = ModelPair(config, optimizer_config, ScheduleConfig(), seed=0, twin=False, data_parallel=data_parallel)
    assert fast.fast is not None, fast.path_note
    events = trace_fast_step(fast)
    generator = torch.Generator().manual_seed(2)
    checks = []
    for step in range(5):
        X, y = synthetic_batch(config, GLOBAL_BATCH, generator)
        shard = data_parallel.shard(torch.arange(GLOBAL_BATCH))
        before = torch.get_rng_state()
        result = pair.step(X[shard], y[shard], stop_requested=(rank == 1 and step == 3))
        after = torch.get_rng_state()
        torch.set_rng_state(before)  # the fast step draws the pair's dropout masks
        events.append(("step", step))
        fast_result = fast.step(X[shard], y[shard], stop_requested=(rank == 1 and step == 3))
        twin_params = pair.twin.engine_parameters()
        weights_equal = all(torch.equal(pair.engine.params[name], twin.detach()) for name, twin in twin_params.items())
        grads_equal = all(torch.equal(result.engine_record.gradients()[name], twin.grad)
                          for name, twin in twin_params.items())
        checks.append({"weights_equal": weights_equal, "grads_equal": grads_equal, "stop": result.stop_requested,
                       "loss": result.engine_loss, "twin_loss": result.twin_loss,
                       "fast_weights_equal": all(torch.equal(fast.engine.params[name], twin.detach())
                                                 for name, twin in twin_params.items()),
                       "fast_grads_equal": all(torch.equal(fast_result.engine_grads[name], twin.grad)
                                               for name, twin in twin_params.items()),
                       "fast_same_masks": torch.equal(torch.get_rng_state(), after),
                       "fast_stop": fast_result.stop_requested, "fast_loss": fast_result.engine_loss})
    gathered = [None] * world_size
    dist.all_gather_object(gathered, {name: tensor.clone() for name, tensor in pair.engine.params.items()})
    if rank == 0:
        same = all(torch.equal(gathered[0][name], other[name]) for other in gathered for name in gathered[0])
        torch.save({"checks": checks, "ranks_hold_the_same_weights": same, "events": events,
                    "buckets": fast.averager.bucket_names()}, out)
    del pair  # its DDP holds the group: collected before the group goes (see DataParallel.close)
    leave()


def trace_fast_step(pair: ModelPair) -> list[tuple]:
    """Wrap the fast pair's averager and trainer (instance attributes, the classes untouched) so that each step
    appends ("launch", k) when bucket k's all-reduce starts, ("wait", k) when it has been waited for, and
    ("update", k, in_flight) when its layers are updated, in_flight the later buckets whose all-reduce had not
    completed then. Returns the list the events go to."""
    averager, trainer, events = pair.averager, pair.fast, []
    index_of = {name: index for index, names in enumerate(averager.bucket_names()) for name in names}
    mark_ready, wait_bucket, update_layers = averager.mark_ready, averager.wait_bucket, trainer.update_layers

    def traced_mark_ready(name, grad):
        mark_ready(name, grad)
        bucket = averager.bucket_of.get(name)
        if bucket is not None and len(bucket.ready) == len(bucket.names):
            events.append(("launch", index_of[name]))

    def traced_wait_bucket(index, grads):
        names = wait_bucket(index, grads)
        events.append(("wait", index))
        return names

    def traced_update_layers(grads, names):
        index = index_of[names[0]]
        in_flight = [later for later, bucket in enumerate(averager.buckets)
                     if later > index and bucket.work is not None and not bucket.work.is_completed()]
        update_layers(grads, names)
        events.append(("update", index, in_flight))

    averager.mark_ready, averager.wait_bucket, trainer.update_layers = (traced_mark_ready, traced_wait_bucket,
                                                                        traced_update_layers)
    return events


def leave() -> None:
    """Wait for the other rank, collect what still holds the group, then destroy it (DataParallel.close's order)."""
    dist.barrier()
    gc.collect()
    dist.destroy_process_group()


def divergence_worker(rank: int, world_size: int, port: int, out: str, cases: list[tuple]) -> None:
    """For each case (x_scale, (w1, w2, w3)), one step of the reference engine's data-parallel step and one of the
    fast path's, with rank 1's shard multiplied by x_scale and each W_l by w_l on both ranks (finite inputs whose
    loss or gradients overflow): what each refuses with, and whether its weights stayed as they were."""
    join(rank, world_size, port)
    from side_by_side.step_result import DivergenceError
    config = MLPConfig(sizes=SIZES)
    data_parallel = DataParallel(rank, world_size, rank, "gloo", "bucketed", bucket_mb=1e-6)
    results = []
    for scale, weight_scales in cases:
        X, y = synthetic_batch(config, GLOBAL_BATCH, torch.Generator().manual_seed(3))
        shard = data_parallel.shard(torch.arange(GLOBAL_BATCH))
        X = X[shard] * (scale if rank == 1 else 1.0)
        outcome = {}
        for path in ("reference", "fast"):
            pair = ModelPair(config, OptimizerConfig("adam", lr=1e-3), ScheduleConfig(), seed=0, twin=False,
                             data_parallel=data_parallel)
            if path == "reference":
                pair.fast = None  # the reference engine's step, without the twin
            with torch.no_grad():
                for layer, factor in enumerate(weight_scales, 1):
                    pair.engine.params[f"W{layer}"].mul_(factor)
            before = {name: tensor.clone() for name, tensor in pair.engine.params.items()}
            try:
                pair.step(X, y[shard])
                message = None
            except DivergenceError as error:
                message = str(error)
            outcome[path] = {"message": message,
                             "unchanged": all(torch.equal(before[name], tensor)
                                              for name, tensor in pair.engine.params.items())}
        results.append(outcome)
    gathered = [None] * world_size
    dist.all_gather_object(gathered, results)
    if rank == 0:
        torch.save(gathered, out)
    leave()
