"""Smoke tests of experiments/benchmark.py: tiny sizes, one repeat, the JSON schema. No timing assertions."""

import json

import pytest
import torch

from experiments import benchmark, benchmark_variants
from experiments.benchmark_variants import VARIANTS, build_variant, peak_step_bytes
from manual_backprop.config import MLPConfig
from manual_backprop.model import init_parameters
from tests.fake_idx import write_fake_idx
from torch_reference.parity import synthetic_batch


def test_benchmark_writes_the_issue_schema(tmp_path, capsys):
    write_fake_idx(tmp_path / "idx", n_train=40, n_test=10)
    out = tmp_path / "bench.json"
    assert benchmark.main(["--sizes", "784,12,8,10", "--batch-sizes", "1,5", "--repeats", "1", "--min-seconds",
                           "0.001", "--variants", "reference,fast,autograd,gemm_floor", "--epoch-batch-size", "16",
                           "--epoch-dataset", "idx", "--data-dir", str(tmp_path / "idx"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"config", "device", "threads", "torch", "rows"} <= set(result)
    assert result["config"]["sizes"] == [784, 12, 8, 10] and result["device"] == "cpu"
    assert [row["batch_size"] for row in result["rows"]] == [1, 5]
    for row in result["rows"]:
        assert set(row["ms"]) == set(VARIANTS) and set(row["peak_bytes"]) == set(VARIANTS)
        assert row["ms"]["compiled"] is None and row["peak_bytes"]["compiled"] is None  # not asked for
        for name in ("reference", "fast", "autograd", "gemm_floor"):
            assert row["ms"][name] > 0 and row["peak_bytes"][name] > 0
        assert row["ratios"]["autograd/fast"] == pytest.approx(row["ms"]["autograd"] / row["ms"]["fast"])
    epoch = result["epoch"]
    assert epoch["images"] == 40 and set(epoch["images_per_s"]) == {"reference", "fast", "autograd"}
    printed = capsys.readouterr().out
    assert "autograd/fast" in printed and "images/s" in printed


def test_a_variant_that_cannot_run_is_null_with_the_reason(monkeypatch):
    real = benchmark.build_variant

    def failing(name, *args):
        if name == "compiled":
            raise RuntimeError("no C compiler here")
        return real(name, *args)

    monkeypatch.setattr(benchmark, "build_variant", failing)
    row = benchmark.measure_batch_size(MLPConfig(sizes=(6, 5, 3)), 2, ["fast", "compiled"], 1, 0.001, False)
    assert row["ms"]["compiled"] is None and row["peak_bytes"]["compiled"] is None
    assert "no C compiler here" in row["notes"]["compiled"]
    assert row["ms"]["fast"] > 0 and row["ms"]["reference"] is None


def test_peak_memory_counts_what_a_step_allocates():
    """The profiler-based peak sees a step's allocations: autograd's grads, the fast path's workspace, the
    GEMM floor's outputs; and it is smaller for the fast step than for autograd at a large batch."""
    config = MLPConfig(sizes=(784, 256, 128, 10))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    X, y = synthetic_batch(config, 512, torch.Generator().manual_seed(1))
    peaks = {}
    for name in ("fast", "autograd", "gemm_floor"):
        variant = build_variant(name, config, params, X, y, 1e-3, 0.9)
        variant.step()
        peaks[name] = peak_step_bytes(variant, torch.device("cpu"))
    grads = sum(t.numel() * 4 for t in params.values())
    assert peaks["autograd"] >= grads  # the .grad tensors at least
    assert peaks["gemm_floor"] >= 512 * (256 + 128 + 10) * 4  # its forward outputs at least
    assert 512 * (256 + 128) * 4 <= peaks["fast"] < peaks["autograd"]


def test_bad_flags_are_named(capsys):
    for argv, flag in ((["--batch-sizes", "0"], "--batch-sizes"), (["--variants", "fast,turbo"], "--variants"),
                       (["--repeats", "0"], "--repeats"), (["--min-seconds", "0"], "--min-seconds")):
        with pytest.raises(SystemExit):
            benchmark.main(argv)
        assert flag in capsys.readouterr().err


def test_variant_names_are_checked():
    with pytest.raises(ValueError, match="variant"):
        benchmark_variants.build_variant("turbo", MLPConfig(sizes=(4, 3)), {}, None, None, 0.1, 0.9)
