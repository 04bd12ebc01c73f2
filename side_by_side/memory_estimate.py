"""How much memory a side-by-side run needs, estimated before anything is allocated, and how much there is.

A width or batch size that cannot fit used to end in an allocator error (or the OOM killer) minutes into a run, or
at once with a ``RuntimeError: [enforce fail at alloc_cpu.cpp]`` traceback. ``estimate`` adds up, per model (the
engine, and the twin when there is one), in the run's dtype:

    parameters + gradients + optimizer state     (2 + k) * P values, k state tensors per parameter (momentum: 1,
                                                 adam: 2, amsgrad: 3, ...)
    a training step's activations                ~5 values per hidden/output unit per image (Z, A, dA, dZ and a
                                                 dropout mask) for a batch, plus the input batch
    an evaluation                                Z and A of every unit for every test (or validation) image
    a checkpoint                                 parameters and state cloned, and serialised once in memory

It is an estimate (allocator overheads and temporaries are not counted) meant to refuse runs that are off by
orders of magnitude, with the flag to change; ``available_bytes`` reads MemAvailable and the cgroup limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from manual_backprop.config import MLPConfig
from manual_backprop.optim_config import OptimizerConfig

ACTIVATION_VALUES_PER_UNIT = 5  # Z, A, dA, dZ and a dropout mask per unit and image in a training step


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int  # bytes: parameters, gradients and optimizer state of every model, and a checkpoint of them
    activations: int  # bytes: a training batch's and an evaluation's activations of every model

    @property
    def total(self) -> int:
        return self.parameters + self.activations


def state_tensors_per_parameter(optimizer: OptimizerConfig) -> int:
    """How many state tensors of a parameter's shape the optimizer keeps."""
    name = optimizer.name
    if name in ("sgd", "momentum", "nesterov"):
        return 1 if (optimizer.momentum or 0) > 0 or name == "nesterov" else 0
    if name == "adagrad":
        return 1
    if name == "rmsprop":
        return 1 + ((optimizer.momentum or 0) > 0) + bool(optimizer.centered)
    if name in ("adam", "adamw"):
        return 2 + bool(optimizer.amsgrad)
    return 3  # an optimizer this table does not know: assume the most any of them keeps


def estimate(config: MLPConfig, optimizer: OptimizerConfig, batch_size: int, eval_images: int,
             twin: bool = True) -> MemoryEstimate:
    """Bytes a run of ``config`` needs with batches of ``batch_size`` and evaluations of ``eval_images`` images."""
    itemsize = torch.empty((), dtype=config.torch_dtype).element_size()
    sizes = list(config.sizes)
    pieces = [config.maxout_pieces if config.activation == "maxout" and layer < len(sizes) - 1 else 1
              for layer in range(1, len(sizes))]
    parameters = sum((n_in + 1) * n_out * k for n_in, n_out, k in zip(sizes[:-1], sizes[1:], pieces))
    units = sum(n_out * k for n_out, k in zip(sizes[1:], pieces))
    models = 2 if twin else 1
    per_parameter = 2 + state_tensors_per_parameter(optimizer)  # the tensor, its gradient, its state
    checkpoint = 2 * (1 + state_tensors_per_parameter(optimizer))  # cloned, then serialised
    parameter_bytes = models * parameters * (per_parameter + checkpoint) * itemsize
    step = ACTIVATION_VALUES_PER_UNIT * batch_size * units + 2 * batch_size * sizes[0]
    evaluation = 2 * eval_images * units
    activation_bytes = models * max(step, evaluation) * itemsize
    return MemoryEstimate(parameter_bytes, activation_bytes)


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Free memory for new allocations: MemAvailable, capped by a cgroup limit; on CUDA the device's free memory.
    None when it cannot be told (then nothing is refused)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v2: a container's limit may be far below the machine's memory
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            found.append(max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def human(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} EiB"
