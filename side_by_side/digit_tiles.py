"""A grid of digits, each tile captioned with its true and predicted label, for TensorBoard's Images tab.

A plain image grid of misclassified digits says nothing about what the model answered; here each tile carries
``true -> predicted`` under the digit (true label in green, prediction in red), and a header line says so, so the
image is read without a separate text card.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

SIDE = 28  # MNIST digits are 28x28
TRUE_COLOUR = (0, 140, 0)
PREDICTED_COLOUR = (200, 0, 0)
TEXT_COLOUR = (40, 40, 40)
BACKGROUND = (255, 255, 255)


def _font(size: int):
    """Pillow's bundled font (scalable when Pillow has FreeType, a fixed bitmap font otherwise)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def _digit_middle(font, top: int) -> int:
    """The y of the middle of a digit drawn at ``top`` (where the arrow between two digits goes)."""
    _, upper, _, lower = font.getbbox("0")
    return top + (upper + lower) // 2


def _arrow(draw: ImageDraw.ImageDraw, x: int, y: int, width: int, colour) -> None:
    """A right arrow from (x, y) to (x + width, y); drawn, not typed: the bundled font has no arrow glyph."""
    draw.line([(x, y), (x + width, y)], fill=colour, width=1)
    draw.polygon([(x + width, y), (x + width - 3, y - 3), (x + width - 3, y + 3)], fill=colour)


def _caption(draw: ImageDraw.ImageDraw, font, left: int, top: int, width: int, true: int, predicted: int) -> None:
    """'7 -> 2' centred in a band ``width`` wide starting at (left, top)."""
    true_text, predicted_text, gap, arrow = str(true), str(predicted), 3, 10
    true_width = draw.textlength(true_text, font=font)
    predicted_width = draw.textlength(predicted_text, font=font)
    total = true_width + predicted_width + 2 * gap + arrow
    x = left + (width - total) / 2
    draw.text((x, top), true_text, fill=TRUE_COLOUR, font=font)
    x += true_width + gap
    _arrow(draw, int(x), _digit_middle(font, top), arrow, TEXT_COLOUR)
    x += arrow + gap
    draw.text((x, top), predicted_text, fill=PREDICTED_COLOUR, font=font)


def labelled_digit_grid(images: Tensor, labels: Tensor, predictions: Tensor, columns: int = 8,
                        scale: int = 2, legend: bool = True) -> np.ndarray:
    """Tiles of ``images`` with ``labels[i] -> predictions[i]`` drawn under tile ``i``, row by row.

    Inputs:
      images: (N, 784) or (N, 28, 28), any real range (min-max scaled to grey levels over the whole batch, so
        tiles stay comparable with each other)
      labels, predictions: (N,) integers
      columns: tiles per row; scale: integer upscaling of each digit (captions need more than 28 pixels)
      legend: a header line "true -> predicted" over the grid, in the captions' colours
    Returns:
      (H, W, 3) uint8 RGB, for ``SummaryWriter.add_image(..., dataformats="HWC")``.
    """
    n = images.shape[0]
    if n == 0:
        raise ValueError("images: expected at least one image; got 0")
    if labels.shape != (n,) or predictions.shape != (n,):
        raise ValueError(f"labels, predictions: expected shape ({n},); got {tuple(labels.shape)} and "
                         f"{tuple(predictions.shape)}")
    if columns < 1 or scale < 1:
        raise ValueError(f"columns, scale: expected integers >= 1; got {columns} and {scale}")
    digits = images.detach().to("cpu", torch.float64).reshape(n, SIDE, SIDE)
    low, high = digits.min(), digits.max()
    digits = (digits - low) / (high - low) if high > low else torch.zeros_like(digits)
    grey = (digits * 255).round().to(torch.uint8).numpy()

    side = SIDE * scale
    font = _font(max(10, 7 * scale))  # captions readable when TensorBoard shrinks the grid to its card width
    caption = font.getbbox("0")[3] + 4
    pad = 2
    header = (font.getbbox("Ag")[3] + 6) if legend else 0
    rows = -(-n // columns)
    width = min(n, columns) * (side + pad) + pad
    if legend:
        width = max(width, int(_legend(None, font, pad, 3)) + pad)
    height = header + rows * (side + caption + pad) + pad
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if legend:
        _legend(draw, font, pad, 3)
    for i in range(n):
        row, column = divmod(i, columns)
        left = pad + column * (side + pad)
        top = header + pad + row * (side + caption + pad)
        tile = Image.fromarray(grey[i]).resize((side, side), Image.NEAREST)
        canvas.paste(tile.convert("RGB"), (left, top))
        _caption(draw, font, left, top + side + 1, side, int(labels[i]), int(predictions[i]))
    return np.asarray(canvas)


def _legend(draw: ImageDraw.ImageDraw | None, font, x: int, y: int) -> float:
    """'true -> predicted' in the captions' colours; returns the x where it ends (``draw`` None: measure only)."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for text, colour in (("true", TRUE_COLOUR), (None, TEXT_COLOUR), ("predicted", PREDICTED_COLOUR)):
        if text is None:
            if draw is not None:
                _arrow(draw, int(x) + 3, _digit_middle(font, y), 12, colour)
            x += 18
        else:
            if draw is not None:
                draw.text((x, y), text, fill=colour, font=font)
            x += measure.textlength(text, font=font)
    return x
