"""The labs' shared plumbing: the registry, the "course | engine | twin" table, run directories and plots.

Every lab module defines ``LAB = Lab(...)`` and a ``run(args, report)`` that fills a :class:`Report` with
:class:`Row` checks. A row holds what the course states (or ``None`` where it states nothing), what the engine
computed by hand and what the autograd twin computed; it passes when the engine (and the twin) lie within
``tol`` of the course's number and the engine agrees with the twin within ``parity`` (0: bitwise). A statement a
lab makes about its results ("the loss fell at every step", "eta 0.25 diverges") is a :meth:`Report.claim`: a row
that passes only when the property holds. Every row can fail, and any failed row makes the lab exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

# The order of `python -m experiments.labs`: by lecture, as the course tells them.
LAB_MODULES = (
    "l000_derivatives", "l000_one_layer_relu", "l000_jacobian", "l000_two_layer_net", "l000_batch_formulas",
    "l000_quadratic_regression", "l000_mnist_mse",
    "l001_graph_examples", "l001_gate_patterns", "l001_activations", "l001_sigmoid_nets", "l001_svm_l2",
    "l001_vectorised_norm",
    "l002_gradient_descent", "l002_sigmoid_unit", "l002_mlp_5743", "l002_softmax_jacobian",
    "l003_tensors", "l003_loops_vs_vectorised", "l003_iris", "l003_sgd_minibatch",
    "l004_softmax_classifier", "l004_linear_collapse", "l004_parameter_count", "l004_batch_size", "l004_optimizers",
    "l004_memory_freeing",
)
DEFAULT_LOGDIR = Path("runs/labs")


@dataclass(frozen=True)
class Lab:
    name: str
    lecture: str  # "000" .. "004", the course file the lab comes from
    description: str  # one line
    runtime: str  # rough run time of the full form on a laptop CPU, e.g. "1 s", "3 min"
    run: Callable[[argparse.Namespace, "Report"], None]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    uses_mnist: bool = False


def all_labs() -> dict[str, Lab]:
    labs = {}
    for module_name in LAB_MODULES:
        lab = importlib.import_module(f"experiments.labs.{module_name}").LAB
        labs[lab.name] = lab
    return labs


# --- the table ------------------------------------------------------------------------------------------------


def as_tensor(value) -> Tensor | None:
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value.detach().to("cpu", torch.float64)
    return torch.as_tensor(value, dtype=torch.float64)


def show(value, digits: int = 5) -> str:
    """A compact rendering: a number, or the first entries of a tensor with its shape."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    tensor = as_tensor(value)
    integral = tensor.numel() > 0 and bool((tensor == tensor.round()).all()) and tensor.abs().max() < 1e12
    flat = [f"{x:.0f}" if integral else f"{x:.{digits}g}" for x in tensor.flatten()[:6].tolist()]
    if tensor.dim() == 0:
        return flat[0]
    more = ", ..." if tensor.numel() > 6 else ""
    return f"[{', '.join(flat)}{more}]" + (f" {tuple(tensor.shape)}" if tensor.dim() > 1 else "")


def max_abs_diff(a, b) -> float:
    a, b = as_tensor(a), as_tensor(b)
    if a.shape != b.shape:
        if a.numel() != b.numel():
            return math.inf
        b = b.reshape(a.shape)
    return (a - b).abs().max().item() if a.numel() else 0.0


def bitwise_equal(a, b) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b


@dataclass
class Row:
    """One quantity: the course's value (None: the course states none), the engine's, the twin's (None: no
    twin for it). ``tol``: how far the engine and the twin may be from the course's value (the course prints
    rounded numbers, so this is usually half a unit of its last digit). ``parity``: how far the engine may be
    from the twin; 0 asks for bitwise equality."""

    quantity: str
    course: object
    engine: object
    twin: object = None
    tol: float = 0.0
    parity: float = 0.0
    claim: bool | None = None  # a checked property (Report.claim): whether it holds; None for comparisons

    @property
    def course_error(self) -> float | None:
        if self.course is None:
            return None
        errors = [max_abs_diff(self.engine, self.course)]
        if self.twin is not None:
            errors.append(max_abs_diff(self.twin, self.course))
        return max(errors)

    @property
    def course_ok(self) -> bool:
        return self.course is None or self.course_error <= self.tol

    @property
    def parity_text(self) -> str:
        if self.twin is None:
            return "-"
        if bitwise_equal(self.engine, self.twin):
            return "bitwise"
        return f"{max_abs_diff(self.engine, self.twin):.1e}"

    @property
    def parity_ok(self) -> bool:
        if self.twin is None or bitwise_equal(self.engine, self.twin):
            return True
        return self.parity > 0 and max_abs_diff(self.engine, self.twin) <= self.parity

    @property
    def ok(self) -> bool:
        if self.claim is not None:
            return self.claim
        return self.course_ok and self.parity_ok


@dataclass
class Report:
    """What one lab run produced: rows for the table, values for tests, and the run directory if any."""

    lab: str
    rows: list[Row] = field(default_factory=list)
    values: dict = field(default_factory=dict)
    run_dir: Path | None = None
    quiet: bool = False

    def say(self, text: str = "") -> None:
        if not self.quiet:
            print(text, flush=True)

    def check(self, quantity: str, course, engine, twin=None, tol: float = 0.0, parity: float = 0.0) -> Row:
        if course is None and twin is None:
            raise ValueError(f"{self.lab}: {quantity!r} compares nothing (no course number, no twin): a row that "
                             f"cannot fail; state it with claim() instead")
        row = Row(quantity, course, engine, twin, tol, parity)
        self.rows.append(row)
        return row

    def claim(self, statement: str, holds: bool) -> bool:
        """A checked property of the results: printed as a row, ``holds`` is computed from the numbers the lab
        printed (never a constant), and the lab exits 1 when it is False. Returns ``holds``."""
        holds = bool(holds)
        self.rows.append(Row(f"claim: {statement}", None, "holds" if holds else "does NOT hold", None,
                             claim=holds))
        return holds

    @property
    def course_reproduced(self) -> bool:
        return bool(self.rows) and all(row.course_ok for row in self.rows)

    @property
    def passed(self) -> bool:
        """Every row holds, and there is at least one: a lab that checked nothing (say, with --max-steps 0) has
        reproduced nothing."""
        return bool(self.rows) and all(row.ok for row in self.rows)

    def table(self) -> str:
        header = ("quantity", "course", "engine", "twin", "|engine-course|", "engine vs twin", "")
        lines = [header]
        for row in self.rows:
            error = row.course_error
            lines.append((row.quantity, show(row.course), show(row.engine), show(row.twin),
                          "-" if error is None else f"{error:.1e} (tol {row.tol:.2g})", row.parity_text,
                          "ok" if row.ok else "FAIL"))
        widths = [min(44, max(len(line[i]) for line in lines)) for i in range(len(header))]
        rendered = ["  ".join(cell[:44].ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
        rendered.insert(1, "-" * len(rendered[0]))
        return "\n".join(rendered + [f"{self.lab}: {self.verdict()}"])

    def verdict(self) -> str:
        """What the rows establish, counted: course numbers, engine-vs-twin comparisons, checked claims. A lab
        that compares no course number says so instead of "all course numbers reproduced"."""
        if not self.rows:
            return "FAILED: nothing was checked"
        course = [row for row in self.rows if row.course is not None]
        twin = [row for row in self.rows if row.twin is not None]
        claims = [row for row in self.rows if row.claim is not None]
        parts = []
        if course:
            failed = sum(not row.course_ok for row in course)
            parts.append(f"{failed} of {_count(len(course), 'course number')} NOT reproduced" if failed
                         else f"{_all(len(course), 'course number')} reproduced")
        else:
            parts.append("no course number to compare in this lab")
        if twin:
            failed = sum(not row.parity_ok for row in twin)
            parts.append(f"the engine and the twin DISAGREE in {failed} of {_count(len(twin), 'comparison')}" if failed
                         else f"the engine agrees with the twin in {_all(len(twin), 'comparison')}")
        if claims:
            failed = sum(not row.claim for row in claims)
            parts.append(f"{failed} of {_count(len(claims), 'claim')} do NOT hold" if failed
                         else f"{_all(len(claims), 'claim')} hold" + ("s" if len(claims) == 1 else ""))
        return ("PASS: " if self.passed else "FAIL: ") + "; ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _all(n: int, noun: str) -> str:
    """'the 1 claim', 'all 3 claims'."""
    return f"the 1 {noun}" if n == 1 else f"all {n} {noun}s"


# --- TensorBoard ----------------------------------------------------------------------------------------------


def new_lab_run_dir(args: argparse.Namespace, lab: str, slug: str = "") -> Path | None:
    """``<logdir>/<lab>/<YYYYmmdd-HHMMSS>[_slug]``, or None with ``--no-tensorboard``."""
    if args.no_tensorboard:
        return None
    from side_by_side.tensorboard_writer import new_run_dir

    return new_run_dir(Path(args.logdir) / lab, slug or ("fast" if args.fast else "full"))


def writer(run_dir: Path | None, name: str):
    """A SummaryWriter for ``run_dir/name`` (curves under the same tag in sibling writers overlay in
    TensorBoard), or a stand-in that drops everything when there is no run directory."""
    if run_dir is None:
        return _NullWriter()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / name))


def model_writers(run_dir: Path | None) -> dict[str, "_ModelView"]:
    """{"manual": ..., "autograd": ...}: both models of a lab written into ONE TensorBoard run (``run_dir``
    itself), the model last in the tag (``loss/train/manual``, ``loss/train/autograd``), as the training runs do
    (side_by_side/tensorboard_writer.py): one lab run is one colour in TensorBoard, and each metric's two cards
    sit side by side. Each view has ``add_scalar``, ``add_image`` and ``close`` (the shared writer closes once)."""
    shared = writer(run_dir, ".")
    return {model: _ModelView(shared, model) for model in ("manual", "autograd")}


class _ModelView:
    def __init__(self, shared, model: str):
        self.shared, self.model = shared, model

    def add_scalar(self, tag: str, value, step) -> None:
        self.shared.add_scalar(f"{tag}/{self.model}", value, step)

    def add_image(self, tag: str, image, step) -> None:
        self.shared.add_image(f"{tag}/{self.model}", image, step)

    def close(self) -> None:
        self.shared.close()  # idempotent in SummaryWriter


class _NullWriter:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (23, 190, 207),
           (140, 86, 75), (227, 119, 194))


def plot_curves(curves: dict[str, tuple[list[float], list[float]]], title: str = "", width: int = 480,
                height: int = 320) -> Tensor:
    """A line chart of ``{label: (xs, ys)}`` as a (3, H, W) uint8 image for ``add_image`` (no matplotlib in
    the environment; Pillow draws it). Axes span the data; the legend lists the labels in their colours."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    xs = [x for x_list, _ in curves.values() for x in x_list]
    ys = [y for _, y_list in curves.values() for y in y_list if math.isfinite(y)]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 50, width - 10, 20, height - 25

    def pixel(x, y):
        return (left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))

    draw.rectangle((left, top, right, bottom), outline="black")
    if y0 < 0 < y1:
        draw.line((pixel(x0, 0), pixel(x1, 0)), fill=(180, 180, 180))
    if x0 < 0 < x1:
        draw.line((pixel(0, y0), pixel(0, y1)), fill=(180, 180, 180))
    draw.text((left, 4), title, fill="black")
    draw.text((2, top), f"{y1:.3g}", fill="black")
    draw.text((2, bottom - 10), f"{y0:.3g}", fill="black")
    draw.text((left, bottom + 5), f"{x0:.3g}", fill="black")
    draw.text((right - 40, bottom + 5), f"{x1:.3g}", fill="black")
    for index, (label, (x_list, y_list)) in enumerate(curves.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = [pixel(x, y) for x, y in zip(x_list, y_list) if math.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.text((left + 8, top + 4 + 12 * index), label, fill=colour)
    return torch.from_numpy(__import__("numpy").asarray(image).copy()).permute(2, 0, 1)


# --- data -----------------------------------------------------------------------------------------------------


def load_mnist(args: argparse.Namespace, *, limit: int | None, standardize: bool = False,
               dtype: torch.dtype = torch.float32):
    """MNIST (or, with ``--dataset idx --data-dir DIR``, any four IDX files) as flattened [0, 1] pixels.

    ``limit``: at most this many training images (all of them when the files hold fewer, as a small IDX set may).
    """
    from mnist_data import load_splits
    from mnist_data.errors import DatasetError

    try:
        return load_splits(args.dataset, args.data_dir, dtype=dtype, standardize=standardize, limit=limit)
    except DatasetError as error:
        if limit is None or not str(error).startswith("--limit"):
            raise
        return load_splits(args.dataset, args.data_dir, dtype=dtype, standardize=standardize)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    from experiments.arguments import path_argument

    parser.add_argument("--fast", action="store_true", help="the small form that runs in seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the labs' own random draws")
    parser.add_argument("--logdir", type=path_argument, default=DEFAULT_LOGDIR, help="where TensorBoard runs go")
    parser.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard run")
    parser.add_argument("--dataset", choices=("mnist", "idx"), default="mnist",
                        help="MNIST labs: mnist, or idx with --data-dir holding four IDX files")
    parser.add_argument("--data-dir", type=path_argument, default=None, help="MNIST labs: the data directory")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch intra-op threads; the labs' small matrices gain little from more, and on a "
                             "busy machine extra threads make them wait (raise it for the full MNIST labs)")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (at most 2**63 - 1, what torch can hold), by the shared policy."""
    from experiments.arguments import integer

    try:
        return integer(int(text), "value", low=1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (at most 2**63 - 1); got {text!r}")


def positive_int_list(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers such as 1,16,128."""
    try:
        return [positive_int(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,16; got {text!r}")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number; got {value}")
    return value
