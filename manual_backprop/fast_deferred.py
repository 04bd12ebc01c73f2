"""The fast step split in two for data-parallel training (manual_backprop/fast.py): the gradients first, handed
to a callback as each one is final (the all-reduce launches there), the update once the ranks' gradients are
averaged: all layers at once (``apply_gradients``), or a bucket's layers as soon as that bucket's all-reduce
completes (``start_update``, ``update_layers`` per bucket, ``end_update``; side_by_side/model_pair_fast.py).

Split this way the step is the reference engine's data-parallel step (``MLP.loss_and_gradients(on_gradient=...)``,
``GradientAverager.finish``, the optimizer's step, max-norm): the same gradients in the same order, the same
updates. The backward then updates nothing: each layer's gradients are copied into a tensor of their own (the
workspace's buffers serve the next layer down) and handed to ``on_gradient``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from manual_backprop.constraints import max_norm_


class DeferredUpdate:
    """Mixed into ``FastTrainer``: needs its ``params``, ``step``, ``_update``, ``_optimizer``, ``momentum``,
    ``fused``, ``cuda_graph`` and ``config``; sets ``_defer`` and ``_on_gradient``, which the step reads.

    After ``gradients``: either ``apply_gradients(grads)`` (every layer at once), or ``start_update()``, then
    ``update_layers(grads, names)`` for each group of parameters as its averaged gradients arrive, then
    ``end_update()``."""

    _defer: dict[str, Tensor] | None = None
    _on_gradient: Callable[[str, Tensor], None] | None = None
    _defer_grads: dict[str, Tensor] | None = None

    def gradients(self, X: Tensor, y: Tensor,
                  on_gradient: Callable[[str, Tensor], None] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """(the 0-dim loss, {name: gradient}) of the batch, without updating anything. ``on_gradient(name, grad)``
        is called as soon as a parameter's gradient is final (output layer first, as the reference's backward);
        the tensors are the trainer's own, valid until the next call."""
        if self.fused or self.cuda_graph:
            raise ValueError("gradients: the split step has no fuse_velocity or cuda_graph form")
        if self._defer_grads is None:
            self._defer_grads = {name: torch.empty_like(tensor) for name, tensor in self.params.items()}
        self._defer, self._on_gradient = self._defer_grads, on_gradient
        try:
            loss = self.step(X, y)
        finally:
            self._defer, self._on_gradient = None, None
        return loss, self._defer_grads

    def output_scores(self, m: int) -> Tensor:
        """(m, k) the output layer's Z_L of the last split step of batch size m (the reference checks it for an
        overflow before the update)."""
        return self._split_workspaces[m].out

    def _hand_over(self, name: str, grad: Tensor) -> None:
        """The split step's ``_update``: keep the final gradient and tell ``on_gradient``."""
        kept = self._defer[name]
        kept.copy_(grad)
        if self._on_gradient is not None:
            self._on_gradient(name, kept)

    def apply_gradients(self, grads: dict[str, Tensor]) -> None:
        """The optimizer's update of every parameter from ``grads`` (e.g. averaged over the ranks), then max-norm:
        the reference's ``optimizer.step(grads)`` and ``max_norm_``. ``grads`` may be overwritten."""
        self.start_update()
        self.update_layers(grads, [name for layer in range(self.config.num_layers, 0, -1)
                                   for name in (f"W{layer}", f"b{layer}")])
        self.end_update()

    # The same update in parts, for the data-parallel step that updates each bucket's layers as soon as its
    # all-reduce completes: start_update once, update_layers per bucket (in any order), end_update once.

    def start_update(self) -> None:
        """What the optimizer does once per step, before any parameter's update: take the lr, count the step
        (Adam's bias corrections, Adagrad's decayed rate read the count)."""
        if self._optimizer is not None:
            self._optimizer.lr = self.lr
            self._optimizer.start_step()

    def update_layers(self, grads: dict[str, Tensor], names: list[str]) -> None:
        """The optimizer's update of the parameters ``names`` from ``grads`` (which may be overwritten), then
        max-norm of the layers whose W is among them. Every update reads only its own parameter, gradient and
        state, and a layer's max-norm only its own W_l (after its update, as in the reference, which projects
        all layers after all updates): so updating a few layers at a time, in any order, gives the same bits."""
        with torch.inference_mode():
            for name in names:
                self._update(name, self.params[name], grads[name])
            if self.config.max_norm is not None:
                layers = [int(name[1:]) for name in names if name.startswith("W")]
                max_norm_(self.params, self.config.max_norm, self.config, layers=layers)

    def end_update(self) -> None:
        """After every parameter's update: from the next step on, momentum SGD folds gradients into V (V_1 = G)."""
        if self.momentum:
            self._velocity_started = True
