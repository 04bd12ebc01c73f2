"""What a run looks like in TensorBoard: its name, its tags, how often it logs, and the Custom Scalars page (parity
first).

A training run is ONE TensorBoard run (one colour): both models write into it, the model last in the tag
(``loss/test/manual``, ``loss/test/autograd``) and their difference beside them (``loss/test/manual-autograd``).
TensorBoard's first views (Time Series, Scalars) group cards by the tag's first component and sort them by name, so
each metric sits next to its twin and their difference. The Custom Scalars layout written with each run
(``custom_scalars_layout``) puts the parity verdict on top, then one chart per metric overlaying both models (same
colour, told apart by the legend's symbols), each followed by the chart of their difference (manual - autograd), so a
flat zero there says in so many words that the two lines are one on top of the other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

MODELS = ("manual", "autograd")
DIFFERENCE = "manual-autograd"  # the last tag component of a difference curve, manual - autograd

# Tags of the parity summary (one point per parity check; parity is the engine measured against its autograd
# reference, so these are the pair's and written once). The capital P is on purpose: TensorBoard sorts tags by code
# point, so "Parity" comes before every lowercase tag: first group in Time Series and Scalars, and first among the
# HParams metric columns, of which the table shows only the first five by default: these three verdict figures, then
# ``accuracy/test/autograd`` and ``accuracy/test/manual``.
PARITY_BITWISE_FRACTION = "Parity/bitwise_equal_fraction"
# The verdict: how many checks so far had a tensor outside the tolerance policy (0 for a good run, bitwise or not).
PARITY_OUT_OF_POLICY = "Parity/checks_out_of_policy"
# The normwise error of the worst tensor, max|manual - autograd| / max|autograd|, as log10: Custom Scalars has no log
# axis to start with, and on a linear one 1e-7 and 1e-16 are both "0". A bitwise-equal check (error 0) is drawn at
# BITWISE_LOG10, below any rounding error of float32 (about -7) or float64 (about -16).
PARITY_NORMWISE_LOG10 = "Parity/normwise_error_log10"
PARITY_VERDICT_TAGS = (PARITY_BITWISE_FRACTION, PARITY_OUT_OF_POLICY, PARITY_NORMWISE_LOG10)
# The elementwise figures, lowercase: they can look alarming in a run that is fine (not the verdict), so they sort
# after the verdict and the metrics, in a group of their own.
PARITY_WORST_ULP = "parity_elementwise/worst_ulp"
PARITY_WORST_REL = "parity_elementwise/worst_rel_error"
PARITY_SUMMARY_TAGS = (*PARITY_VERDICT_TAGS, PARITY_WORST_ULP, PARITY_WORST_REL)
BITWISE_LOG10 = -20.0
DETAIL_PREFIX = "parity_detail/"
# Drawn with the summary, so lowercase (after the summary and the metrics in sorted lists): the policy's rtol as a
# line on the normwise chart, and this check's fraction of tensors out of policy, which shares its chart with the
# bitwise fraction so that chart's axis spans 0..1 (Custom Scalars scales each axis to its data; a flat 1 alone
# would sit on a 0.2..1.8 axis).
PARITY_TOLERANCE_LOG10 = DETAIL_PREFIX + "normwise_tolerance_log10"
PARITY_OUT_OF_POLICY_FRACTION = DETAIL_PREFIX + "out_of_policy_fraction"
PARITY_VERDICT = "Parity/verdict"  # the Text card
PARITY_HEATMAP = "Parity/layer_by_tensor"  # the image, one per parity check
# The data-parallel distance of the engine's averaged gradient to one process's: the run's, no model suffix.
DP_TAGS = (DETAIL_PREFIX + "dp_vs_single_process_eps_of_max", DETAIL_PREFIX + "dp_vs_single_process_max_rel")
CONFIG_TEXT = "config"


def model_tag(metric: str, model: str) -> str:
    """``loss/test/manual``: a model's series of ``metric`` (scalar, histogram or image); ``model`` may also be
    DIFFERENCE."""
    return f"{metric}/{model}"


def layer_detail_tag(layer, name: str) -> str:
    """``parity_detail/layer3/dW``: the log10 normwise error of one tensor (layer "loss" and "lr" under
    ``parity_detail/run/``); optimizer state rows such as ``exp_avg(W)`` become ``exp_avg_W``."""
    clean = name.replace("(", "_").replace(")", "")
    return f"{DETAIL_PREFIX}{'run' if layer in ('loss', 'lr') else f'layer{layer}'}/{clean}"


def normwise_log10(value: float) -> float:
    """log10 of a normwise error for the charts: BITWISE_LOG10 for 0, NaN stays NaN (the writer drops it)."""
    if value != value:
        return value
    return math.log10(value) if value > 0 else BITWISE_LOG10

TRAIN_TAGS = ("loss/train", "loss/train_epoch")
EVALUATION_TAGS = ("loss/test", "accuracy/test")
VALIDATION_TAGS = ("loss/val", "accuracy/val")

# The default run's total steps (10 epochs of 938 batches) give 94 points at the old fixed interval of 100; this is
# the density every run gets by default.
TARGET_POINTS = 100

_ACTIVATIONS = {"leaky_relu": "lrelu", "identity": "id"}
_LOSSES = {"cross_entropy": "ce"}


def auto_log_interval(total_steps: int, points: int = TARGET_POINTS) -> int:
    """Steps between curve points so that a run of ``total_steps`` steps logs between ``points / 2`` and ``points``
    points (all of its steps when it has fewer): ``ceil(total_steps / points)``.

    For ``total_steps >= points``, ``interval = ceil(T / points) <= T / points + 1 <= 2 T / points``, so
    ``floor(T / interval)`` lies in ``[points / 2, points]``. A 2-epoch run of 938 batches gets an interval of 19
    (98 points), where the old fixed 100 gave 18.
    """
    for name, value in (("total_steps", total_steps), ("points", points)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1; got {value!r}")
    return max(1, math.ceil(total_steps / points))


def _number(value) -> str:
    return f"{value:g}"


def _optimizer_label(settings: Mapping) -> tuple[str, float | None]:
    """('mom0.9', 0.05) from either the old flat settings (lr, momentum) or an ``optimizer`` entry (a name, or a
    dict as ``OptimizerConfig.to_dict()`` gives) with its own lr."""
    optimizer = settings.get("optimizer")
    lr = settings.get("lr")
    momentum = settings.get("momentum")
    if isinstance(optimizer, Mapping):
        lr = optimizer.get("lr", lr)
        momentum = optimizer.get("momentum", momentum)
        optimizer = optimizer.get("name")
    if optimizer is None:  # the old settings: SGD, with momentum when momentum > 0
        optimizer = "momentum" if momentum else "sgd"
    label = str(optimizer)
    if label in ("momentum", "nesterov") and momentum is not None:
        label = ("mom" if label == "momentum" else label) + _number(momentum)
    return label, lr


def run_name(config: Mapping, settings: Mapping) -> str:
    """A short run name that starts with what usually differs between runs, so TensorBoard's run list (which cuts
    long names) tells runs apart: activation, loss, optimizer, learning rate, batch size, hidden widths, then only
    the settings that differ from their defaults.

    ``config`` is ``MLPConfig.to_dict()``; ``settings`` holds ``batch_size`` and either ``lr``/``momentum`` or an
    ``optimizer`` (name or dict with ``name``, ``lr``, ``momentum``, ``weight_decay``), optionally ``schedule``
    (name or dict), ``seed``, and the data and process settings ``dataset`` (a prefix unless mnist), ``limit``
    (``n8192``), ``standardize`` (``std-global``), ``val_size`` (``val5000``), ``world_size`` and ``dp_mode``
    (``dp2-bucketed``). Example: ``relu_ce_mom0.9_lr0.05_b64_h256-128``.
    """
    activation = config.get("activation", "relu")
    loss = config.get("loss", "cross_entropy")
    parts = [_ACTIVATIONS.get(activation, activation), _LOSSES.get(loss, loss)]
    if settings.get("dataset") not in (None, "mnist"):  # a Fashion-MNIST run must not pass for an MNIST one
        parts.insert(0, str(settings["dataset"]))
    optimizer, lr = _optimizer_label(settings)
    parts.append(optimizer)
    if lr is not None:
        parts.append(f"lr{_number(lr)}")
    if settings.get("batch_size") is not None:
        parts.append(f"b{settings['batch_size']}")
    sizes = list(config.get("sizes", ()))
    hidden = sizes[1:-1]
    parts.append("h" + "-".join(map(str, hidden)) if hidden else "linear")
    if sizes and (sizes[0], sizes[-1]) != (784, 10):
        parts.append(f"in{sizes[0]}-out{sizes[-1]}")

    # Only what differs from the defaults from here on, to keep names short.
    optimizer_entry = settings.get("optimizer")
    if isinstance(optimizer_entry, Mapping) and optimizer_entry.get("weight_decay"):
        parts.append(f"wd{_number(optimizer_entry['weight_decay'])}")
    schedule = settings.get("schedule")
    schedule_name = schedule.get("name") if isinstance(schedule, Mapping) else schedule
    if schedule_name not in (None, "constant"):
        parts.append(str(schedule_name))
    if config.get("l2"):
        parts.append(f"l2-{_number(config['l2'])}")
    default_output = "softmax" if loss == "cross_entropy" else "identity"
    if config.get("output_activation") not in (None, default_output):
        parts.append("out-" + _ACTIVATIONS.get(config["output_activation"], config["output_activation"]))
    if loss == "mse" and config.get("mse_convention", "course") != "course":
        parts.append(f"mse-{config['mse_convention']}")
    if activation == "leaky_relu" and config.get("leaky_slope", 0.1) != 0.1:
        parts.append(f"slope{_number(config['leaky_slope'])}")
    if activation == "elu" and config.get("elu_alpha", 1.0) != 1.0:
        parts.append(f"alpha{_number(config['elu_alpha'])}")
    if activation == "maxout":
        parts.append(f"k{config.get('maxout_pieces', 2)}")
    for key, label in (("dropout", "drop"), ("input_dropout", "indrop"), ("max_norm", "maxnorm")):
        if config.get(key):
            parts.append(f"{label}{_number(config[key])}")
    if config.get("init", "torch_linear") != "torch_linear":
        parts.append(str(config["init"]))
    if config.get("dtype", "float32") != "float32":
        parts.append({"float64": "f64"}.get(config["dtype"], str(config["dtype"])))
    if settings.get("seed"):
        parts.append(f"seed{settings['seed']}")
    if settings.get("limit"):
        parts.append(f"n{settings['limit']}")
    if settings.get("standardize") not in (None, "none"):
        parts.append(f"std-{settings['standardize']}")
    if settings.get("val_size"):
        parts.append(f"val{settings['val_size']}")
    if (settings.get("world_size") or 1) > 1:
        parts.append(f"dp{settings['world_size']}-{settings.get('dp_mode')}")
    if settings.get("twin") is False:
        parts.append("notwin")
    if settings.get("dry_run"):
        parts.append("dry")
    # Keep the name a portable directory name: no path separators, no spaces.
    return "_".join(parts).replace("/", "-").replace(" ", "")


def _multiline(*tags: str) -> list:
    """A Custom Scalars chart over exact tags (the plugin matches each regex from the start of the tag)."""
    return ["Multiline", [f"^{re.escape(tag)}$" for tag in tags]]


def _models_regex(metric: str, twin: bool) -> str:
    """``^loss/test/(manual|autograd)$``: both models' series of ``metric`` (the manual one alone without the twin);
    ``metric`` is itself a regex."""
    return f"^{metric}/({'|'.join(MODELS) if twin else MODELS[0]})$"


def custom_scalars_layout(twin: bool = True, validation: bool = False, layers: int = 0,
                          data_parallel: bool = False) -> dict:
    """The Custom Scalars page, for ``SummaryWriter.add_custom_scalars``: {category: {chart title: chart}}.

    A chart's regexes select tags of every selected run; a run draws one line per selected tag, all in the run's
    colour, told apart by the symbol the legend ("Matches") shows beside each ``<run>/<tag>``. Each metric chart
    selects ``<metric>/manual`` and ``<metric>/autograd``, so it overlays the two models of each training. With
    ``twin`` the page starts with the parity verdict (checks out of policy, fractions, the normwise error against
    its tolerance), then the elementwise figures, then one chart per layer in backprop order (``layers``: how many),
    and each metric sits in a category of its own with its manual - autograd difference, so the pair stays side by
    side however many columns the page has. ``validation`` adds the loss/val and accuracy/val charts (only when the
    run holds out a validation split, so no chart stays empty); ``data_parallel`` the distance of the averaged
    gradient to the single-process one.
    """
    metrics = [*TRAIN_TAGS, "loss/test", *(("loss/val",) if validation else ()),
               "accuracy/test", *(("accuracy/val",) if validation else ())]
    layout = {}
    if twin:
        layout["parity verdict: the engine against autograd at every parity check"] = {
            "checks out of policy so far (0: every check within tolerance)": _multiline(PARITY_OUT_OF_POLICY),
            "fraction of compared tensors bitwise equal (1) and out of policy (0), this check": _multiline(
                PARITY_BITWISE_FRACTION, PARITY_OUT_OF_POLICY_FRACTION),
            f"log10 normwise error max|manual - autograd| / max|autograd|, worst tensor, under the tolerance line "
            f"log10(rtol); {BITWISE_LOG10:g} = bitwise equal": _multiline(PARITY_NORMWISE_LOG10,
                                                                            PARITY_TOLERANCE_LOG10),
        }
        layout["parity entry by entry (large where entries are near 0, even within tolerance: not the verdict)"] = {
            "worst ulp distance over all compared tensors": _multiline(PARITY_WORST_ULP),
            "worst relative error over all compared tensors": _multiline(PARITY_WORST_REL),
        }
        if layers:
            charts = {f"layer {layer}: log10 normwise error per tensor ({BITWISE_LOG10:g} = bitwise equal)":
                      ["Multiline", [f"^{re.escape(DETAIL_PREFIX)}layer{layer}/"]] for layer in range(layers, 0, -1)}
            charts["loss and learning rate: log10 normwise error"] = ["Multiline", [f"^{re.escape(DETAIL_PREFIX)}run/"]]
            layout["parity per layer, in backprop order (last layer first)"] = charts
        if data_parallel:
            layout["data-parallel: the averaged gradient against one process's gradient of the global batch"] = {
                "worst max abs difference, in eps of the gradient's largest entry": _multiline(DP_TAGS[0]),
                "worst relative error, entry by entry": _multiline(DP_TAGS[1]),
            }
    together = (": manual and autograd, one colour per training (bitwise-equal curves draw as one line)" if twin
                else ": manual")
    for tag in metrics:
        charts = {tag + together: ["Multiline", [_models_regex(re.escape(tag), twin)]]}
        if twin:
            charts[f"{tag}: manual - autograd (0 everywhere: the curves coincide)"] = _multiline(
                model_tag(tag, DIFFERENCE))
        layout[tag] = charts
    models = "both models, " if twin else ""
    flow = r"gradient_flow/layer\d+/"
    layout["gradient flow: per layer, at the curve points"] = {
        f"weight gradient norm |dW| ({models}one line per layer)": ["Multiline", [_models_regex(flow + "grad_norm",
                                                                                               twin)]],
        f"update norm |W_new - W| ({models}one line per layer)": ["Multiline", [_models_regex(flow + "update_norm",
                                                                                             twin)]],
        f"update / weight, |W_new - W| / |W_new| ({models}one line per layer)": [
            "Multiline", [_models_regex(flow + "update_to_weight", twin)]],
    }
    layout["learning rate"] = {f"lr ({models}per logged step)": ["Multiline", [_models_regex("lr", twin)]]}
    return layout
