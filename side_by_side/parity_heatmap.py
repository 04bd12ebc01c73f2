"""One parity check as an image: a layer x tensor grid, white where the two models are bitwise equal.

The per-tensor curves say how each tensor's error evolves; this says at a glance, for one check, which tensors of
which layer differ at all. Rows are the layers in backprop order (last layer first, as the backward visits them),
then the run-wide values (loss, learning rate); columns the tensors in the order a step makes them (Z, A, dA, dZ,
dW, db, then the weights and optimizer state after the update). Each cell is white with "=" when bitwise equal,
blue (darker = larger) with the normwise error max|manual - autograd| / max|autograd| when within the tolerance
policy, red when out of it, grey when the layer has no such tensor.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from side_by_side.digit_tiles import _font

ORDER = ("X", "D", "dX", "Z", "A", "dA", "dZ", "dW", "db", "W", "b")  # state rows (e.g. "exp_avg(W)") follow
CELL_W, CELL_H, LABEL_W, HEADER_H = 74, 22, 56, 38
WHITE, GREY, RED, TEXT = (255, 255, 255), (225, 225, 225), (220, 40, 40), (20, 20, 20)


def _blue(normwise: float) -> tuple[int, int, int]:
    """Light blue for 1e-17, dark blue for 1e-1 and above: log10 scale."""
    t = min(max((math.log10(normwise) + 17) / 16, 0.0), 1.0) if normwise > 0 else 0.0
    return (int(205 - 150 * t), int(228 - 130 * t), 255 - int(40 * t))


def parity_heatmap(rows, step: int) -> np.ndarray:
    """``rows``: TensorComparison rows of one check (layer, name, exact, passed, normwise). Returns HWC uint8."""
    columns = [name for name in ORDER if any(row.name == name for row in rows)]
    columns += sorted({row.name for row in rows} - set(columns) - {"loss", "lr"})
    layers = sorted({row.layer for row in rows if isinstance(row.layer, int)}, reverse=True)
    grid_rows = [*(f"layer {layer}" for layer in layers), "run"]
    columns_run = ["loss", "lr"]  # one row of their own, each cell two columns wide
    font = _font(11)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [max(CELL_W, int(measure.textlength(name, font=font)) + 12) for name in columns]
    lefts = [LABEL_W + sum(widths[:index]) for index in range(len(columns))]
    width = max(LABEL_W + sum(widths), 560)
    height = HEADER_H + CELL_H * (len(grid_rows) + 1) + 4
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    exact = sum(row.exact for row in rows)
    failed = sum(not row.passed for row in rows)
    draw.text((4, 2), f"step {step}: {exact}/{len(rows)} tensors bitwise equal (white, =), "
                      f"{failed} out of policy (red)", fill=TEXT, font=font)
    draw.text((4, 16), "blue: within tolerance, normwise error shown; rows in backprop order", fill=TEXT, font=font)
    by_key = {(row.layer, row.name): row for row in rows}

    def cell(x: int, y: int, row, cell_width: int, prefix: str = "") -> None:
        if row is None:
            fill, label = GREY, ""
        elif row.exact and row.passed:
            fill, label = WHITE, "="
        elif not row.passed:
            fill, label = RED, "NaN" if math.isnan(row.normwise) else f"{row.normwise:.0e}"
        else:
            fill, label = _blue(row.normwise), f"{row.normwise:.0e}"
        draw.rectangle((x, y, x + cell_width - 1, y + CELL_H - 1), fill=fill, outline=(160, 160, 160))
        draw.text((x + 6, y + 5), prefix + label, fill=TEXT if fill != RED else WHITE, font=font)

    top = HEADER_H
    for index, name in enumerate(columns):
        draw.text((lefts[index] + 6, top), name, fill=TEXT, font=font)
    for r, layer in enumerate(layers):
        y = top + CELL_H * (r + 1)
        draw.text((4, y + 5), f"layer {layer}", fill=TEXT, font=font)
        for index, name in enumerate(columns):
            cell(lefts[index], y, by_key.get((layer, name)), widths[index])
    y = top + CELL_H * (len(layers) + 1)
    draw.text((4, y + 5), "run", fill=TEXT, font=font)
    for index, name in enumerate(columns_run):  # the run-wide values, named in their cells: loss, then lr
        cell(LABEL_W + index * 2 * CELL_W, y, by_key.get((name, name)), 2 * CELL_W, prefix=f"{name}  ")
    return np.asarray(image).copy()
