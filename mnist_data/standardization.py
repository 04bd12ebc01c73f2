"""Standardising the pixels with statistics of the training split: one global mean and std, or one per pixel.

* ``"global"``: every pixel minus the mean of all training pixels, divided by their (population) standard
  deviation: two scalars.
* ``"pixel"``: as the course's lecture-000 MNIST lab does it (``normalize_fit`` / ``normalize_apply``): each of
  the 784 pixels minus its own training mean, divided by its own population standard deviation (numpy's
  default ``ddof=0``), with every standard deviation below ``1e-6`` raised to ``1e-6``
  (:data:`PIXEL_STD_FLOOR`, the course's ``std[std < 1e-6] = 1e-6``).

The floor is the course's answer to pixels that never change in the training images (MNIST's border: 67 of the
784 pixels are 0 in all 60000 training images). Such a pixel becomes exactly 0 in every training image, so
the network learns nothing from it; but a validation or test image that is not 0 there gets ``x / 1e-6``, up
to ``1e6``. In full MNIST one test image has such a pixel (it becomes about 9.4e4; the largest value at the
other pixels is about 420); with ``--limit`` far fewer training images and many more constant pixels, such
values are common (1000 training images: 175 constant pixels, 202 of the 10000 test images hit them). We keep
the course's rule, so that a run reproduces the lab; ``"global"`` has no such pixels.

Statistics are computed in float64 from pixels already scaled to [0, 1] (the course computes them in float32)
and applied in float64 before the cast to the model's dtype.
"""

from __future__ import annotations

import torch

from mnist_data.errors import DatasetError

STANDARDIZE_MODES = ("none", "global", "pixel")
PIXEL_STD_FLOOR = 1e-6
# Below this the global std is rounding noise, not variation: identical pixels of value v give a float64 std of
# about 1e-17 (their float64 mean is not exactly v), while one pixel differing by 1/255 among the 1e9 pixels of
# the largest IDX file read here still gives 1.2e-7.
GLOBAL_STD_MIN = 1e-9

Statistic = float | torch.Tensor | None


def standardize_mode(standardize) -> str:
    """One of :data:`STANDARDIZE_MODES`; the booleans of the older API still mean ``"global"`` / ``"none"``."""
    if standardize is True:
        return "global"
    if standardize is False:
        return "none"
    if not isinstance(standardize, str) or standardize not in STANDARDIZE_MODES:
        raise DatasetError(
            f"standardize: expected one of {', '.join(STANDARDIZE_MODES)} (or a bool: True is global); "
            f"got {standardize!r}"
        )
    return standardize


def fit_standardization(mode: str, train_x: torch.Tensor) -> tuple[Statistic, Statistic]:
    """``(mean, std)`` of ``train_x (N, 784)`` float64 for ``mode``: ``(None, None)`` for "none", two floats for
    "global", two ``(784,)`` float64 tensors for "pixel"."""
    if mode == "none":
        return None, None
    if mode == "global":
        return _global_mean_std(train_x)
    return _pixel_mean_std(train_x)


def apply_standardization(x: torch.Tensor, mean: Statistic, std: Statistic) -> torch.Tensor:
    """``(x - mean) / std`` for ``x (N, 784)``; the ``(784,)`` statistics broadcast over the rows."""
    if mean is None:
        return x
    return (x - mean) / std


def _global_mean_std(train_x: torch.Tensor) -> tuple[float, float]:
    """Mean and (population) standard deviation over every pixel of ``train_x (N, 784)``, in float64."""
    mean = float(train_x.mean())
    std = float(train_x.std(correction=0))
    if std < GLOBAL_STD_MIN:
        raise DatasetError(
            "standardize: the training pixels are all equal (standard deviation 0), so they cannot be "
            "standardised; use more training images (--limit) or turn standardisation off"
        )
    return mean, std


def _pixel_mean_std(train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean ``(784,)`` and population std ``(784,)`` of ``train_x (N, 784)``, the std floored."""
    mean = train_x.mean(dim=0)
    std = train_x.std(dim=0, correction=0)
    if bool((std < PIXEL_STD_FLOOR).all()):
        raise DatasetError(
            f"standardize: every pixel is the same in all {train_x.shape[0]} training images (standard "
            "deviation 0 everywhere), so every image would become 0; use more training images (--limit) or "
            "another standardisation"
        )
    # clamp(min=floor) is the course's std[std < 1e-6] = 1e-6: values below the floor become it, others stay.
    return mean, std.clamp(min=PIXEL_STD_FLOOR)
