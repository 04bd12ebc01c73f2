"""TensorBoard logging of a side-by-side run.

One run directory per invocation, holding three writers: ``manual/`` and ``autograd/`` with identical tags
(so TensorBoard overlays the two models' curves under one chart per tag), and ``parity/`` with the comparison
curves. Tags:

    loss/train, loss/test, accuracy/test, loss/val, accuracy/val     both model writers
    weights/W1, grads/dW1, ...                                       histograms, both model writers
    images/first_layer_weights, images/misclassified_test_digits     manual writer
    parity/grad_max_rel/layer1_dW, parity/grad_max_ulp/layer1_dW     parity writer, one curve per tensor
    parity/weights_max_abs_diff, parity/bitwise_equal                parity writer
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

MODEL_WRITERS = ("manual", "autograd")


def new_run_dir(logdir: Path, slug: str, now: datetime | None = None) -> Path:
    """Create ``logdir/<YYYYmmdd-HHMMSS>_<slug>``; an existing directory is never reused (a suffix -2, -3 ...
    is added instead)."""
    logdir = Path(logdir)
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}_{slug}"
    for attempt in range(1, 1000):
        candidate = logdir / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"--logdir {logdir}: could not find a free run directory name for {base}")


class RunLogger:
    """Writes one run's events. ``purge_step`` (when resuming) discards events logged after the checkpoint by
    the interrupted run, so the resumed curves continue without duplicates."""

    def __init__(self, run_dir: Path, purge_step: int | None = None, twin: bool = True):
        self.run_dir = Path(run_dir)
        names = MODEL_WRITERS if twin else MODEL_WRITERS[:1]
        self.writers = {name: SummaryWriter(str(self.run_dir / name), purge_step=purge_step) for name in names}
        self.parity_writer = SummaryWriter(str(self.run_dir / "parity"), purge_step=purge_step) if twin else None

    def scalars(self, model: str, step: int, values: dict[str, float]) -> None:
        writer = self.writers.get(model)
        if writer is None:
            return
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                writer.add_scalar(tag, value, step)

    def parity(self, step: int, rows, weight_diffs: dict[str, float], bitwise: bool) -> None:
        """Per compared gradient tensor: max relative error and max ulp; the largest weight difference."""
        if self.parity_writer is None:
            return
        for row in rows:
            if row.name.startswith("d"):
                key = f"layer{row.layer}_{row.name}"
                self.parity_writer.add_scalar(f"parity/grad_max_rel/{key}", row.max_rel, step)
                self.parity_writer.add_scalar(f"parity/grad_max_ulp/{key}", row.max_ulp, step)
        self.parity_writer.add_scalar("parity/weights_max_abs_diff", max(weight_diffs.values(), default=0.0), step)
        self.parity_writer.add_scalar("parity/bitwise_equal", float(bitwise), step)

    def histograms(self, model: str, step: int, params: dict[str, Tensor], grads: dict[str, Tensor] | None) -> None:
        writer = self.writers.get(model)
        if writer is None:
            return
        for name, tensor in params.items():
            writer.add_histogram(f"weights/{name}", tensor.detach().float().cpu(), step)
        for name, tensor in (grads or {}).items():
            writer.add_histogram(f"grads/d{name}", tensor.detach().float().cpu(), step)

    def first_layer_images(self, step: int, W1: Tensor, max_units: int = 64) -> None:
        """The first layer's weight rows as 28x28 tiles, each scaled to its own range."""
        if W1.shape[1] != 28 * 28:
            return
        tiles = W1[:max_units].detach().float().cpu().reshape(-1, 1, 28, 28)
        grid = make_grid(tiles, nrow=8, normalize=True, scale_each=True, pad_value=1.0)
        self.writers["manual"].add_image("images/first_layer_weights", grid, step)

    def misclassified(self, step: int, images: Tensor, labels: Tensor, predictions: Tensor,
                      max_images: int = 64) -> None:
        """A grid of misclassified test digits and, as text, their true and predicted labels."""
        wrong = (predictions != labels).nonzero().flatten()[:max_images]
        if wrong.numel() == 0 or images.shape[1] != 28 * 28:
            return
        tiles = images[wrong].detach().float().cpu().reshape(-1, 1, 28, 28)
        grid = make_grid(tiles, nrow=8, normalize=True, pad_value=1.0)
        writer = self.writers["manual"]
        writer.add_image("images/misclassified_test_digits", grid, step)
        pairs = ", ".join(f"{int(labels[i])}->{int(predictions[i])}" for i in wrong.tolist())
        writer.add_text("images/misclassified_test_digits", f"true->predicted, row by row: {pairs}", step)

    def config_text(self, description: dict) -> None:
        text = "```json\n" + json.dumps(description, indent=2, sort_keys=True) + "\n```"
        for writer in self.writers.values():
            writer.add_text("config", text, 0)

    def hparams(self, hparams: dict, metrics: dict[str, dict[str, float]]) -> None:
        """One hparams entry per model writer, with its final metrics (TensorBoard's HPARAMS tab)."""
        # bools as text: torch's hparams would otherwise show True as 1.0
        clean = {key: (value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else str(value))
                 for key, value in hparams.items()}
        for model, writer in self.writers.items():
            values = {f"hparam/{key}": value for key, value in metrics.get(model, {}).items()
                      if value is not None and math.isfinite(value)}
            writer.add_hparams(clean, values, run_name=".")

    def flush(self) -> None:
        for writer in self._all():
            writer.flush()

    def close(self) -> None:
        for writer in self._all():
            writer.close()

    def _all(self):
        return [*self.writers.values(), *([self.parity_writer] if self.parity_writer else [])]
