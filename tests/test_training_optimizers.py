"""Side-by-side training with every optimizer and schedule: parity at every step, and bitwise resume.

In-process runs of ``experiments.train_mnist.main`` on a small written IDX dataset (fast: no interpreter start).
"""

import json
from pathlib import Path

import pytest
import torch
from fake_idx import write_fake_idx

from experiments.train_mnist import main

OPTIMIZER_ARGS = {
    "sgd": ["--optimizer", "sgd", "--lr", "0.1"],
    "momentum": ["--optimizer", "momentum", "--weight-decay", "1e-3", "--lr-schedule", "step", "--lr-step-size", "5",
                 "--lr-gamma", "0.5"],
    "nesterov": ["--optimizer", "nesterov", "--lr-schedule", "cosine", "--warmup-steps", "4"],
    "adagrad": ["--optimizer", "adagrad", "--lr-decay", "0.01", "--lr-schedule", "exponential", "--lr-gamma", "0.97"],
    "rmsprop": ["--optimizer", "rmsprop", "--lr", "1e-3", "--momentum", "0.5", "--centered",
                "--lr-schedule", "multistep", "--lr-milestones", "3,9"],
    "adam": ["--optimizer", "adam", "--amsgrad", "--lr-schedule", "cosine", "--lr-eta-min", "1e-5"],
    "adamw": ["--optimizer", "adamw", "--weight-decay", "0.05", "--no-decay-biases", "--warmup-steps", "3"],
}


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fake_idx_opt")
    write_fake_idx(directory, n_train=96, n_test=32, seed=1)
    return directory


def run(fake_data, logdir, *args):
    status = main(["--no-progress", "--device", "cpu", "--dataset", "idx", "--data-dir", str(fake_data),
                   "--logdir", str(logdir), "--hidden", "12", "--batch-size", "16", *args])
    runs = [path for path in Path(logdir).iterdir() if path.is_dir()]
    assert len(runs) == 1
    return status, runs[0]


@pytest.mark.parametrize("name", list(OPTIMIZER_ARGS))
def test_every_step_bitwise_with_each_optimizer_and_schedule(fake_data, tmp_path, name):
    status, run_dir = run(fake_data, tmp_path / "runs", "--epochs", "2", "--parity-every", "1",
                          *OPTIMIZER_ARGS[name])
    assert status == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    parity = summary["parity"]
    assert parity["checks"] == summary["steps"] == 12
    assert parity["bitwise_equal_checks"] == parity["checks"], parity["worst_per_tensor"]
    compared = set(parity["worst_per_tensor"])
    assert "lr" in compared and "layer1.W" in compared
    state_keys = {"sgd": set(), "momentum": {"momentum_buffer"}, "nesterov": {"momentum_buffer"},
                  "adagrad": {"sum", "step"}, "rmsprop": {"square_avg", "grad_avg", "momentum_buffer", "step"},
                  "adam": {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"},
                  "adamw": {"exp_avg", "exp_avg_sq", "step"}}[name]
    assert {f"layer2.{key}(b)" for key in state_keys} <= compared
    assert summary["optimizer"]["name"] == name


@pytest.mark.parametrize("name", ["momentum", "adam", "rmsprop", "nesterov"])
def test_resume_is_bitwise_identical_for_each_optimizer(fake_data, tmp_path, name):
    args = ["--epochs", "2", *OPTIMIZER_ARGS[name]]
    assert run(fake_data, tmp_path / "whole", *args)[0] == 0
    whole_dir = next((tmp_path / "whole").iterdir())
    whole = torch.load(whole_dir / "checkpoint.pt", weights_only=True)

    status, parts_dir = run(fake_data, tmp_path / "parts", *args, "--max-steps", "5")
    assert status == 0
    status = main(["--no-progress", "--device", "cpu", "--dataset", "idx", "--data-dir", str(fake_data),
                   "--hidden", "12", "--batch-size", "16", *args, "--resume", str(parts_dir / "checkpoint.pt")])
    assert status == 0
    resumed = torch.load(parts_dir / "checkpoint.pt", weights_only=True)
    assert resumed["global_step"] == whole["global_step"] == 12
    for key in ("engine", "twin"):
        for tensor_name, tensor in whole[key].items():
            assert torch.equal(tensor, resumed[key][tensor_name]), (key, tensor_name)
    for param, entries in whole["engine_optimizer"]["state"].items():
        for key, tensor in entries.items():
            assert torch.equal(tensor, resumed["engine_optimizer"]["state"][param][key]), (param, key)
    assert whole["engine_schedule"] == resumed["engine_schedule"]
    assert whole["engine_optimizer"]["lr"] == resumed["engine_optimizer"]["lr"]


def test_full_batch_gradient_descent(fake_data, tmp_path):
    status, run_dir = run(fake_data, tmp_path / "runs", "--epochs", "3", "--optimizer", "sgd", "--lr", "0.5",
                          "--batch-size", "full", "--parity-every", "1")
    assert status == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["run"]["batch_size"] == 96
    assert summary["parity"]["bitwise_equal_checks"] == 3


def test_cosine_default_length_is_the_whole_run(fake_data, tmp_path):
    status, run_dir = run(fake_data, tmp_path / "runs", "--epochs", "2", "--lr-schedule", "cosine",
                          "--warmup-steps", "2")
    assert status == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["schedule"]["t_max"] == 12 - 2
    assert summary["final_lr"] == 0.0  # cosine to eta_min = 0 at the last step


def test_hinge_divergence_is_caught_by_the_weights_check(fake_data, tmp_path, capsys):
    """The hinge loss stays finite (0) while its margins overflow; the scores/gradients check stops the run anyway,
    and no checkpoint with non-finite values is written."""
    status = main(["--no-progress", "--device", "cpu", "--dataset", "idx", "--data-dir", str(fake_data),
                   "--logdir", str(tmp_path / "runs"), "--hidden", "12", "--batch-size", "16", "--loss", "hinge",
                   "--optimizer", "sgd", "--lr", "1e30", "--epochs", "20", "--checkpoint-every", "1"])
    stderr = capsys.readouterr().err
    assert status == 1
    assert "output scores Z became non-finite (an overflow: the loss is still 0.0)" in stderr
    assert "Try a smaller --lr" in stderr
    for checkpoint in (tmp_path / "runs").glob("*/checkpoint.pt"):
        state = torch.load(checkpoint, weights_only=True)
        assert all(torch.isfinite(tensor).all() for tensor in state["engine"].values())


REGULARISED = ["--dropout", "0.3", "--input-dropout", "0.2", "--max-norm", "1.5", "--optimizer", "adam"]


def test_dropout_and_max_norm_stay_bitwise_every_step(fake_data, tmp_path):
    status, run_dir = run(fake_data, tmp_path / "runs", "--epochs", "2", "--parity-every", "1", *REGULARISED)
    assert status == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["parity"]["bitwise_equal_checks"] == summary["parity"]["checks"] == 12
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    for layer in (1, 2):  # max-norm held: every unit's incoming weights within the bound
        assert torch.linalg.vector_norm(state["engine"][f"W{layer}"], dim=1).max() <= 1.5
    # and the regularisers did something: the same run without them ends elsewhere
    status, plain_dir = run(fake_data, tmp_path / "plain", "--epochs", "2", "--optimizer", "adam")
    plain = torch.load(plain_dir / "checkpoint.pt", weights_only=True)
    assert not torch.equal(plain["engine"]["W1"], state["engine"]["W1"])


def test_maxout_trains_bitwise(fake_data, tmp_path):
    status, run_dir = run(fake_data, tmp_path / "runs", "--epochs", "1", "--parity-every", "1",
                          "--activation", "maxout", "--maxout-pieces", "3", "--dropout", "0.2")
    assert status == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["parity"]["bitwise_equal_checks"] == summary["parity"]["checks"] == 6


def test_resume_with_dropout_is_bitwise_identical(fake_data, tmp_path):
    """The dropout masks come from torch's default generator, whose state the checkpoint holds."""
    args = ["--epochs", "2", *REGULARISED]
    assert run(fake_data, tmp_path / "whole", *args)[0] == 0
    whole = torch.load(next((tmp_path / "whole").iterdir()) / "checkpoint.pt", weights_only=True)
    status, parts_dir = run(fake_data, tmp_path / "parts", *args, "--max-steps", "7")
    assert status == 0
    torch.manual_seed(12345)  # a resumed process starts from another generator state; the checkpoint restores it
    status = main(["--no-progress", "--device", "cpu", "--dataset", "idx", "--data-dir", str(fake_data),
                   "--hidden", "12", "--batch-size", "16", *args, "--resume", str(parts_dir / "checkpoint.pt")])
    assert status == 0
    resumed = torch.load(parts_dir / "checkpoint.pt", weights_only=True)
    for key in ("engine", "twin"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, resumed[key][name]), (key, name)


def test_record_preset_expands_and_later_flags_override(fake_data, tmp_path, capsys):
    status, run_dir = run(fake_data, tmp_path / "runs", "--preset", "record", "--hidden", "16", "--batch-size", "16",
                          "--dry-run", "--warmup-steps", "1")
    assert status == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["dropout"] == 0.4 and summary["config"]["input_dropout"] == 0.2
    assert summary["config"]["max_norm"] == 3.5
    assert summary["config"]["sizes"] == [784, 16, 10]  # overridden
    assert summary["optimizer"]["name"] == "nesterov" and summary["optimizer"]["lr"] == 0.05
    assert summary["optimizer"]["momentum"] == 0.9
    assert summary["schedule"]["name"] == "cosine" and summary["schedule"]["warmup_steps"] == 1
    assert "--preset record" in summary["run"]["command"]
    with pytest.raises(SystemExit):
        main(["--preset", "fastest"])
    assert "--preset: expected one of record, record-long; got 'fastest'" in capsys.readouterr().err
    status, run_dir = run(fake_data, tmp_path / "long", "--preset", "record-long", "--hidden", "16",
                          "--batch-size", "16", "--dry-run", "--warmup-steps", "1")
    assert status == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["dropout"] == 0.5 and summary["config"]["input_dropout"] == 0.2
    assert summary["optimizer"]["name"] == "momentum" and "--preset record-long" in summary["run"]["command"]


FAST_PATH_RUNS = {name: [*args] for name, args in OPTIMIZER_ARGS.items()}
FAST_PATH_RUNS["momentum-cosine"] = ["--optimizer", "momentum", "--lr-schedule", "cosine"]
FAST_PATH_RUNS["adam-dropout-max-norm"] = REGULARISED
FAST_PATH_RUNS["record-like"] = ["--dropout", "0.3", "--input-dropout", "0.1", "--max-norm", "1.5",
                                 "--optimizer", "momentum", "--lr", "0.05", "--lr-schedule", "cosine",
                                 "--warmup-steps", "3"]
FAST_PATH_RUNS["maxout-bce-dropout"] = ["--activation", "maxout", "--maxout-pieces", "3", "--loss", "bce",
                                        "--dropout", "0.2", "--optimizer", "rmsprop", "--lr", "1e-3"]
FAST_PATH_RUNS["l1-nesterov"] = ["--loss", "l1", "--optimizer", "nesterov", "--lr", "0.05"]


@pytest.mark.parametrize("name", list(FAST_PATH_RUNS))
def test_engine_alone_trains_on_the_fast_path_with_the_same_bits(fake_data, tmp_path, capsys, name):
    """--no-twin takes manual_backprop/fast.py for every optimizer, schedule, dropout and max-norm; its weights and
    every optimizer-state tensor equal the side-by-side run's engine's, and a resumed fast run continues bitwise."""
    args = ["--epochs", "2", *FAST_PATH_RUNS[name]]
    assert run(fake_data, tmp_path / "pair", *args)[0] == 0
    status, alone_dir = run(fake_data, tmp_path / "alone", *args, "--no-twin")
    assert status == 0
    assert "engine: fast path (manual_backprop/fast.py)" in capsys.readouterr().out
    pair = torch.load(next((tmp_path / "pair").iterdir()) / "checkpoint.pt", weights_only=True)
    alone = torch.load(alone_dir / "checkpoint.pt", weights_only=True)

    def assert_same_engine(a, b):
        for param, tensor in a["engine"].items():
            assert torch.equal(tensor, b["engine"][param]), param
        assert a["engine_optimizer"]["lr"] == b["engine_optimizer"]["lr"]
        for param, entries in a["engine_optimizer"]["state"].items():
            assert sorted(entries) == sorted(b["engine_optimizer"]["state"][param]), param
            for key, tensor in entries.items():
                assert torch.equal(tensor, b["engine_optimizer"]["state"][param][key]), (param, key)

    assert pair["global_step"] == alone["global_step"] == 12
    assert_same_engine(pair, alone)
    # resuming a fast-path run continues bitwise too
    status, parts_dir = run(fake_data, tmp_path / "parts", *args, "--no-twin", "--max-steps", "5")
    assert status == 0
    assert main(["--no-progress", "--device", "cpu", "--dataset", "idx", "--data-dir", str(fake_data),
                 "--hidden", "12", "--batch-size", "16", *args, "--no-twin",
                 "--resume", str(parts_dir / "checkpoint.pt")]) == 0
    resumed = torch.load(parts_dir / "checkpoint.pt", weights_only=True)
    assert resumed["global_step"] == 12
    assert_same_engine(alone, resumed)
