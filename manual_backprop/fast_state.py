"""The fast path's optimizer state in the engine's layouts: exported for checkpoints and comparisons, imported
on resume (from a checkpoint, or from the reference engine's ``SGD.state``)."""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop.model import parameter_names


class OptimizerStateIO:
    """Mixed into ``FastTrainer``: needs ``self.config``, ``self.momentum``, ``self._velocity`` (name -> buffer),
    ``self._velocity_started`` and ``self._optimizer`` (the general route's ``FastOptimizer``, which keeps its own
    state in the reference's layout, or None)."""

    def velocity(self) -> dict[str, Tensor]:
        """{"W1": V_W1, "b1": V_b1, ...} copies of the momentum buffers; {} before the first step or without
        momentum (the engine's SGD has no buffer then either)."""
        if not self.momentum or not self._velocity_started:
            return {}
        return {name: tensor.clone() for name, tensor in self._velocity.items()}

    def load_velocity(self, velocity: dict[str, Tensor]) -> None:
        """Restore buffers from :meth:`velocity` (an empty dict: start afresh, V_1 = G)."""
        if not velocity:
            self._velocity_started = False
            return
        if not self.momentum:
            raise ValueError("velocity: this trainer has momentum 0 and keeps no momentum buffers")
        names = parameter_names(self.config)
        if sorted(velocity) != sorted(names):
            raise ValueError(f"velocity: expected buffers for exactly {names}; got {sorted(velocity)}")
        for name in names:
            saved, own = velocity[name], self._velocity[name]
            if not isinstance(saved, Tensor) or saved.shape != own.shape:
                raise ValueError(f"velocity[{name!r}]: expected a tensor of shape {tuple(own.shape)}; got "
                                 f"{tuple(saved.shape) if isinstance(saved, Tensor) else type(saved).__name__}")
        with torch.inference_mode():
            for name in names:
                self._velocity[name].copy_(velocity[name])
        self._velocity_started = True

    def optimizer_state(self) -> dict[str, dict[str, Tensor]]:
        """The optimizer state in ``manual_backprop.optim.Optimizer.state``'s layout: on the SGD route
        {"W1": {"momentum_buffer": V}, ...} (empty dicts before the first step or without momentum); on the
        general route whatever the reference optimizer keeps ("step", "exp_avg", ...)."""
        if self._optimizer is not None:
            return self._optimizer.export_state()
        velocity = self.velocity()
        return {name: ({"momentum_buffer": velocity[name]} if velocity else {})
                for name in parameter_names(self.config)}

    def load_optimizer_state(self, state: dict[str, dict[str, Tensor]]) -> None:
        """Take the buffers from an engine optimizer's ``state`` (e.g. ``SGD.state`` after a resume)."""
        if self._optimizer is not None:
            self._optimizer.import_state(state)
            return
        if not isinstance(state, dict):
            raise TypeError(f"state: expected {{name: {{'momentum_buffer': tensor}}}}; got {type(state).__name__}")
        buffers = {name: entries["momentum_buffer"] for name, entries in state.items()
                   if isinstance(entries, dict) and "momentum_buffer" in entries}
        if buffers and len(buffers) != len(state):
            raise ValueError(f"state: momentum buffers for only some parameters ({sorted(buffers)})")
        self.load_velocity(buffers)
