"""The pieces of the TensorBoard view, in process: run names, the log interval, the Custom Scalars layout, the
labelled digit grid, and what ``RunLogger`` writes for parity, differences and HParams (read back with
TensorBoard's ``EventAccumulator``). The whole run through the script and a live server: test_tensorboard.py."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalars_metadata
from tensorboard.plugins.hparams import metadata as hparams_metadata

from side_by_side.digit_tiles import labelled_digit_grid
from side_by_side.tensorboard_layout import (
    BITWISE_LOG10,
    PARITY_BITWISE_FRACTION,
    PARITY_NORMWISE_LOG10,
    PARITY_OUT_OF_POLICY,
    PARITY_OUT_OF_POLICY_FRACTION,
    PARITY_TOLERANCE_LOG10,
    PARITY_WORST_REL,
    PARITY_WORST_ULP,
    auto_log_interval,
    custom_scalars_layout,
    layer_detail_tag,
    normwise_log10,
    run_name,
)
from side_by_side.tensorboard_writer import RunLogger

SIZE_GUIDANCE = {ea.SCALARS: 0, ea.TENSORS: 0, ea.IMAGES: 0}
DEFAULT_CONFIG = {"sizes": [784, 256, 128, 10], "activation": "relu", "output_activation": "softmax",
                  "loss": "cross_entropy", "mse_convention": "course", "l2": 0.0, "leaky_slope": 0.1,
                  "elu_alpha": 1.0, "init": "torch_linear", "dtype": "float32", "device": "cpu"}


def load(directory) -> ea.EventAccumulator:
    accumulator = ea.EventAccumulator(str(directory), size_guidance=SIZE_GUIDANCE)
    accumulator.Reload()
    return accumulator


def series(accumulator, tag):
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


# --- auto_log_interval ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("total", [1, 7, 50, 99, 100, 101, 199, 200, 938, 1876, 9380, 93800, 10**7 + 3])
def test_auto_log_interval_gives_50_to_100_points(total):
    interval = auto_log_interval(total)
    points = total // interval
    assert interval >= 1
    if total >= 100:
        assert 50 <= points <= 100, (total, interval, points)
    else:
        assert (interval, points) == (1, total)  # short runs log every step


def test_auto_log_interval_for_the_default_run_and_other_targets():
    assert auto_log_interval(10 * 938) == 94  # the default run: 99 points
    assert auto_log_interval(938) == 10
    assert auto_log_interval(1000, points=10) == 100


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_auto_log_interval_refuses_bad_input(bad):
    with pytest.raises(ValueError, match="total_steps"):
        auto_log_interval(bad)


# --- run_name ---------------------------------------------------------------------------------------------------------

def test_run_name_of_the_default_run_starts_with_what_differs():
    settings = {"batch_size": 64, "lr": 0.05, "momentum": 0.9, "seed": 0, "twin": True, "dry_run": False}
    assert run_name(DEFAULT_CONFIG, settings) == "relu_ce_mom0.9_lr0.05_b64_h256-128"


def test_run_name_carries_the_data_and_process_settings_that_differ():
    base = {"batch_size": 64, "lr": 0.05, "momentum": 0.9, "seed": 0, "twin": True, "dry_run": False}
    defaults = {"dataset": "mnist", "limit": None, "standardize": "none", "val_size": 0, "world_size": 1,
                "dp_mode": None}
    assert run_name(DEFAULT_CONFIG, {**base, **defaults}) == "relu_ce_mom0.9_lr0.05_b64_h256-128"
    changed = {"dataset": "fashion-mnist", "limit": 8192, "standardize": "global", "val_size": 5000,
               "world_size": 2, "dp_mode": "bucketed"}
    assert run_name(DEFAULT_CONFIG, {**base, **changed}) == \
        "fashion-mnist_relu_ce_mom0.9_lr0.05_b64_h256-128_n8192_std-global_val5000_dp2-bucketed"
    names = {key: run_name(DEFAULT_CONFIG, {**base, **defaults, key: value}) for key, value in changed.items()
             if key != "dp_mode"}
    assert len(set(names.values())) == len(names)  # each one flag apart from the default run gets its own name


def test_run_name_with_an_optimizer_config_dict():
    optimizer = {"name": "adam", "lr": 0.001, "momentum": None, "weight_decay": 0.0, "betas": [0.9, 0.999]}
    settings = {"batch_size": 128, "optimizer": optimizer, "schedule": {"name": "constant"}, "seed": 0}
    assert run_name(DEFAULT_CONFIG, settings) == "relu_ce_adam_lr0.001_b128_h256-128"
    nesterov = {"name": "nesterov", "lr": 0.1, "momentum": 0.95, "weight_decay": 5e-4}
    name = run_name({**DEFAULT_CONFIG, "sizes": [784, 10]},
                    {"batch_size": 32, "optimizer": nesterov, "schedule": {"name": "cosine"}, "seed": 3})
    assert name == "relu_ce_nesterov0.95_lr0.1_b32_linear_wd0.0005_cosine_seed3"


def test_run_name_shows_only_non_default_extras_and_stays_a_directory_name():
    config = {**DEFAULT_CONFIG, "activation": "leaky_relu", "leaky_slope": 0.2, "loss": "mse",
              "output_activation": "identity", "mse_convention": "mean", "l2": 1e-4, "dtype": "float64",
              "init": "course_normal"}
    name = run_name(config, {"batch_size": 16, "lr": 0.01, "momentum": 0.0, "twin": False, "dry_run": True})
    assert name == "lrelu_mse_sgd_lr0.01_b16_h256-128_l2-0.0001_mse-mean_slope0.2_course_normal_f64_notwin_dry"
    assert re.fullmatch(r"[A-Za-z0-9_.+-]+", name)
    # Differences show up front: two runs that differ only in lr differ within the first 20 characters.
    a = run_name(DEFAULT_CONFIG, {"batch_size": 64, "lr": 0.05, "momentum": 0.9})
    b = run_name(DEFAULT_CONFIG, {"batch_size": 64, "lr": 0.1, "momentum": 0.9})
    assert a[:20] != b[:20] and len(a) <= 40


# --- the Custom Scalars layout ----------------------------------------------------------------------------------------

def test_layout_puts_the_verdict_first_and_pairs_each_metric_with_its_difference():
    layout = custom_scalars_layout(twin=True, validation=False, layers=3)
    categories = list(layout)
    assert categories[0].startswith("parity verdict")
    first = [regex for _, (kind, regexes) in layout[categories[0]].items() for regex in regexes]
    assert first == [f"^{re.escape(tag)}$" for tag in (PARITY_OUT_OF_POLICY, PARITY_BITWISE_FRACTION,
                                                        PARITY_OUT_OF_POLICY_FRACTION, PARITY_NORMWISE_LOG10,
                                                        PARITY_TOLERANCE_LOG10)]
    assert categories[1].startswith("parity entry by entry") and "not the verdict" in categories[1]
    # per layer, in backprop order: the last layer first, then the loss and learning rate
    per_layer = layout[categories[2]]
    assert [regexes for _, (_, regexes) in per_layer.items()] == [
        ["^parity_detail/layer3/"], ["^parity_detail/layer2/"], ["^parity_detail/layer1/"], ["^parity_detail/run/"]]
    # each metric in a category of its own, with its difference right after it: side by side at any width
    assert categories[-2].startswith("gradient flow") and categories[-1] == "learning rate"
    flow = layout[categories[-2]]
    assert [regexes for _, (_, regexes) in flow.items()] == [
        [rf"^gradient_flow/layer\d+/{name}/(manual|autograd)$"] for name in ("grad_norm", "update_norm",
                                                                              "update_to_weight")]
    assert [regexes for _, (_, regexes) in layout["learning rate"].items()] == [["^lr/(manual|autograd)$"]]
    metric_categories = categories[3:-2]
    assert metric_categories == ["loss/train", "loss/train_epoch", "loss/test", "accuracy/test"]
    for title in metric_categories:
        (metric_title, (kind, regexes)), (difference_title, (_, difference)) = layout[title].items()
        assert "one line" in metric_title  # says that coinciding curves draw as one line
        assert "one colour per training" in metric_title
        assert kind == "Multiline" and regexes == [f"^{re.escape(title)}/(manual|autograd)$"]
        assert difference_title.startswith(f"{title}: manual - autograd")
        assert difference == [f"^{re.escape(title + '/manual-autograd')}$"]
    assert not any("val" in title for category in layout.values() for title in category)
    assert {"loss/val", "accuracy/val"} <= set(custom_scalars_layout(twin=True, validation=True))
    assert not any("data-parallel" in title for title in layout)
    assert any("data-parallel" in title for title in custom_scalars_layout(twin=True, data_parallel=True))


# The tags a twin run writes (tensorboard_writer's docstring), for the regexes to be matched against.
MODEL_METRICS = ("loss/train", "loss/train_epoch", "loss/test", "accuracy/test", "loss/val", "accuracy/val")
RUN_TAGS = [*(f"{metric}/{model}" for metric in MODEL_METRICS for model in ("manual", "autograd", "manual-autograd")),
            *(f"gradient_flow/layer{layer}/{name}/{model}" for layer in (1, 2, 12) for model in ("manual", "autograd")
              for name in ("grad_norm", "update_norm", "update_to_weight")),
            "lr/manual", "lr/autograd", PARITY_OUT_OF_POLICY, PARITY_BITWISE_FRACTION, PARITY_NORMWISE_LOG10,
            PARITY_WORST_ULP, PARITY_WORST_REL, PARITY_TOLERANCE_LOG10, PARITY_OUT_OF_POLICY_FRACTION,
            "parity_detail/dp_vs_single_process_eps_of_max", "parity_detail/dp_vs_single_process_max_rel"]


def test_layout_regexes_select_their_tags_and_nothing_else():
    """Each chart of a whole layout selects, among the tags a run writes, exactly the ones its title promises: a
    metric chart both models' series (never the difference, never loss/train_epoch for loss/train), a difference
    chart the difference alone, a gradient-flow chart its quantity for every layer and both models."""
    layout = custom_scalars_layout(twin=True, validation=True, data_parallel=True)
    for category, charts in layout.items():
        for title, (_, regexes) in charts.items():
            selected = {tag for tag in RUN_TAGS if any(re.match(regex, tag) for regex in regexes)}
            assert selected, title
            if category in MODEL_METRICS:
                expected = ({f"{category}/manual-autograd"} if "manual - autograd" in title
                            else {f"{category}/manual", f"{category}/autograd"})
                assert selected == expected, (title, selected)
            elif category.startswith("gradient flow"):
                name = next(name for name in ("grad_norm", "update_norm", "update_to_weight") if name in regexes[0])
                assert selected == {tag for tag in RUN_TAGS if tag.startswith("gradient_flow/")
                                    and f"/{name}/" in tag}, title
            elif category == "learning rate":
                assert selected == {"lr/manual", "lr/autograd"}
            else:  # the parity charts: the pair's tags, without a model
                assert not [tag for tag in selected if tag.endswith(("/manual", "/autograd"))], title


def test_layout_without_the_twin_selects_the_manual_model_only():
    layout = custom_scalars_layout(twin=False, validation=True)
    for charts in layout.values():
        for title, (_, regexes) in charts.items():
            selected = {tag for tag in RUN_TAGS if any(re.match(regex, tag) for regex in regexes)}
            assert selected and all(tag.endswith("/manual") for tag in selected), (title, selected)


def test_layer_detail_tags_match_their_layer_chart_only():
    layout = custom_scalars_layout(twin=True, layers=12)
    charts = next(charts for title, charts in layout.items() if title.startswith("parity per layer"))
    for layer, name in ((1, "dW"), (12, "exp_avg(W)"), ("loss", "loss"), ("lr", "lr")):
        tag = layer_detail_tag(layer, name)
        assert "(" not in tag
        matching = [title for title, (_, regexes) in charts.items() if any(re.match(regex, tag) for regex in regexes)]
        assert len(matching) == 1, (tag, matching)
    assert normwise_log10(0.0) == BITWISE_LOG10 and normwise_log10(1e-7) == pytest.approx(-7)


def test_layout_without_the_twin_has_no_parity_or_difference_charts():
    layout = custom_scalars_layout(twin=False)
    assert not [title for title in layout if "parity" in title]
    assert not [regex for category in layout.values() for _, regexes in category.values() for regex in regexes
                if "manual-autograd" in regex or "autograd" in regex or "arity" in regex]


# --- the labelled digit grid ------------------------------------------------------------------------------------------

def test_labelled_digit_grid_shape_colours_and_digits():
    images = torch.zeros(11, 784)
    images[:, 0] = 1.0  # a bright top-left pixel in each digit
    labels = torch.arange(11) % 10
    grid = labelled_digit_grid(images, labels, (labels + 1) % 10, columns=4, scale=2)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[1] == 4 * (56 + 2) + 2
    one_row = labelled_digit_grid(images[:4], labels[:4], labels[:4] + 1, columns=4, scale=2)
    assert grid.shape[0] > 2 * one_row.shape[0] - 40  # three rows of tiles
    # Each digit is pasted upscaled: its bright pixel is a white 2x2 block in an otherwise black tile.
    black = np.all(grid == 0, axis=2)
    white = np.all(grid == 255, axis=2)
    assert black.sum() >= 11 * (56 * 56 - 4)
    assert white.sum() >= 11 * 4
    green = (grid[..., 1] > 100) & (grid[..., 0] < 60)
    red = (grid[..., 0] > 150) & (grid[..., 1] < 60)
    assert green.sum() > 11 * 10 and red.sum() > 11 * 10


def test_labelled_digit_grid_refuses_bad_input():
    with pytest.raises(ValueError, match="images"):
        labelled_digit_grid(torch.zeros(0, 784), torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match="labels, predictions"):
        labelled_digit_grid(torch.zeros(3, 784), torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="columns, scale"):
        labelled_digit_grid(torch.zeros(3, 784), torch.zeros(3), torch.zeros(3), columns=0)


# --- RunLogger ----------------------------------------------------------------------------------------------------

def row(layer, name, max_ulp=0.0, max_rel=0.0, exact=True, normwise=0.0, passed=True):
    return SimpleNamespace(layer=layer, name=name, max_abs=0.0, max_rel=max_rel, max_ulp=max_ulp, exact=exact,
                           passed=passed, normwise=normwise)


def test_parity_summary_covers_gradients_and_weights(tmp_path):
    logger = RunLogger(tmp_path)
    rows = [row("loss", "loss"), row(1, "Z"), row(1, "dW", max_ulp=2.0, max_rel=3e-7, exact=False, normwise=1e-7),
            row(1, "db")]
    weights = [row(1, "W"), row(1, "b", max_ulp=5.0, max_rel=1e-6, exact=False, normwise=1e-8)]
    logger.parity(1, rows, {"W1": 0.0, "b1": 1e-9}, False, weight_rows=weights, checks_out_of_policy=0, rtol=1e-4)
    logger.parity(2, rows[:1], {"W1": 0.0}, True)  # the old call, without weight rows
    logger.parity(3, [row(1, "dW", max_ulp=math.nan, max_rel=math.nan, exact=False, normwise=math.nan,
                          passed=False), row(1, "db", 9.0, exact=False, normwise=1e-3, passed=False)], {}, False,
                  checks_out_of_policy=1, rtol=1e-4)
    logger.close()
    assert [path for path in tmp_path.iterdir() if path.is_dir()] == []  # one writer, in the run directory
    acc = load(tmp_path)
    assert series(acc, PARITY_WORST_ULP)[:2] == [(1, 5.0), (2, 0.0)]
    assert series(acc, PARITY_WORST_REL)[:2] == [(1, pytest.approx(1e-6)), (2, 0.0)]
    assert series(acc, "Parity/bitwise_equal_fraction") == [(1, pytest.approx(4 / 6)), (2, 1.0), (3, 0.0)]
    assert math.isnan(series(acc, PARITY_WORST_ULP)[2][1])  # a NaN is not hidden by a finite 9
    assert series(acc, "Parity/normwise_error_log10")[:2] == [(1, pytest.approx(-7)), (2, BITWISE_LOG10)]
    assert math.isnan(series(acc, "Parity/normwise_error_log10")[2][1])
    assert series(acc, "Parity/checks_out_of_policy") == [(1, 0.0), (3, 1.0)]  # step 2 gave no count
    assert series(acc, PARITY_OUT_OF_POLICY_FRACTION) == [(1, 0.0), (2, 0.0), (3, 1.0)]
    assert series(acc, PARITY_TOLERANCE_LOG10) == [(1, pytest.approx(-4)), (3, pytest.approx(-4))]
    assert series(acc, "parity_detail/layer1/dW") == [(1, pytest.approx(-7))]  # NaN at step 3: no point
    assert series(acc, "parity_detail/layer1/db") == [(1, BITWISE_LOG10), (3, pytest.approx(-3))]
    assert series(acc, "parity_detail/weights_max_abs_diff")[:2] == [(1, pytest.approx(1e-9)), (2, 0.0)]
    # the pair's figures, once: no model in any tag
    assert not [tag for tag in acc.Tags()["scalars"] if tag.endswith(("/manual", "/autograd", "/manual-autograd"))]
    assert len(acc.Images("Parity/layer_by_tensor")) == 3


def test_difference_curves_pair_the_two_models_in_either_order(tmp_path):
    logger = RunLogger(tmp_path)
    logger.scalars("manual", 10, {"loss/train": 0.5, "lr": 0.1})
    logger.scalars("autograd", 10, {"loss/train": 0.25, "lr": 0.1})
    logger.scalars("autograd", 20, {"loss/test": 1.0, "accuracy/test": 0.5})
    logger.scalars("manual", 20, {"loss/test": 1.5, "accuracy/test": math.nan})  # not finite: no point, no pair
    logger.scalars("manual", 30, {"loss/train": 0.125})  # the twin's value never comes
    logger.close()
    acc = load(tmp_path)
    assert series(acc, "loss/train/manual-autograd") == [(10, 0.25)]
    assert series(acc, "loss/test/manual-autograd") == [(20, 0.5)]
    assert set(acc.Tags()["scalars"]) == {"loss/train/manual", "loss/train/autograd", "loss/train/manual-autograd",
                                          "lr/manual", "lr/autograd", "loss/test/autograd", "loss/test/manual",
                                          "loss/test/manual-autograd", "accuracy/test/autograd"}  # no lr difference
    assert series(acc, "loss/train/manual") == [(10, 0.5), (30, 0.125)]


def test_without_the_twin_only_the_manual_model_is_written(tmp_path):
    logger = RunLogger(tmp_path, twin=False)
    logger.scalars("manual", 1, {"loss/train": 0.5})
    logger.scalars("autograd", 1, {"loss/train": 0.5})  # ignored: there is no twin
    logger.histograms("autograd", 1, {"W1": torch.ones(2, 2)}, None)
    logger.histograms("manual", 1, {"W1": torch.ones(2, 2)}, None)
    logger.parity(1, [row(1, "dW")], {}, True)  # ignored: nothing to compare
    logger.close()
    acc = load(tmp_path)
    assert acc.Tags()["scalars"] == ["loss/train/manual"] and acc.Tags()["histograms"] == ["weights/W1/manual"]


def layout_of(directory) -> list[str]:
    events = load(directory).Tensors(custom_scalars_metadata.CONFIG_SUMMARY_TAG)
    return [[category.title for category in layout_pb2.Layout.FromString(event.tensor_proto.string_val[0]).category]
            for event in events]


def test_layout_is_upgraded_when_validation_curves_appear(tmp_path):
    logger = RunLogger(tmp_path / "a")
    logger.scalars("manual", 5, {"loss/test": 1.0})
    logger.scalars("manual", 5, {"loss/val": 1.0})
    logger.scalars("manual", 9, {"loss/val": 1.0})
    logger.close()
    written = load(tmp_path / "a").Tensors(custom_scalars_metadata.CONFIG_SUMMARY_TAG)
    assert len(written) == 2  # the plugin reads the latest
    categories = [[category.title for category in
                   layout_pb2.Layout.FromString(event.tensor_proto.string_val[0]).category] for event in written]
    assert "loss/val" not in categories[0] and "loss/val" in categories[1]
    RunLogger(tmp_path / "b", twin=False, validation=True).close()
    assert [path for path in (tmp_path / "b").iterdir() if path.is_dir()] == []
    [only] = load(tmp_path / "b").Tensors(custom_scalars_metadata.CONFIG_SUMMARY_TAG)
    titles = [chart.title for category in layout_pb2.Layout.FromString(only.tensor_proto.string_val[0]).category
              for chart in category.chart]
    assert "loss/val: manual" in titles and not [title for title in titles if "parity" in title or "manual -" in title]


def test_one_hparams_session_without_a_model_column_and_typed_values(tmp_path):
    logger = RunLogger(tmp_path)
    logger.config_text({"epochs": 2})
    logger.hparams({"lr": 0.05, "batch_size": 64, "np_int": np.int64(3), "standardize": False, "sizes": [784, 10],
                    "optimizer": {"name": "adam", "betas": (0.9, 0.999), "amsgrad": None}, "tag": None},
                   {"manual": {"test_accuracy": 0.9}})
    with pytest.raises(ValueError, match="status"):
        logger.hparams({}, status="done")
    logger.close()
    acc = load(tmp_path)
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    assert set(content) == {hparams_metadata.SESSION_START_INFO_TAG, hparams_metadata.SESSION_END_INFO_TAG}
    start = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    values = {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}
    assert values == {"lr": 0.05, "batch_size": "64", "np_int": "3", "standardize": False,
                      "sizes": "784-10", "optimizer.name": "adam", "optimizer.betas": "0.9-0.999"}
    assert not [tag for tag in acc.Tags()["scalars"] if tag.startswith("hparam")]
    assert "config/text_summary" in acc.Tags()["tensors"]


def test_layout_gains_the_data_parallel_category_when_its_distance_is_logged(tmp_path):
    logger = RunLogger(tmp_path, layers=2)
    logger.scalars("manual", 1, {"loss/train": 1.0})
    logger.run_scalars(1, {"parity_detail/dp_vs_single_process_eps_of_max": 3.0,
                           "parity_detail/dp_vs_single_process_max_rel": 1e-6})
    logger.close()
    before, after = layout_of(tmp_path)
    assert not any("data-parallel" in title for title in before)
    assert any("data-parallel" in title for title in after)
    assert "parity per layer, in backprop order (last layer first)" in after
    acc = load(tmp_path)
    assert series(acc, "parity_detail/dp_vs_single_process_eps_of_max") == [(1, 3.0)]  # the run's, no model


def test_an_old_layout_run_directory_is_left_alone(tmp_path):
    for name in ("manual", "parity"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "events.out.tfevents.old").write_bytes(b"old")
    logger = RunLogger(tmp_path, purge_step=5)
    logger.scalars("manual", 5, {"loss/train": 1.0})
    logger.close()
    assert logger.legacy_writers == ["manual", "parity"]
    assert [(tmp_path / name / "events.out.tfevents.old").read_bytes() for name in ("manual", "parity")] == [b"old"] * 2
    assert series(load(tmp_path), "loss/train/manual") == [(5, 1.0)]
    fresh = RunLogger(tmp_path / "new")
    fresh.close()
    assert fresh.legacy_writers == []
