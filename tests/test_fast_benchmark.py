"""Smoke tests of experiments/benchmark.py: tiny sizes, one repeat, the JSON schema. No timing assertions."""

import json

import pytest
import torch

from experiments import benchmark, benchmark_variants
from experiments.benchmark_variants import VARIANTS, build_variant, peak_step_bytes, sgd_momentum
from manual_backprop.config import MLPConfig
from manual_backprop.model import init_parameters
from manual_backprop.optim_config import OptimizerConfig
from tests.fake_idx import write_fake_idx
from torch_reference.parity import synthetic_batch


def test_benchmark_writes_the_issue_schema(tmp_path, capsys):
    write_fake_idx(tmp_path / "idx", n_train=40, n_test=10)
    out = tmp_path / "bench.json"
    assert benchmark.main(["--sizes", "784,12,8,10", "--batch-sizes", "1,5", "--repeats", "1", "--min-seconds",
                           "0.001", "--variants", "reference,fast,fast_fused,autograd,gemm_floor",
                           "--epoch-batch-size", "16",
                           "--epoch-dataset", "idx", "--data-dir", str(tmp_path / "idx"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"config", "device", "threads", "torch", "rows"} <= set(result)
    assert result["config"]["sizes"] == [784, 12, 8, 10] and result["device"] == "cpu"
    assert [row["batch_size"] for row in result["rows"]] == [1, 5]
    for row in result["rows"]:
        assert set(row["ms"]) == set(VARIANTS) and set(row["peak_bytes"]) == set(VARIANTS)
        assert row["ms"]["compiled"] is None and row["peak_bytes"]["compiled"] is None  # not asked for
        for name in ("reference", "fast", "fast_fused", "autograd", "gemm_floor"):
            assert row["ms"][name] > 0 and row["peak_bytes"][name] > 0
        assert row["ms"]["fast_low_memory"] is None  # not asked for
        assert row["ratios"]["autograd/fast"] == pytest.approx(row["ms"]["autograd"] / row["ms"]["fast"])
        assert row["ms_repeats"]["fast"] == [row["ms"]["fast"]] and row["ms_repeats"]["compiled"] is None
        assert row["ratios"]["autograd/fast paired median"] == pytest.approx(row["ratios"]["autograd/fast"])
    epoch = result["epoch"]
    assert epoch["images"] == 40 and set(epoch["images_per_s"]) == {"reference", "fast", "fast_fused", "autograd"}
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
        variant = build_variant(name, config, params, X, y, sgd_momentum())
        variant.step()
        peaks[name] = peak_step_bytes(variant, torch.device("cpu"))
    grads = sum(t.numel() * 4 for t in params.values())
    assert peaks["autograd"] >= grads  # the .grad tensors at least
    assert peaks["gemm_floor"] >= 512 * (256 + 128 + 10) * 4  # its forward outputs at least
    assert 512 * (256 + 128) * 4 <= peaks["fast"] < peaks["autograd"]


def assert_flags_named(main, cases, capsys):
    """Each argv makes ``main`` exit with a usage error that names its flag."""
    for argv, flag in cases:
        with pytest.raises(SystemExit):
            main(argv)
        assert flag in capsys.readouterr().err


def test_bad_flags_are_named(capsys):
    cases = ((["--batch-sizes", "0"], "--batch-sizes"), (["--batch-sizes", "x"], "--batch-sizes"),
             (["--variants", "fast,turbo"], "--variants"), (["--repeats", "0"], "--repeats"),
             (["--min-seconds", "0"], "--min-seconds"))
    assert_flags_named(benchmark.main, cases, capsys)


def test_variant_names_are_checked():
    with pytest.raises(ValueError, match="variant"):
        benchmark_variants.build_variant("turbo", MLPConfig(sizes=(4, 3)), {}, None, None, sgd_momentum())


@pytest.mark.parametrize("optimizer", ["nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_another_optimizer_times_the_fast_path_the_engine_and_torch_optim(tmp_path, optimizer):
    write_fake_idx(tmp_path / "idx", n_train=20, n_test=10)
    out = tmp_path / "bench.json"
    assert benchmark.main(["--sizes", "784,12,10", "--batch-sizes", "4", "--repeats", "1", "--min-seconds", "0.001",
                           "--variants", "reference,fast,autograd", "--optimizer", optimizer, "--lr", "0.01",
                           "--epoch-batch-size", "8", "--epoch-dataset", "idx", "--data-dir", str(tmp_path / "idx"),
                           "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["optimizer"]["name"] == optimizer and result["optimizer"]["lr"] == 0.01
    row = result["rows"][0]
    assert row["ms"]["reference"] > 0 and row["ms"]["autograd"] > 0 and row["ms"]["fast"] > 0
    assert not row["notes"]
    assert set(result["epoch"]["images_per_s"]) == {"reference", "fast", "autograd"}


def test_the_record_preset_mode_times_three_ways_and_the_fast_path_ends_bitwise(tmp_path, capsys):
    write_fake_idx(tmp_path / "idx", n_train=300, n_test=10)
    out = tmp_path / "record.json"
    assert benchmark.main(["--preset", "record", "--epoch-repeats", "2", "--epoch-dataset", "idx", "--data-dir",
                           str(tmp_path / "idx"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 300 and result["batch_size"] == 128 and result["repeats"] == 2
    assert set(result["images_per_s"]) == set(result["peak_bytes"]) == {"fast", "reference", "pytorch"}
    assert all(value > 0 for value in result["peak_bytes"].values())
    assert result["config"]["dropout"] == 0.4 and result["config"]["max_norm"] == 3.5
    assert result["fast_equals_reference"] is True
    printed = capsys.readouterr().out
    assert "fast / pytorch" in printed and "images/s" in printed
    with pytest.raises(SystemExit):
        benchmark.main(["--preset", "record", "--record-variants", "fast,keras"])
    assert "--record-variants: expected names from fast,reference,pytorch" in capsys.readouterr().err


def test_the_record_benchmark_times_the_record_preset_itself():
    """benchmark_record's constants, read from the --preset record flags (experiments/presets.py), are those flags'
    values: a parsing slip (a wrong key, width or type) fails here."""
    from experiments import benchmark_record as record
    from experiments.presets import PRESETS

    flags = PRESETS["record"][1]
    preset = dict(zip(flags[::2], flags[1::2]))
    assert preset["--hidden"] == ",".join(str(size) for size in record.SIZES[1:-1])
    assert float(preset["--dropout"]) == record.DROPOUT and float(preset["--input-dropout"]) == record.INPUT_DROPOUT
    assert float(preset["--max-norm"]) == record.MAX_NORM and preset["--optimizer"] == record.OPTIMIZER
    assert float(preset["--lr"]) == record.LR and float(preset["--momentum"]) == record.MOMENTUM
    assert int(preset["--batch-size"]) == record.BATCH_SIZE and int(preset["--epochs"]) == record.EPOCHS
    assert int(preset["--warmup-steps"]) == record.WARMUP_STEPS and preset["--lr-schedule"] == "cosine"


def test_every_variant_trains_with_the_optimizer_it_is_given():
    """One step of the reference engine's Adam and torch.optim.Adam from the same weights: the same weights
    after it (the engine reproduces torch.optim's arithmetic), and different from a momentum step's."""
    config = MLPConfig(sizes=(8, 6, 3))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    X, y = synthetic_batch(config, 5, torch.Generator().manual_seed(1))
    adam = OptimizerConfig("adam", lr=0.01)
    reference = build_variant("reference", config, params, X, y, adam)
    autograd = build_variant("autograd", config, params, X, y, adam)
    momentum = build_variant("reference", config, params, X, y, sgd_momentum(0.01))
    for variant in (reference, autograd, momentum):
        variant.step()
    twin_weights = autograd.model[0].weight.detach()
    torch.testing.assert_close(reference.model.params["W1"], twin_weights, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(reference.model.params["W1"], momentum.model.params["W1"])
    fast = build_variant("fast", config, params, X, y, adam)  # the fast path runs Adam too, bitwise
    fast.step()
    assert torch.equal(fast.trainer.params["W1"], reference.model.params["W1"])
    with pytest.raises(TypeError, match="OptimizerConfig"):
        build_variant("reference", config, params, X, y, 0.01)


def test_native_stderr_is_held_back_unless_the_block_fails(capfd):
    import os

    with benchmark_variants.native_stderr_kept_unless_failing():
        os.write(2, b"profiler_start\n")
    assert "profiler_start" not in capfd.readouterr().err
    with pytest.raises(RuntimeError, match="boom"):
        with benchmark_variants.native_stderr_kept_unless_failing():
            os.write(2, b"what the library said before it failed\n")
            raise RuntimeError("boom")
    assert "what the library said before it failed" in capfd.readouterr().err
    os.write(2, b"after\n")  # fd 2 is restored
    assert "after" in capfd.readouterr().err


def test_the_paired_ratio_is_the_median_of_the_ratios_within_each_quiet_repeat():
    """Repeats 2 and 3 ran during bursts of load from elsewhere (a variant more than 15 % above its best): they
    are left out, and the ratio is the median of the ratios within the quiet repeats."""
    row = {"ms_repeats": {"autograd": [1.0, 3.0, 2.5, 1.1, 1.02], "fast": [0.5, 1.5, 0.6, 0.5, 0.55],
                          "reference": None}}
    assert benchmark.quiet_repeats(row) == [0, 3, 4]
    assert benchmark.paired_ratio(row, "autograd", "fast") == pytest.approx(2.0)  # median of 2.0, 2.2, 1.85
    assert benchmark.paired_ratio(row, "autograd", "reference") is None
    assert benchmark.paired_ratio({}, "autograd", "fast") is None
    always_busy = {"ms_repeats": {"autograd": [1.0, 2.0], "fast": [2.0, 1.0]}}  # no quiet repeat: all of them
    assert benchmark.quiet_repeats(always_busy) == [0, 1]


def test_the_phase_benchmark_covers_the_step_and_leaves_the_weights_alone(tmp_path, capsys):
    """experiments.benchmark_phases: every phase is timed, the groups add up to the sum, and running the phases
    many times does not change the trainer's weights or momentum buffers (their calls multiply by 1, add 0)."""
    from experiments import benchmark_phases

    out = tmp_path / "phases.json"
    assert benchmark_phases.main(["--sizes", "20,12,8,5", "--batch-sizes", "3,7", "--repeats", "1",
                                  "--min-seconds", "0.001", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["batch_size"] for row in result["rows"]] == [3, 7]
    for row in result["rows"]:
        assert {"dW GEMM 1", "dA GEMM 1", "loss and dZ_L", "momentum: W -= lr V"} <= set(row["us"])
        assert all(us > 0 for us in row["us"].values()) and row["step_us"] > 0
        assert row["sum_us"] == pytest.approx(sum(row["us"].values()))
    assert "the whole step" in capsys.readouterr().out

    config = MLPConfig(sizes=(20, 12, 8, 5))
    params = init_parameters(config, torch.Generator().manual_seed(0))
    X, y = synthetic_batch(config, 4, torch.Generator().manual_seed(1))
    trainer = benchmark_phases.FastTrainer(config, params, lr=0.1, momentum=0.9)
    trainer.step(X, y)
    trainer.step(X, y)
    weights = {name: tensor.clone() for name, tensor in params.items()}
    velocity = trainer.velocity()
    with torch.inference_mode():
        for _ in range(3):
            for _, call in benchmark_phases.phase_calls(trainer, X, y).values():
                call()
    assert all(torch.equal(params[name], weights[name]) for name in params)
    assert all(torch.equal(trainer.velocity()[name], velocity[name]) for name in velocity)


def test_the_phase_benchmark_refuses_bad_flags(capsys):
    from experiments import benchmark_phases

    cases = ((["--batch-sizes", "0"], "--batch-sizes"), (["--repeats", "0"], "--repeats"),
             (["--sizes", "10,3"], "--sizes"), (["--min-seconds", "0"], "--min-seconds"))
    assert_flags_named(benchmark_phases.main, cases, capsys)
