"""Time each phase of the fast path's training step on its own: where a step's time goes.

    python -m experiments.benchmark_phases                        # 784-256-128-10, batches 16, 128, 2048
    python -m experiments.benchmark_phases --batch-sizes 1,512 --repeats 9 --json phases.json

The network is the fast path's main route: ReLU hidden layers, softmax cross-entropy, SGD with momentum. Each
phase (the GEMMs one by one, the loss and its gradient, the momentum passes, the bias sums, ReLU, its mask and
the input screen) runs alone, many times in a row on a trainer's own workspace, so on warm caches; the time is
the best of ``--repeats``. Then the whole step, the same way. The sum of the phases against the whole step shows
what the step loses between its calls: caches that the other passes have cooled, and the Python between calls.

This is a tool for working on manual_backprop/fast.py and reaches into the trainer's internals on purpose (its
workspace and bound tensors). The phases overwrite activations and gradients with meaningless values; the
weights and momentum buffers are left as they were, and the trainer is thrown away afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Callable

import torch

from experiments import arguments
from experiments.benchmark import parse_batch_sizes
from experiments.parity import parse_sizes
from experiments.preflight import memory_fits
from manual_backprop.config import MLPConfig
from manual_backprop.fast import FastTrainer
from manual_backprop.model import init_parameters
from manual_backprop.optim_config import OptimizerConfig
from torch_reference.parity import synthetic_batch

GROUPS = {"gemm": "the GEMMs", "loss": "loss and its gradient", "momentum": "momentum passes",
          "elementwise": "bias sums, ReLU, its mask, the input screen"}


def phase_calls(trainer: FastTrainer, X: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[str, Callable]]:
    """{phase: (group, call)} for the step of ``trainer`` on (X, y): each call repeats that phase's ATen calls on
    the trainer's workspace, as the step makes them. The momentum phases multiply by 1 and subtract 0 times V, the
    same kernels as the step's on the same sizes, so the weights and buffers keep their values however often the
    phases run (a buffer multiplied by 0.9 thousands of times would end in subnormals, which are slow)."""
    L, m = trainer.config.num_layers, X.shape[0]
    ws = trainer._workspace(m)
    one = torch.ones((), dtype=X.dtype, device=X.device)
    A = {0: X, **ws.A}
    calls = {}
    for layer in range(1, L + 1):
        out = ws.A[layer] if layer < L else ws.out
        calls[f"forward GEMM {layer}"] = ("gemm", lambda layer=layer, out=out: torch.addmm(
            trainer._b[layer], A[layer - 1], trainer._W_T[layer], out=out))
    calls["input screen (sum of Z_1)"] = ("elementwise", lambda: math.isfinite(float(ws.A[1].sum())))
    calls["ReLU"] = ("elementwise", lambda: [ws.A[layer].relu_() for layer in range(1, L)])
    calls["loss and dZ_L"] = ("loss", lambda: trainer._loss_and_output_delta(ws.out, y, ws, {}))
    calls["momentum: V *= beta"] = ("momentum", lambda: torch._foreach_mul_(trainer._velocity_list, one))
    calls["bias gradients"] = ("elementwise", lambda: [torch.sum(ws.dZ[layer], 0, out=ws.db[layer])
                                                        for layer in range(L, 0, -1)])
    for layer in range(L, 0, -1):
        calls[f"dW GEMM {layer}"] = ("gemm", lambda layer=layer: torch.mm(ws.dZ_T[layer], A[layer - 1],
                                                                         out=ws.dW[layer]))
    zeros = {layer: torch.zeros_like(ws.dW[layer]) for layer in range(1, L + 1)}
    zero_b = {layer: torch.zeros_like(ws.db[layer]) for layer in range(1, L + 1)}
    calls["momentum: V += dW, db"] = ("momentum", lambda: [torch._foreach_add_(
        [trainer._V_W[layer], trainer._V_b[layer]], [zeros[layer], zero_b[layer]]) for layer in range(L, 0, -1)])
    for layer in range(L, 1, -1):
        calls[f"dA GEMM {layer - 1}"] = ("gemm", lambda layer=layer: torch.mm(ws.dZ[layer], trainer._W[layer],
                                                                             out=ws.dA[layer]))
    calls["ReLU mask and dZ"] = ("elementwise", lambda: [trainer._relu_delta(ws.A[layer - 1], ws.dA[layer],
                                                                          ws.zero_A[layer])
                                                        for layer in range(L, 1, -1)])
    calls["momentum: W -= lr V"] = ("momentum", lambda: torch._foreach_add_(trainer._bound, trainer._velocity_list,
                                                                           alpha=-0.0))
    return calls


def calls_per_run(call, min_seconds: float) -> int:
    """How many calls last about ``min_seconds`` (after a warm-up)."""
    for _ in range(3):
        call()
    started = time.perf_counter()
    call()
    return max(1, int(min_seconds / max(time.perf_counter() - started, 1e-7)))


def measure(config: MLPConfig, batch_size: int, repeats: int, min_seconds: float, seed: int = 0) -> dict:
    """{"batch_size", "us": {phase: µs}, "group_us": {group: µs}, "sum_us", "step_us"} for one batch size.

    The phases and the whole step take turns within each repeat (a burst of load from elsewhere hits them alike);
    each keeps its best repeat."""
    generator = torch.Generator().manual_seed(seed)
    params = init_parameters(config, generator)
    X, y = synthetic_batch(config, batch_size, generator)
    trainer = FastTrainer(config, {name: tensor.clone() for name, tensor in params.items()}, lr=1e-3, momentum=0.9)
    stepper = FastTrainer(config, params, lr=1e-3, momentum=0.9)  # the whole step, on its own trainer
    for _ in range(3):
        trainer.step(X, y)  # the workspace exists and the velocity has started
    with torch.inference_mode():
        calls = phase_calls(trainer, X, y)
        calls["the whole step"] = ("step", lambda: stepper.step(X, y))
        counts = {name: calls_per_run(call, min_seconds) for name, (_, call) in calls.items()}
        best = {name: float("inf") for name in calls}
        for _ in range(repeats):
            for name, (_, call) in calls.items():
                started = time.perf_counter()
                for _ in range(counts[name]):
                    call()
                best[name] = min(best[name], (time.perf_counter() - started) / counts[name])
    step_us = 1e6 * best.pop("the whole step")
    phases = {name: (calls[name][0], 1e6 * seconds) for name, seconds in best.items()}
    groups = {group: sum(us for g, us in phases.values() if g == group) for group in GROUPS}
    return {"batch_size": batch_size, "us": {name: us for name, (_, us) in phases.items()},
            "group_us": groups, "sum_us": sum(groups.values()), "step_us": step_us}


def format_rows(rows: list[dict]) -> str:
    sizes = [row["batch_size"] for row in rows]
    lines = [f"{'phase (µs, best of the repeats, warm caches)':<48}" + "".join(f"{size:>10}" for size in sizes)]
    for name in rows[0]["us"]:
        lines.append(f"  {name:<46}" + "".join(f"{row['us'][name]:>10.1f}" for row in rows))
    for group, title in GROUPS.items():
        lines.append(f"{title:<48}" + "".join(f"{row['group_us'][group]:>10.1f}" for row in rows))
    lines.append(f"{'sum of the phases':<48}" + "".join(f"{row['sum_us']:>10.1f}" for row in rows))
    lines.append(f"{'the whole step':<48}" + "".join(f"{row['step_us']:>10.1f}" for row in rows))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark_phases",
                                     description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=(784, 256, 128, 10), help="layer widths")
    parser.add_argument("--batch-sizes", default="16,128,2048", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per phase; the best is reported")
    parser.add_argument("--min-seconds", type=float, default=0.05, help="length of one timed run")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    try:
        batch_sizes = parse_batch_sizes(args.batch_sizes)
        arguments.integer(args.repeats, "--repeats", low=1)
        arguments.number(args.min_seconds, "--min-seconds", low=0, low_open=True, high=3600)
        if len(args.sizes) < 3:
            raise ValueError("--sizes: the phases need at least one hidden layer (e.g. 784,256,10)")
        config = MLPConfig(sizes=args.sizes)
        memory_fits(config, OptimizerConfig("momentum", lr=1e-3), max(batch_sizes), 0, True,
                    f"--sizes {','.join(map(str, args.sizes))}", f"--batch-sizes {args.batch_sizes}")
        if args.json is not None:
            arguments.output_file(args.json, "--json")  # now, not after the measuring
    except ValueError as error:
        parser.error(str(error))
    try:
        rows = [measure(config, batch_size, args.repeats, args.min_seconds) for batch_size in batch_sizes]
    except KeyboardInterrupt:
        print("\nbenchmark_phases: interrupted (Ctrl-C); nothing was written", file=sys.stderr)
        return 130
    print(f"{config.slug()}, SGD momentum 0.9, float32 on cpu, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}")
    print(format_rows(rows))
    if args.json:
        result = {"config": config.to_dict(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "rows": rows}
        try:
            arguments.write_output(args.json, json.dumps(result, indent=2), "--json")
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
