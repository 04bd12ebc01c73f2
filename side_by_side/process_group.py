"""The process group of a data-parallel run, and the few collectives the training loop needs besides the gradients.

``torchrun --nproc-per-node N -m experiments.train_mnist ...`` starts N processes and tells each its RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous address in environment variables; :func:`from_environment` reads them
and joins the group (gloo on the CPU, NCCL on CUDA). Every rank then runs the same loop on its own shard of each
global batch (:meth:`DataParallel.shard`); the gradients are averaged by ``manual_backprop.data_parallel`` (the
engine) and by ``DistributedDataParallel`` (the twin). Rank 0 alone writes TensorBoard, checkpoints and the summary.

Besides the gradients, the ranks must agree on a few things each step, or one would wait forever in a collective
that the others never join: whether to stop (a signal may reach the ranks one step apart), whether the loss
diverged (it is averaged too), whether a checkpoint write worked. :meth:`DataParallel.agree` does that with one
small all-reduce per step.
"""

from __future__ import annotations

import gc
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from manual_backprop.data_parallel import DEFAULT_BUCKET_MB, MODES

DEFAULT_TIMEOUT_S = 120.0
SEED_STRIDE = 0x9E3779B97F4A7C15  # rank r seeds its dropout generator with seed + r * this (mod 2**64)


class DistributedError(Exception):
    """A data-parallel run cannot start or go on; the message says why and what to do."""


def free_port() -> int:
    """A TCP port free on the loopback interface now, for a process group of local processes (tests, benchmarks)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launched_by_torchrun(environ=os.environ) -> bool:
    return "WORLD_SIZE" in environ and "RANK" in environ


@dataclass
class DataParallel:
    """This process's place in the group and the data-parallel settings."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    mode: str = "bucketed"
    bucket_mb: float = DEFAULT_BUCKET_MB
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def bucket_bytes(self) -> int:
        return max(1, int(self.bucket_mb * 2**20))

    def describe(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend, "mode": self.mode,
                "bucket_mb": self.bucket_mb, "timeout_s": self.timeout_s}

    # --- the data -------------------------------------------------------------------------------------------

    def check_batches(self, n_train: int, batch_size: int, dry_run_batches: int | None = None) -> None:
        """Every global batch must split into equal shards (the average of the shard gradients is then the
        whole batch's gradient, and DDP averages the same way). Raise ValueError naming the flags otherwise."""
        n = self.world_size
        if batch_size < n:
            raise ValueError(f"--batch-size {batch_size}: smaller than the {n} processes (world size); each process "
                             f"needs at least one image of every batch")
        if batch_size % n:
            raise ValueError(f"--batch-size {batch_size}: not divisible by the world size {n}; choose a multiple of "
                             f"{n} (e.g. {batch_size - batch_size % n or n})")
        last = n_train % batch_size
        full_batches = n_train // batch_size
        if last and last % n and (dry_run_batches is None or full_batches < dry_run_batches):
            raise ValueError(f"the last batch of each epoch has {last} images ({n_train} training images, --batch-size "
                             f"{batch_size}), not divisible by the world size {n}; change --limit or --val-size so "
                             f"that the training images are a multiple of {n}, or pick another --batch-size")

    def shard(self, index: Tensor) -> Tensor:
        """This rank's contiguous slice of a global batch's indices: rows [r·s, (r+1)·s) with s = m / N."""
        size = index.numel() // self.world_size
        return index[self.rank * size:(self.rank + 1) * size]

    def dropout_seed(self, seed: int) -> int:
        """Each rank draws its own dropout masks (its rows are other images); rank 0 uses ``seed`` itself, so a
        run of one process draws what a single-process run draws."""
        return (seed + self.rank * SEED_STRIDE) % 2**64

    # --- agreement ------------------------------------------------------------------------------------------

    def agree(self, values: list[float]) -> list[float]:
        """The sum over the ranks of each value (float64): losses to average, flags to OR."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def from_main(self, value):
        """Rank 0's ``value`` on every rank (any picklable object)."""
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._collective_device() if self.backend == "nccl" else None)
        return box[0]

    def main_first(self, work: Callable[[], object], what: str):
        """Run ``work`` on rank 0, then (if it worked) on the other ranks: a download or a cache written once.
        An error on rank 0 is raised on every rank, so none waits for a rank that gave up."""
        error = None
        result = None
        if self.is_main:
            try:
                result = work()
            except Exception as caught:  # re-raised below, after the others heard of it
                error = caught
        message = self.from_main(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if message is not None:
            raise DistributedError(f"rank 0 failed while {what}: {message}")
        return result if self.is_main else work()

    def gather_states(self, state: Tensor) -> Tensor:
        """(world_size, *state.shape): every rank's ``state`` (a generator state, say), in rank order."""
        local = state.to(self._collective_device())
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        return torch.stack([tensor.cpu() for tensor in gathered])

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def close(self, finished: bool = False) -> None:
        """Leave the group. ``finished``: every rank got here normally, so wait for the others first (no peer
        is still inside a collective). Objects that hold the group (DDP's reducer) are collected before the group
        goes: a group torn down by the interpreter's own exit can abort the process from a C++ destructor."""
        if not dist.is_initialized():
            return
        if finished:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()


def from_environment(mode: str, bucket_mb: float, timeout_s: float, device: str,
                     environ=os.environ) -> DataParallel:
    """Join the process group torchrun describes in the environment (env:// rendezvous).

    device: "cpu" or "cuda"; gloo serves the CPU, NCCL the GPUs (one per process, by LOCAL_RANK).
    """
    if mode not in MODES:
        raise ValueError(f"--dp-mode: expected one of {', '.join(MODES)}; got {mode!r}")
    if not bucket_mb > 0:
        raise ValueError(f"--bucket-mb: expected a bucket size > 0 MiB; got {bucket_mb}")
    if not timeout_s > 0:
        raise ValueError(f"--dist-timeout: expected a number of seconds > 0; got {timeout_s}")
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed; data-parallel training needs it")
    try:
        rank, world_size = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local_rank = int(environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as error:
        raise DistributedError(f"the environment does not describe a process group (RANK, WORLD_SIZE, LOCAL_RANK: "
                               f"{error}); start data-parallel runs with torchrun") from error
    backend = "nccl" if device == "cuda" else "gloo"
    if backend == "nccl":
        if not dist.is_nccl_available():
            raise DistributedError("--device cuda with torchrun needs NCCL, which this PyTorch build lacks")
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local_rank}: only {torch.cuda.device_count()} GPUs are visible; "
                                   f"start at most that many processes per node")
        torch.cuda.set_device(local_rank)
    elif not dist.is_gloo_available():
        raise DistributedError("this PyTorch build has no gloo backend; data-parallel training on the CPU needs it")
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    except Exception as error:  # the rendezvous failed: wrong address, a peer that never came, a port in use
        raise DistributedError(f"rank {rank} could not join the process group of {world_size} ({backend}, "
                               f"MASTER_ADDR={environ.get('MASTER_ADDR')}, MASTER_PORT={environ.get('MASTER_PORT')}): "
                               f"{error}") from error
    return DataParallel(rank, world_size, local_rank, backend, mode, bucket_mb, timeout_s)


class SilentLogger:
    """What the ranks other than 0 log to: nothing (every RunLogger method is accepted and ignored)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
