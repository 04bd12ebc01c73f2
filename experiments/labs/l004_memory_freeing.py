"""Lecture 004's memory-freeing backward: going down from the output, compute dL/dW_l, use it to update W_l at
once, and free it (and dL/dZ_{l+1}) before the next layer, instead of keeping every gradient until the end.

The engine's fast path (``manual_backprop.fast.FastTrainer``) is that order: per layer, dA_{l-1} = dZ_l W_l first
(it needs W_l before the update), then dW_l, db_l, the SGD (momentum) update of W_l and b_l, and the gradient's
buffer is reused by the next layer. This lab measures the peak memory of one training step three ways, with the
benchmark's method (the profiler's allocation events, ``experiments.benchmark_variants``):

    reference  the readable engine: MLP.loss_and_gradients keeps a record of every Z, A, dZ, dW, then SGD
    fast       the memory-freeing order above
    autograd   nn.Sequential + cross-entropy + torch.optim.SGD, as a PyTorch user writes it

and checks that the order does not change the arithmetic: after several steps the fast path's weights equal
the reference engine's bit for bit, and the reference's equal the autograd twin's (torch.optim.SGD).
784-256-128-10, batch 256, SGD with momentum 0.9 (``--fast``: 784-64-10, batch 64).
"""

from __future__ import annotations

import torch

from experiments.benchmark_variants import build_variant, peak_step_bytes, sgd_momentum
from experiments.labs.common import Lab, positive_int
from manual_backprop.config import MLPConfig
from manual_backprop.model import init_parameters
from torch_reference.parity import synthetic_batch
from torch_reference.twin import TwinMLP

LR, MOMENTUM = 0.01, 0.9


def add_arguments(parser) -> None:
    parser.add_argument("--batch-size", type=positive_int, default=None, help="default: 256, --fast 64")
    parser.add_argument("--steps", type=positive_int, default=5, help="steps before the weights are compared")


def run(args, report) -> None:
    config = MLPConfig(sizes=(784, 64, 10) if args.fast else (784, 256, 128, 10))
    batch_size = args.batch_size or (64 if args.fast else 256)
    generator = torch.Generator().manual_seed(args.seed)
    params = init_parameters(config, generator)
    X, y = synthetic_batch(config, batch_size, generator)
    variants = {name: build_variant(name, config, params, X, y, sgd_momentum(LR, MOMENTUM))
                for name in ("reference", "fast", "autograd")}
    peaks = {name: peak_step_bytes(variant, torch.device("cpu")) for name, variant in variants.items()}
    parameter_bytes = sum(tensor.numel() * tensor.element_size() for tensor in params.values())
    report.say(f"{'-'.join(map(str, config.sizes))}, batch {batch_size}: parameters {parameter_bytes / 1024:,.0f} KiB")
    for name, peak in peaks.items():
        report.say(f"  peak memory of one step, {name:>9}: {peak / 1024:10,.0f} KiB")
    report.say(f"  fast / reference: {peaks['fast'] / peaks['reference']:.2f}, fast / autograd: "
               f"{peaks['fast'] / peaks['autograd']:.2f}")
    report.claim(f"the fast path's peak ({peaks['fast'] / 1024:,.0f} KiB) is below the reference engine's "
                 f"({peaks['reference'] / 1024:,.0f} KiB)", peaks["fast"] < peaks["reference"])

    # Same arithmetic: a few more steps of each, then the weights side by side (the twin with foreach=False,
    # the per-tensor loop the engine's SGD reproduces).
    twin = TwinMLP.from_engine(config, {name: tensor.clone() for name, tensor in params.items()})
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=LR, momentum=MOMENTUM, foreach=False)
    reference, fast = variants["reference"], variants["fast"]
    reference_steps = 1 + args.steps  # the measured step counted
    for _ in range(args.steps):
        reference.step()
        fast.step()
    for _ in range(reference_steps):
        twin.loss_and_gradients(X, y)
        twin_optimizer.step()
    for name, tensor in twin.engine_parameters().items():
        report.check(f"{name}: fast vs reference engine", None, fast.trainer.params[name], reference.model.params[name])
        report.check(f"{name}: reference engine vs twin", None, reference.model.params[name], tensor.detach())
    report.values.update(peaks=peaks)


LAB = Lab("memory_freeing", "004", "backward that updates and frees each layer's gradient at once: peak memory",
          "< 1 s", run, add_arguments)
