"""The training steps the benchmark times, and how it measures a step's peak memory.

Each variant trains its own copy of the same initial weights on one fixed batch and offers ``step()`` (forward,
loss, backward, the optimizer's update) and ``release()`` (drop what it keeps between steps besides the
parameters and the optimizer state, so that the peak of the next step counts it: the fast path's workspace,
autograd's .grad).

Every variant's optimizer is built from one ``OptimizerConfig`` (``sgd_momentum`` gives the default SGD with
momentum 0.9):

    reference  the engine's MLP.loss_and_gradients + its manual_backprop.optim optimizer (the readable path)
    fast       manual_backprop.fast.FastTrainer with the same optimizer (every engine optimizer; on CUDA, for SGD
               with or without momentum, a CUDA graph of the whole step)
    fast_low_memory  the same with low_memory=True: dW and dA in row blocks from batch 256 on
    fast_fused the same with fuse_velocity=True: the GEMM writes the new velocity (not bitwise; not run unless
               asked for with --variants)
    autograd   nn.Sequential + F.cross_entropy + the torch.optim optimizer with torch's own defaults (foreach
               included), as a user writes it
    compiled   the same with the model and loss under torch.compile
    gemm_floor only the step's matrix products into preallocated outputs: forward, weight gradients and the
               input gradients except the first layer's
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

from manual_backprop.config import MLPConfig
from manual_backprop.fast import FastTrainer
from manual_backprop.model import MLP
from manual_backprop.optim import build_optimizer
from manual_backprop.optim_config import OptimizerConfig
from torch_reference.optim_twin import build_torch_optimizer
from torch_reference.twin import TwinMLP

VARIANTS = ("reference", "fast", "fast_low_memory", "fast_fused", "autograd", "compiled", "gemm_floor")
DEFAULT_VARIANTS = tuple(name for name in VARIANTS if name != "fast_fused")


def clone_params(params: dict) -> dict:
    return {name: tensor.clone() for name, tensor in params.items()}


def sgd_momentum(lr: float = 1e-3, momentum: float = 0.9) -> OptimizerConfig:
    """The benchmark's default optimizer: SGD with momentum (plain SGD for momentum 0)."""
    return OptimizerConfig("momentum", lr=lr, momentum=momentum) if momentum else OptimizerConfig("sgd", lr=lr)


class ReferenceStep:
    def __init__(self, config: MLPConfig, params: dict, X, y, optimizer: OptimizerConfig):
        self.model = MLP(config, clone_params(params))
        self.optimizer = build_optimizer(optimizer, self.model.params)
        self.X, self.y = X, y

    def step(self):
        with torch.inference_mode():
            self.optimizer.step(self.model.loss_and_gradients(self.X, self.y).gradients())

    def release(self):
        pass


class FastStep:
    def __init__(self, config: MLPConfig, params: dict, X, y, optimizer: OptimizerConfig,
                 fuse_velocity: bool = False, low_memory: bool = False):
        # A CUDA graph where the trainer has one (the SGD route without dropout).
        graph = (config.torch_device.type == "cuda" and FastTrainer.takes_sgd_route(optimizer)
                 and not (config.dropout or config.input_dropout))
        self.trainer = FastTrainer.from_optimizer_config(config, clone_params(params), optimizer,
                                                         fuse_velocity=fuse_velocity, low_memory=low_memory,
                                                         cuda_graph=graph)
        self.X, self.y = X, y

    def step(self):
        self.trainer.step(self.X, self.y)

    def release(self):
        if not self.trainer.cuda_graph:  # a graph's pool is part of the graph; recapturing is not a step
            self.trainer.release_workspaces()


class AutogradStep:
    """What a PyTorch user writes: nn.Sequential, the functional loss, the torch.optim optimizer (e.g.
    torch.optim.SGD(lr, momentum)) with torch's default foreach setting."""

    def __init__(self, config: MLPConfig, params: dict, X, y, optimizer: OptimizerConfig, compiled: bool = False):
        twin = TwinMLP.from_engine(config, clone_params(params))  # the same nn.Linear and activation modules
        modules = []
        for linear, activation in zip(twin.layers, twin.activations):
            modules += [linear] if isinstance(activation, nn.Identity) else [linear, activation]
        self.model = nn.Sequential(*modules)
        self.optimizer = build_torch_optimizer(optimizer, twin.engine_parameters(), foreach=None)
        self.X, self.y = X, y
        if config.loss == "cross_entropy":
            def loss_of(X, y):
                return F.cross_entropy(self.model(X), y)
        else:
            def loss_of(X, y):
                return twin.loss(self.model(X), y)
        if config.l2 > 0:
            data_loss = loss_of

            def loss_of(X, y):
                return data_loss(X, y) + config.l2 * sum((layer.weight * layer.weight).sum()
                                                         for layer in twin.layers)
        self.loss_of = torch.compile(loss_of, dynamic=False) if compiled else loss_of

    def step(self):
        self.optimizer.zero_grad()
        self.loss_of(self.X, self.y).backward()
        self.optimizer.step()

    def release(self):
        self.optimizer.zero_grad()


class GemmFloorStep:
    """The products of a step and nothing else, into outputs allocated once (``release`` drops them)."""

    def __init__(self, config: MLPConfig, params: dict, X, y):
        self.config, self.X = config, X
        self.W = [params[f"W{layer}"].clone() for layer in range(1, config.num_layers + 1)]
        self.outputs = None

    def _allocate(self):
        m, factory = self.X.shape[0], {"dtype": self.X.dtype, "device": self.X.device}
        sizes = self.config.sizes
        generator = torch.Generator(device=self.X.device).manual_seed(0)
        self.outputs = {
            "A": [self.X] + [torch.empty(m, n, **factory) for n in sizes[1:]],
            "dZ": [None] + [torch.randn(m, n, generator=generator, **factory) for n in sizes[1:]],
            "dA": [None] + [torch.empty(m, n, **factory) for n in sizes[1:-1]],
            "dW": [torch.empty_like(W) for W in self.W],
        }

    def step(self):
        if self.outputs is None:
            self._allocate()
        A, dZ, dA, dW = (self.outputs[key] for key in ("A", "dZ", "dA", "dW"))
        for layer, W in enumerate(self.W, start=1):
            torch.mm(A[layer - 1], W.t(), out=A[layer])
        for layer in range(len(self.W), 0, -1):
            torch.mm(dZ[layer].t(), A[layer - 1], out=dW[layer - 1])
            if layer > 1:
                torch.mm(dZ[layer], self.W[layer - 1], out=dA[layer - 1])

    def release(self):
        self.outputs = None


def build_variant(name: str, config: MLPConfig, params: dict, X, y, optimizer: OptimizerConfig,
                  fuse_velocity: bool = False):
    """The variant ``name`` training a copy of ``params`` on the batch (X, y) with ``optimizer``."""
    if not isinstance(optimizer, OptimizerConfig):
        raise TypeError(f"optimizer: expected an OptimizerConfig (e.g. sgd_momentum(lr, momentum)); got "
                        f"{type(optimizer).__name__}")
    if name == "reference":
        return ReferenceStep(config, params, X, y, optimizer)
    if name in ("fast", "fast_low_memory", "fast_fused"):
        return FastStep(config, params, X, y, optimizer, fuse_velocity or name == "fast_fused",
                        low_memory=name == "fast_low_memory")
    if name in ("autograd", "compiled"):
        return AutogradStep(config, params, X, y, optimizer, compiled=name == "compiled")
    if name == "gemm_floor":
        return GemmFloorStep(config, params, X, y)
    raise ValueError(f"variant: expected one of {', '.join(VARIANTS)}; got {name!r}")


# --- peak memory of one step ----------------------------------------------------------------------------------

CPU_MEMORY_METHOD = ("CPU: the profiler's allocation events (torch.profiler with profile_memory=True), summed in "
                     "time order; peak = the highest total above the bytes live before the step")
CUDA_MEMORY_METHOD = "CUDA: torch.cuda.max_memory_allocated() minus memory_allocated() before the step"


@contextlib.contextmanager
def native_stderr_kept_unless_failing():
    """Hold back what C++ code writes to stderr inside the block (the profiler's library logs a "profiler_start" /
    "profiler_stop" pair and, on a machine without a GPU, a "gpuGetDeviceCount failed" line at every start, which
    read like errors in the benchmark's output); if the block raises, that text is written out after all."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_step_bytes(variant, device: torch.device) -> int:
    """Bytes allocated at the worst moment of one step beyond what was live before it; ``release()`` first,
    so what the variant keeps from step to step (workspace, .grad) counts in the step that allocates it."""
    variant.release()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        variant.step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch._C._profiler import _EventType  # the profiler's event tree: every allocation with its size
    from torch.profiler import ProfilerActivity, profile

    with native_stderr_kept_unless_failing():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
            variant.step()
    allocations = []

    def walk(node):
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            allocations.append((node.start_time_ns, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)

    for root in profiler.profiler.kineto_results.experimental_event_tree():
        walk(root)
    live = peak = 0
    for _, size in sorted(allocations):
        live += size
        peak = max(peak, live)
    return peak
