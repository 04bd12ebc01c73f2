"""The comparison's metrics, its report, and the parity command's interface."""

import json
import subprocess
import sys

import pytest
import torch

from experiments import parity
from torch_reference.compare import TolerancePolicy, compare_tensors, relative_error, ulp_distance


def test_ulp_distance_counts_representable_floats():
    one = torch.tensor([1.0])
    assert ulp_distance(one, one).item() == 0
    assert ulp_distance(one, torch.nextafter(one, torch.tensor([2.0]))).item() == 1
    assert ulp_distance(torch.tensor([-1.0]), torch.nextafter(torch.tensor([-1.0]), torch.tensor([0.0]))).item() == 1
    # Across zero: the smallest subnormals on either side are 2 apart; +0 and -0 are 0 apart.
    tiny = torch.tensor([1e-45])
    assert ulp_distance(tiny, -tiny).item() == 2
    assert ulp_distance(torch.tensor([0.0]), torch.tensor([-0.0])).item() == 0
    x = torch.tensor([1.0], dtype=torch.float64)
    assert ulp_distance(x, torch.nextafter(torch.nextafter(x, 2 * x), 2 * x)).item() == 2


def test_relative_error_is_robust_near_zero():
    assert relative_error(torch.zeros(3), torch.zeros(3)).max().item() == 0
    assert relative_error(torch.tensor([1e-30]), torch.tensor([0.0])).item() == 1
    assert abs(relative_error(torch.tensor([1.0]), torch.tensor([1.001])).item() - 0.001 / 2.001) < 1e-7


def test_exactness_is_bitwise_not_numeric():
    """+0 and -0 compare equal as numbers but not bit for bit."""
    policy = TolerancePolicy(rtol=0, atol=0)
    row = compare_tensors(1, "dZ", torch.tensor([0.0, 1.0]), torch.tensor([-0.0, 1.0]), policy)
    assert not row.exact and row.max_abs == 0 and row.passed
    strict = TolerancePolicy(rtol=0, atol=0, require_exact=True)
    assert not compare_tensors(1, "dZ", torch.tensor([0.0]), torch.tensor([-0.0]), strict).passed


def test_tolerance_decides_pass_and_nan_fails():
    policy = TolerancePolicy(rtol=1e-3, atol=0)
    assert compare_tensors(1, "dW", torch.tensor([1.0005]), torch.tensor([1.0]), policy).passed
    assert not compare_tensors(1, "dW", torch.tensor([1.01]), torch.tensor([1.0]), policy).passed
    assert not compare_tensors(1, "dW", torch.tensor([float("nan")]), torch.tensor([1.0]), policy).passed


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.parity", *args], capture_output=True, text=True)


def test_cli_default_network_prints_a_row_per_tensor_and_passes(tmp_path):
    out = tmp_path / "report.json"
    result = run_cli("--device", "cpu", "--json", str(out), "--batch-size", "8")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["1", "dW"] for line in lines)
    assert lines[-1].startswith("PASS: 18/18 tensors bitwise equal")
    report = json.loads(out.read_text())
    assert report["passed"] is True
    assert report["config"]["sizes"] == [784, 256, 128, 10] and report["config"]["batch_size"] == 8
    assert len(report["tensors"]) == 18  # the loss, then Z, A, dZ, dW, db per layer and dA for the hidden ones
    assert set(report["tensors"][0]) >= {"layer", "name", "shape", "max_abs", "max_rel", "max_ulp", "exact"}
    row = next(r for r in report["tensors"] if (r["layer"], r["name"]) == (1, "dW"))
    assert row["shape"] == [256, 784] and row["exact"] is True and row["max_ulp"] == 0


def test_cli_numeric_column_in_float64(tmp_path):
    out = tmp_path / "report.json"
    result = run_cli("--sizes", "10,8,3", "--activation", "tanh", "--loss", "hinge", "--l2", "0.01",
                     "--dtype", "float64", "--numeric", "--device", "cpu", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fd max rel" in result.stdout
    report = json.loads(out.read_text())
    assert [(r["layer"], r["name"]) for r in report["numeric"]] == [(1, "W"), (1, "b"), (2, "W"), (2, "b")]
    assert all(r["passed"] and r["checked"] > 0 for r in report["numeric"])


def test_cli_new_layers_and_losses_are_bitwise(tmp_path):
    """Maxout, dropout on the input and hidden layers, max-norm, Kaiming init and dL/dX in one run."""
    out = tmp_path / "report.json"
    result = run_cli("--sizes", "20,12,8,3", "--activation", "maxout", "--maxout-pieces", "3", "--dropout", "0.5",
                     "--input-dropout", "0.2", "--max-norm", "0.4", "--init", "kaiming_normal", "--input-grad",
                     "--batch-size", "9", "--device", "cpu", "--exact", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("config: 20-12-8-3_maxout3_cross_entropy_drop-0.5_indrop-0.2_maxnorm-0.4_init-kaiming_normal"
            in result.stdout)
    report = json.loads(out.read_text())
    names = [(r["layer"], r["name"]) for r in report["tensors"]]
    assert names[:4] == [(1, "W"), (2, "W"), (3, "W"), ("loss", "loss")]
    assert names[4:6] == [(0, "D"), (0, "dX")] and (1, "D") in names and (2, "D") in names
    assert next(r for r in report["tensors"] if (r["layer"], r["name"]) == (1, "dZ"))["shape"] == [9, 36]
    assert report["config"]["dropout"] == 0.5 and report["config"]["input_grad"] is True
    assert report["exact"] == report["total"] == len(names)


@pytest.mark.parametrize("loss", ["bce", "l1"])
def test_cli_bce_and_l1(loss, capsys):
    args = ["--sizes", "10,6,1", "--loss", loss, "--activation", "tanh", "--device", "cpu", "--exact",
            "--batch-size", "5"]
    assert parity.main(args) == 0
    assert f"_{loss}," in capsys.readouterr().out


def test_cli_batch_of_one_through_a_width_one_layer_is_bitwise(capsys):
    """Issue 6's case: autograd's column-major mm path for a (1, 1) input, matched by the engine."""
    args = ["--dtype", "float32", "--sizes", "4,1,70", "--activation", "identity", "--loss", "mse", "--batch-size", "1",
            "--seed", "0", "--exact", "--device", "cpu"]
    assert parity.main(args) == 0
    assert "PASS: 13/13 tensors bitwise equal" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--dropout", "1"], "dropout: expected a drop probability in [0, 1); got 1.0"),
    (["--input-dropout", "-0.5"], "--input-dropout: expected a drop probability in [0, 1)"),
    (["--activation", "maxout", "--maxout-pieces", "1"], "--maxout-pieces: expected an int k >= 2"),
    (["--maxout-pieces", "3"], "--maxout-pieces: only used with activation='maxout'"),
    (["--max-norm", "0"], "--max-norm: expected a finite norm bound c > 0"),
    (["--init", "he"], "invalid choice: 'he'"),
    (["--sizes", "784,10", "--activation", "tanh"], "activation: the network (784, 10) has no hidden layer"),
])
def test_cli_bad_layer_arguments_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parity.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--sizes", "784,abc,10"], "expected comma-separated positive ints"),
    (["--sizes", "784"], "expected at least an input and an output width"),
    (["--activation", "swish"], "invalid choice: 'swish'"),
    (["--loss", "nll"], "invalid choice: 'nll'"),
    (["--batch-size", "0"], "--batch-size: expected at least 1; got 0"),
    (["--l2", "-1"], "l2: expected a strength >= 0"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
])
def test_cli_bad_arguments_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_cli_cuda_without_a_gpu_exits_2():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_cli("--device", "cuda")
    assert result.returncode == 2 and "no CUDA GPU is visible" in result.stderr


def test_cli_exits_1_when_a_tensor_is_out_of_policy(monkeypatch, capsys):
    """Break the tanh derivative in-process and the command reports FAIL with status 1."""
    import manual_backprop.activations as activations

    monkeypatch.setattr(activations, "tanh_backward", lambda da, a: da * (1 - a))
    status = parity.main(["--sizes", "5,4,3", "--activation", "tanh", "--device", "cpu"])
    assert status == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_exact_flag_requires_bitwise_equality(monkeypatch, capsys):
    """A derivative that is right to a few ulps passes the float32 policy but not --exact."""
    import manual_backprop.activations as activations

    monkeypatch.setattr(activations, "tanh_backward", lambda da, a: da * (1 - a * a))
    args = ["--sizes", "50,40,3", "--activation", "tanh", "--device", "cpu", "--seed", "2"]
    assert parity.main(args) == 0
    assert parity.main(args + ["--exact"]) == 1
    assert "exact required" in capsys.readouterr().out
