"""Faults that used to lose data or pass silently (issue 10, section 1), each reproduced and refused clearly.

Most runs are in-process ``experiments.train_mnist.main([...])`` calls on a tiny IDX dataset; a real process is
used only where it is the point (signals, a lock held by another process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fake_idx import write_fake_idx

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fake_idx")
    write_fake_idx(directory, n_train=64, n_test=32, seed=0)
    return directory


# --- parity verdicts and the data cache ---------------------------------------------------------------------------

def test_parity_verdict_says_why_bitwise_equal_tensors_fail(capsys):
    """A huge --l2 overflows the loss to inf in both models alike: every tensor is bitwise equal, yet the check
    fails; the verdict used to read "FAIL: 12/12 tensors bitwise equal" with no reason."""
    from experiments.parity import main

    status = main(["--sizes", "784,16,10", "--l2", "1e38", "--device", "cpu"])
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert status == 1
    assert verdict.startswith("FAIL: 12/12 tensors bitwise equal but out of policy: non-finite values in loss"), verdict


def test_a_second_corruption_does_not_overwrite_the_first_aside_file(tmp_path):
    from mnist_data import DatasetError, load_splits

    raw_dir = tmp_path / "root" / "MNIST" / "raw"
    contents = []
    for seed in (1, 2):  # well-formed IDX files, but not MNIST: every checksum mismatches
        write_fake_idx(raw_dir, seed=seed)
        contents.append((raw_dir / "train-images-idx3-ubyte").read_bytes())
        with pytest.raises(DatasetError):
            load_splits("mnist", tmp_path / "root", allow_download=False, log=lambda line: None)
    assert (raw_dir / "train-images-idx3-ubyte.corrupt").read_bytes() == contents[0]
    assert (raw_dir / "train-images-idx3-ubyte.corrupt.2").read_bytes() == contents[1]
