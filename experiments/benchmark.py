"""Time one training step of the manual engine against the same step through autograd, and print the ratio.

    python -m experiments.benchmark --sizes 784,256,128,10 --batch-sizes 64,256 --steps 200

A step is forward, loss, backward and an SGD-with-momentum update; each time is the best of 5 runs. The autograd step is the ordinary one
(no retain_grad), so the comparison is with what a PyTorch user would write. Ratio > 1: the engine is faster.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from experiments.parity import parse_sizes, resolve_device
from manual_backprop.config import HIDDEN_ACTIVATIONS, LOSSES, MLPConfig
from manual_backprop.model import MLP
from manual_backprop.optim import SGD
from torch_reference.parity import synthetic_batch
from torch_reference.twin import TwinMLP


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, steps: int, device: torch.device, repeats: int = 5) -> float:
    """Seconds per step: the best of ``repeats`` runs of ``steps`` steps, after 10 warm-up steps. The minimum
    is the least disturbed by whatever else the machine is doing."""
    for _ in range(10):
        step()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        best = min(best, (time.perf_counter() - started) / steps)
    return best


def benchmark(config: MLPConfig, batch_size: int, steps: int, seed: int = 0) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(seed)
    engine = MLP(config, generator=generator)
    twin = TwinMLP.from_engine(config, engine.params)
    X, y = synthetic_batch(config, batch_size, generator)
    engine_optimizer = SGD(engine.params, lr=1e-3, momentum=0.9)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=1e-3, momentum=0.9)

    def engine_step():
        with torch.inference_mode():
            engine_optimizer.step(engine.loss_and_gradients(X, y).gradients())

    def autograd_step():
        twin_optimizer.zero_grad(set_to_none=True)
        loss = twin.loss(twin(X), y)
        if config.l2 > 0:
            loss = loss + twin.l2_penalty()
        loss.backward()
        twin_optimizer.step()

    device = config.torch_device
    return time_steps(engine_step, steps, device), time_steps(autograd_step, steps, device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=(784, 256, 128, 10))
    parser.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="relu")
    parser.add_argument("--loss", choices=LOSSES, default="cross_entropy")
    parser.add_argument("--batch-sizes", default="64,256", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per measurement")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args(argv)
    try:
        batch_sizes = [int(part) for part in args.batch_sizes.split(",")]
        if min(batch_sizes) < 1 or args.steps < 1:
            raise ValueError("--batch-sizes and --steps: expected positive integers")
        config = MLPConfig(sizes=args.sizes, activation=args.activation, loss=args.loss, dtype=args.dtype,
                           device=resolve_device(args.device))
    except ValueError as error:
        parser.error(str(error))
    print(f"{config.slug()}, {config.dtype} on {config.device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'batch':>6}  {'engine ms/step':>14}  {'autograd ms/step':>16}  {'autograd/engine':>15}")
    for batch_size in batch_sizes:
        engine_seconds, autograd_seconds = benchmark(config, batch_size, args.steps)
        print(f"{batch_size:>6}  {1e3 * engine_seconds:>14.3f}  {1e3 * autograd_seconds:>16.3f}  "
              f"{autograd_seconds / engine_seconds:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
