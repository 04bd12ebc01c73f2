"""CUDA graphs of the fast training step (manual_backprop/fast.py): the whole step replayed as one launch."""

from __future__ import annotations

import torch
from torch import Tensor


class CudaGraphs:
    """CUDA graphs of the eager step, one per batch size (recaptured when the lr or the momentum changes).

    A graph replays fixed kernels on fixed addresses: X and y are copied into static buffers, the workspace
    and the parameters are the same tensors every replay, and lr and momentum are baked into the kernels'
    arguments. The first two steps of a size run eagerly on a side stream (they warm up cuBLAS and set
    V_1 = G), the third is captured, then replayed.
    """

    WARMUP_STEPS = 2

    def __init__(self):
        self.graphs: dict[int, tuple] = {}
        self.eager_steps: dict[int, int] = {}

    def step(self, trainer, X: Tensor, y: Tensor) -> Tensor:
        m = X.shape[0]
        entry = self.graphs.get(m)
        if entry is not None and entry[0] != (trainer.lr, trainer.momentum):
            del self.graphs[m]
            entry = None
        if entry is None and self.eager_steps.get(m, 0) < self.WARMUP_STEPS:
            self.eager_steps[m] = self.eager_steps.get(m, 0) + 1
            side = torch.cuda.Stream(device=X.device)
            side.wait_stream(torch.cuda.current_stream(X.device))
            with torch.cuda.stream(side):
                loss = trainer._eager_step(X, y, trainer._workspace(m))
            torch.cuda.current_stream(X.device).wait_stream(side)
            return loss
        if entry is None:
            static_X, static_y = X.clone(), y.clone()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_loss = trainer._eager_step(static_X, static_y, trainer._workspace(m))
            entry = self.graphs[m] = ((trainer.lr, trainer.momentum), graph, static_X, static_y, static_loss)
        _, graph, static_X, static_y, static_loss = entry
        static_X.copy_(X)
        static_y.copy_(y)
        graph.replay()
        return static_loss.clone()
