"""Standardisation in mnist_data: "none", "global" (two scalars) and "pixel" (the course's lecture-000 lab:
per-pixel mean and std of the training split, std floored at 1e-6), on small IDX files with constant pixels."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_idx import write_fake_idx

from mnist_data import PIXEL_STD_FLOOR, STANDARDIZE_MODES, DatasetError, load_splits

ZERO_PIXEL = 0  # top-left corner: 0 in every training image
GREY_PIXEL = 27  # top-right corner: 100 in every training image
TEST_VALUE = 51  # what the first test image has at ZERO_PIXEL (51/255 = 0.2)


def quiet(line: str) -> None:
    pass


def rewrite_images(path: Path, change) -> None:
    """Apply ``change`` to the ``(N, 784)`` uint8 pixels of an IDX image file, in place."""
    data = path.read_bytes()
    n = struct.unpack(">I", data[4:8])[0]
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 784).copy()
    change(pixels)
    path.write_bytes(data[:16] + pixels.tobytes())


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """64 training and 32 test images; two pixels never change in the training images, one test image differs."""
    directory = tmp_path / "idx"
    write_fake_idx(directory, n_train=64, n_test=32)

    def constant_pixels(pixels: np.ndarray) -> None:
        pixels[:, ZERO_PIXEL] = 0
        pixels[:, GREY_PIXEL] = 100

    rewrite_images(directory / "train-images-idx3-ubyte", constant_pixels)
    rewrite_images(directory / "t10k-images-idx3-ubyte", constant_pixels)
    rewrite_images(directory / "t10k-images-idx3-ubyte", lambda pixels: pixels.__setitem__((0, ZERO_PIXEL), TEST_VALUE))
    return directory


def course_normalize_fit(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lecture-000 lab's ``normalize_fit``, in float64 (the lab casts to float32)."""
    mean = X.mean(axis=0, keepdims=True)
    std = X.std(axis=0, keepdims=True)
    std[std < 1e-6] = 1e-6
    return mean, std


def test_pixel_statistics_are_the_course_lab_s_on_the_training_split_only(idx_dir: Path):
    raw = load_splits("idx", idx_dir, dtype=torch.float64, limit=60, val_size=20, log=quiet)
    pixel = load_splits("idx", idx_dir, dtype=torch.float64, limit=60, val_size=20, standardize="pixel", log=quiet)

    assert pixel.standardize == "pixel"
    assert pixel.mean.shape == (784,) and pixel.std.shape == (784,) and pixel.mean.dtype == torch.float64
    mean, std = course_normalize_fit(raw.train_x.numpy())  # the 40 training images, not the 20 held out
    torch.testing.assert_close(pixel.mean, torch.from_numpy(mean[0]), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(pixel.std, torch.from_numpy(std[0]), rtol=1e-13, atol=1e-15)
    held_in = load_splits("idx", idx_dir, dtype=torch.float64, limit=60, standardize="pixel", log=quiet)
    assert not torch.equal(held_in.mean, pixel.mean)  # the validation images would have changed the statistics

    for split in ("train", "val", "test"):  # every split uses the training statistics, not its own
        expected = (getattr(raw, f"{split}_x") - pixel.mean) / pixel.std
        assert torch.equal(getattr(pixel, f"{split}_x"), expected), split
    varying = pixel.std > PIXEL_STD_FLOOR
    torch.testing.assert_close(pixel.train_x[:, varying].mean(0), torch.zeros(int(varying.sum()), dtype=torch.float64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(pixel.train_x[:, varying].std(0, correction=0),
                               torch.ones(int(varying.sum()), dtype=torch.float64))


def test_constant_pixels_get_the_course_s_floor(idx_dir: Path):
    pixel = load_splits("idx", idx_dir, dtype=torch.float64, standardize="pixel", log=quiet)

    assert pixel.std[ZERO_PIXEL] == PIXEL_STD_FLOOR == 1e-6 and pixel.mean[ZERO_PIXEL] == 0.0
    assert pixel.std[GREY_PIXEL] == PIXEL_STD_FLOOR and pixel.mean[GREY_PIXEL] == pytest.approx(100 / 255)
    assert int((pixel.std == PIXEL_STD_FLOOR).sum()) == 2  # the noisy background varies everywhere else
    assert torch.all(pixel.train_x[:, [ZERO_PIXEL, GREY_PIXEL]].abs() < 1e-9)  # 0 (or rounding) in training
    # A test image that is not 0 where every training image is: x / 1e-6, as in the course.
    assert float(pixel.test_x[0, ZERO_PIXEL]) == pytest.approx(TEST_VALUE / 255 / 1e-6)
    assert torch.all(pixel.test_x[1:, ZERO_PIXEL] == 0)


def test_float32_output_is_the_float64_result_rounded(idx_dir: Path):
    wide = load_splits("idx", idx_dir, dtype=torch.float64, standardize="pixel", log=quiet)
    narrow = load_splits("idx", idx_dir, dtype=torch.float32, standardize="pixel", log=quiet)
    assert narrow.train_x.dtype == torch.float32 and narrow.mean.dtype == torch.float64
    assert torch.equal(narrow.test_x, wide.test_x.float())


@pytest.mark.parametrize(("given", "mode"), [(True, "global"), (False, "none")])
def test_booleans_still_mean_global_and_none(idx_dir: Path, given: bool, mode: str):
    old = load_splits("idx", idx_dir, standardize=given, log=quiet)
    new = load_splits("idx", idx_dir, standardize=mode, log=quiet)
    assert old.standardize == mode and (old.mean, old.std) == (new.mean, new.std)
    assert torch.equal(old.train_x, new.train_x) and torch.equal(old.test_x, new.test_x)


def test_modes_differ(idx_dir: Path):
    results = {mode: load_splits("idx", idx_dir, standardize=mode, log=quiet) for mode in STANDARDIZE_MODES}
    assert results["none"].mean is None and results["none"].std is None
    assert isinstance(results["global"].mean, float) and isinstance(results["global"].std, float)
    assert not torch.equal(results["global"].train_x, results["pixel"].train_x)
    assert not torch.equal(results["none"].train_x, results["global"].train_x)


@pytest.mark.parametrize("bad", ["per-pixel", "Pixel", "", 1, None])
def test_unknown_mode_is_refused(idx_dir: Path, bad):
    with pytest.raises(DatasetError, match="standardize: expected one of none, global, pixel") as caught:
        load_splits("idx", idx_dir, standardize=bad, log=quiet)
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize("mode", ["global", "pixel"])
def test_one_training_image_cannot_be_standardised(idx_dir: Path, mode: str):
    """One image: every pixel is constant (pixel), or -- after making it uniform -- all pixels equal (global)."""
    if mode == "global":
        rewrite_images(idx_dir / "train-images-idx3-ubyte", lambda pixels: pixels.fill(7))
    with pytest.raises(DatasetError, match="standardize: .*--limit"):
        load_splits("idx", idx_dir, limit=1, standardize=mode, log=quiet)
