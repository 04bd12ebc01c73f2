"""Keeping the engine's and the twin's dropout draws in lockstep.

Both models draw their dropout masks from torch's default generator (the engine with the same kernel calls
as nn.Dropout, manual_backprop/dropout.py). Run one after the other from the same generator state and they
draw the same masks: the engine's pass runs inside ``rewound_rng``, which restores the generator when it ends,
then the twin draws the same numbers again. Afterwards the generator has advanced once, exactly as far as
when the engine trains alone (``--no-twin``), so a run's masks do not depend on whether the twin is there.

A checkpoint that must resume bitwise has to hold that generator's state: ``torch.get_rng_state()`` on the
CPU, and ``torch.cuda.get_rng_state(device)`` as well on a GPU.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor

from manual_backprop.model import MLP
from manual_backprop.record import Record
from torch_reference.twin import TwinMLP


@contextmanager
def rewound_rng(device: torch.device | str) -> Iterator[None]:
    """Run the block, then put back the default generator state it started from (the CPU generator always,
    the device's own generator too for a CUDA device): ``torch.random.fork_rng`` for one device."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index], device_type="cuda"):
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            yield


def lockstep_loss_and_gradients(engine: MLP, twin: TwinMLP, X: Tensor, target: Tensor, *, train: bool = False,
                                input_grad: bool = False, on_gradient=None, wrapper=None) -> tuple[Record, Record]:
    """The engine's pass (under inference_mode, generator rewound afterwards), then the twin's, from one
    generator state: with dropout both apply the same masks. Returns (engine record, twin record).
    on_gradient goes to the engine's backward, wrapper (a DistributedDataParallel) to the twin's pass."""
    with rewound_rng(X.device), torch.inference_mode():
        engine_record = engine.loss_and_gradients(X, target, train=train, input_grad=input_grad,
                                                  on_gradient=on_gradient)
    twin_record = twin.loss_and_gradients(X, target, train=train, input_grad=input_grad, wrapper=wrapper)
    return engine_record, twin_record
