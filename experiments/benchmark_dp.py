"""Data-parallel scaling on this machine: 1 process against 2 (one thread each), engine and DDP.

    python -m experiments.benchmark_dp                              # batches 64, 256, 1024, 4096
    python -m experiments.benchmark_dp --batch-sizes 512 --json dp.json

A step is forward, loss, backward, gradient averaging (2 processes) and an SGD-with-momentum update (lr 0.001,
momentum 0.9) on one fixed synthetic batch. For each global batch size B:

* 1 process, 1 thread, no process group: the engine (reference MLP, engine optimizer) and plain autograd
  (``nn.Sequential`` + ``F.cross_entropy`` + ``torch.optim.SGD``, as a user writes it);
* 2 processes (gloo on 127.0.0.1, 1 thread each), B/2 rows each: the engine averaging with ``simple`` and with
  ``bucketed`` (``--bucket-mb``), and the same ``nn.Sequential`` inside ``DistributedDataParallel`` (defaults).

Times are the best of ``--repeats`` blocks of steps lasting about ``--min-seconds``, each block between barriers,
taking the slowest rank. speedup = 1-process time / 2-process time of the matching variant (engine against the
engine, DDP against autograd); scaling efficiency = speedup / 2 (1.0: perfect).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from experiments import arguments
from experiments.benchmark_variants import AutogradStep, sgd_momentum
from experiments.parity import parse_sizes
from experiments.preflight import memory_fits
from manual_backprop.config import MLPConfig
from manual_backprop.data_parallel import DEFAULT_BUCKET_MB, GradientAverager
from manual_backprop.model import MLP, init_parameters
from manual_backprop.optim import build_optimizer
from side_by_side.process_group import free_port
from torch_reference.parity import synthetic_batch

LR, MOMENTUM = 1e-3, 0.9
ONE_PROCESS = ("engine", "autograd")
TWO_PROCESSES = ("engine_simple", "engine_bucketed", "ddp")
BASELINE = {"engine_simple": "engine", "engine_bucketed": "engine", "ddp": "autograd"}


def engine_step(config: MLPConfig, X, y, averager: GradientAverager | None):
    engine = MLP(config, init_parameters(config, torch.Generator().manual_seed(0)))
    optimizer = build_optimizer(sgd_momentum(LR, MOMENTUM), engine.params)

    def step():
        with torch.inference_mode():
            if averager is None:
                grads = engine.loss_and_gradients(X, y).gradients()
            else:
                averager.start_step()
                grads = engine.loss_and_gradients(X, y, on_gradient=averager.mark_ready).gradients()
                averager.finish(grads)
            optimizer.step(grads)
    return step, engine


def autograd_step(config: MLPConfig, X, y, ddp: bool):
    """experiments.benchmark's plain autograd step (nn.Sequential + F.cross_entropy + torch.optim.SGD), its model
    wrapped in DistributedDataParallel when ``ddp``; from the engine's initial weights."""
    step = AutogradStep(config, init_parameters(config, torch.Generator().manual_seed(0)), X, y,
                        sgd_momentum(LR, MOMENTUM))
    if ddp:
        from torch.nn.parallel import DistributedDataParallel
        step.model = DistributedDataParallel(step.model)  # the step's loss reads step.model at each call
    return step.step


def time_steps(step, repeats: int, min_seconds: float, grouped: bool) -> float:
    """Best seconds per step over ``repeats`` blocks; with a process group, the slowest rank's time per block."""
    for _ in range(3):
        step()
    started = time.perf_counter()
    step()
    one = max(time.perf_counter() - started, 1e-6)
    steps = torch.tensor([max(1, int(min_seconds / one))], dtype=torch.float64)
    if grouped:  # every rank must run the same number of steps
        dist.all_reduce(steps, op=dist.ReduceOp.MIN)
    steps = int(steps.item())
    best = float("inf")
    for _ in range(repeats):
        if grouped:
            dist.barrier()
        started = time.perf_counter()
        for _ in range(steps):
            step()
        elapsed = torch.tensor([time.perf_counter() - started], dtype=torch.float64)
        if grouped:
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        best = min(best, elapsed.item() / steps)
    return best


def worker(rank: int, world_size: int, port: int, sizes: tuple, batch_sizes: list, repeats: int,
           min_seconds: float, bucket_mb: float, results) -> None:
    torch.set_num_threads(1)
    grouped = world_size > 1
    if grouped:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    config = MLPConfig(sizes=sizes)
    try:
        for batch_size in batch_sizes:
            X, y = synthetic_batch(config, batch_size, torch.Generator().manual_seed(1))
            shard = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
            X, y = X[shard].contiguous(), y[shard].contiguous()
            if not grouped:
                steps = {"engine": engine_step(config, X, y, None)[0], "autograd": autograd_step(config, X, y, False)}
            else:
                params = init_parameters(config, torch.Generator().manual_seed(0))
                steps = {"engine_simple": engine_step(config, X, y, GradientAverager(params, "simple"))[0],
                         "engine_bucketed": engine_step(config, X, y, GradientAverager(
                             params, "bucketed", int(bucket_mb * 2**20)))[0],
                         "ddp": autograd_step(config, X, y, True)}
            for name, step in steps.items():
                seconds = time_steps(step, repeats, min_seconds, grouped)
                if rank == 0:
                    results[(batch_size, name)] = seconds
    finally:
        if grouped:
            steps = None  # the DDP step holds the group: collect it first (see DataParallel.close)
            gc.collect()
            dist.destroy_process_group()


def measure(sizes: tuple, batch_sizes: list, repeats: int, min_seconds: float, bucket_mb: float) -> dict:
    """{(batch_size, variant): seconds per step} for the 1- and 2-process variants."""
    # The helper processes start with Ctrl-C ignored (they inherit it), so that a Ctrl-C reaches only this process,
    # which stops them and exits 130; otherwise each would print its own KeyboardInterrupt traceback.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with mp.Manager() as manager:
            results = manager.dict()
            for world_size in (1, 2):
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                context = mp.spawn(worker, args=(world_size, free_port(), sizes, batch_sizes, repeats, min_seconds,
                                                 bucket_mb, results), nprocs=world_size, join=False)
                signal.signal(signal.SIGINT, previous)
                try:
                    while not context.join():
                        pass
                except KeyboardInterrupt:
                    for process in context.processes:
                        process.terminate()
                    raise
            return dict(results)
    finally:
        signal.signal(signal.SIGINT, previous)


def rows_from(times: dict, batch_sizes: list) -> list[dict]:
    rows = []
    for batch_size in batch_sizes:
        for name in (*ONE_PROCESS, *TWO_PROCESSES):
            seconds = times[(batch_size, name)]
            processes = 1 if name in ONE_PROCESS else 2
            speedup = times[(batch_size, BASELINE[name])] / seconds if processes == 2 else None
            rows.append({"batch_size": batch_size, "variant": name, "processes": processes,
                         "ms": round(seconds * 1e3, 4), "images_per_s": round(batch_size / seconds, 1),
                         "speedup": None if speedup is None else round(speedup, 4),
                         "efficiency": None if speedup is None else round(speedup / 2, 4)})
    return rows


def print_table(rows: list[dict], bucket_mb: float) -> None:
    print("| global batch | variant | processes × threads | ms / step | images / s | speedup | efficiency |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for row in rows:
        speedup = "–" if row["speedup"] is None else f"{row['speedup']:.2f}"
        efficiency = "–" if row["efficiency"] is None else f"{100 * row['efficiency']:.0f} %"
        variant = row["variant"] + (f" ({bucket_mb:g} MiB)" if row["variant"] == "engine_bucketed" else "")
        print(f"| {row['batch_size']} | {variant} | {row['processes']} × 1 | {row['ms']:.3f} | "
              f"{row['images_per_s']:.0f} | {speedup} | {efficiency} |")


def bucketed_over_ddp(rows: list[dict]) -> dict[int, float]:
    """{batch_size: engine_bucketed ms / ddp ms}: the engine's data-parallel step against DDP's, same batch."""
    ms = {(row["batch_size"], row["variant"]): row["ms"] for row in rows}
    return {batch: round(ms[(batch, "engine_bucketed")] / ms[(batch, "ddp")], 4)
            for batch in dict.fromkeys(row["batch_size"] for row in rows)}


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated even integers such as 64,256; got {text!r}")
    bad = [size for size in sizes if size < 2 or size % 2]
    if bad:
        raise argparse.ArgumentTypeError(f"every global batch must be an even number >= 2 (it is split over 2 "
                                         f"processes); got {bad}")
    return sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark_dp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=parse_batch_sizes, default=parse_batch_sizes("64,256,1024,4096"),
                        help="global batch sizes, each split evenly over the 2 processes (default: 64,256,1024,4096)")
    parser.add_argument("--sizes", type=parse_sizes, default=(784, 256, 128, 10),
                        help="layer widths, input first (default: 784,256,128,10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per variant; the best counts (default: 5)")
    parser.add_argument("--min-seconds", type=float, default=0.3, help="length of a timed block (default: 0.3)")
    parser.add_argument("--bucket-mb", type=float, default=DEFAULT_BUCKET_MB,
                        help=f"bucket cap of the engine's bucketed mode, MiB (default: {DEFAULT_BUCKET_MB})")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        arguments.integer(args.repeats, "--repeats", low=1)
        arguments.number(args.min_seconds, "--min-seconds", low=0, low_open=True, high=3600)
        arguments.number(args.bucket_mb, "--bucket-mb", low=0, low_open=True, high=2 ** 20,
                         expected="a bucket size > 0 MiB")
        memory_fits(MLPConfig(sizes=tuple(args.sizes)), sgd_momentum(LR, MOMENTUM), max(args.batch_sizes), 0, True,
                    f"--sizes {','.join(map(str, args.sizes))}", f"--batch-sizes {max(args.batch_sizes)}")
        if args.json is not None:
            arguments.output_file(args.json, "--json")  # now, not after the measuring
    except ValueError as error:
        parser.error(str(error))
    if not (dist.is_available() and dist.is_gloo_available()):
        print("error: this PyTorch build has no torch.distributed with gloo; nothing to measure", file=sys.stderr)
        return 1
    try:
        times = measure(tuple(args.sizes), args.batch_sizes, args.repeats, args.min_seconds, args.bucket_mb)
    except KeyboardInterrupt:
        print("\nbenchmark_dp: interrupted (Ctrl-C); nothing was written", file=sys.stderr)
        return 130
    except Exception as error:  # a worker failed (mp.spawn raises ProcessRaisedException with its traceback)
        first = str(error).strip().splitlines()
        print(f"error: a measuring process failed: {first[-1] if first else type(error).__name__}", file=sys.stderr)
        return 1
    rows = rows_from(times, args.batch_sizes)
    print(f"{'-'.join(map(str, args.sizes))} ReLU, cross-entropy, SGD momentum; gloo on 127.0.0.1; 1 thread per "
          f"process; torch {torch.__version__}; best of {args.repeats}")
    print_table(rows, args.bucket_mb)
    ratios = bucketed_over_ddp(rows)
    print("engine_bucketed ÷ ddp, ms per step (< 1: the engine is faster): "
          + ", ".join(f"batch {batch} {ratio:.2f}" for batch, ratio in ratios.items()))
    if args.json:
        report = {"config": {"sizes": list(args.sizes), "activation": "relu", "loss": "cross_entropy",
                             "optimizer": {"name": "momentum", "lr": LR, "momentum": MOMENTUM},
                             "bucket_mb": args.bucket_mb, "repeats": args.repeats, "min_seconds": args.min_seconds},
                  "threads_per_process": 1, "backend": "gloo", "torch": torch.__version__,
                  "machine": {"platform": platform.platform(), "processor": platform.processor(),
                              "cpus": os.cpu_count()},
                  "rows": rows,
                  "engine_bucketed_over_ddp": {str(batch): ratio for batch, ratio in ratios.items()}}
        try:
            arguments.write_output(args.json, json.dumps(report, indent=2), "--json")
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
