"""Faults that used to lose data or pass silently (issue 10, section 1), each reproduced and refused clearly.

Most runs are in-process ``experiments.train_mnist.main([...])`` calls on a tiny IDX dataset; a real process is
used only where it is the point (signals, a lock held by another process).
"""

from __future__ import annotations

import json
import os
import shutil
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


# --- helpers ------------------------------------------------------------------------------------------------------

def cli(fake_data, *args) -> list[str]:
    return ["--no-progress", "--device", "cpu", "--dataset", "idx", "--data-dir", str(fake_data), "--hidden", "8",
            "--batch-size", "8", *args]


def run_main(argv, capsys) -> tuple[int, str, str]:
    """``experiments.train_mnist.main`` in-process: (exit status, stdout, stderr); argparse's exits count too."""
    from experiments.train_mnist import main

    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_dirs(logdir: Path) -> list[Path]:
    return sorted(path for path in logdir.iterdir() if path.is_dir()) if logdir.exists() else []


@pytest.fixture(scope="module")
def saved_run(fake_data, tmp_path_factory):
    """A run stopped after 3 of its 16 steps (2 epochs of 8 batches), with its checkpoint."""
    from experiments.train_mnist import main

    logdir = tmp_path_factory.mktemp("saved")
    assert main(cli(fake_data, "--logdir", str(logdir), "--epochs", "2", "--max-steps", "3")) == 0
    (run_dir,) = run_dirs(logdir)
    return run_dir


@pytest.fixture
def run_copy(saved_run, tmp_path) -> Path:
    """A private copy of the saved run's directory; returns its checkpoint."""
    copy = tmp_path / "runs" / saved_run.name
    shutil.copytree(saved_run, copy)
    return copy / "checkpoint.pt"


def resume(fake_data, checkpoint, capsys, *extra):
    return run_main(cli(fake_data, "--epochs", "2", "--resume", str(checkpoint), *extra), capsys)


# --- checkpoint integrity -----------------------------------------------------------------------------------------

def test_a_flipped_byte_inside_a_weight_tensor_is_refused(fake_data, run_copy, capsys):
    data = bytearray(run_copy.read_bytes())
    weights = torch.load(run_copy, weights_only=True)["engine"]["W1"]
    start = bytes(data).find(weights.reshape(-1)[:16].numpy().tobytes())
    assert start > 0
    data[start + 21] ^= 0x10  # one bit of one float32 of W1: still a valid tensor, loads with weights_only
    run_copy.write_bytes(bytes(data))
    assert not torch.equal(torch.load(run_copy, weights_only=True)["engine"]["W1"], weights)

    status, _, err = resume(fake_data, run_copy, capsys)
    assert status == 1
    assert f"--resume {run_copy}: field engine: the content does not match its sha256 checksum" in err
    assert "Traceback" not in err


def _rewrite(path: Path, change) -> None:
    """Load, change, and save again with fresh checksums: a hand-made checkpoint that passes the checksum test,
    so only the schema can catch it."""
    from side_by_side.checkpoint_schema import content_checksums

    state = torch.load(path, weights_only=True)
    state.pop("checksums")
    change(state)
    state["checksums"] = content_checksums(state)
    torch.save(state, path)


def _nan_weight(state):
    state["engine"]["W2"][0, 0] = float("nan")


@pytest.mark.parametrize("change, message", [
    (lambda state: state.pop("order"), "order: missing"),
    (lambda state: state["order"].pop("permutation"), "order.permutation: missing"),
    (lambda state: state.__setitem__("global_step", -5), "global_step: expected an integer >= 0; got -5"),
    (lambda state: state.__setitem__("epoch", 7), "epoch (epochs completed, with --epochs 2): expected an integer >= 0 "
                                                  "and <= 2; got 7"),
    (lambda state: state.__setitem__("global_step", 9), "global_step: expected 3 (0 epochs of 8 batches, then 3 "
                                                        "batches); got 9"),
    (lambda state: state["order"]["permutation"].__setitem__(0, 10 ** 6),
     "order.permutation: expected a permutation of range(64) (the training images)"),
    (lambda state: state["engine"].__setitem__("W1", torch.zeros(8, 700)),
     "engine.W1: expected torch.float32 tensor of shape (8, 784); got a torch.float32 tensor of shape (8, 700)"),
    (lambda state: state["twin"].__setitem__("layers.0.weight", torch.zeros(8, 784, dtype=torch.float64)),
     "twin.layers.0.weight: expected torch.float32 tensor of shape (8, 784); got a torch.float64"),
    (lambda state: state["twin_optimizer"]["state"][1].__setitem__("momentum_buffer", torch.zeros(3)),
     "twin_optimizer.state.1.momentum_buffer: expected torch.float32 tensor of shape (8,)"),
    (lambda state: state["twin_optimizer"]["state"].__setitem__(9, state["twin_optimizer"]["state"][0]),
     "twin_optimizer.state key 9: expected an integer >= 0 and <= 3"),
    (lambda state: state["engine_optimizer"]["state"]["W1"].__setitem__("momentum_buffer", torch.zeros(2, 2)),
     "engine_optimizer.state.W1.momentum_buffer: expected torch.float32 tensor of shape (8, 784)"),
    (lambda state: state["tally"].pop("checks"), "tally: expected the keys"),
    (lambda state: state.__setitem__("torch_rng", torch.zeros(3, dtype=torch.uint8)), "torch_rng: expected"),
    (lambda state: state["order"].__setitem__("batch_in_epoch", 99), "order.batch_in_epoch: expected an integer >= 0 "
                                                                     "and <= 8; got 99"),
    (_nan_weight, "engine.W2: holds NaN or Inf"),
    (lambda state: state.__setitem__("format_version", 1),
     "the checkpoint is of format 1, written by an older version"),
    (lambda state: state["history"].append({"manual": {"loss/test": 1.0}}),
     "history[0].manual.loss/train_epoch: missing"),
    (lambda state: state.__setitem__("twin_schedule", [1]), "twin_schedule: expected None or a dict; got [1]"),
])
def test_hand_made_checkpoints_get_a_clear_error_naming_the_field(fake_data, run_copy, capsys, change, message):
    _rewrite(run_copy, change)
    status, _, err = resume(fake_data, run_copy, capsys)
    assert status == 1, err
    assert f"error: --resume {run_copy}: " in err and message in err, err
    assert "Traceback" not in err


def test_a_checkpoint_without_checksums_is_refused(fake_data, run_copy, capsys):
    state = torch.load(run_copy, weights_only=True)
    state.pop("checksums")
    torch.save(state, run_copy)
    status, _, err = resume(fake_data, run_copy, capsys)
    assert status == 1 and f"--resume {run_copy}: checksums: missing" in err


def test_a_state_holding_nan_is_never_written(tmp_path):
    from side_by_side.checkpoint import CheckpointError, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"engine": {"W1": torch.ones(2, 2)}})
    good = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"refusing to write .*: twin_optimizer\.state\.0\.exp_avg_sq holds NaN "
                                              r"or Inf; the previous checkpoint .* is unchanged"):
        save_checkpoint(path, {"engine": {"W1": torch.ones(2, 2)},
                               "twin_optimizer": {"state": {0: {"exp_avg_sq": torch.tensor([1.0, float("inf")])}}}})
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


# --- full disk, read-only run directory, summary.json in the way ------------------------------------------------

@pytest.fixture
def mount_point(tmp_path):
    """Mounts made by a test are undone after it, whatever happens."""
    mounted = []

    def mount(*args, target: Path):
        if shutil.which("mount") is None:
            pytest.skip("no mount command here")
        result = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount here ({result.stderr.strip() or 'mount failed'}); needs root with "
                        f"CAP_SYS_ADMIN")
        mounted.append(target)

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_full_disk_is_a_clear_error_and_the_last_good_checkpoint_survives(fake_data, tmp_path, capsys,
                                                                             mount_point):
    """A 300 KiB tmpfs as --logdir: one checkpoint (~115 KiB) fits, the second (written next to it) does not."""
    from side_by_side.checkpoint import load_checkpoint

    logdir = tmp_path / "small"
    logdir.mkdir()
    mount_point("-t", "tmpfs", "-o", "size=300k", "tmpfs", target=logdir)
    status, _, err = run_main(cli(fake_data, "--logdir", str(logdir), "--epochs", "3", "--checkpoint-every", "1"),
                              capsys)
    assert status == 1
    assert "No space left on device" in err and "Traceback" not in err, err
    assert "cannot write the checkpoint" in err or "cannot write TensorBoard events" in err, err
    (run_dir,) = run_dirs(logdir)
    assert not list(run_dir.glob(".checkpoint.pt.*.tmp"))  # a failed write removes its temporary file
    state = load_checkpoint(run_dir / "checkpoint.pt")  # checksums and schema hold: the last good one
    assert state["global_step"] >= 1


def test_a_checkpoint_write_that_fills_the_disk_removes_its_temporary_file(tmp_path, mount_point):
    from side_by_side.checkpoint import CheckpointError, save_checkpoint

    small = tmp_path / "small"
    small.mkdir()
    mount_point("-t", "tmpfs", "-o", "size=64k", "tmpfs", target=small)
    path = small / "checkpoint.pt"
    save_checkpoint(path, {"engine": {"W1": torch.ones(4, 4)}})
    good = path.read_bytes()
    with pytest.raises(CheckpointError, match=rf"cannot write the checkpoint {path}: No space left on device; the "
                                              rf"previous checkpoint {path} is unchanged"):
        save_checkpoint(path, {"engine": {"W1": torch.ones(256, 256)}})  # 256 KiB
    assert path.read_bytes() == good and [p.name for p in small.iterdir()] == ["checkpoint.pt"]


def test_a_failing_tensorboard_writer_is_reported_once_as_such():
    from side_by_side.guarded_logger import GuardedLogger, LoggingError

    class FullDisk:
        closed = False

        def scalars(self, *args):
            raise OSError(28, "No space left on device", "/runs/x/events.out.tfevents.1")

        def close(self):
            FullDisk.closed = True
            raise OSError(28, "No space left on device")

    logger = GuardedLogger(Path("/runs/x"), FullDisk)
    with pytest.raises(LoggingError, match=r"cannot write TensorBoard events in /runs/x: No space left on device "
                                           r"\(/runs/x/events.out.tfevents.1\)"):
        logger.scalars("manual", 1, {})
    assert logger.scalars("manual", 2, {}) is None  # later calls do nothing
    logger.close()  # does not raise over the first error
    assert FullDisk.closed

    FullDisk.closed = False
    logger = GuardedLogger(Path("/runs/x"), FullDisk)
    with pytest.raises(LoggingError, match="No space left on device"):  # a failure at close is reported...
        logger.close()
    logger = GuardedLogger(Path("/runs/x"), FullDisk)
    with pytest.raises(KeyError):  # ...unless another error is on its way, which then stays the one reported
        try:
            raise KeyError("the first error")
        finally:
            logger.close()


def test_a_read_only_run_directory_on_resume_is_a_clear_error(fake_data, run_copy, capsys, mount_point):
    run_dir = run_copy.parent
    before = run_copy.read_bytes()
    mount_point("--bind", str(run_dir), target=run_dir)
    mount_point("-o", "remount,ro,bind", target=run_dir)
    status, _, err = resume(fake_data, run_copy, capsys)
    assert status == 1
    # Refused by the first write that is tried (summary.json's check, then the lock file's), before any training.
    assert (f"error: run summary {run_dir / 'summary.json'}: cannot be written: its directory {run_dir} takes no "
            "new files (Read-only file system)" in err
            or f"error: run directory {run_dir}: cannot open its lock file .lock (Read-only file system)" in err), err
    assert run_copy.read_bytes() == before


def test_an_immutable_run_directory_on_resume_is_a_clear_error(fake_data, run_copy, capsys):
    """Root ignores permission bits; ``chattr +i`` binds root too (the directory takes no new files)."""
    run_dir = run_copy.parent
    (run_dir / ".lock").touch()  # as left by the first run
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(run_dir)],
                                                        capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here (needs root on a file system with attributes)")
    try:
        status, _, err = resume(fake_data, run_copy, capsys)
    finally:
        subprocess.run(["chattr", "-i", str(run_dir)], check=True)
    assert status == 1
    assert f"its directory {run_dir} takes no new files (Operation not permitted)" in err, err


def test_a_directory_where_summary_json_goes_is_refused_before_training(fake_data, run_copy, capsys):
    (run_copy.parent / "summary.json").unlink()  # the stopped run's summary, replaced by a directory
    (run_copy.parent / "summary.json").mkdir()
    before = run_copy.read_bytes()
    status, out, err = resume(fake_data, run_copy, capsys)
    assert status == 1
    assert f"run summary {run_copy.parent / 'summary.json'}: is a directory" in err
    assert run_copy.read_bytes() == before and "epoch" not in out  # refused before any training


# --- one process per run directory, leftovers -------------------------------------------------------------------

def test_a_second_resume_of_the_same_run_fails_at_once_naming_the_holder(fake_data, run_copy, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from side_by_side.run_directory import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)",
         str(run_copy.parent)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = run_copy.read_bytes()
        status, _, err = resume(fake_data, run_copy, capsys)
        assert status == 1
        assert (f"error: run directory {run_copy.parent} is in use by another training process (pid {holder.pid}); "
                f"wait for it to finish or stop it first") in err, err
        assert run_copy.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    # The kernel drops a dead holder's lock: the resume goes ahead, and clears a killed write's temporary file.
    orphan = run_copy.parent / ".checkpoint.pt.k1ll3d.tmp"
    orphan.write_bytes(b"half a checkpoint")
    status, out, err = resume(fake_data, run_copy, capsys)
    assert status == 0, err
    assert "removed .checkpoint.pt.k1ll3d.tmp, a temporary checkpoint file left by a killed write" in out
    assert not orphan.exists() and torch.load(run_copy, weights_only=True)["global_step"] == 16


def test_a_missing_checkpoint_leaves_nothing_in_its_directory(fake_data, tmp_path, capsys):
    status, _, err = run_main(cli(fake_data, "--resume", str(tmp_path / "nope.pt")), capsys)
    assert status == 1 and f"--resume {tmp_path / 'nope.pt'}: no such checkpoint file" in err
    assert list(tmp_path.iterdir()) == []  # no lock file taken in a directory that holds no run


def test_a_run_that_fails_before_its_first_step_leaves_no_run_directory(fake_data, tmp_path, capsys):
    logdir = tmp_path / "runs"
    status, _, err = run_main(cli(fake_data, "--logdir", str(logdir), "--batch-size", "500"), capsys)
    assert status == 1 and "--batch-size: 500 is larger than the 64 training images" in err
    assert logdir.is_dir() and run_dirs(logdir) == []


def test_a_failed_run_never_removes_a_directory_that_held_files_before(tmp_path):
    from side_by_side.run_directory import RunLock

    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("the caller's")
    lock = RunLock(kept, fresh=True).acquire()
    assert lock.release(failed=True, steps=0) is False and (kept / "notes.txt").exists()
    empty = tmp_path / "new"
    empty.mkdir()
    lock = RunLock(empty, fresh=True).acquire()
    assert lock.release(failed=True, steps=0) is True and not empty.exists()


# --- arguments ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--seed", str(2 ** 64)], f"--seed: expected 0 <= seed < 2**64 (what torch's generators take); got {2 ** 64}"),
    (["--seed", "-1"], "--seed: expected 0 <= seed < 2**64"),
    (["--lr", "1e40"], "--lr: expected a learning rate the float32 parameters can hold (<= 3.4e+38); got 1e+40"),
    (["--logdir", ""], "--logdir: expected a path; got ''"),
    (["--json", ""], "--json: expected a path; got ''"),
    (["--json", "{tmp}"], "--json {tmp}: is a directory; expected a file path"),
    (["--json", "{tmp}/absent/s.json"], "--json {tmp}/absent/s.json: the directory {tmp}/absent does not exist"),
])
def test_bad_arguments_are_refused_before_anything_runs(fake_data, tmp_path, capsys, args, message):
    logdir = tmp_path / "runs"
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    status, _, err = run_main(cli(fake_data, "--logdir", str(logdir), "--dry-run", *args), capsys)
    assert status == 2 and message.replace("{tmp}", str(tmp_path)) in err, err
    assert run_dirs(logdir) == []


def test_an_empty_data_dir_is_refused(tmp_path, capsys):
    status, _, err = run_main(["--dataset", "idx", "--data-dir", "", "--logdir", str(tmp_path), "--dry-run"], capsys)
    assert status == 1 and "--data-dir: expected a directory path" in err


def test_a_json_path_on_a_read_only_mount_is_refused_before_training(fake_data, tmp_path, capsys, mount_point):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    mount_point("-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", target=read_only)
    status, out, err = run_main(cli(fake_data, "--logdir", str(tmp_path / "runs"), "--dry-run",
                                    "--json", str(read_only / "s.json")), capsys)
    assert status == 2 and f"--json {read_only / 's.json'}: cannot be written: its directory {read_only} takes no " \
                           "new files (Read-only file system)" in err
    assert "epoch" not in out


def test_logdir_other_than_the_checkpoints_is_refused_on_resume(fake_data, run_copy, tmp_path, capsys):
    status, _, err = resume(fake_data, run_copy, capsys, "--logdir", str(tmp_path / "elsewhere"))
    assert status == 2
    assert f"--logdir {tmp_path / 'elsewhere'}: --resume continues the run in its own directory, under " \
           f"{run_copy.parent.parent}" in err
    status, _, err = resume(fake_data, run_copy, capsys, "--logdir", str(run_copy.parent.parent), "--max-steps", "4")
    assert status == 0, err  # the checkpoint's own parent is fine


def test_sizes_that_cannot_be_allocated_are_refused_naming_the_flag(fake_data, tmp_path, capsys):
    logdir = tmp_path / "runs"
    status, out, err = run_main(cli(fake_data, "--logdir", str(logdir)) + ["--hidden", "100000000,100000000"], capsys)
    assert status == 1
    assert "error: --hidden 100000000,100000000: the run needs about" in err and "is available" in err, err
    assert "PiB" in err or "EiB" in err  # 1e16 parameters
    assert run_dirs(logdir) == [] and "epoch" not in out


def test_the_memory_check_names_the_batch_size_when_activations_dominate(monkeypatch):
    import experiments.preflight as preflight
    from manual_backprop.config import MLPConfig
    from manual_backprop.optim_config import OptimizerConfig

    monkeypatch.setattr(preflight, "available_bytes", lambda device: 2 ** 30)
    config, optimizer = MLPConfig(sizes=(784, 64, 10)), OptimizerConfig("momentum", lr=0.1, momentum=0.9)
    preflight.memory_fits(config, optimizer, 64, 10000, True, "--hidden 64", "--batch-size 64")  # a few MiB: fine
    with pytest.raises(ValueError, match=r"^--batch-size 2000000: the run needs about 28\.9 GiB of memory "
                                         r"\(2\.7 MiB for the parameters.* only "
                                         r"1\.0 GiB is available"):
        preflight.memory_fits(config, optimizer, 2_000_000, 10000, True, "--hidden 64", "--batch-size 2000000")


def test_a_gzip_bomb_in_dataset_idx_is_refused(fake_data, tmp_path, capsys):
    """The data package's own test covers the parser; this one the command line: the header announces 64 images,
    the stream inflates to 64 MiB; refused after one byte more than announced, with exit status 1."""
    import gzip
    import struct

    bomb_dir = tmp_path / "bomb"
    shutil.copytree(fake_data, bomb_dir)
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 64, 28, 28)
    with gzip.open(bomb_dir / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as handle:
        handle.write(header)
        for _ in range(64):
            handle.write(bytes(1 << 20))
    (bomb_dir / "train-images-idx3-ubyte").unlink()
    status, _, err = run_main(["--no-progress", "--device", "cpu", "--dataset", "idx", "--data-dir", str(bomb_dir),
                               "--logdir", str(tmp_path / "runs"), "--dry-run"], capsys)
    assert status == 1 and "gzip bomb" in err and "Traceback" not in err, err


# --- signals --------------------------------------------------------------------------------------------------------

def test_sigterm_stops_with_a_checkpoint_exit_143_and_resumes_bitwise(fake_data, tmp_path, capsys):
    """What ``timeout``, ``docker stop`` and batch schedulers send: a real process, stopped mid-run."""
    from experiments.train_mnist import main

    # --max-steps bounds the runs (3 of 25 epochs) while the epoch count leaves the signal plenty of run to stop.
    args = cli(fake_data, "--epochs", "25", "--max-steps", "24", "--log-interval", "1000", "--parity-every", "1000")
    process = subprocess.Popen([sys.executable, "-m", "experiments.train_mnist", *args, "--logdir",
                                str(tmp_path / "parts")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        for line in process.stdout:
            if line.startswith("epoch 1/25"):
                process.send_signal(signal.SIGTERM)
                break
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert "INTERRUPTED by SIGTERM" in out
    (run_dir,) = run_dirs(tmp_path / "parts")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] == "SIGTERM" and summary["stopped_early"]
    stopped = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert 8 <= stopped["global_step"] < 24

    assert main([*args, "--resume", str(run_dir / "checkpoint.pt")]) == 0
    assert main([*args, "--logdir", str(tmp_path / "whole")]) == 0  # the same run, never interrupted
    capsys.readouterr()
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    (whole_dir,) = run_dirs(tmp_path / "whole")
    whole = torch.load(whole_dir / "checkpoint.pt", weights_only=True)
    assert resumed["global_step"] == whole["global_step"] == 24
    for key in ("engine", "twin"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, resumed[key][name]), (key, name)
    for name, state in whole["engine_optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed["engine_optimizer"]["state"][name]["momentum_buffer"])


def test_ctrl_c_stops_with_a_checkpoint_exit_130_and_a_summary_that_says_interrupted(fake_data, tmp_path, capsys,
                                                                                    monkeypatch):
    """A real SIGINT, sent to this process at the end of the first epoch (deterministic, no timing)."""
    from side_by_side.run import SideBySideRun

    end_of_epoch = SideBySideRun.end_of_epoch

    def then_ctrl_c(self, *args):
        end_of_epoch(self, *args)
        if self.epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(SideBySideRun, "end_of_epoch", then_ctrl_c)
    logdir = tmp_path / "runs"
    status, out, err = run_main(cli(fake_data, "--logdir", str(logdir), "--epochs", "3",
                                    "--json", str(tmp_path / "s.json")), capsys)
    assert status == 130, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["interrupted"] == "SIGINT" and summary["stopped_early"] and summary["steps"] == 8
    assert "INTERRUPTED by SIGINT" in out and "not a final result" in out
    (run_dir,) = run_dirs(logdir)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == 8


def test_weights_overflowing_in_the_update_of_an_epochs_last_batch_stop_the_run(fake_data, tmp_path, capsys):
    """Cross-entropy, full batch (every step is an epoch's last batch): the loss and the gradients are finite, the
    update overflows the weights. This used to end in "The histogram is empty" instead of the divergence message."""
    logdir = tmp_path / "runs"
    # A strong L2 term makes the gradients large (2 * l2 * W) while the loss stays finite; lr * gradient overflows.
    status, _, err = run_main(cli(fake_data, "--logdir", str(logdir))
                              + ["--batch-size", "full", "--optimizer", "sgd",
                                 "--l2", "1e4", "--lr", "1e37", "--epochs", "2"],
                              capsys)
    assert status == 1
    assert "became non-finite in the update" in err and "No checkpoint had been written yet" in err, err
    assert "histogram" not in err and "Traceback" not in err
    assert run_dirs(logdir) == []  # it failed in its first step: its new run directory is removed again


def test_a_run_never_saves_non_finite_weights(fake_data, tmp_path):
    """The loop stops a diverging run before it saves; this is the last line of defence behind that check."""
    from manual_backprop.config import MLPConfig
    from mnist_data import load_splits
    from side_by_side.run import SideBySideRun, TrainingError, TrainSettings

    data = load_splits("idx", fake_data, log=lambda line: None)
    run = SideBySideRun(MLPConfig(sizes=(784, 8, 10)), TrainSettings(epochs=1, batch_size=8), data, tmp_path, {},
                        log=lambda line: None, progress=False)
    run.engine.params["W2"][3, 1] = float("inf")
    with pytest.raises(TrainingError, match=rf"refusing to write {tmp_path / 'checkpoint.pt'}: the manual model's W2 "
                                            rf"is not finite"):
        run.save()
    assert list(tmp_path.iterdir()) == []
