"""The data-parallel benchmark runs end to end on a tiny network (no timing is asserted)."""

import json

import pytest
import torch.distributed as dist

from experiments import benchmark_dp


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                    reason="this PyTorch build has no torch.distributed with the gloo backend")
def test_benchmark_dp_writes_every_variant(tmp_path, capsys):
    out = tmp_path / "dp.json"
    assert benchmark_dp.main(["--sizes", "20,8,3", "--batch-sizes", "8,16", "--repeats", "1", "--min-seconds", "0.01",
                              "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["threads_per_process"] == 1 and report["config"]["sizes"] == [20, 8, 3]
    rows = {(row["batch_size"], row["variant"]): row for row in report["rows"]}
    assert set(rows) == {(b, v) for b in (8, 16) for v in ("engine", "autograd", "engine_simple", "engine_bucketed",
                                                           "ddp")}
    for (batch, variant), row in rows.items():
        assert row["ms"] > 0 and row["images_per_s"] > 0
        if row["processes"] == 2:
            baseline = rows[(batch, benchmark_dp.BASELINE[variant])]
            assert row["speedup"] == pytest.approx(baseline["ms"] / row["ms"], rel=1e-2, abs=1e-3)
            assert row["efficiency"] == pytest.approx(row["speedup"] / 2, rel=1e-2, abs=1e-3)
    for batch in (8, 16):
        assert report["engine_bucketed_over_ddp"][str(batch)] == pytest.approx(
            rows[(batch, "engine_bucketed")]["ms"] / rows[(batch, "ddp")]["ms"], rel=1e-2)
    printed = capsys.readouterr().out
    assert "| 16 | ddp | 2 × 1 |" in printed and "engine_bucketed ÷ ddp" in printed


@pytest.mark.parametrize("flags, message", [
    (["--batch-sizes", "7"], "every global batch must be an even number >= 2"),
    (["--batch-sizes", "a"], "expected comma-separated even integers"),
    (["--repeats", "0"], "--repeats: expected an integer >= 1"),
    (["--bucket-mb", "0"], "--bucket-mb: expected a bucket size > 0 MiB"),
])
def test_bad_flags_are_named(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark_dp.main(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
