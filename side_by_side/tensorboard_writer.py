"""TensorBoard logging of a side-by-side run.

One run directory per invocation, holding three writers: ``manual/`` and ``autograd/`` with identical model tags
(so TensorBoard overlays the two models' curves under one chart per tag), and ``parity/`` with the comparison
detail. The Custom Scalars page (``tensorboard_layout.custom_scalars_layout``, written with each run) shows the
parity summary first, then each metric with both models and their difference. Tags:

    loss/train, loss/train_epoch, loss/test, accuracy/test, loss/val, accuracy/val    both model writers
    weights/W1, grads/dW1, ...                                      histograms, both model writers
    images/misclassified_test_digits                                both model writers, labels on each tile
    images/first_layer_weights                                      manual writer
    Parity/worst_ulp, Parity/worst_rel_error,                       both model writers (the pair's parity, so
      Parity/bitwise_equal_fraction, Parity/checks_out_of_policy,   each HParams row has it), one point per
      Parity/normwise_error_log10                                   parity check
    parity_detail/normwise_tolerance_log10,                         manual writer, one point per parity check
      parity_detail/out_of_policy_fraction, Parity/layer_by_tensor (image)
    Parity/verdict (text, every epoch and at a stop), config (text, once), the Custom Scalars layout: manual writer
    difference/loss/train, ... (manual - autograd)                  parity writer
    parity_detail/layer3/dW, ..., parity_detail/run/loss            parity writer, log10 normwise error per tensor
      parity_detail/weights_max_abs_diff
    the HParams session (hparams incl. ``model``, status)           both model writers; its metrics are the
                                                                    last values of the writer's scalar series
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2 as hparams_api
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

from side_by_side.digit_tiles import labelled_digit_grid
from side_by_side.parity_heatmap import parity_heatmap
from side_by_side.tensorboard_layout import (
    DETAIL_PREFIX,
    DIFFERENCE_PREFIX,
    DP_TAGS,
    PARITY_BITWISE_FRACTION,
    PARITY_HEATMAP,
    PARITY_NORMWISE_LOG10,
    PARITY_OUT_OF_POLICY,
    PARITY_OUT_OF_POLICY_FRACTION,
    PARITY_TOLERANCE_LOG10,
    PARITY_VERDICT,
    PARITY_WORST_REL,
    PARITY_WORST_ULP,
    VALIDATION_TAGS,
    custom_scalars_layout,
    layer_detail_tag,
    normwise_log10,
)

MODEL_WRITERS = ("manual", "autograd")
DIFFERENCE_OF = ("loss/", "accuracy/")  # the model curves that get a manual - autograd curve
STAMP_FORMAT = "%y%m%d-%H%M%S"


def new_run_dir(logdir: Path, name: str, now: datetime | None = None) -> Path:
    """Create ``logdir/<name>_<yymmdd-HHMMSS>``: the name first (``tensorboard_layout.run_name``), so TensorBoard's
    run list, which cuts long names, shows what differs; the time keeps names unique. An existing directory is never
    reused (a suffix -2, -3 ... is added instead)."""
    logdir = Path(logdir)
    stamp = (now or datetime.now()).strftime(STAMP_FORMAT)
    base = f"{name}_{stamp}"
    for attempt in range(1, 1000):
        candidate = logdir / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"--logdir {logdir}: could not find a free run directory name for {base}")


def tensorboard_command(logdir: Path) -> str:
    """The command that shows ``logdir``, pasteable as printed: the ``tensorboard`` beside this Python (the venv's,
    which a shell without the venv activated does not find on its PATH), relative to the working directory when it
    lies below it (``.venv/bin/tensorboard``); plain ``tensorboard`` when there is none beside it."""
    beside = Path(sys.executable).parent / "tensorboard"
    program = "tensorboard"
    if beside.is_file() and os.access(beside, os.X_OK):
        program = str(beside)
        try:
            program = str(beside.relative_to(Path.cwd()))
        except ValueError:
            pass
    return f"{program} --logdir {logdir}"


def _worst(values) -> float:
    """The largest value, NaN if any is NaN (a non-finite comparison must not hide behind a finite one)."""
    values = list(values)
    if any(math.isnan(value) for value in values):
        return math.nan
    return max(values, default=0.0)


class RunLogger:
    """Writes one run's events. ``purge_step`` (when resuming) discards events logged after the checkpoint by
    the interrupted run, so the resumed curves continue without duplicates. ``validation``: whether the run has a
    validation split (its charts join the Custom Scalars page); None: found out from the first logged loss/val."""

    def __init__(self, run_dir: Path, purge_step: int | None = None, twin: bool = True,
                 validation: bool | None = None, layers: int = 0):
        self.run_dir = Path(run_dir)
        self.twin = twin
        names = MODEL_WRITERS if twin else MODEL_WRITERS[:1]
        self.writers = {name: SummaryWriter(str(self.run_dir / name), purge_step=purge_step) for name in names}
        self.parity_writer = SummaryWriter(str(self.run_dir / "parity"), purge_step=purge_step) if twin else None
        self.started = time.time()
        self._pending: dict[tuple[int, str], tuple[str, float]] = {}  # (step, tag) -> the first model's value
        self._validation = bool(validation)
        self._layers = layers
        self._data_parallel = False  # set when the data-parallel distance turns up
        self._write_layout()

    def _write_layout(self) -> None:
        """The Custom Scalars page, in the manual writer (the plugin merges the layouts of all runs; one per run
        directory is enough). Written again when validation curves turn up: the plugin reads the latest."""
        self.writers["manual"].add_custom_scalars(custom_scalars_layout(
            twin=self.twin, validation=self._validation, layers=self._layers, data_parallel=self._data_parallel))

    # --- scalars ---------------------------------------------------------------------------------------------------

    def scalars(self, model: str, step: int, values: dict[str, float]) -> None:
        """Finite values go to the model's writer; once both models have logged a tag at a step, their difference
        (manual - autograd) goes to the parity writer, so curves that coincide show as a flat zero."""
        writer = self.writers.get(model)
        if writer is None:
            return
        if not self._validation and any(tag in values for tag in VALIDATION_TAGS):
            self._validation = True
            self._write_layout()
        if not self._data_parallel and any(tag in values for tag in DP_TAGS):
            self._data_parallel = True
            self._write_layout()
        for tag, value in values.items():
            if value is None or not math.isfinite(value):
                continue
            writer.add_scalar(tag, value, step)
            if self.parity_writer is not None and tag.startswith(DIFFERENCE_OF):
                self._difference(model, step, tag, value)

    def _difference(self, model: str, step: int, tag: str, value: float) -> None:
        other = self._pending.pop((step, tag), None)
        if other is None or other[0] == model:
            self._pending[(step, tag)] = (model, value)
            return
        values = {model: value, other[0]: other[1]}
        self.parity_writer.add_scalar(DIFFERENCE_PREFIX + tag, values["manual"] - values["autograd"], step)
        # A step's values arrive together; anything older is left unmatched for good (a model's value that was
        # not finite), so drop it instead of holding it for the whole run.
        self._pending = {key: held for key, held in self._pending.items() if key[0] >= step}

    def parity(self, step: int, rows, weight_diffs: dict[str, float], bitwise: bool, weight_rows=None,
               checks_out_of_policy: int | None = None, rtol: float | None = None) -> None:
        """One parity check over every compared tensor (``rows``: the step's loss, activations and gradients;
        ``weight_rows``: the parameters, optimizer state and lr after the update, when given).

        The summary goes to both model writers, so each model's HParams row carries it (identical lines draw as
        one): the worst ulp distance and relative error, the fraction bitwise equal, the log10 normwise error of the
        worst tensor and ``checks_out_of_policy`` (the run's count so far). The manual writer adds the tolerance line
        log10(``rtol``), this check's fraction out of policy and the layer x tensor image; the parity writer one
        log10 normwise curve per tensor and the largest weight difference."""
        if self.parity_writer is None:
            return
        compared = [*rows, *(weight_rows or ())]
        fraction = sum(row.exact for row in compared) / len(compared) if compared else float(bitwise)
        summary = {PARITY_WORST_ULP: _worst(row.max_ulp for row in compared),
                   PARITY_WORST_REL: _worst(row.max_rel for row in compared),
                   PARITY_BITWISE_FRACTION: fraction,
                   PARITY_NORMWISE_LOG10: normwise_log10(_worst(row.normwise for row in compared))}
        if checks_out_of_policy is not None:
            summary[PARITY_OUT_OF_POLICY] = checks_out_of_policy
        for writer in self.writers.values():
            for tag, value in summary.items():
                writer.add_scalar(tag, value, step)
        manual = self.writers["manual"]
        if rtol is not None:
            manual.add_scalar(PARITY_TOLERANCE_LOG10, math.log10(rtol), step)
        if compared:
            manual.add_scalar(PARITY_OUT_OF_POLICY_FRACTION,
                              sum(not row.passed for row in compared) / len(compared), step)
            manual.add_image(PARITY_HEATMAP, parity_heatmap(compared, step), step, dataformats="HWC")
        for row in compared:
            value = normwise_log10(row.normwise)
            if math.isfinite(value):
                self.parity_writer.add_scalar(layer_detail_tag(row.layer, row.name), value, step)
        self.parity_writer.add_scalar(f"{DETAIL_PREFIX}weights_max_abs_diff",
                                      _worst(weight_diffs.values()), step)

    def verdict(self, step: int, text: str) -> None:
        """The parity verdict in words (``parity_verdict.verdict_text``), a Text card in the manual writer; the
        card renders Markdown, so its first word (PASS, FAIL) is set in bold to be read first."""
        word, _, rest = text.partition(" ")
        self.writers["manual"].add_text(PARITY_VERDICT, f"**{word}** {rest}" if word in ("PASS:", "PASS,", "FAIL:")
                                        else text, step)

    # --- histograms and images ---------------------------------------------------------------------------------------

    def histograms(self, model: str, step: int, params: dict[str, Tensor], grads: dict[str, Tensor] | None) -> None:
        writer = self.writers.get(model)
        if writer is None:
            return
        tagged = [(f"weights/{name}", tensor) for name, tensor in params.items()]
        tagged += [(f"grads/d{name}", tensor) for name, tensor in (grads or {}).items() if tensor is not None]
        for tag, tensor in tagged:
            values = tensor.detach().float().cpu()
            # Non-finite entries, or finite ones beyond TensorBoard's bucket range (about 1e20), make its
            # histogram fail ("The histogram is empty"); a diverging run is stopped by the training loop, and
            # such histograms are simply left out.
            if torch.isfinite(values).all():
                try:
                    writer.add_histogram(tag, values, step)
                except ValueError:
                    continue

    def first_layer_images(self, step: int, W1: Tensor, max_units: int = 64) -> None:
        """The first layer's weight rows as 28x28 tiles, each scaled to its own range."""
        if W1.shape[1] != 28 * 28:
            return
        tiles = W1[:max_units].detach().float().cpu().reshape(-1, 1, 28, 28)
        grid = make_grid(tiles, nrow=8, normalize=True, scale_each=True, pad_value=1.0)
        self.writers["manual"].add_image("images/first_layer_weights", grid, step)

    def misclassified(self, step: int, images: Tensor, labels: Tensor, predictions: Tensor,
                      max_images: int = 64, model: str = "manual") -> None:
        """The first ``max_images`` misclassified test digits of ``model``, each tile captioned true -> predicted."""
        writer = self.writers.get(model)
        wrong = (predictions != labels).nonzero().flatten()[:max_images]
        if writer is None or wrong.numel() == 0 or images.shape[1] != 28 * 28:
            return
        wrong = wrong.cpu()
        grid = labelled_digit_grid(images.detach().cpu()[wrong], labels.cpu()[wrong], predictions.cpu()[wrong])
        writer.add_image("images/misclassified_test_digits", grid, step, dataformats="HWC")

    # --- run description -------------------------------------------------------------------------------------------

    def config_text(self, description: dict) -> None:
        """The run's description as JSON, once per run (in the manual writer)."""
        text = "```json\n" + json.dumps(description, indent=2, sort_keys=True) + "\n```"
        self.writers["manual"].add_text("config", text, 0)

    def hparams(self, hparams: dict, metrics: dict[str, dict[str, float]] | None = None,
                status: str = "success") -> None:
        """One HParams session per model writer: ``hparams`` plus a ``model`` column. The metrics are not written
        here: TensorBoard takes each session's metrics from the last points of its writer's scalar series (test
        accuracy and loss, and for the engine the parity summary of the last check, which covers the weights and so
        every earlier difference), so no one-point ``hparam/*`` scalars clutter the Scalars tab. ``metrics`` is
        accepted for compatibility and ignored. No experiment summary either: TensorBoard then builds the columns
        from all runs' sessions, so runs with different hyperparameters stay comparable."""
        status_value = {"success": hparams_api.STATUS_SUCCESS, "failure": hparams_api.STATUS_FAILURE,
                        "running": hparams_api.STATUS_RUNNING}.get(status)
        if status_value is None:
            raise ValueError(f"status: expected success, failure or running; got {status!r}")
        for model, writer in self.writers.items():
            start = SessionStartInfo(start_time_secs=self.started)
            for key, value in _flatten({"model": model, **hparams}).items():
                _set_hparam(start.hparams[key], value)
            end = SessionEndInfo(status=status_value, end_time_secs=time.time())
            writer.file_writer.add_summary(_hparams_summary(hparams_metadata.SESSION_START_INFO_TAG,
                                                            HParamsPluginData(session_start_info=start)))
            writer.file_writer.add_summary(_hparams_summary(hparams_metadata.SESSION_END_INFO_TAG,
                                                            HParamsPluginData(session_end_info=end)))

    # --- files -----------------------------------------------------------------------------------------------------

    def flush(self) -> None:
        for writer in self._all():
            writer.flush()

    def close(self) -> None:
        for writer in self._all():
            writer.close()

    def _all(self):
        return [*self.writers.values(), *([self.parity_writer] if self.parity_writer else [])]


def _flatten(hparams: dict, prefix: str = "") -> dict:
    """Nested settings (an optimizer's dict, say) as ``optimizer.lr``-style columns; None values are left out
    (TensorBoard shows an unset cell)."""
    flat = {}
    for key, value in hparams.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif value is not None:
            flat[f"{prefix}{key}"] = value
    return flat


def _set_hparam(slot, value) -> None:
    """A ``google.protobuf.Value``. Bools stay bools (torch's ``hparams`` would write 1.0); integers become text,
    because the HParams table prints every number with five significant digits (a batch size of 64 as "64.000");
    as text they print as written and filter by checkbox, at the price of sorting as text. Other numbers stay
    numbers; sequences such as the layer sizes become '784-256-10'; anything else its text."""
    if isinstance(value, bool):
        slot.bool_value = value
    elif isinstance(value, (int, np.integer)):
        slot.string_value = str(int(value))
    elif isinstance(value, (float, np.floating)) and math.isfinite(value):
        slot.number_value = value
    elif isinstance(value, (list, tuple)):
        slot.string_value = "-".join(map(str, value))
    elif isinstance(value, str):
        slot.string_value = value
    else:
        slot.string_value = str(value)


def _hparams_summary(tag: str, data: HParamsPluginData) -> Summary:
    data.version = hparams_metadata.PLUGIN_DATA_VERSION
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name=hparams_metadata.PLUGIN_NAME, content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])
