"""Data-parallel training for the engine: averaging every rank's gradients with torch.distributed collectives.

Each of the N processes (ranks) runs the engine's forward and backward on its own shard of the global batch;
before the update the gradients are averaged over the ranks, so every rank applies the same update to the same
weights. The averaging is written out here with plain collectives (``torch.distributed.all_reduce``); no
autograd is involved (the engine's backward says when each gradient is final, through ``on_gradient``).

The average of N shard gradients is the gradient of the whole global batch: with a mean loss over m = N·s
samples, dL/dθ = (1/m) Σ_i g_i = (1/N) Σ_r (1/s) Σ_{i in shard r} g_i. Only the rounding differs (see
docs/data_parallel.md).

Two modes:

* ``simple``: after the backward, each gradient in turn is scaled by 1/N and all-reduced (summed) in place,
  one blocking collective per tensor.
* ``bucketed``: what ``DistributedDataParallel`` does. The gradients are packed, in the order the backward
  finishes them (output layer first), into flat buckets of at most ``bucket_bytes`` (whole layers). The backward calls
  :meth:`GradientAverager.mark_ready` as soon as a gradient is final; it is copied (scaled by 1/N) into its slot
  of its bucket, and when a bucket's last gradient arrives its all-reduce is launched asynchronously, so the
  communication runs while the backward computes the layers below. :meth:`GradientAverager.finish` waits for
  every bucket and copies the averages back into the gradient tensors; :meth:`GradientAverager.wait_bucket` waits
  for one, so that the fast path can update a bucket's layers while the buckets after it are still in flight.

Why scale before summing: DDP's reducer multiplies each gradient by 1/N as it copies it into its bucket
(``mul_out(bucket_view, grad, 1/N)``) and then sums, so doing the same makes the engine's averaged gradient the
DDP twin's bit for bit whenever the two sums add in the same order (always with N = 2: a + b = b + a).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

MODES = ("simple", "bucketed")
DEFAULT_BUCKET_MB = 0.25  # small enough that the default network's W1 gets a bucket of its own (overlap)


@dataclass
class Bucket:
    """A flat buffer holding several gradients, all-reduced as one tensor."""

    names: list[str]
    offsets: dict[str, int]  # name -> first element in ``buffer``
    buffer: Tensor  # (total elements,) in the gradients' dtype, on their device
    ready: set[str] = field(default_factory=set)
    work: object | None = None  # the in-flight all_reduce (a torch.distributed Work), None until launched

    def view(self, name: str, like: Tensor) -> Tensor:
        start = self.offsets[name]
        return self.buffer[start:start + like.numel()].view(like.shape)


def ready_order(params: dict[str, Tensor]) -> list[str]:
    """The parameter names in the order the engine's backward hands over their gradients: b_L, W_L, ..., b_1, W_1."""
    layers = sorted({int(name[1:]) for name in params}, reverse=True)
    return [name for layer in layers for name in (f"b{layer}", f"W{layer}")]


def assign_buckets(params: dict[str, Tensor], bucket_bytes: int) -> list[list[str]]:
    """Group the parameters, in ready order, into buckets of at most ``bucket_bytes``, a layer at a time: a
    layer's b and W are final at the same moment, so splitting them would only add a collective. A layer that would
    overflow the current bucket starts the next one (a layer larger than the cap gets a bucket alone).

    Unlike DDP, whose rule closes a bucket once it has reached the cap (so its first bucket of 1 MiB swallows the
    whole 784-256-128-10 network), this keeps the cap, so a small cap really splits the network: the top layers'
    bucket is all-reduced while the backward computes the first layer's dW, the largest product.
    """
    if not bucket_bytes > 0:
        raise ValueError(f"bucket size: expected a positive number of bytes; got {bucket_bytes!r}")
    order = ready_order(params)
    layers = [order[index:index + 2] for index in range(0, len(order), 2)]  # [b_l, W_l], top layer first
    buckets: list[list[str]] = []
    size = 0
    for names in layers:
        nbytes = sum(params[name].numel() * params[name].element_size() for name in names)
        if not buckets or size + nbytes > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].extend(names)
        size += nbytes
    return buckets


class GradientAverager:
    """Averages the engine's gradients over the ranks of a process group (``torch.distributed`` must be
    initialised). One instance per model; each step: :meth:`start_step`, the backward with
    ``on_gradient=averager.mark_ready``, then :meth:`finish` with the step's gradients.

    params: the model's parameters ({"W1": ..., "b1": ...}); only their names, shapes, dtypes and device are used.
    mode: "simple" or "bucketed" (see the module docstring); bucket_bytes: the bucket cap of the bucketed mode.
    """

    def __init__(self, params: dict[str, Tensor], mode: str = "bucketed",
                 bucket_bytes: int = int(DEFAULT_BUCKET_MB * 2**20), group=None):
        if mode not in MODES:
            raise ValueError(f"data-parallel mode: expected one of {', '.join(MODES)}; got {mode!r}")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("GradientAverager: torch.distributed is not initialised (start the run with torchrun, "
                               "or call torch.distributed.init_process_group first)")
        self.mode, self.group = mode, group
        self.world_size = dist.get_world_size(group)
        self.scale = 1.0 / self.world_size
        self.order = ready_order(params)
        self.shapes = {name: tuple(params[name].shape) for name in self.order}
        self.buckets: list[Bucket] = []
        self.bucket_of: dict[str, Bucket] = {}
        if mode == "bucketed":
            for names in assign_buckets(params, bucket_bytes):
                offsets, total = {}, 0
                for name in names:
                    offsets[name] = total
                    total += params[name].numel()
                reference = params[names[0]]
                bucket = Bucket(names, offsets, torch.empty(total, dtype=reference.dtype, device=reference.device))
                self.buckets.append(bucket)
                for name in names:
                    self.bucket_of[name] = bucket
        self.in_step = False

    def describe(self) -> str:
        if self.mode == "simple":
            return f"simple (one blocking all-reduce per gradient, {len(self.order)} per step)"
        sizes = ", ".join(f"[{' '.join(bucket.names)}] "
                          f"{bucket.buffer.numel() * bucket.buffer.element_size() / 2**10:.0f} KiB"
                          for bucket in self.buckets)
        return f"bucketed ({len(self.buckets)} bucket{'s' if len(self.buckets) != 1 else ''}: {sizes})"

    def start_step(self) -> None:
        """Begin a step: no bucket is filled or in flight."""
        for bucket in self.buckets:
            if bucket.work is not None:
                raise RuntimeError("GradientAverager.start_step: the previous step's all-reduce was never waited for "
                                   "(call finish)")
            bucket.ready.clear()
        self.in_step = True

    def mark_ready(self, name: str, grad: Tensor) -> None:
        """The backward's callback: ``grad`` (the final gradient of parameter ``name``) will not change any more.

        Bucketed mode: copy grad/N into its bucket and launch the bucket's all-reduce once it is complete.
        Simple mode: nothing (the work happens in finish).
        """
        if not self.in_step:
            raise RuntimeError("GradientAverager.mark_ready: call start_step before the backward")
        if self.mode == "simple":
            return
        bucket = self.bucket_of.get(name)
        if bucket is None:
            raise KeyError(f"GradientAverager.mark_ready: unknown parameter {name!r}; expected one of {self.order}")
        if name in bucket.ready:
            raise RuntimeError(f"GradientAverager.mark_ready: {name} was marked ready twice in one step")
        if tuple(grad.shape) != self.shapes[name]:
            raise ValueError(f"GradientAverager.mark_ready: gradient of {name} has shape {tuple(grad.shape)}; "
                             f"expected {self.shapes[name]}")
        # grad * (1/N) written straight into the bucket: DDP's copy-and-scale, one pass over the gradient.
        torch.mul(grad, self.scale, out=bucket.view(name, grad))
        bucket.ready.add(name)
        if len(bucket.ready) == len(bucket.names):
            bucket.work = dist.all_reduce(bucket.buffer, op=dist.ReduceOp.SUM, group=self.group, async_op=True)

    def finish(self, grads: dict[str, Tensor]) -> None:
        """Make every tensor in ``grads`` (the step's gradients, by parameter name) the average over the ranks, in
        place. Blocks until the collectives are done; a failed peer raises torch.distributed's error here."""
        for index, _ in enumerate(self.end_step(grads)):
            self.wait_bucket(index, grads)

    def end_step(self, grads: dict[str, Tensor]) -> list[list[str]]:
        """The first half of :meth:`finish`, for a caller that updates each bucket's layers as soon as its average
        is in (the fast data-parallel step): check that the backward handed over every gradient, and return the
        names of each bucket in launch order. Then call ``wait_bucket(index, grads)`` for every index, in order
        (``simple`` mode: one group of every name, whose wait runs the blocking all-reduces)."""
        if not self.in_step:
            raise RuntimeError("GradientAverager.finish: call start_step before the backward")
        if sorted(grads) != sorted(self.order):
            raise ValueError(f"GradientAverager.finish: expected gradients for {sorted(self.order)}; "
                             f"got {sorted(grads)}")
        self.in_step = False
        if self.mode == "simple":
            return self.bucket_names()
        missing = [name for bucket in self.buckets for name in bucket.names if name not in bucket.ready]
        if missing:
            for bucket in self.buckets:  # leave no collective half-launched on this rank
                bucket.work = None
            raise RuntimeError(f"GradientAverager.finish: the backward never marked {missing} ready "
                               "(pass on_gradient=averager.mark_ready to the backward)")
        return self.bucket_names()

    def bucket_names(self) -> list[list[str]]:
        """The parameter names of each bucket, in launch order (``simple``: one group of every name)."""
        return [list(self.order)] if self.mode == "simple" else [list(bucket.names) for bucket in self.buckets]

    @torch.inference_mode()  # the engine's gradients are inference tensors, changed in place here
    def wait_bucket(self, index: int, grads: dict[str, Tensor]) -> list[str]:
        """Wait for bucket ``index``'s all-reduce (launched from the backward) and copy its averages into ``grads``;
        returns the bucket's names. The buckets after it may still be in flight. ``simple`` mode (one group):
        scale and all-reduce every gradient in place, one blocking collective each."""
        if self.mode == "simple":
            for name in self.order:
                grad = grads[name]
                grad.mul_(self.scale)
                dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=self.group)
            return list(self.order)
        bucket = self.buckets[index]
        work, bucket.work = bucket.work, None
        if work is None:
            raise RuntimeError(f"GradientAverager.wait_bucket: bucket {index} has no all-reduce in flight (waited "
                               "twice, or end_step was not called)")
        work.wait()
        for name in bucket.names:
            grads[name].copy_(bucket.view(name, grads[name]))
        return bucket.names
