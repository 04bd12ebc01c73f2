"""The training script: smoke runs on a small IDX dataset the test writes, checkpoints, resume, bad input."""

import json
import os
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
    write_fake_idx(directory, n_train=256, n_test=64, seed=0)
    return directory


def train(*args, cwd=REPO, env=None):
    return subprocess.run([sys.executable, "-m", "experiments.train_mnist", "--no-progress", "--device", "cpu", *args],
                          capture_output=True, text=True, cwd=cwd, env=env)


def common(fake_data, logdir):
    return ["--dataset", "idx", "--data-dir", str(fake_data), "--logdir", str(logdir)]


def only_run_dir(logdir: Path) -> Path:
    runs = [path for path in logdir.iterdir() if path.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_dry_run_smoke(fake_data, tmp_path):
    result = train(*common(fake_data, tmp_path / "runs"), "--dry-run", "--json", str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["steps"] == 3 and summary["epochs_completed"] == 1
    assert summary["parity"]["checks"] >= 1
    assert summary["parity"]["bitwise_equal_checks"] == summary["parity"]["checks"]
    run_dir = only_run_dir(tmp_path / "runs")
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    # one TensorBoard run per training: the event file in the run directory itself, no writer subdirectories
    assert "checkpoint.pt" in {p.name for p in run_dir.iterdir()} and list(run_dir.glob("events.out.tfevents.*"))
    assert not [p.name for p in run_dir.iterdir() if p.is_dir()]
    assert "test accuracy" in result.stdout and "tensorboard --logdir" in result.stdout
    # The hint runs as pasted: the tensorboard beside this Python (the venv's, not on PATH unless activated).
    program = summary["tensorboard"].split(" --logdir ")[0]
    beside = Path(sys.executable).parent / "tensorboard"
    if beside.is_file():
        assert (REPO / program).resolve() == beside.resolve(), program
    assert f"  watch it: {summary['tensorboard']}" in result.stdout


def test_both_models_learn_and_stay_bitwise_equal(fake_data, tmp_path):
    result = train(*common(fake_data, tmp_path / "runs"), "--epochs", "3", "--batch-size", "16", "--lr", "0.05",
                   "--hidden", "32", "--parity-every", "1", "--val-size", "32", "--json", str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    final = summary["final"]
    assert final["manual"] == final["autograd"]
    assert final["manual"]["test_accuracy"] > 0.5  # ten classes: chance is 0.1
    parity = summary["parity"]
    assert parity["checks"] == summary["steps"] == 3 * 14  # 224 training images / 16
    assert parity["bitwise_equal_checks"] == parity["checks"] and parity["worst_weight_max_abs_diff"] == 0
    assert "accuracy/val" in summary["history"][-1]["manual"]


@pytest.mark.parametrize("extra", [["--no-twin"], ["--hidden", "none", "--loss", "hinge"],
                                   ["--activation", "tanh", "--loss", "mse", "--l2", "0.001", "--dtype", "float64"],
                                   ["--standardize", "pixel", "--limit", "100", "--momentum", "0"]])
def test_other_configurations_run(fake_data, tmp_path, extra):
    result = train(*common(fake_data, tmp_path / "runs"), "--dry-run", *extra, "--json", str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert ("autograd" in summary["final"]) == ("--no-twin" not in extra)


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(fake_data, tmp_path):
    args = [*common(fake_data, tmp_path / "whole"), "--epochs", "2", "--batch-size", "24", "--hidden", "16"]
    assert train(*args).returncode == 0
    whole = load(only_run_dir(tmp_path / "whole") / "checkpoint.pt")

    parts = [*common(fake_data, tmp_path / "parts"), "--epochs", "2", "--batch-size", "24", "--hidden", "16"]
    first = train(*parts, "--max-steps", "7")  # stops in the middle of the first epoch (11 batches per epoch)
    assert first.returncode == 0, first.stderr
    checkpoint = only_run_dir(tmp_path / "parts") / "checkpoint.pt"
    stopped = load(checkpoint)
    assert (stopped["epoch"], stopped["order"]["batch_in_epoch"], stopped["global_step"]) == (0, 7, 7)
    second = train(*parts, "--resume", str(checkpoint))
    assert second.returncode == 0, second.stderr
    resumed = load(checkpoint)
    assert resumed["global_step"] == whole["global_step"] == 22
    for key in ("engine", "twin"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, resumed[key][name]), (key, name)
    for name, state in whole["engine_optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed["engine_optimizer"]["state"][name]["momentum_buffer"])
    assert only_run_dir(tmp_path / "parts") == checkpoint.parent  # resumed in the same run directory


def test_checkpoint_holds_everything_and_loads_weights_only(fake_data, tmp_path):
    assert train(*common(fake_data, tmp_path / "runs"), "--dry-run").returncode == 0
    state = load(only_run_dir(tmp_path / "runs") / "checkpoint.pt")
    assert {"engine", "twin", "engine_optimizer", "twin_optimizer", "engine_schedule", "twin_schedule", "order",
            "torch_rng", "config", "settings"} <= set(state)
    assert {"permutation", "batch_in_epoch", "generator"} <= set(state["order"])
    assert not list(only_run_dir(tmp_path / "runs").glob(".checkpoint.pt.*"))  # no temporary file left


def test_checkpoint_from_a_different_config_is_refused(fake_data, tmp_path):
    assert train(*common(fake_data, tmp_path / "runs"), "--dry-run").returncode == 0
    checkpoint = only_run_dir(tmp_path / "runs") / "checkpoint.pt"
    result = train(*common(fake_data, tmp_path / "runs"), "--dry-run", "--hidden", "64", "--lr", "0.1",
                   "--resume", str(checkpoint))
    assert result.returncode == 1
    assert "checkpoint is from a different config" in result.stderr
    assert "sizes: checkpoint has [784, 256, 128, 10], this run has [784, 64, 10]" in result.stderr
    assert "optimizer.lr: checkpoint has 0.05, this run has 0.1" in result.stderr


def test_truncated_checkpoint_is_refused(fake_data, tmp_path):
    assert train(*common(fake_data, tmp_path / "runs"), "--dry-run").returncode == 0
    checkpoint = only_run_dir(tmp_path / "runs") / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    result = train(*common(fake_data, tmp_path / "runs"), "--dry-run", "--resume", str(checkpoint))
    assert result.returncode == 1
    assert f"--resume {checkpoint}: the file is truncated or not a checkpoint" in result.stderr
    missing = train(*common(fake_data, tmp_path / "runs"), "--resume", str(tmp_path / "nope.pt"))
    assert missing.returncode == 1 and "no such checkpoint file" in missing.stderr


@pytest.mark.parametrize("loss, expected", [
    ("cross_entropy", "the manual model's loss became nan; stopping without updating the weights"),
    # The hinge loss turns NaN margins into 0: the output scores name the overflow.
    ("hinge", "the manual model's output scores Z became non-finite (an overflow: the loss is still"),
])
def test_a_diverging_step_is_refused_before_its_update_with_the_reference_message_on_the_fast_path(
        fake_data, tmp_path, loss, expected):
    """The reference engine (with its twin) and the fast path (--no-twin) refuse the same step with the same words,
    and neither has updated the weights: the last good checkpoint is the step before."""
    lines = {}
    for engine, flags in (("reference", []), ("fast", ["--no-twin"])):
        logdir = tmp_path / engine
        result = train(*common(fake_data, logdir), "--lr", "1e30", "--momentum", "0", "--batch-size", "16",
                       "--loss", loss, "--checkpoint-every", "1", *flags)
        assert result.returncode == 1, result.stderr
        lines[engine] = [line.split(" The last good checkpoint is")[0] for line in result.stderr.splitlines()
                         if "stopping without updating" in line]  # (the paths differ)
        assert lines[engine] and expected in lines[engine][0], result.stderr
        state = load(only_run_dir(logdir) / "checkpoint.pt")
        assert all(torch.isfinite(tensor).all() for tensor in state["engine"].values())
    assert lines["fast"] == lines["reference"]


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(fake_data, tmp_path):
    result = train(*common(fake_data, tmp_path / "runs"), "--lr", "1e30", "--momentum", "0", "--batch-size", "16",
                   "--checkpoint-every", "1")
    assert result.returncode == 1
    assert "loss became nan" in result.stderr.lower() or "loss became inf" in result.stderr.lower()
    assert "The last good checkpoint is" in result.stderr and "Try a smaller --lr" in result.stderr
    checkpoint = only_run_dir(tmp_path / "runs") / "checkpoint.pt"
    state = load(checkpoint)
    assert all(torch.isfinite(tensor).all() for tensor in state["engine"].values())
    assert state["global_step"] >= 1


@pytest.mark.parametrize("args, status, message", [
    (["--dataset", "cifar"], 2, "invalid choice: 'cifar'"),
    (["--standardize", "yes"], 2, "invalid choice: 'yes'"),
    (["--batch-size", "0"], 2, "--batch-size: expected an integer >= 1 or 'full'; got 0"),
    (["--batch-size", "half"], 2, "expected a number of images or 'full'; got 'half'"),
    (["--batch-size", "full", "--limit", "0"], 2, "--limit: expected a number of images >= 1; got 0"),
    (["--lr", "nan"], 2, "--lr: expected a finite learning rate > 0; got nan"),
    (["--momentum", "1"], 2, "--momentum: expected 0 <= momentum < 1; got 1.0"),
    (["--optimizer", "adam", "--betas", "0.9,1"], 2, "--betas[1]: expected 0 <= betas[1] < 1; got 1.0"),
    (["--optimizer", "adam", "--betas", "0.9"], 2, "expected two numbers such as 0.9,0.999"),
    (["--optimizer", "rmsprop", "--eps", "0"], 2, "--eps: expected eps > 0; got 0.0"),
    (["--optimizer", "nesterov", "--momentum", "0"], 2, "--momentum: nesterov needs momentum > 0"),
    (["--optimizer", "adam", "--momentum", "0.9"], 2, "--momentum: adam has no momentum hyperparameter"),
    (["--lr-schedule", "step", "--lr-step-size", "0"], 2, "--lr-step-size: expected >= 1 step; got 0"),
    (["--lr-schedule", "multistep"], 2, "--lr-milestones: a multistep schedule needs at least one milestone"),
    (["--lr-schedule", "exponential", "--lr-gamma", "2"], 2, "--lr-gamma: a exponential schedule needs 0 < gamma <= 1"),
    (["--lr-schedule", "cosine", "--lr-eta-min", "1"], 2, "--lr-eta-min: a cosine schedule decays from lr=0.05"),
    (["--warmup-steps", "-3"], 2, "--warmup-steps: expected >= 0; got -3"),
    (["--limit", "0"], 2, "--limit: expected a number of images >= 1; got 0"),
    (["--lr", "-1"], 2, "--lr: expected a finite learning rate > 0"),
    (["--hidden", "256,x"], 2, "expected comma-separated positive ints"),
])
def test_bad_arguments(fake_data, tmp_path, args, status, message, capsys):
    """In-process (argument errors need no subprocess): exit status 2 and a message naming the flag."""
    from experiments.train_mnist import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--no-progress", "--device", "cpu", *common(fake_data, tmp_path / "runs"), *args])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == status, stderr
    assert message in stderr


def test_impossible_limit_and_batch_size(fake_data, tmp_path):
    too_many = train(*common(fake_data, tmp_path / "runs"), "--limit", "100000", "--dry-run")
    assert too_many.returncode == 1 and "--limit" in too_many.stderr and "100000" in too_many.stderr
    big_batch = train(*common(fake_data, tmp_path / "runs"), "--batch-size", "5000", "--dry-run")
    assert big_batch.returncode == 1
    assert "--batch-size: 5000 is larger than the 256 training images" in big_batch.stderr


def test_missing_data_directory(tmp_path):
    result = train("--dataset", "idx", "--data-dir", str(tmp_path / "absent"), "--logdir", str(tmp_path / "runs"),
                   "--dry-run")
    assert result.returncode == 1
    assert str(tmp_path / "absent") in result.stderr


def test_unwritable_or_invalid_log_directory(fake_data, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    result = train("--dataset", "idx", "--data-dir", str(fake_data), "--logdir", str(a_file), "--dry-run")
    assert result.returncode == 2 and f"--logdir {a_file}: exists and is not a directory" in result.stderr
    if os.geteuid() == 0:
        return  # root writes anywhere; the read-only case cannot be shown here
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    result = train("--dataset", "idx", "--data-dir", str(fake_data), "--logdir", str(read_only), "--dry-run")
    assert result.returncode == 2 and "not writable" in result.stderr


def test_unknown_dataset_from_the_library():
    from mnist_data import DatasetError, load_splits

    with pytest.raises(DatasetError, match="dataset: expected one of mnist, fashion-mnist, idx; got 'cifar'"):
        load_splits("cifar")


def test_empty_data_dir_is_refused(tmp_path):
    result = train("--dataset", "idx", "--data-dir", "", "--logdir", str(tmp_path / "runs"), "--dry-run")
    assert result.returncode == 1
    assert "--data-dir: expected a directory path" in result.stderr and "got ''" in result.stderr


def test_standardize_help_shows_the_modes_and_the_default_once():
    result = train("--help")
    assert result.returncode == 0
    entry = result.stdout.split("\n  --standardize {none,global,pixel}", 1)[1].split("\n  --val-size")[0]
    entry = " ".join(entry.split())
    assert entry.count("default") == 1 and "(default: none)" in entry, entry


def test_checkpoint_with_other_data_settings_is_refused(fake_data, tmp_path):
    assert train(*common(fake_data, tmp_path / "runs"), "--dry-run").returncode == 0
    checkpoint = only_run_dir(tmp_path / "runs") / "checkpoint.pt"
    result = train(*common(fake_data, tmp_path / "runs"), "--dry-run", "--standardize", "global", "--limit", "200",
                   "--resume", str(checkpoint))
    assert result.returncode == 1
    assert "standardize: checkpoint has 'none', this run has 'global'" in result.stderr
    assert "train_size: checkpoint has 256, this run has 200" in result.stderr


def test_summary_prints_the_verdict_and_the_data_parallel_distance():
    from side_by_side.run_report import print_summary

    summary = {"interrupted": None, "final": {"manual": {"test_accuracy": 0.5, "test_loss": 1.0}},
               "parity": {"verdict": "PASS: 2/2 parity checks bitwise equal", "checks": 2, "bitwise_equal_checks": 2,
                          "checks_out_of_policy": 0, "worst_weight_max_abs_diff": 0.0, "worst_per_tensor": {}},
               "data_parallel": {"vs_single_process": {"checks": 2, "bitwise_checks": 0, "worst": {
                   "W1": {"max_abs_in_eps_of_max": 3.0}, "W2": {"max_abs_in_eps_of_max": 7.5}}}},
               "steps": 4, "seconds": 1.0, "run_dir": "r", "checkpoint": "c", "tensorboard": "tensorboard --logdir x"}
    lines = []
    print_summary(summary, lines.append)
    assert "  verdict: PASS: 2/2 parity checks bitwise equal" in lines
    assert ("  data-parallel vs one process on the global batch: 0/2 checks bitwise equal; worst W2: 7.5 eps of its "
            "largest entry") in lines
