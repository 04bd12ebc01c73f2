"""TensorBoard logging of a side-by-side run.

One run directory per invocation and ONE writer in it, with its event files directly in the run directory: a
training run is one TensorBoard run, so it has one colour, one HParams row and one name, and two trainings that
differ in one flag are two runs told apart by name, colour and row. Both models write into it, the model being the
last component of the tag, their difference beside them; TensorBoard's Time Series and Scalars pages group by the
first component and sort by name, so each metric lands next to its twin and their difference. The Custom Scalars
page (``tensorboard_layout.custom_scalars_layout``, written with each run) shows the parity verdict first, then one
chart per metric overlaying both models, beside the chart of their difference. Tags (``<model>``: manual,
autograd; a ``--no-twin`` run writes the manual ones and no parity, difference or autograd tag):

    loss/train/<model>, loss/train_epoch/<model>, loss/test/<model>,   scalars, per model
      accuracy/test/<model>, loss/val/<model>, accuracy/val/<model>
    loss/test/manual-autograd, ... (manual - autograd)              the difference, for every loss/ and accuracy/
    lr/<model>                                                      the learning rate, at the curve points
    gradient_flow/layer1/grad_norm/<model>, .../update_norm/...,    per layer, at the curve points
      .../update_to_weight/<model>
    weights/W1/<model>, grads/dW1/<model>, ...                      histograms, each epoch
    images/misclassified_test_digits/<model>                        labels on each tile, each epoch
    images/first_layer_weights/manual                               each epoch
    Parity/checks_out_of_policy, Parity/bitwise_equal_fraction,     the pair's verdict figures, once, one point per
      Parity/normwise_error_log10                                   parity check
    parity_elementwise/worst_ulp, parity_elementwise/worst_rel_error   the elementwise figures, idem
    parity_detail/normwise_tolerance_log10,                         one point per parity check
      parity_detail/out_of_policy_fraction, Parity/layer_by_tensor (image)
    parity_detail/layer3/dW, ..., parity_detail/run/loss,           log10 normwise error per tensor, and the
      parity_detail/weights_max_abs_diff                            largest weight difference, per parity check
    parity_detail/dp_vs_single_process_eps_of_max, ..._max_rel      data-parallel: the averaged gradient against
                                                                    one process's (rank 0 writes)
    Parity/verdict (text, every epoch and at a stop), config (text, once), the Custom Scalars layout
    the HParams session (hparams, status)                           one per training; its metrics are the last
                                                                    values of every scalar series: both models'
                                                                    and the parity figures

A run directory of the old layout (``manual/``, ``autograd/``, ``parity/`` writers, before this one) that is
resumed keeps its subdirectories untouched; the resumed part is written at its root, in this layout.
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
    CONFIG_TEXT,
    DETAIL_PREFIX,
    DIFFERENCE,
    MODELS,
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
    model_tag,
    normwise_log10,
)

DIFFERENCE_OF = ("loss/", "accuracy/")  # the model curves that get a manual - autograd curve
LEGACY_WRITERS = ("manual", "autograd", "parity")  # the subdirectories of an old-layout run directory
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
    validation split (its charts join the Custom Scalars page); None: found out from the first logged loss/val.
    ``legacy_writers``: the old-layout subdirectories found in ``run_dir`` (a resumed old run), left as they are."""

    def __init__(self, run_dir: Path, purge_step: int | None = None, twin: bool = True,
                 validation: bool | None = None, layers: int = 0):
        self.run_dir = Path(run_dir)
        self.twin = twin
        self.models = MODELS if twin else MODELS[:1]
        self.legacy_writers = [name for name in LEGACY_WRITERS if (self.run_dir / name).is_dir()]
        self.writer = SummaryWriter(str(self.run_dir), purge_step=purge_step)
        self.started = time.time()
        self._pending: dict[tuple[int, str], tuple[str, float]] = {}  # (step, tag) -> the first model's value
        self._validation = bool(validation)
        self._layers = layers
        self._data_parallel = False  # set when the data-parallel distance turns up
        self._write_layout()

    def _write_layout(self) -> None:
        """The Custom Scalars page. Written again when validation or data-parallel curves turn up: the plugin
        reads the latest."""
        self.writer.add_custom_scalars(custom_scalars_layout(
            twin=self.twin, validation=self._validation, layers=self._layers, data_parallel=self._data_parallel))

    # --- scalars ---------------------------------------------------------------------------------------------------

    def scalars(self, model: str, step: int, values: dict[str, float]) -> None:
        """A model's finite values, each as ``<tag>/<model>``; once both models have logged a loss or accuracy
        at a step, their difference (manual - autograd) as ``<tag>/manual-autograd``, so curves that coincide show
        as a flat zero."""
        if model not in self.models:
            return
        if not self._validation and any(tag in values for tag in VALIDATION_TAGS):
            self._validation = True
            self._write_layout()
        for tag, value in values.items():
            if value is None or not math.isfinite(value):
                continue
            self.writer.add_scalar(model_tag(tag, model), value, step)
            if self.twin and tag.startswith(DIFFERENCE_OF):
                self._difference(model, step, tag, value)

    def run_scalars(self, step: int, values: dict[str, float]) -> None:
        """Values of the run rather than of one model (the data-parallel distance), under their own tags; the first
        data-parallel one adds its category to the Custom Scalars page."""
        if not self._data_parallel and any(tag.startswith(DETAIL_PREFIX + "dp_") for tag in values):
            self._data_parallel = True
            self._write_layout()
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def _difference(self, model: str, step: int, tag: str, value: float) -> None:
        other = self._pending.pop((step, tag), None)
        if other is None or other[0] == model:
            self._pending[(step, tag)] = (model, value)
            return
        values = {model: value, other[0]: other[1]}
        self.writer.add_scalar(model_tag(tag, DIFFERENCE), values["manual"] - values["autograd"], step)
        # A step's values arrive together; anything older is left unmatched for good (a model's value that was
        # not finite), so drop it instead of holding it for the whole run.
        self._pending = {key: held for key, held in self._pending.items() if key[0] >= step}

    def parity(self, step: int, rows, weight_diffs: dict[str, float], bitwise: bool, weight_rows=None,
               checks_out_of_policy: int | None = None, rtol: float | None = None) -> None:
        """One parity check over every compared tensor (``rows``: the step's loss, activations and gradients;
        ``weight_rows``: the parameters, optimizer state and lr after the update, when given), written once (the
        pair's): the worst ulp distance and relative error, the fraction bitwise equal, the log10 normwise error of
        the worst tensor and ``checks_out_of_policy`` (the run's count so far); the tolerance line log10(``rtol``),
        this check's fraction out of policy and the layer x tensor image; one log10 normwise curve per tensor and
        the largest weight difference."""
        if not self.twin:
            return
        compared = [*rows, *(weight_rows or ())]
        fraction = sum(row.exact for row in compared) / len(compared) if compared else float(bitwise)
        summary = {PARITY_WORST_ULP: _worst(row.max_ulp for row in compared),
                   PARITY_WORST_REL: _worst(row.max_rel for row in compared),
                   PARITY_BITWISE_FRACTION: fraction,
                   PARITY_NORMWISE_LOG10: normwise_log10(_worst(row.normwise for row in compared))}
        if checks_out_of_policy is not None:
            summary[PARITY_OUT_OF_POLICY] = checks_out_of_policy
        if rtol is not None:
            summary[PARITY_TOLERANCE_LOG10] = math.log10(rtol)
        if compared:
            summary[PARITY_OUT_OF_POLICY_FRACTION] = sum(not row.passed for row in compared) / len(compared)
            self.writer.add_image(PARITY_HEATMAP, parity_heatmap(compared, step), step, dataformats="HWC")
        for tag, value in summary.items():
            self.writer.add_scalar(tag, value, step)
        for row in compared:
            value = normwise_log10(row.normwise)
            if math.isfinite(value):
                self.writer.add_scalar(layer_detail_tag(row.layer, row.name), value, step)
        self.writer.add_scalar(f"{DETAIL_PREFIX}weights_max_abs_diff", _worst(weight_diffs.values()), step)

    def verdict(self, step: int, text: str) -> None:
        """The parity verdict in words (``parity_verdict.verdict_text``), a Text card; the card renders Markdown,
        so its first word (PASS, FAIL) is set in bold to be read first."""
        word, _, rest = text.partition(" ")
        self.writer.add_text(PARITY_VERDICT, f"**{word}** {rest}" if word in ("PASS:", "PASS,", "FAIL:") else text,
                             step)

    # --- histograms and images ---------------------------------------------------------------------------------------

    def histograms(self, model: str, step: int, params: dict[str, Tensor], grads: dict[str, Tensor] | None) -> None:
        if model not in self.models:
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
                    self.writer.add_histogram(model_tag(tag, model), values, step)
                except ValueError:
                    continue

    def first_layer_images(self, step: int, W1: Tensor, max_units: int = 64) -> None:
        """The first layer's weight rows (the manual model's) as 28x28 tiles, each scaled to its own range."""
        if W1.shape[1] != 28 * 28:
            return
        tiles = W1[:max_units].detach().float().cpu().reshape(-1, 1, 28, 28)
        grid = make_grid(tiles, nrow=8, normalize=True, scale_each=True, pad_value=1.0)
        self.writer.add_image(model_tag("images/first_layer_weights", "manual"), grid, step)

    def misclassified(self, step: int, images: Tensor, labels: Tensor, predictions: Tensor,
                      max_images: int = 64, model: str = "manual") -> None:
        """The first ``max_images`` misclassified test digits of ``model``, each tile captioned true -> predicted."""
        wrong = (predictions != labels).nonzero().flatten()[:max_images]
        if model not in self.models or wrong.numel() == 0 or images.shape[1] != 28 * 28:
            return
        wrong = wrong.cpu()
        grid = labelled_digit_grid(images.detach().cpu()[wrong], labels.cpu()[wrong], predictions.cpu()[wrong])
        self.writer.add_image(model_tag("images/misclassified_test_digits", model), grid, step, dataformats="HWC")

    # --- run description -------------------------------------------------------------------------------------------

    def config_text(self, description: dict) -> None:
        """The run's description as JSON, once per run."""
        text = "```json\n" + json.dumps(description, indent=2, sort_keys=True) + "\n```"
        self.writer.add_text(CONFIG_TEXT, text, 0)

    def hparams(self, hparams: dict, metrics: dict[str, dict[str, float]] | None = None,
                status: str = "success") -> None:
        """The run's HParams session, one row per training: ``hparams`` as columns. The metrics are not written
        here: TensorBoard takes the session's metrics from the last points of the run's scalar series (both models'
        test accuracy and loss, their differences, and the parity figures of the last check, which covers the
        weights and so every earlier difference), so no one-point ``hparam/*`` scalars clutter the Scalars tab.
        ``metrics`` is accepted for compatibility and ignored. No experiment summary either: TensorBoard then builds
        the columns from all runs' sessions, so runs with different hyperparameters stay comparable, and marks the
        columns whose values differ (the table shows those first)."""
        status_value = {"success": hparams_api.STATUS_SUCCESS, "failure": hparams_api.STATUS_FAILURE,
                        "running": hparams_api.STATUS_RUNNING}.get(status)
        if status_value is None:
            raise ValueError(f"status: expected success, failure or running; got {status!r}")
        start = SessionStartInfo(start_time_secs=self.started)
        for key, value in _flatten(hparams).items():
            _set_hparam(start.hparams[key], value)
        end = SessionEndInfo(status=status_value, end_time_secs=time.time())
        self.writer.file_writer.add_summary(_hparams_summary(hparams_metadata.SESSION_START_INFO_TAG,
                                                             HParamsPluginData(session_start_info=start)))
        self.writer.file_writer.add_summary(_hparams_summary(hparams_metadata.SESSION_END_INFO_TAG,
                                                             HParamsPluginData(session_end_info=end)))

    # --- files -----------------------------------------------------------------------------------------------------

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


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
