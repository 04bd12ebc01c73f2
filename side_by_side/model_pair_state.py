"""The model pair in a checkpoint: both models' weights, optimizers and schedules, in the engine's layouts."""

from __future__ import annotations

from torch_reference.optim_twin import load_schedule_state, schedule_state


class PairState:
    """Mixed into ``ModelPair``: needs ``self.config``, ``self.engine``, ``self.engine_optimizer``,
    ``self.engine_schedule``, ``self.fast`` and the twin's ``self.twin``, ``self.twin_optimizer``,
    ``self.twin_schedule``."""

    def state_dict(self) -> dict:
        if self.fast is not None:  # the fast path keeps the momentum buffers; the checkpoint layout is the engine's
            self.engine_optimizer.state = {name: entries for name, entries in self.fast.optimizer_state().items()}
        state = {"engine": {name: tensor.detach().cpu().clone() for name, tensor in self.engine.params.items()},
                 "engine_optimizer": self.engine_optimizer.state_dict(),
                 "engine_schedule": self.engine_schedule.state_dict()}
        if self.twin is not None:
            state["twin"] = {key: value.detach().cpu().clone() for key, value in self.twin.state_dict().items()}
            state["twin_optimizer"] = self.twin_optimizer.state_dict()
            state["twin_schedule"] = schedule_state(self.twin_schedule)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore both models; shapes and names are checked by the models and optimizers themselves."""
        device = self.config.torch_device
        if sorted(state["engine"]) != sorted(self.engine.params):
            raise ValueError(f"engine: expected parameters {sorted(self.engine.params)}; got {sorted(state['engine'])}")
        for name, tensor in state["engine"].items():
            if tensor.shape != self.engine.params[name].shape or tensor.dtype != self.engine.params[name].dtype:
                raise ValueError(f"engine.{name}: expected {self.config.dtype} of shape "
                                 f"{tuple(self.engine.params[name].shape)}; got {tensor.dtype} {tuple(tensor.shape)}")
        for name, tensor in state["engine"].items():
            self.engine.params[name].copy_(tensor.to(device))
        self.engine_optimizer.load_state_dict(state["engine_optimizer"])
        self.engine_schedule.load_state_dict(state["engine_schedule"])
        if self.fast is not None:
            self.fast.load_optimizer_state(self.engine_optimizer.state)
        if self.twin is not None:
            self.twin.load_state_dict(state["twin"])
            self.twin_optimizer.load_state_dict(state["twin_optimizer"])
            load_schedule_state(self.twin_schedule, state["twin_schedule"])
