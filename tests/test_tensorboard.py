"""What ``python -m experiments.train_mnist`` leaves for TensorBoard, read back the way TensorBoard reads it.

The script runs as a subprocess on a small fake IDX dataset (tests/fake_idx.py): one full two-epoch run shared by
most tests, a few cheap ``--dry-run`` runs for the run-directory naming, an interrupted-and-resumed run compared
with the full one, and a real ``tensorboard`` server on loopback that must serve the Custom Scalars page, the parity
summary, the verdict text, the parity image and the HParams sessions the way the browser asks for them, one
TensorBoard run (and one HParams row) per training. Event files are read with TensorBoard's own
``EventAccumulator`` (which applies the purge events that ``SummaryWriter(purge_step=...)`` writes on resume).
The pieces (run names, the layout, the labelled digit grid) have unit tests in test_tensorboard_layout.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fake_idx import write_fake_idx
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalars_metadata
from tensorboard.plugins.hparams import api_pb2 as hparams_api
from tensorboard.plugins.hparams import metadata as hparams_metadata

from side_by_side.tensorboard_layout import (
    BITWISE_LOG10,
    PARITY_OUT_OF_POLICY_FRACTION,
    PARITY_SUMMARY_TAGS,
    PARITY_TOLERANCE_LOG10,
    PARITY_VERDICT_TAGS,
    PARITY_WORST_REL,
    PARITY_WORST_ULP,
    custom_scalars_layout,
)

REPO = Path(__file__).resolve().parent.parent

# The shared run: 256 fake training images, 32 of them held out for validation, batches of 32 -> 7 steps an epoch.
N_TRAIN, N_TEST, VAL_SIZE, BATCH, EPOCHS, LOG_INTERVAL, PARITY_EVERY = 256, 64, 32, 32, 2, 2, 2
HIDDEN = (32, 16)  # small, so the run is quick; three layers, as in the default network
N_LAYERS = len(HIDDEN) + 1
STEPS_PER_EPOCH = math.ceil((N_TRAIN - VAL_SIZE) / BATCH)
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH
EPOCH_END_STEPS = [STEPS_PER_EPOCH * (epoch + 1) for epoch in range(EPOCHS)]
# <what differs>_<yymmdd-HHMMSS>[-n]: the name comes from the script (tensorboard_layout.run_name), the time after it.
RUN_NAME = re.compile(r"^([A-Za-z0-9_.+-]+)_(\d{6}-\d{6})(-\d+)?$")
STAMP_FORMAT = "%y%m%d-%H%M%S"
MODELS = ("manual", "autograd")
PARITY_CHECKED = [1, *range(PARITY_EVERY, TOTAL_STEPS + 1, PARITY_EVERY)]  # step 1, then every --parity-every
DIFFERENCE = "manual-autograd"
MODEL_METRICS = ("loss/train", "loss/train_epoch", "loss/test", "accuracy/test", "loss/val", "accuracy/val")
OLD_WRITERS = ("manual", "autograd", "parity")  # the subdirectories of the old layout: gone
SIZE_GUIDANCE = {ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0, ea.TENSORS: 0, ea.COMPRESSED_HISTOGRAMS: 0}
SCRIPT_TIMEOUT_S = 300
SERVER_TIMEOUT_S = 90


# --- helpers ------------------------------------------------------------------------------------------------------

def common_flags(data_dir: Path) -> list[str]:
    return ["--dataset", "idx", "--data-dir", str(data_dir), "--batch-size", str(BATCH),
            "--log-interval", str(LOG_INTERVAL), "--parity-every", str(PARITY_EVERY),
            "--hidden", ",".join(map(str, HIDDEN)), "--no-progress", "--device", "cpu"]


def full_flags(data_dir: Path) -> list[str]:
    return [*common_flags(data_dir), "--epochs", str(EPOCHS), "--val-size", str(VAL_SIZE)]


def run_script(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "experiments.train_mnist", *map(str, args)], cwd=REPO,
                            capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)
    assert result.returncode == 0, (f"train_mnist {' '.join(map(str, args))} exited {result.returncode}\n"
                                    f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def printed_run_dir(result: subprocess.CompletedProcess) -> Path:
    match = re.search(r"^run directory: (.+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    return Path(match.group(1))


def load(directory: Path, **kwargs) -> ea.EventAccumulator:
    """The run directory's own event files (not those of any subdirectory: TensorBoard's run is the directory)."""
    assert any(directory.glob("events.out.tfevents.*")), f"no event file in {directory}"
    accumulator = ea.EventAccumulator(str(directory), size_guidance=SIZE_GUIDANCE, **kwargs)
    accumulator.Reload()
    return accumulator


def series(accumulator: ea.EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def steps(accumulator: ea.EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in accumulator.Scalars(tag)]


def text_of(accumulator: ea.EventAccumulator, tag: str) -> list[tuple[int, str]]:
    """add_text stores a string tensor under ``<tag>/text_summary``, with the text plugin's metadata."""
    tensor_tag = f"{tag}/text_summary"
    assert accumulator.SummaryMetadata(tensor_tag).plugin_data.plugin_name == "text"
    return [(event.step, event.tensor_proto.string_val[0].decode()) for event in accumulator.Tensors(tensor_tag)]


def file_fingerprints(directory: Path) -> dict[str, tuple[int, int, str]]:
    return {str(path.relative_to(directory)): (path.stat().st_mtime_ns, path.stat().st_size,
                                               hashlib.sha256(path.read_bytes()).hexdigest())
            for path in sorted(directory.rglob("*")) if path.is_file()}


def tag(metric: str, model: str) -> str:
    """``loss/test/manual``: the model (or ``manual-autograd``, the difference) last."""
    return f"{metric}/{model}"


def as_float32(value: float) -> float:
    """Scalars are stored as float32."""
    return float(np.float32(value))


@dataclass
class Run:
    logdir: Path
    run_dir: Path
    summary: dict
    acc: ea.EventAccumulator  # the run directory's events: one TensorBoard run
    stdout: str = ""  # what the (last) script printed


# --- fixtures -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fake_mnist")
    write_fake_idx(directory, n_train=N_TRAIN, n_test=N_TEST)
    return directory


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_dir) -> Run:
    """One uninterrupted two-epoch run with a validation split; it is also the reference for the resume test."""
    base = tmp_path_factory.mktemp("full")
    logdir, summary_path = base / "logs", base / "summary.json"
    result = run_script(*full_flags(data_dir), "--logdir", logdir, "--json", summary_path)
    summary = json.loads(summary_path.read_text())
    run_dir = Path(summary["run_dir"])
    assert run_dir == printed_run_dir(result)
    return Run(logdir, run_dir, summary, load(run_dir), result.stdout)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, data_dir) -> Run:
    """The full run's settings, but interrupted at step 3 (--max-steps), resumed up to step 6, then rewound to the
    step-3 checkpoint and resumed to the end: the second resume must purge the first one's steps 4..6."""
    base = tmp_path_factory.mktemp("resumed")
    logdir, summary_path = base / "logs", base / "summary.json"
    flags = [*full_flags(data_dir), "--checkpoint-every", "1"]
    first = run_script(*flags, "--logdir", logdir, "--max-steps", "3")
    run_dir = printed_run_dir(first)
    step3 = run_dir / "checkpoint-step3.pt"
    shutil.copyfile(run_dir / "checkpoint.pt", step3)
    second = run_script(*flags, "--resume", run_dir / "checkpoint.pt", "--max-steps", "6")
    third = run_script(*flags, "--resume", step3, "--json", summary_path)
    for result in (second, third):
        assert printed_run_dir(result) == run_dir
    summary = json.loads(summary_path.read_text())
    return Run(logdir, run_dir, summary, load(run_dir))


# --- the full run's event files -----------------------------------------------------------------------------------

def test_one_run_directory_that_is_one_tensorboard_run(full_run):
    """Event files directly in the run directory and no writer subdirectory: one training is one TensorBoard run
    (one colour, one HParams row)."""
    assert [path.name for path in full_run.logdir.iterdir()] == [full_run.run_dir.name]
    assert RUN_NAME.match(full_run.run_dir.name), full_run.run_dir.name
    assert len(list(full_run.run_dir.glob("events.out.tfevents.*"))) == 1
    assert [path.name for path in full_run.run_dir.iterdir() if path.is_dir()] == []
    assert not list(full_run.run_dir.glob("*/events.out.tfevents.*"))
    assert (full_run.run_dir / "summary.json").is_file() and (full_run.run_dir / "checkpoint.pt").is_file()
    assert full_run.summary["steps"] == TOTAL_STEPS and full_run.summary["epochs_completed"] == EPOCHS


def test_each_model_metric_has_its_twin_and_their_difference_next_to_it(full_run):
    """Every model tag ends in /manual, /autograd or /manual-autograd, and sorted by name (as TensorBoard's Time
    Series and Scalars pages list them) each metric's autograd, manual and difference series are neighbours."""
    scalars = sorted(full_run.acc.Tags()["scalars"])
    for metric in MODEL_METRICS:
        triple = [tag(metric, model) for model in ("autograd", "manual", DIFFERENCE)]
        at = scalars.index(triple[0])
        assert scalars[at:at + 3] == triple, (metric, scalars[at - 1:at + 4])
    # the model tags come in pairs; the pair's series (parity) exist once, with no model in the tag
    manual = {t.removesuffix("/manual") for t in scalars if t.endswith("/manual")}
    autograd = {t.removesuffix("/autograd") for t in scalars if t.endswith("/autograd")}
    assert manual == autograd, sorted(manual ^ autograd)
    assert set(PARITY_SUMMARY_TAGS) <= set(scalars)
    assert not [t for t in scalars if t.startswith(("Parity/", "parity_")) and t.endswith(MODELS)]
    # the old untagged model series are gone
    assert not set(MODEL_METRICS) & set(scalars)


def test_no_single_point_hparam_scalars(full_run):
    assert not [t for t in full_run.acc.Tags()["scalars"] if t.startswith("hparam/")]


def test_scalars_are_finite_and_accuracies_are_fractions(full_run):
    for name in full_run.acc.Tags()["scalars"]:
        values = [value for _, value in series(full_run.acc, name)]
        assert values, name
        assert all(math.isfinite(value) for value in values), (name, values)
        if "accuracy" in name and not name.endswith(DIFFERENCE):
            assert all(0 <= value <= 1 for value in values), (name, values)


def test_train_loss_and_lr_are_logged_every_log_interval_steps(full_run):
    for model in MODELS:
        for metric in ("loss/train", "lr"):
            logged = steps(full_run.acc, tag(metric, model))
            assert logged == list(range(LOG_INTERVAL, TOTAL_STEPS + 1, LOG_INTERVAL)), (model, metric, logged)
    assert {value for _, value in series(full_run.acc, "lr/manual")} == {as_float32(0.05)}


def test_gradient_flow_per_layer_in_both_models_at_the_curve_points(full_run):
    for model in MODELS:
        for layer in range(1, N_LAYERS + 1):
            for name in ("grad_norm", "update_norm", "update_to_weight"):
                flow = tag(f"gradient_flow/layer{layer}/{name}", model)
                assert steps(full_run.acc, flow) == list(range(LOG_INTERVAL, TOTAL_STEPS + 1, LOG_INTERVAL)), flow
                assert all(value > 0 for _, value in series(full_run.acc, flow)), flow


def test_evaluation_scalars_are_logged_once_per_epoch(full_run):
    for model in MODELS:
        for metric in ("loss/test", "accuracy/test", "loss/train_epoch", "loss/val", "accuracy/val"):
            assert steps(full_run.acc, tag(metric, model)) == EPOCH_END_STEPS, (model, metric)
    assert full_run.summary["run"]["val_size"] == VAL_SIZE
    assert full_run.summary["run"]["train_images"] == N_TRAIN - VAL_SIZE


def test_both_models_scalars_are_exactly_equal_on_cpu(full_run):
    """The CPU run is bitwise identical, so every curve of the two models must coincide exactly."""
    twins = [t.removesuffix("/autograd") for t in full_run.acc.Tags()["scalars"] if t.endswith("/autograd")]
    assert len(twins) == len(MODEL_METRICS) + 1 + 3 * N_LAYERS  # the metrics, lr and gradient flow
    for metric in twins:
        assert series(full_run.acc, tag(metric, "manual")) == series(full_run.acc, tag(metric, "autograd")), metric


def test_difference_curves_say_that_the_model_curves_coincide(full_run):
    """manual - autograd for every loss and accuracy metric, at the same steps as the curves: all zero on the CPU."""
    differences = {t.removesuffix("/" + DIFFERENCE) for t in full_run.acc.Tags()["scalars"]
                   if t.endswith("/" + DIFFERENCE)}
    assert differences == set(MODEL_METRICS)
    for metric in MODEL_METRICS:
        difference = tag(metric, DIFFERENCE)
        assert steps(full_run.acc, difference) == steps(full_run.acc, tag(metric, "manual")), metric
        assert {value for _, value in series(full_run.acc, difference)} == {0.0}, metric


def test_epoch_scalars_agree_with_the_summary(full_run):
    history = full_run.summary["history"]
    for model in MODELS:
        for metric in ("loss/train_epoch", "loss/test", "accuracy/test", "loss/val", "accuracy/val"):
            assert series(full_run.acc, tag(metric, model)) == \
                [(entry["step"], as_float32(entry[model][metric])) for entry in history], (model, metric)
        final = full_run.summary["final"][model]
        # HParams shows the last points
        assert series(full_run.acc, tag("accuracy/test", model))[-1][1] == as_float32(final["test_accuracy"])
        assert series(full_run.acc, tag("loss/test", model))[-1][1] == as_float32(final["test_loss"])


def test_parity_summary_is_one_point_per_check_and_exact_on_cpu(full_run):
    acc = full_run.acc
    for name in (*PARITY_SUMMARY_TAGS, PARITY_TOLERANCE_LOG10, PARITY_OUT_OF_POLICY_FRACTION):
        assert steps(acc, name) == PARITY_CHECKED, name
    assert {value for _, value in series(acc, PARITY_WORST_ULP)} == {0.0}
    assert {value for _, value in series(acc, PARITY_WORST_REL)} == {0.0}
    assert {value for _, value in series(acc, "Parity/bitwise_equal_fraction")} == {1.0}
    assert {value for _, value in series(acc, "Parity/checks_out_of_policy")} == {0.0}
    assert {value for _, value in series(acc, PARITY_OUT_OF_POLICY_FRACTION)} == {0.0}
    assert {value for _, value in series(acc, "Parity/normwise_error_log10")} == {BITWISE_LOG10}
    assert {value for _, value in series(acc, PARITY_TOLERANCE_LOG10)} == {as_float32(math.log10(1e-4))}
    assert full_run.summary["parity"]["checks"] == len(PARITY_CHECKED)
    assert full_run.summary["parity"]["bitwise_equal_checks"] == len(PARITY_CHECKED)


def test_per_tensor_parity_curves_are_per_layer_under_the_detail_prefix(full_run):
    """One log10 normwise curve per compared tensor, grouped by layer: every value, gradient, weight and momentum
    buffer of each layer, and the loss and learning rate; on the CPU all at the bitwise mark."""
    acc = full_run.acc
    tags = {t for t in acc.Tags()["scalars"] if t.startswith("parity_detail/")}
    tags -= {PARITY_TOLERANCE_LOG10, PARITY_OUT_OF_POLICY_FRACTION}
    names = ("Z", "A", "dZ", "dW", "db", "W", "b", "momentum_buffer_W", "momentum_buffer_b")
    expected = {f"parity_detail/layer{layer}/{name}" for layer in range(1, N_LAYERS + 1) for name in names}
    expected |= {f"parity_detail/layer{layer}/dA" for layer in range(1, N_LAYERS)}  # the last layer's goes to dZ
    expected |= {"parity_detail/run/loss", "parity_detail/run/lr", "parity_detail/weights_max_abs_diff"}
    assert tags == expected, sorted(tags ^ expected)
    for name in tags:
        assert steps(acc, name) == PARITY_CHECKED, name
        bitwise = 0.0 if name.endswith("weights_max_abs_diff") else BITWISE_LOG10
        assert {value for _, value in series(acc, name)} == {bitwise}, name


def test_custom_scalars_layout_is_written_once_with_the_run(full_run):
    events = full_run.acc.Tensors(custom_scalars_metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(events[-1].tensor_proto.string_val[0])
    # the run holds out a validation split; its network has N_LAYERS layers
    expected = custom_scalars_layout(twin=True, validation=True, layers=N_LAYERS)
    assert [category.title for category in layout.category] == list(expected)
    assert layout.category[0].title.startswith("parity")
    for category, (title, charts) in zip(layout.category, expected.items()):
        assert [(chart.title, list(chart.multiline.tag)) for chart in category.chart] == \
            [(chart_title, regexes) for chart_title, (_, regexes) in charts.items()], title
    # every regex of the layout selects at least one series the run wrote
    scalars = full_run.acc.Tags()["scalars"]
    for category in layout.category:
        for chart in category.chart:
            for regex in chart.multiline.tag:
                assert [t for t in scalars if re.match(regex, t)], (chart.title, regex)


def test_weight_and_gradient_histograms_of_both_models(full_run):
    sizes = (784, *HIDDEN, 10)
    histograms = set(full_run.acc.Tags()["histograms"])
    expected = {tag(f"{kind}/{prefix}{layer}", model) for layer in range(1, N_LAYERS + 1) for model in MODELS
                for kind, prefix in (("weights", "W"), ("weights", "b"), ("grads", "dW"), ("grads", "db"))}
    assert histograms == expected, sorted(histograms ^ expected)
    for model in MODELS:
        for metric in ("weights/W1", "grads/dW1"):
            events = full_run.acc.Histograms(tag(metric, model))
            assert [event.step for event in events] == EPOCH_END_STEPS, (model, metric)
            assert all(event.histogram_value.num == sizes[0] * sizes[1] for event in events), (model, metric)
    for metric in ("weights/W1", "grads/dW1", f"weights/W{N_LAYERS}", f"grads/db{N_LAYERS}"):
        manual, autograd = ([(event.step, event.histogram_value) for event in full_run.acc.Histograms(tag(metric, m))]
                            for m in MODELS)
        assert manual == autograd, metric


def test_images_per_model_and_the_parity_image_once(full_run):
    acc = full_run.acc
    assert set(acc.Tags()["images"]) == {"images/first_layer_weights/manual", "images/misclassified_test_digits/manual",
                                         "images/misclassified_test_digits/autograd", "Parity/layer_by_tensor"}
    assert [event.step for event in acc.Images("Parity/layer_by_tensor")] == PARITY_CHECKED
    tile = 28 + 2  # make_grid's padding is 2
    first = acc.Images("images/first_layer_weights/manual")
    assert [event.step for event in first] == EPOCH_END_STEPS
    rows = math.ceil(HIDDEN[0] / 8)
    assert all((event.width, event.height) == (8 * tile + 2, rows * tile + 2) for event in first)
    assert all(event.encoded_image_string.startswith(b"\x89PNG") for event in first)


def test_misclassified_digits_are_labelled_and_the_twin_has_the_same_grid(full_run):
    """The grid is what ``labelled_digit_grid`` draws for the test digits each model got wrong; the twin's is the
    same image (its predictions are bitwise the engine's)."""
    import torch
    from PIL import Image

    from side_by_side.digit_tiles import labelled_digit_grid

    # The fake data is not learned perfectly in two epochs by this small network: some test digits stay wrong.
    accuracy = dict(series(full_run.acc, "accuracy/test/manual"))
    wrong_counts = {step: round((1 - value) * N_TEST) for step, value in accuracy.items()}
    assert all(count > 0 for count in wrong_counts.values()), wrong_counts
    images = {model: full_run.acc.Images(tag("images/misclassified_test_digits", model)) for model in MODELS}
    assert [event.step for event in images["manual"]] == list(wrong_counts)
    assert [(event.step, event.encoded_image_string) for event in images["manual"]] == \
        [(event.step, event.encoded_image_string) for event in images["autograd"]]

    # Same size as a grid of that many tiles drawn directly (the captions make tiles taller than wide).
    for event in images["manual"]:
        count = min(wrong_counts[event.step], 64)
        labels = torch.arange(count) % 10
        expected = labelled_digit_grid(torch.rand(count, 784), labels, (labels + 1) % 10)
        assert (event.height, event.width) == expected.shape[:2], (event.step, count)
        decoded = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        # Coloured captions: green (true) and red (predicted) text pixels are there.
        green = (decoded[..., 1] > 100) & (decoded[..., 0] < 60) & (decoded[..., 2] < 60)
        red = (decoded[..., 0] > 150) & (decoded[..., 1] < 60) & (decoded[..., 2] < 60)
        assert green.sum() > 10 * count and red.sum() > 10 * count, (green.sum(), red.sum(), count)
    assert not [t for t in full_run.acc.Tags()["tensors"] if t.startswith("images/")]


def test_config_text_once_per_run(full_run):
    [(step, text)] = text_of(full_run.acc, "config")
    assert step == 0
    match = re.fullmatch(r"```json\n(.*)\n```", text, re.DOTALL)
    assert match, text
    config = json.loads(match.group(1))
    assert config["dataset"] == "idx" and config["epochs"] == EPOCHS and config["batch_size"] == BATCH
    assert config["val_size"] == VAL_SIZE and config["sizes"] == [784, *HIDDEN, 10]
    assert config["command"].startswith("python -m experiments.train_mnist ")


def test_one_hparams_session_per_training_without_a_model_column(full_run):
    content = full_run.acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    # No experiment summary: TensorBoard builds the columns from every run's sessions, and the metrics from
    # the session's scalar series.
    assert set(content) == {hparams_metadata.SESSION_START_INFO_TAG, hparams_metadata.SESSION_END_INFO_TAG}
    start = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    assert "model" not in start.hparams
    assert start.hparams["lr"].number_value == pytest.approx(0.05)
    # Integers as text, so the HParams table shows "32", not "32.000".
    assert start.hparams["batch_size"].WhichOneof("kind") == "string_value"
    assert start.hparams["batch_size"].string_value == str(BATCH)
    assert start.hparams["epochs"].string_value == str(EPOCHS)
    assert start.hparams["activation"].string_value == "relu"
    assert start.hparams["sizes"].string_value == "-".join(map(str, (784, *HIDDEN, 10)))
    # the data and the process group, so runs differing only there get different rows
    assert {key: value.string_value for key, value in start.hparams.items()
            if key in ("dataset", "limit", "standardize", "val_size", "train_images", "world_size",
                       "dp_mode")} == {"dataset": "idx", "limit": "none", "standardize": "none",
                                       "val_size": str(VAL_SIZE), "train_images": str(N_TRAIN - VAL_SIZE),
                                       "world_size": "1", "dp_mode": "none"}
    end = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
    assert end.status == hparams_api.STATUS_SUCCESS


# --- run directories ----------------------------------------------------------------------------------------------

def test_each_invocation_gets_a_new_run_directory_and_nothing_is_overwritten(tmp_path, data_dir):
    logdir = tmp_path / "logs"
    flags = [*common_flags(data_dir), "--dry-run", "--logdir", logdir]
    started = datetime.now().replace(microsecond=0)
    first = printed_run_dir(run_script(*flags))
    before = file_fingerprints(first)
    assert any("events.out.tfevents" in name for name in before)
    second = printed_run_dir(run_script(*flags))
    finished = datetime.now()
    assert first != second
    assert sorted(path.name for path in logdir.iterdir()) == sorted([first.name, second.name])
    for run_dir in (first, second):
        match = RUN_NAME.match(run_dir.name)
        assert match, run_dir.name
        stamp = datetime.strptime(match.group(2), STAMP_FORMAT)
        assert started - timedelta(seconds=1) <= stamp <= finished, (run_dir.name, started, finished)
        assert list(run_dir.glob("events.out.tfevents.*")), run_dir
    assert file_fingerprints(first) == before
    assert steps(load(first), "loss/train/manual") == steps(load(second), "loss/train/manual")


def test_new_run_dir_adds_a_suffix_instead_of_reusing_a_directory(tmp_path):
    from side_by_side.tensorboard_writer import new_run_dir

    now = datetime(2024, 1, 2, 3, 4, 5)
    made = [new_run_dir(tmp_path, "relu_ce", now=now) for _ in range(3)]
    assert [path.name for path in made] == ["relu_ce_240102-030405", "relu_ce_240102-030405-2",
                                            "relu_ce_240102-030405-3"]
    assert all(path.is_dir() for path in made)


# --- a real TensorBoard server ------------------------------------------------------------------------------------

class Server:
    def __init__(self, url: str, stderr_path: Path):
        self.url, self.stderr_path = url, stderr_path
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy

    def get(self, path: str, **params):
        return json.loads(self.get_bytes(path, **params))

    def get_bytes(self, path: str, **params) -> bytes:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with self.opener.open(self.url + path + query, timeout=30) as response:
            return response.read()

    def post(self, path: str, body: dict):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with self.opener.open(request, timeout=30) as response:
            return json.loads(response.read())

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, full_run, data_dir) -> Path:
    """The logdir the server reads: a copy of the full run beside a second training that differs in one flag
    (``--lr 0.1``, a dry run); returns the second run's directory."""
    logdir = tmp_path_factory.mktemp("served") / "logs"
    shutil.copytree(full_run.run_dir, logdir / full_run.run_dir.name)
    return printed_run_dir(run_script(*common_flags(data_dir), "--dry-run", "--lr", "0.1", "--logdir", logdir))


@pytest.fixture(scope="module")
def tensorboard_server(tmp_path_factory, second_run):
    """``tensorboard --logdir`` on the two trainings' logdir, on 127.0.0.1 and a port the OS picks (``--port 0``;
    the chosen port is read from the URL that TensorBoard prints). A server that cannot start here (no loopback
    networking in a sandbox, say) skips the server tests with its output as the reason; once it has started,
    every failure is a failure."""
    base = tmp_path_factory.mktemp("tensorboard")
    stdout_path, stderr_path = base / "stdout.txt", base / "stderr.txt"
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "tensorboard.main", "--logdir", str(second_run.parent), "--host",
                 "127.0.0.1", "--port", "0"], stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                start_new_session=True)
        except OSError as error:
            pytest.skip(f"cannot start tensorboard: {error}")
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        url = None
        while url is None:
            text = stderr_path.read_text(errors="replace") + stdout_path.read_text(errors="replace")
            match = re.search(r"(http://127\.0\.0\.1:\d+)/", text)
            if match:
                url = match.group(1)
            elif process.poll() is not None:
                pytest.skip(f"tensorboard could not start (exit status {process.returncode}):\n{text[-2000:]}")
            elif time.monotonic() > deadline:
                pytest.skip(f"tensorboard printed no URL within {SERVER_TIMEOUT_S} s:\n{text[-2000:]}")
            else:
                time.sleep(0.2)
        yield Server(url, stderr_path), process, deadline
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: TensorBoard and its data server, if any
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


def poll(server: Server, process: subprocess.Popen, deadline: float, fetch, ready, what: str):
    """TensorBoard loads the logdir in the background: retry ``fetch()`` until ``ready(result)``."""
    last = None
    while True:
        if process.poll() is not None:
            pytest.fail(f"tensorboard exited with status {process.returncode}:\n{server.stderr()}")
        try:
            last = fetch()
            if ready(last):
                return last
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as error:
            last = error
        if time.monotonic() > deadline:
            pytest.fail(f"tensorboard did not serve {what} within {SERVER_TIMEOUT_S} s; last answer {last!r}\n"
                        f"stderr:\n{server.stderr()}")
        time.sleep(0.25)


def test_tensorboard_server_serves_one_run_per_training(tensorboard_server, full_run, second_run):
    """Two trainings are exactly two TensorBoard runs (two colours), named by their run directories."""
    server, process, deadline = tensorboard_server
    run = full_run.run_dir.name
    expected_runs = {run, second_run.name}
    runs = poll(server, process, deadline, lambda: server.get("/data/runs"),
                lambda answer: expected_runs <= set(answer), "the two trainings in /data/runs")
    assert sorted(runs) == sorted(expected_runs)

    model_tags = {tag(metric, model) for metric in MODEL_METRICS for model in (*MODELS, DIFFERENCE)}
    tags = poll(server, process, deadline, lambda: server.get("/data/plugin/scalars/tags"),
                lambda answer: model_tags <= set(answer.get(run, {}))
                and "parity_detail/weights_max_abs_diff" in answer.get(run, {}), "the scalar tags")
    assert set(tags[run]) == set(full_run.acc.Tags()["scalars"])

    for model in (*MODELS, DIFFERENCE):
        for metric in ("loss/test", "accuracy/test", "loss/train"):
            expected = series(full_run.acc, tag(metric, model))
            served = poll(server, process, deadline,
                          lambda: server.get("/data/plugin/scalars/scalars", run=run, tag=tag(metric, model)),
                          lambda answer: len(answer) >= len(expected), f"{metric} of {model}")
            assert [(step, value) for _, step, value in served] == expected, (model, metric)

    plugins = server.get("/data/plugins_listing")
    for plugin in ("scalars", "custom_scalars", "histograms", "images", "text", "hparams"):
        assert plugins[plugin]["enabled"], (plugin, plugins[plugin])


def test_tensorboard_server_serves_the_custom_scalars_page_with_parity_on_top(tensorboard_server, full_run):
    """What the Custom Scalars tab asks for: the layout, then per chart and run the series its regexes match."""
    server, process, deadline = tensorboard_server
    run = full_run.run_dir.name
    layout = poll(server, process, deadline, lambda: server.get("/data/plugin/custom_scalars/layout"),
                  lambda answer: bool(answer.get("category")), "the custom scalars layout")
    expected = custom_scalars_layout(twin=True, validation=True, layers=N_LAYERS)
    assert [category["title"] for category in layout["category"]] == list(expected)
    charts = {chart["title"]: chart["multiline"]["tag"] for category in layout["category"]
              for chart in category["chart"]}
    assert list(charts)[:3] == list(next(iter(expected.values())))  # the verdict charts come first

    def chart_series(title: str) -> dict:
        found = {}
        for regex in charts[title]:
            answer = server.get("/data/plugin/custom_scalars/scalars", run=run, tag=regex)
            assert answer["regex_valid"], regex
            found.update({name: [(step, value) for _, step, value in events]
                          for name, events in answer["tag_to_events"].items()})
        return found

    # The parity summary: one point per check; no check out of policy, all tensors bitwise equal (and none out of
    # policy: the two lines of the fraction chart, so its axis spans 0..1), the normwise error at the bitwise mark
    # under the tolerance line, 0 ulp, 0 relative error.
    at_checks = lambda value: [(step, value) for step in PARITY_CHECKED]
    parity = {"checks out of policy so far": {"Parity/checks_out_of_policy": at_checks(0.0)},
              "fraction of compared tensors bitwise equal (1) and out of policy (0)": {
                  "Parity/bitwise_equal_fraction": at_checks(1.0), PARITY_OUT_OF_POLICY_FRACTION: at_checks(0.0)},
              "log10 normwise error": {"Parity/normwise_error_log10": at_checks(BITWISE_LOG10),
                                       PARITY_TOLERANCE_LOG10: at_checks(as_float32(-4.0))},
              "worst ulp distance over all compared tensors": {PARITY_WORST_ULP: at_checks(0.0)},
              "worst relative error over all compared tensors": {PARITY_WORST_REL: at_checks(0.0)}}
    for start, expected_series in parity.items():
        title = next(title for title in charts if title.startswith(start))
        served = poll(server, process, deadline, lambda: chart_series(title),
                      lambda answer: all(len(answer.get(name, [])) >= len(PARITY_CHECKED) for name in expected_series),
                      title)
        assert served == expected_series, title

    # Gradient flow: one line per layer and model, in the one run.
    flow_title = next(title for title in charts if title.startswith("weight gradient norm"))
    assert set(chart_series(flow_title)) == {tag(f"gradient_flow/layer{n}/grad_norm", model)
                                             for n in range(1, N_LAYERS + 1) for model in MODELS}
    learning_rate = next(title for title in charts if title.startswith("lr "))
    assert set(chart_series(learning_rate)) == {"lr/manual", "lr/autograd"}

    # One chart per layer, the last layer first, each drawing that layer's tensors.
    layer_titles = [title for title in charts if title.startswith("layer ")]
    assert [title.split(":")[0] for title in layer_titles] == [f"layer {n}" for n in range(N_LAYERS, 0, -1)]
    served = chart_series(layer_titles[0])
    assert set(served) == {f"parity_detail/layer{N_LAYERS}/{name}" for name in
                           ("Z", "A", "dZ", "dW", "db", "W", "b", "momentum_buffer_W", "momentum_buffer_b")}
    assert all(values == at_checks(BITWISE_LOG10) for values in served.values())

    # A metric chart overlays both models (and not their difference); the chart after it, in the same category,
    # draws the difference.
    for category in layout["category"]:
        if category["title"] in MODEL_METRICS:
            metric = category["title"]
            overlay, difference = (chart["title"] for chart in category["chart"])
            assert overlay.startswith(f"{metric}: manual and autograd"), overlay
            assert difference.startswith(f"{metric}: manual - autograd"), difference
            assert chart_series(overlay) == {tag(metric, model): series(full_run.acc, tag(metric, model))
                                             for model in MODELS}, metric
            assert chart_series(difference) == {tag(metric, DIFFERENCE): series(full_run.acc,
                                                                                tag(metric, DIFFERENCE))}, metric
    assert chart_series(next(title for title in charts if title.startswith("loss/test: manual - autograd"))) == \
        {"loss/test/manual-autograd": [(step, 0.0) for step in EPOCH_END_STEPS]}


def test_tensorboard_server_serves_one_hparams_row_per_training_with_both_models_and_parity(
        tensorboard_server, full_run, second_run):
    server, process, deadline = tensorboard_server
    runs = {full_run.run_dir.name: 0.05, second_run.name: 0.1}
    groups = poll(server, process, deadline, lambda: server.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}),
        lambda answer: len(answer.get("sessionGroups", [])) >= 2, "the hparams session groups")
    by_name = {group["name"]: group for group in groups["sessionGroups"]}
    assert set(by_name) == set(runs)  # one row per training, named by its run
    for run, lr in runs.items():
        group = by_name[run]
        assert len(group["sessions"]) == 1 and group["sessions"][0]["name"] == run
        assert "model" not in group["hparams"]
        assert group["hparams"]["batch_size"] == str(BATCH)
        assert group["hparams"]["lr"] == pytest.approx(lr)
        metrics = {metric["name"]["tag"]: metric["value"] for metric in group["metricValues"]}
        assert not [name for name in metrics if name.startswith("hparam/")]
        assert all(metric["name"]["group"] == "" for metric in group["metricValues"])  # the run itself, no subrun
        # parity belongs to the pair: every row has it
        assert (metrics[PARITY_WORST_ULP], metrics["Parity/bitwise_equal_fraction"]) == (0.0, 1.0), run
        assert (metrics["Parity/checks_out_of_policy"], metrics["Parity/normwise_error_log10"]) == \
            (0.0, BITWISE_LOG10), run
        assert metrics[tag("accuracy/test", DIFFERENCE)] == metrics[tag("loss/test", DIFFERENCE)] == 0.0, run
        assert metrics["accuracy/test/manual"] == metrics["accuracy/test/autograd"], run
    # both models' test accuracy and loss: the last points of their curves
    metrics = {metric["name"]["tag"]: metric["value"]
               for metric in by_name[full_run.run_dir.name]["metricValues"]}
    for model in MODELS:
        final = full_run.summary["final"][model]
        assert metrics[tag("accuracy/test", model)] == as_float32(final["test_accuracy"]), model
        assert metrics[tag("loss/test", model)] == as_float32(final["test_loss"]), model

    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    columns = {info["name"]: info for info in experiment["hparamInfos"]}
    assert "model" not in columns
    assert {"activation", "loss", "lr", "batch_size", "epochs", "sizes"} <= set(columns)
    # the flag that differs is marked so (the table shows such columns first); one that does not, is not
    assert columns["lr"]["differs"] and not columns["batch_size"].get("differs", False)
    metric_columns = [info["name"]["tag"] for info in experiment["metricInfos"]]
    assert {*(tag(metric, model) for metric in ("accuracy/test", "loss/test") for model in MODELS),
            *PARITY_SUMMARY_TAGS} <= set(metric_columns)
    # The table shows the first five metric columns by default (after the hparam columns, an order the logs cannot
    # change): the parity verdict (capitalised, so sorted first), then both models' test accuracy.
    assert metric_columns[:5] == [*sorted(PARITY_VERDICT_TAGS), "accuracy/test/autograd", "accuracy/test/manual"], \
        metric_columns


def test_tensorboard_server_serves_the_verdict_text_and_the_layer_by_tensor_image(tensorboard_server, full_run):
    """The Text tab's verdict card (at every epoch end, the last one matching summary.json) and the Images tab's
    layer x tensor grid, one per parity check, as the browser fetches them."""
    server, process, deadline = tensorboard_server
    run = full_run.run_dir.name
    texts = poll(server, process, deadline, lambda: server.get("/data/plugin/text/text", run=run,
                                                               tag="Parity/verdict/text_summary"),
                 lambda answer: len(answer) >= EPOCHS, "the verdict text")
    assert [entry["step"] for entry in texts] == EPOCH_END_STEPS
    last = texts[-1]["text"]
    checks = len(PARITY_CHECKED)
    assert f"<strong>PASS:</strong> {checks}/{checks} parity checks bitwise equal" in last, last  # bold, first
    accuracy = 100 * full_run.summary["final"]["manual"]["test_accuracy"]
    assert f"Test accuracy {accuracy:.2f} % for both models" in last, last
    assert full_run.summary["parity"]["verdict"].startswith(f"PASS: {checks}/{checks} parity checks bitwise")
    assert f"verdict: {full_run.summary['parity']['verdict']}" in full_run.stdout

    images = poll(server, process, deadline, lambda: server.get("/data/plugin/images/images", run=run,
                                                                tag="Parity/layer_by_tensor", sample=0),
                  lambda answer: len(answer) >= len(PARITY_CHECKED), "the layer x tensor image")
    assert [image["step"] for image in images] == PARITY_CHECKED
    from PIL import Image

    png = Image.open(io.BytesIO(server.get_bytes("/data/plugin/images/individualImage?" + images[-1]["query"])))
    assert png.format == "PNG" and min(png.size) > 50
    pixels = np.asarray(png.convert("RGB")).reshape(-1, 3)
    assert not ((pixels[:, 0] > 200) & (pixels[:, 1] < 80) & (pixels[:, 2] < 80)).any()  # no red: none out of policy
    assert not ((pixels[:, 2] > 200) & (pixels[:, 0] < 180)).any()  # no blue cell: every tensor bitwise equal
    assert (pixels.min(axis=1) < 100).any()  # it is drawn: the grid's text and lines are dark


# --- resume ---------------------------------------------------------------------------------------------------------

def test_resume_continues_in_the_same_run_directory(resumed_run):
    assert [path.name for path in resumed_run.logdir.iterdir()] == [resumed_run.run_dir.name]
    # One event file per invocation, the hparams session included (no extra writer for it), and no subdirectory.
    files = list(resumed_run.run_dir.glob("events.out.tfevents.*"))
    assert len(files) == 3, files
    assert [path.name for path in resumed_run.run_dir.iterdir() if path.is_dir()] == []
    assert resumed_run.summary["steps"] == TOTAL_STEPS and not resumed_run.summary["stopped_early"]
    assert resumed_run.summary["run_dir"] == str(resumed_run.run_dir)


def test_resume_purges_the_steps_logged_after_the_checkpoint(resumed_run):
    """Steps 4..6 were logged twice (by the first resume and again after rewinding to step 3): TensorBoard's purge
    event drops the first copies, so every curve has each step once."""
    acc = resumed_run.acc
    for name in acc.Tags()["scalars"]:
        logged = steps(acc, name)
        assert logged == sorted(set(logged)), (name, logged)
    for model in MODELS:
        assert steps(acc, tag("loss/train", model)) == list(range(LOG_INTERVAL, TOTAL_STEPS + 1, LOG_INTERVAL))
    # Without the purge the duplicates are there: the test above is not vacuous.
    unpurged = load(resumed_run.run_dir, purge_orphaned_data=False)
    assert steps(unpurged, "loss/train/manual").count(4) == 2
    assert steps(unpurged, PARITY_WORST_ULP).count(4) == 2


def test_resumed_run_ends_like_the_uninterrupted_one(resumed_run, full_run):
    resumed, reference = resumed_run.acc, full_run.acc
    assert set(resumed.Tags()["scalars"]) == set(reference.Tags()["scalars"])
    assert set(resumed.Tags()["histograms"]) == set(reference.Tags()["histograms"])
    for model in (*MODELS, DIFFERENCE):
        for metric in ("loss/test", "accuracy/test", "loss/val", "accuracy/val"):
            assert series(resumed, tag(metric, model)) == series(reference, tag(metric, model)), (model, metric)
        # Curve points whose whole averaging window lies after the resume point (step 3).
        assert [point for point in series(resumed, tag("loss/train", model)) if point[0] >= 6] == \
            [point for point in series(reference, tag("loss/train", model)) if point[0] >= 6], model
    for model in MODELS:
        for metric in ("weights/W1", "grads/dW1"):
            assert [(event.step, event.histogram_value) for event in resumed.Histograms(tag(metric, model))] == \
                [(event.step, event.histogram_value) for event in reference.Histograms(tag(metric, model))], \
                (model, metric)
    for name in reference.Tags()["scalars"]:
        if name.startswith(("Parity/", "parity_")):
            assert series(resumed, name) == series(reference, name), name
    assert resumed_run.summary["final"] == full_run.summary["final"]
    # The config text is written once, by the first invocation.
    assert [step for step, _ in text_of(resumed, "config")] == [0]


def test_resumed_train_loss_curves_equal_the_uninterrupted_run(resumed_run, full_run):
    """The loss/train window and the epoch's losses travel in the checkpoint."""
    for model in (*MODELS, DIFFERENCE):
        for metric in ("loss/train", "loss/train_epoch"):
            assert series(resumed_run.acc, tag(metric, model)) == series(full_run.acc, tag(metric, model)), \
                (model, metric)


def test_resume_from_a_checkpoint_on_the_last_batch_of_an_epoch(tmp_path, data_dir):
    """A stop on an epoch's last batch counts and evaluates that epoch before the checkpoint."""
    flags = [*common_flags(data_dir), "--dry-run"]  # one epoch of 3 batches
    interrupted = printed_run_dir(run_script(*flags, "--logdir", tmp_path / "logs", "--max-steps", "3"))
    run_script(*flags, "--resume", interrupted / "checkpoint.pt", "--json", tmp_path / "summary.json")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["steps"], summary["epochs_completed"]) == (3, 1)
    assert [entry["step"] for entry in summary["history"]] == [3]
    assert steps(load(interrupted), "loss/test/manual") == [3]


def test_resuming_an_old_layout_run_directory_keeps_its_writers_and_writes_at_the_root(tmp_path, data_dir):
    """A run directory from before this layout (manual/, autograd/, parity/ writers) resumes: its subdirectories
    are left byte for byte, the note says where the rest goes, and the resumed steps land at the root."""
    flags = [*common_flags(data_dir), "--dry-run"]  # one epoch of 3 batches
    run_dir = printed_run_dir(run_script(*flags, "--logdir", tmp_path / "logs", "--max-steps", "1"))
    # Make it look like an old run: its events moved into the three writer directories.
    [events] = run_dir.glob("events.out.tfevents.*")
    for name in OLD_WRITERS:
        (run_dir / name).mkdir()
        shutil.copyfile(events, run_dir / name / events.name)
    events.unlink()
    before = file_fingerprints(run_dir)
    old = {name: sig for name, sig in before.items() if name.split("/")[0] in OLD_WRITERS}
    assert len(old) == 3
    result = run_script(*flags, "--resume", run_dir / "checkpoint.pt", "--json", tmp_path / "summary.json")
    assert "has the old TensorBoard layout (manual/, autograd/, parity/, kept as they are)" in result.stdout
    after = file_fingerprints(run_dir)
    assert {name: sig for name, sig in after.items() if name in old} == old
    root = load(run_dir)
    assert steps(root, "loss/test/manual") == steps(root, "loss/test/autograd") == [3]
    assert steps(root, "loss/train/manual") == [2] and steps(root, PARITY_WORST_ULP) == [2]  # --parity-every 2
    assert steps(load(run_dir / "manual"), PARITY_WORST_ULP) == [1]  # the old run's check is still there
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 3


def test_no_twin_run_writes_the_manual_model_only(tmp_path, data_dir):
    flags = common_flags(data_dir)
    at = flags.index("--parity-every")
    del flags[at:at + 2]  # no parity without the twin: the script refuses the flag
    run_dir = printed_run_dir(run_script(*flags, "--dry-run", "--no-twin", "--logdir", tmp_path / "logs"))
    acc = load(run_dir)
    scalars, histograms, images = (acc.Tags()[kind] for kind in ("scalars", "histograms", "images"))
    assert {"loss/train/manual", "loss/test/manual", "accuracy/test/manual", "lr/manual"} <= set(scalars)
    assert all(name.endswith("/manual") for name in [*scalars, *histograms, *images]), \
        [name for name in [*scalars, *histograms, *images] if not name.endswith("/manual")]
    assert "weights/W1/manual" in histograms and "images/misclassified_test_digits/manual" in images
    assert hparams_metadata.SESSION_START_INFO_TAG in acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    layout = layout_pb2.Layout.FromString(acc.Tensors(custom_scalars_metadata.CONFIG_SUMMARY_TAG)[-1]
                                          .tensor_proto.string_val[0])
    assert not [category.title for category in layout.category if "parity" in category.title]
    for category in layout.category:
        for chart in category.chart:
            for regex in chart.multiline.tag:
                if "grad_norm" in regex:  # alone, the engine takes its fast path, which keeps no gradients
                    continue
                assert [name for name in scalars if re.match(regex, name)], (chart.title, regex)
