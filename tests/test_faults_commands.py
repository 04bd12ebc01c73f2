"""Faults of issue 19 across every command (train_mnist, parity, labs, the benchmarks), in test_faults.py's style:
each reproduced, and refused clearly (exit 2 for bad arguments, 1 for a failed run, no traceback), with nothing lost.

All in-process ``main([...])`` calls on a tiny IDX dataset.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fake_idx import write_fake_idx


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fake_idx")
    write_fake_idx(directory, n_train=64, n_test=32, seed=0)
    return directory


def cli(fake_data, *args) -> list[str]:
    return ["--no-progress", "--device", "cpu", "--dataset", "idx", "--data-dir", str(fake_data), "--hidden", "8",
            "--batch-size", "8", *args]


def call(main, argv, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``main(argv)``; argparse's exits count too."""
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


def train(argv, capsys):
    from experiments.train_mnist import main

    return call(main, argv, capsys)


@pytest.fixture(scope="module")
def finished_run(fake_data, tmp_path_factory):
    """A constant-lr run of 2 epochs (16 steps), finished, with its checkpoint and summary."""
    from experiments.train_mnist import main

    logdir = tmp_path_factory.mktemp("finished")
    assert main(cli(fake_data, "--logdir", str(logdir), "--epochs", "2")) == 0
    (run_dir,) = [path for path in logdir.iterdir() if path.is_dir()]
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "runs" / finished_run.name
    shutil.copytree(finished_run, copy)
    return copy


# --- train_mnist: nothing lost ------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["checkpoint", "input", "other_summary"])
def test_json_never_overwrites_a_checkpoint_an_input_or_another_runs_summary(fake_data, run_copy, tmp_path, capsys,
                                                                            target):
    path = {"checkpoint": run_copy / "checkpoint.pt", "input": fake_data / "train-labels-idx1-ubyte",
            "other_summary": run_copy / "summary.json"}[target]
    before = path.read_bytes()
    status, out, err = train(cli(fake_data, "--logdir", str(tmp_path / "new"), "--dry-run", "--json", str(path)),
                             capsys)
    assert status == 2 and f"--json {path}: " in err and "refusing to overwrite it" in err, err
    assert path.read_bytes() == before
    assert "epoch" not in out


def test_a_resumed_run_may_write_its_own_summary_as_json(fake_data, run_copy, capsys):
    own = run_copy / "summary.json"
    status, _, err = train(cli(fake_data, "--epochs", "3", "--resume", str(run_copy / "checkpoint.pt"),
                               "--json", str(own)), capsys)
    assert status == 0, err
    assert json.loads(own.read_text())["steps"] == 24


# --- train_mnist: resume does what the user means -----------------------------------------------------------------

def test_more_epochs_continue_a_constant_lr_run(fake_data, run_copy, capsys):
    status, out, err = train(cli(fake_data, "--epochs", "3", "--resume", str(run_copy / "checkpoint.pt")), capsys)
    assert status == 0, err
    assert "epoch 3/3" in out


def test_more_epochs_of_a_cosine_run_say_where_t_max_came_from(fake_data, tmp_path, capsys):
    logdir = tmp_path / "runs"
    assert train(cli(fake_data, "--logdir", str(logdir), "--epochs", "1", "--lr-schedule", "cosine"), capsys)[0] == 0
    (run_dir,) = list(logdir.iterdir())
    status, _, err = train(cli(fake_data, "--epochs", "2", "--lr-schedule", "cosine", "--resume",
                               str(run_dir / "checkpoint.pt")), capsys)
    assert status == 1
    assert "half period (t_max) is 8 steps in the checkpoint and 16 in this run" in err and "--lr-t-max 8" in err


def test_max_steps_at_or_below_the_checkpoints_step_changes_nothing(fake_data, run_copy, capsys):
    files = {path: path.read_bytes() for path in run_copy.rglob("*") if path.is_file()}
    status, out, err = train(cli(fake_data, "--epochs", "3", "--max-steps", "5", "--resume",
                                 str(run_copy / "checkpoint.pt")), capsys)
    assert status == 0, err
    assert "nothing to train: the checkpoint" in out and "at step 16, at or past --max-steps 5" in out
    assert {path: path.read_bytes() for path in run_copy.rglob("*") if path.is_file()} == files


def test_fewer_epochs_than_the_checkpoint_completed_say_so(fake_data, run_copy, capsys):
    status, _, err = train(cli(fake_data, "--epochs", "1", "--resume", str(run_copy / "checkpoint.pt")), capsys)
    assert status == 1
    assert "the checkpoint has completed 2 epochs, more than this run's --epochs 1; give --epochs 2 or more" in err


def test_another_schedule_on_resume_names_the_schedules_only(fake_data, run_copy, capsys):
    status, _, err = train(cli(fake_data, "--epochs", "3", "--lr-schedule", "cosine", "--resume",
                               str(run_copy / "checkpoint.pt")), capsys)
    assert status == 1
    assert "schedule.name: checkpoint has 'constant', this run has 'cosine'" in err and "None" not in err, err


# --- train_mnist: every flag acts or is refused -------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--lr-milestones", "3"], "--lr-milestones: the constant schedule does not use it"),
    (["--lr-schedule", "step", "--lr-t-max", "5"], "--lr-t-max: the step schedule does not use it"),
    (["--lr-schedule", "cosine", "--lr-gamma", "0.5"], "--lr-gamma: the cosine schedule does not use it"),
    (["--warmup-start-factor", "0.5"], "--warmup-start-factor: there is no warm-up to start"),
    (["--no-decay-biases"], "--no-decay-biases: momentum runs without weight decay here"),
    (["--warmup-steps", "500"], "--warmup-steps 500: the run has 24 steps in all, so the warm-up never reaches"),
    (["--epochs", "0"], "--epochs: expected an integer >= 1; got 0"),
    (["--epochs", "-3"], "--epochs: expected an integer >= 1; got -3"),
    (["--max-steps=-5"], "--max-steps: expected an integer >= 1; got -5"),
    (["--seed", str(2 ** 64)], "--seed: expected 0 <= seed < 2**64"),
    (["--mse-convention", "mean"], "--mse-convention: only the mse loss has one"),
    (["--no-twin", "--parity-every", "3"], "--parity-every: --no-twin trains the engine alone"),
    (["--maxout-pieces", "2"], "--maxout-pieces: only --activation maxout uses it"),
    (["--lr-schedule", "step"], "--lr-step-size 1000: the run has 24 steps after its warm-up, so the step schedule "
                                "never decays"),
    (["--lr-schedule", "multistep", "--lr-milestones", "5,30"], "--lr-milestones: 30 lie past the run's 24 steps"),
])
def test_flags_that_would_change_nothing_or_cannot_work_are_refused(fake_data, tmp_path, capsys, args, message):
    status, out, err = train(cli(fake_data, "--logdir", str(tmp_path / "runs"), "--epochs", "3", *args), capsys)
    assert status == 2 and message in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_presets_own_momentum_is_left_out_for_adam_not_blamed_on_the_user(fake_data, tmp_path, capsys):
    status, _, err = train(cli(fake_data, "--logdir", str(tmp_path / "runs"), "--preset", "record", "--hidden", "16",
                               "--batch-size", "16", "--dry-run", "--optimizer", "adam", "--lr", "0.001"), capsys)
    assert status == 0, err
    assert "note: --preset record's --momentum 0.9 is left out: adam has no momentum hyperparameter" in err
    assert "note: --warmup-steps 500: the run has 3 steps in all" in err  # the preset's warm-up: a note
    (run_dir,) = list((tmp_path / "runs").iterdir())
    notes = json.loads((run_dir / "summary.json").read_text())["run"]["notes"]
    assert len(notes) == 2


def test_a_users_momentum_for_adam_is_still_refused(fake_data, tmp_path, capsys):
    status, _, err = train(cli(fake_data, "--logdir", str(tmp_path / "runs"), "--optimizer", "adam",
                               "--momentum", "0.9"), capsys)
    assert status == 2 and "--momentum: adam has no momentum hyperparameter" in err


def test_a_second_ctrl_c_leaves_a_summary_that_describes_the_last_checkpoint(fake_data, tmp_path, capsys,
                                                                            monkeypatch):
    """A second Ctrl-C raises KeyboardInterrupt mid-step: the step in flight is dropped and summary.json describes
    the last checkpoint (step 4 here), not a step the checkpoint does not hold."""
    import torch

    from side_by_side.run import SideBySideRun

    real_step = SideBySideRun.step

    def step(run, index, logger):
        if run.global_step == 5:
            raise KeyboardInterrupt
        return real_step(run, index, logger)

    monkeypatch.setattr(SideBySideRun, "step", step)
    status, out, err = train(cli(fake_data, "--logdir", str(tmp_path / "runs"), "--epochs", "2",
                                 "--checkpoint-every", "2"), capsys)
    assert status == 130, err
    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert summary["steps"] == checkpoint["global_step"] == 4 and summary["interrupted"] == "SIGINT"
    assert "stopped at once by a second signal" in out


# --- train_mnist: a NaN in evaluation fails the run ---------------------------------------------------------------

def test_a_nan_test_loss_fails_the_run_and_keeps_the_last_good_checkpoint(fake_data, tmp_path, capsys):
    status, _, err = train(cli(fake_data, "--logdir", str(tmp_path / "runs"), "--lr", "1e30", "--limit", "8",
                               "--epochs", "3"), capsys)
    assert status == 1
    assert "error: the manual model's loss/test is nan at the end of epoch 1 (step 1); the run stops" in err
    assert "Try a smaller --lr" in err


def test_an_overflowing_l2_names_l2_not_the_learning_rate(fake_data, tmp_path, capsys):
    status, _, err = train(cli(fake_data, "--logdir", str(tmp_path / "runs"), "--l2", "1e36", "--epochs", "1"),
                           capsys)
    assert status == 1 and "try a smaller --l2" in err and "smaller --lr" not in err, err


# --- the shared path policy ---------------------------------------------------------------------------------------

def test_paths_of_the_wrong_kind_are_named_for_what_they_are(tmp_path):
    from experiments import arguments

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"--json .*pipe: is a FIFO \(named pipe\); expected a file path"):
        arguments.output_file(fifo, "--json")
    with pytest.raises(ValueError, match=r"--resume .*: is a directory, not a checkpoint file"):
        arguments.input_file(tmp_path, "--resume", "checkpoint file")
    with pytest.raises(ValueError, match=r"--resume .*pipe: is a FIFO \(named pipe\), not a checkpoint file"):
        arguments.input_file(fifo, "--resume", "checkpoint file")
    with pytest.raises(ValueError, match=r"--resume .*nope: no such checkpoint file"):
        arguments.input_file(tmp_path / "nope", "--resume", "checkpoint file")
    old = tmp_path / "old.json"
    old.write_text('{"a": 1}')
    assert arguments.output_file(old, "--json") == old  # a JSON file of the user's may be replaced
    arguments.write_output(old, '{"b": 2}', "--json")
    assert json.loads(old.read_text()) == {"b": 2}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["old.json", "pipe"]  # no temporary file left


# --- parity -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--optimizer", "adam", "--lr=-1"], "--lr, --optimizer: the optimizer and schedule flags act only with --steps"),
    (["--seed", str(2 ** 64)], "--seed: expected 0 <= seed < 2**64"),
    (["--steps", "2", "--optimizer", "adagrad", "--eps-placement", "course"],
     "--eps-placement course: torch.optim (the twin) has only torch's placement"),
    (["--sizes", "784,100000000000,10"], "--sizes 784,100000000000,10: the run needs about"),
    (["--batch-size", str(2 ** 62)], f"--batch-size {2 ** 62}: the run needs about"),
    (["--steps", "-1"], "--steps: expected an integer >= 0; got -1"),
    (["--leaky-slope", "0.3"], "--leaky-slope: only --activation leaky_relu uses it; this run's activation is relu"),
    (["--mse-convention", "mean"], "--mse-convention: only the mse loss has one"),
    (["--steps", "2", "--warmup-steps", "10"], "--warmup-steps 10: the run has 2 steps in all"),
])
def test_parity_refuses_what_it_would_not_check(capsys, args, message):
    from experiments.parity import main

    status, out, err = call(main, ["--device", "cpu", "--sizes", "784,8,10", *args], capsys)
    assert status == 2 and message in err, err
    assert "PASS" not in out


def test_parity_json_never_overwrites_a_non_json_file(tmp_path, capsys):
    from experiments.parity import main

    target = tmp_path / "weights.pt"
    target.write_bytes(b"PK\x03\x04 not json")
    status, out, err = call(main, ["--device", "cpu", "--sizes", "784,8,10", "--json", str(target)], capsys)
    assert status == 2 and "refusing to overwrite it" in err
    assert target.read_bytes() == b"PK\x03\x04 not json" and "PASS" not in out


# --- labs ---------------------------------------------------------------------------------------------------------

def test_a_lab_on_an_unusable_data_dir_fails_with_why(tmp_path, capsys):
    from experiments.labs.__main__ import main

    status, _, err = call(main, ["softmax_classifier", "--fast", "--no-tensorboard", "--dataset", "idx",
                                 "--data-dir", str(tmp_path)], capsys)
    assert status == 1 and f"softmax_classifier: failed: data directory {tmp_path}" in err, err


def test_a_lab_with_an_unwritable_logdir_is_refused_before_it_runs(tmp_path, capsys):
    from experiments.labs.__main__ import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    status, _, err = call(main, ["tensors", "--logdir", str(blocker / "labs")], capsys)
    assert status == 2 and f"--logdir {blocker / 'labs'}: cannot create the directory" in err, err


def test_a_lab_that_checked_nothing_does_not_pass():
    from experiments.labs.common import Report

    report = Report("empty")
    assert not report.passed and "FAILED: nothing was checked" in report.table()


def test_a_lab_count_of_zero_is_refused(capsys):
    from experiments.labs.__main__ import main

    status, _, err = call(main, ["gradient_descent", "--max-steps", "0", "--no-tensorboard"], capsys)
    assert status == 2 and "--max-steps: expected a positive integer" in err


def test_labs_all_reports_a_failing_lab_and_goes_on(tmp_path, capsys, monkeypatch):
    import experiments.labs.__main__ as runner
    from experiments.labs.common import all_labs

    labs = dict(list(all_labs().items())[:2])
    first = next(iter(labs.values()))

    def broken(args, report):
        raise OSError("the disk is gone")

    labs[first.name] = type(first)(**{**first.__dict__, "run": broken})
    status = runner.run_all(labs, ["--fast", "--no-tensorboard"])
    out = capsys.readouterr().out
    assert status == 1
    assert f"{first.name}: failed: the disk is gone" in out and "1/2 labs passed" in out


def test_ctrl_c_in_labs_all_exits_130_without_a_traceback(capsys):
    import experiments.labs.__main__ as runner
    from experiments.labs.common import all_labs

    labs = dict(list(all_labs().items())[:2])
    first = next(iter(labs.values()))

    def interrupted(args, report):
        raise KeyboardInterrupt

    labs[first.name] = type(first)(**{**first.__dict__, "run": interrupted})
    assert runner.run_all(labs, ["--fast", "--no-tensorboard"]) == 130
    assert f"interrupted (Ctrl-C) during {first.name}" in capsys.readouterr().err


# --- the benchmarks -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module, args, message", [
    ("benchmark", ["--threads", "0"], "--threads: expected an integer >= 1; got 0"),
    ("benchmark", ["--min-seconds", "inf"], "--min-seconds: expected a finite number; got inf"),
    ("benchmark", ["--json", "{tmp}"], "--json {tmp}: is a directory; expected a file path"),
    ("benchmark", ["--sizes", "784,9999999999,10"], "--sizes 784,9999999999,10: the run needs about"),
    ("benchmark", ["--l2", "nan"], "--l2: expected a finite number; got nan"),
    ("benchmark_phases", ["--min-seconds", "inf"], "--min-seconds: expected a finite number; got inf"),
    ("benchmark_phases", ["--json", "{tmp}/missing/x.json"], "the directory {tmp}/missing does not exist"),
    ("benchmark_dp", ["--min-seconds", "nan"], "--min-seconds: expected a finite number; got nan"),
    ("benchmark_dp", ["--json", "{tmp}"], "--json {tmp}: is a directory; expected a file path"),
])
def test_benchmarks_refuse_bad_arguments_before_measuring(tmp_path, capsys, module, args, message):
    import importlib

    main = importlib.import_module(f"experiments.{module}").main
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    status, out, err = call(main, ["--batch-sizes", "4", "--repeats", "1", *args], capsys)
    assert status == 2 and message.replace("{tmp}", str(tmp_path)) in err, err
    assert "done" not in err


def test_a_benchmark_whose_epoch_data_is_unusable_exits_1_before_measuring(tmp_path, capsys):
    from experiments.benchmark import main

    status, _, err = call(main, ["--batch-sizes", "2", "--repeats", "1", "--min-seconds", "0.001", "--device", "cpu",
                                 "--variants", "reference", "--epoch-dataset", "idx", "--data-dir", str(tmp_path)],
                          capsys)
    assert status == 1 and f"error: --epoch-dataset idx: data directory {tmp_path}: expected the IDX files" in err
    assert "batch 2: done" not in err


def test_a_benchmark_that_measured_nothing_exits_1(capsys):
    from experiments.benchmark import main

    status, _, err = call(main, ["--batch-sizes", "2", "--repeats", "1", "--min-seconds", "0.001", "--device", "cpu",
                                 "--variants", "fast_fused", "--optimizer", "adam", "--epoch-batch-size", "0"], capsys)
    # the fused form exists for sgd and momentum only (the plain fast path runs every optimizer)
    assert status == 1 and "error: no variant of fast_fused could run at any batch size" in err, err


@pytest.mark.parametrize("module", ["benchmark", "benchmark_dp", "labs"])
def test_ctrl_c_stops_a_benchmark_or_the_labs_with_130_and_no_traceback(module):
    """Whenever it comes (while torch is imported, or while measuring), one Ctrl-C ends the command with exit
    status 130 and a one-line message; benchmark_dp's helper processes print nothing either."""
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parent.parent
    extra = ["all", "--fast", "--no-tensorboard"] if module == "labs" else ["--batch-sizes", "64"]
    process = subprocess.Popen([sys.executable, "-m", f"experiments.{module}", *extra], cwd=repo, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(8)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole process group
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted (Ctrl-C)" in err, err


def test_a_listing_piped_into_a_reader_that_stops_early_ends_without_a_traceback():
    import subprocess
    import sys
    from pathlib import Path

    reader = subprocess.Popen([sys.executable, "-m", "experiments.labs", "list"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
    reader.stdout.close()  # like `| head` ending before the listing comes (torch takes seconds to import)
    _, err = reader.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err
