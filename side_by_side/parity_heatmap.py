"""One parity check as an image: a tensor x layer grid, white where the two models are bitwise equal.

The per-tensor curves say how each tensor's error evolves; this says at a glance, for one check, which tensors of
which layer differ at all. Columns are the layers in backprop order (last layer first, as the backward visits
them); rows the tensors in the order a step makes them (Z, A, dA, dZ, dW, db, then the weights and optimizer
state after the update), then the run-wide loss and learning rate. The grid is tall and narrow so that it stays
legible at the width of a TensorBoard image card. Each cell is white with "=" when bitwise equal, blue (darker =
larger) with the normwise error max|manual - autograd| / max|autograd| when within the tolerance policy, red when
out of it, grey when the layer has no such tensor.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from side_by_side.digit_tiles import _font

ORDER = ("X", "D", "dX", "Z", "A", "dA", "dZ", "dW", "db", "W", "b")  # state rows (e.g. "exp_avg(W)") follow
RUN_WIDE = ("loss", "lr")
CELL_W, CELL_H, HEADER_H = 58, 18, 46
WHITE, GREY, RED, TEXT = (255, 255, 255), (225, 225, 225), (220, 40, 40), (20, 20, 20)


def _blue(normwise: float) -> tuple[int, int, int]:
    """Light blue for 1e-17, dark blue for 1e-1 and above: log10 scale."""
    t = min(max((math.log10(normwise) + 17) / 16, 0.0), 1.0) if normwise > 0 else 0.0
    return (int(205 - 150 * t), int(228 - 130 * t), 255 - int(40 * t))


def parity_heatmap(rows, step: int) -> np.ndarray:
    """``rows``: TensorComparison rows of one check (layer, name, exact, passed, normwise). Returns HWC uint8."""
    names = [name for name in ORDER if any(row.name == name for row in rows)]
    names += sorted({row.name for row in rows} - set(names) - set(RUN_WIDE))
    names += [name for name in RUN_WIDE if any(row.layer == name for row in rows)]
    layers = sorted({row.layer for row in rows if isinstance(row.layer, int)}, reverse=True)
    font = _font(10)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(int(measure.textlength(name, font=font)) for name in names) + 10
    width = label_w + CELL_W * max(len(layers), 1) + 4
    height = HEADER_H + CELL_H * (len(names) + 1) + 4
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    exact = sum(row.exact for row in rows)
    failed = sum(not row.passed for row in rows)
    draw.text((4, 2), f"step {step}: {exact}/{len(rows)} bitwise (white =)", fill=TEXT, font=font)
    draw.text((4, 15), f"{failed} out of policy (red)", fill=TEXT, font=font)
    draw.text((4, 28), "blue: normwise error, in tolerance", fill=TEXT, font=font)
    by_key = {(row.layer, row.name): row for row in rows}

    def cell(x: int, y: int, row, cell_width: int) -> None:
        if row is None:
            fill, label = GREY, ""
        elif row.exact and row.passed:
            fill, label = WHITE, "="
        elif not row.passed:
            fill, label = RED, "NaN" if math.isnan(row.normwise) else f"{row.normwise:.0e}"
        else:
            fill, label = _blue(row.normwise), f"{row.normwise:.0e}"
        draw.rectangle((x, y, x + cell_width - 1, y + CELL_H - 1), fill=fill, outline=(160, 160, 160))
        draw.text((x + 5, y + 3), label, fill=TEXT if fill != RED else WHITE, font=font)

    top = HEADER_H
    for index, layer in enumerate(layers):  # column headers: the layers, last first
        draw.text((label_w + index * CELL_W + 5, top + 3), f"layer {layer}", fill=TEXT, font=font)
    for r, name in enumerate(names):
        y = top + CELL_H * (r + 1)
        draw.text((4, y + 3), name, fill=TEXT, font=font)
        if name in RUN_WIDE:  # one value for the whole run: one cell across the layers' columns
            cell(label_w, y, by_key.get((name, name)), CELL_W * max(len(layers), 1))
            continue
        for index, layer in enumerate(layers):
            cell(label_w + index * CELL_W, y, by_key.get((layer, name)), CELL_W)
    return np.asarray(image).copy()
