"""Which training images each step sees: one shuffling generator, a fresh permutation per epoch.

Both models train on the batches this gives, so they see the same images in the same order; its state (the
generator, the permutation and the position in it) goes into checkpoints, so a resumed run continues with the
very batches the uninterrupted run would have used.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class BatchOrder:
    """``n_train`` images in batches of ``batch_size`` (the last batch of an epoch may be smaller), reshuffled
    at the start of every epoch from a generator seeded with ``seed``."""

    def __init__(self, n_train: int, batch_size: int, seed: int, max_batches_per_epoch: int | None = None):
        if batch_size > n_train:
            raise ValueError(f"--batch-size: {batch_size} is larger than the {n_train} training images")
        self.n_train, self.batch_size = n_train, batch_size
        self.batches_per_epoch = math.ceil(n_train / batch_size)
        if max_batches_per_epoch is not None:
            self.batches_per_epoch = min(self.batches_per_epoch, max_batches_per_epoch)
        self.generator = torch.Generator().manual_seed(seed)
        self.permutation: Tensor | None = None  # (n_train,) int64, the current epoch's order
        self.batch_in_epoch = 0  # batches already taken from the current permutation

    @property
    def epoch_finished(self) -> bool:
        return self.batch_in_epoch >= self.batches_per_epoch

    def start_epoch_if_needed(self) -> bool:
        """Draw a new permutation when there is none or the current one is used up; True when it did."""
        if self.permutation is None or self.epoch_finished:
            self.permutation = torch.randperm(self.n_train, generator=self.generator)
            self.batch_in_epoch = 0
            return True
        return False

    def next_batch(self) -> Tensor:
        """(≤ batch_size,) int64 indices of the next batch of the current epoch."""
        if self.permutation is None or self.epoch_finished:
            raise RuntimeError("BatchOrder.next_batch: the epoch is finished; call start_epoch_if_needed first")
        start = self.batch_in_epoch * self.batch_size
        self.batch_in_epoch += 1
        return self.permutation[start:start + self.batch_size]

    def state_dict(self) -> dict:
        return {"permutation": self.permutation.clone() if self.permutation is not None
                else torch.empty(0, dtype=torch.int64),
                "batch_in_epoch": self.batch_in_epoch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        permutation = state["permutation"]
        if permutation.numel():
            if (permutation.dtype != torch.int64 or permutation.shape != (self.n_train,)
                    or not torch.equal(permutation.sort().values, torch.arange(self.n_train))):
                raise ValueError(f"permutation: expected a permutation of the {self.n_train} training images; got a "
                                 f"{permutation.dtype} tensor of shape {tuple(permutation.shape)} that is not one")
        batch_in_epoch = state["batch_in_epoch"]
        if isinstance(batch_in_epoch, bool) or not isinstance(batch_in_epoch, int) or not (
                0 <= batch_in_epoch <= self.batches_per_epoch):
            raise ValueError(f"batch_in_epoch: expected 0..{self.batches_per_epoch}; got {batch_in_epoch!r}")
        self.generator.set_state(state["generator"])
        self.permutation = permutation.clone() if permutation.numel() else None
        self.batch_in_epoch = batch_in_epoch
