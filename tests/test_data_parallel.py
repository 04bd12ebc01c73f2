"""Data-parallel training: the engine's hand-averaged gradients against the global batch's and DDP's, 2 real
processes on the loopback interface (gloo), torchrun runs of the CLI, and the failures (bad batches, another world
size on resume, a rank that dies)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dp_workers
import pytest
import torch
import torch.distributed as dist
from fake_idx import write_fake_idx

from manual_backprop.config import MLPConfig
from manual_backprop.data_parallel import GradientAverager, assign_buckets, ready_order
from manual_backprop.model import init_parameters
from side_by_side.process_group import DataParallel, free_port

REPO = Path(__file__).resolve().parent.parent
needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this PyTorch build has no torch.distributed with the gloo backend")


def spawn(worker, *args, world_size: int = 2):
    import torch.multiprocessing as mp
    mp.spawn(worker, args=(world_size, free_port(), *args), nprocs=world_size, join=True)


# --- without processes ---------------------------------------------------------------------------------------

def test_buckets_follow_the_backward_and_respect_the_cap():
    params = init_parameters(MLPConfig(sizes=(784, 256, 128, 10)), torch.Generator().manual_seed(0))
    assert ready_order(params) == ["b3", "W3", "b2", "W2", "b1", "W1"]
    # 0.25 MiB: the top layers share a bucket, all-reduced while the backward computes layer 1 (785 KiB, alone).
    assert assign_buckets(params, 2**18) == [["b3", "W3", "b2", "W2"], ["b1", "W1"]]
    assert assign_buckets(params, 2**30) == [["b3", "W3", "b2", "W2", "b1", "W1"]]
    assert assign_buckets(params, 1) == [["b3", "W3"], ["b2", "W2"], ["b1", "W1"]]
    with pytest.raises(ValueError, match="bucket size: expected a positive number of bytes; got 0"):
        assign_buckets(params, 0)


def test_averager_needs_a_process_group_and_a_known_mode():
    params = init_parameters(MLPConfig(sizes=(4, 3, 2)), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="data-parallel mode: expected one of simple, bucketed; got 'ring'"):
        GradientAverager(params, "ring")
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="torch.distributed is not initialised"):
            GradientAverager(params, "simple")


@pytest.mark.parametrize("batch_size, n_train, message", [
    (33, 256, "--batch-size 33: not divisible by the world size 2"),
    (1, 256, "--batch-size 1: smaller than the 2 processes"),
    (32, 255, "the last batch of each epoch has 31 images"),
])
def test_batches_must_split_evenly(batch_size, n_train, message):
    with pytest.raises(ValueError, match=message):
        DataParallel(0, 2, 0, "gloo").check_batches(n_train, batch_size)
    DataParallel(0, 2, 0, "gloo").check_batches(256, 32)  # and a good one passes


def test_shards_tile_the_global_batch_and_rank_0_keeps_the_seed():
    index = torch.randperm(12)
    shards = [DataParallel(rank, 3, rank, "gloo").shard(index) for rank in range(3)]
    assert torch.equal(torch.cat(shards), index)
    seeds = [DataParallel(rank, 3, rank, "gloo").dropout_seed(7) for rank in range(3)]
    assert seeds[0] == 7 and len(set(seeds)) == 3 and all(0 <= seed < 2**64 for seed in seeds)


def test_data_parallel_flags_need_torchrun(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE")}
    result = subprocess.run([sys.executable, "-m", "experiments.train_mnist", "--dp-mode", "simple",
                             "--bucket-mb", "1"],
                            capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 2
    assert "--dp-mode, --bucket-mb: only for data-parallel runs; start them with torchrun" in result.stderr



@pytest.mark.parametrize("rank, prints", [("0", True), ("1", False)])
def test_under_torchrun_only_rank_0_prints_a_usage_error(monkeypatch, capsys, rank, prints):
    """Every rank parses the same command line; the message is printed once, and every rank exits with 2."""
    from experiments import train_mnist

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    with pytest.raises(SystemExit) as stopped:
        train_mnist.main(["--batch-size", "0"])
    assert stopped.value.code == 2
    assert ("--batch-size" in capsys.readouterr().err) == prints


# --- two processes, gloo on the loopback interface -------------------------------------------------------------

@needs_gloo
def test_averaged_gradient_is_the_global_batch_gradient_and_ddps(tmp_path):
    out = tmp_path / "gradients.pt"
    spawn(dp_workers.gradients_worker, str(out))
    results = torch.load(out, weights_only=False)
    assert results["float64_bucketed_buckets"] >= 3  # the 16 KiB cap really splits the network
    for dtype in ("float64", "float32"):
        result = results[dtype]
        assert result["simple_equals_bucketed"], dtype
        # Both scale by 1/2 and add two numbers: the same rounding, whatever the buckets (see docs/data_parallel.md).
        assert result["engine_equals_ddp"], dtype
        assert result["ranks_agree"], dtype
    for name, distance in results["float64"]["vs_single"].items():
        assert distance["max_abs_in_eps_of_max"] * torch.finfo(torch.float64).eps <= 1e-12, (name, distance)
    for name, distance in results["float32"]["vs_single"].items():
        # The sum over the batch grouped in two halves: a few eps of the largest entry, not bitwise.
        assert distance["max_abs_in_eps_of_max"] <= 16, (name, distance)


@needs_gloo
@pytest.mark.parametrize("mode, dropout", [("simple", 0.0), ("bucketed", 0.0), ("bucketed", 0.3)])
def test_training_steps_stay_bitwise_with_the_ddp_twin(tmp_path, mode, dropout):
    """The reference engine and the fast path (FastTrainer, per-bucket updates), each step against DDP."""
    out = tmp_path / "training.pt"
    spawn(dp_workers.training_worker, str(out), mode, dropout)
    results = torch.load(out, weights_only=False)
    assert results["ranks_hold_the_same_weights"]
    assert len(results["buckets"]) == (1 if mode == "simple" else 2)  # 20 KiB: [b3 W3 b2 W2] [b1 W1]
    for step, check in enumerate(results["checks"]):
        assert check["grads_equal"] and check["weights_equal"], (step, check)
        assert check["loss"] == check["twin_loss"]
        # rank 1 asked to stop at step 3: rank 0 hears of it in the same step
        assert check["stop"] == (step == 3)
        assert check["fast_same_masks"] and check["fast_grads_equal"] and check["fast_weights_equal"], (step, check)
        assert check["fast_loss"] == check["loss"] and check["fast_stop"] == check["stop"]


@needs_gloo
def test_the_fast_step_updates_each_bucket_as_soon_as_its_all_reduce_completes(tmp_path):
    """Three buckets (a 1-byte cap: one layer each), SGD with momentum: in every step bucket k's layers are updated
    right after its wait and before bucket k + 1 is waited for, every launch comes from the backward (before any
    wait), and the weights stay bitwise DDP's."""
    out = tmp_path / "training.pt"
    spawn(dp_workers.training_worker, str(out), "bucketed", 0.0, "momentum", 1e-6)
    results = torch.load(out, weights_only=False)
    assert results["buckets"] == [["b3", "W3"], ["b2", "W2"], ["b1", "W1"]]
    for step, check in enumerate(results["checks"]):
        assert check["fast_grads_equal"] and check["fast_weights_equal"] and check["weights_equal"], (step, check)
    steps, current = [], None
    for event in results["events"]:
        if event[0] == "step":
            current = []
            steps.append(current)
        else:
            current.append(event[:2])
    assert len(steps) == 5
    for events in steps:
        assert events == [("launch", 0), ("launch", 1), ("launch", 2), ("wait", 0), ("update", 0), ("wait", 1),
                          ("update", 1), ("wait", 2), ("update", 2)], events


@needs_gloo
def test_the_fast_step_refuses_a_divergence_as_the_reference_does_before_any_update(tmp_path):
    """Rank 1's shard scaled so that (1) its loss is NaN (rank 0's stays finite, but the average of its NaN
    gradients is not) and (2) its loss is finite but its dW1 overflows: on each rank the fast step's message is the
    reference engine's word for word, and neither updated a weight (the fast step checks each rank's own gradients
    and agrees before its first bucket's update). A finite step (3) updates both."""
    out = tmp_path / "divergence.pt"
    cases = [(1e30, (1, 1e5, 1e5)), (1e38, (1e-8, 100, 100)), (1.0, (1, 1, 1))]
    spawn(dp_workers.divergence_worker, str(out), cases)
    ranks = torch.load(out, weights_only=False)
    for rank, outcomes in enumerate(ranks):
        for case, outcome in zip(cases, outcomes):
            assert outcome["fast"] == outcome["reference"], (rank, case, outcome)
    (nan_loss, overflow, finite) = zip(*ranks)  # per case: (rank 0's, rank 1's)
    assert nan_loss[1]["fast"]["message"] == ("the manual model's loss became nan; stopping without updating "
                                              "the weights")
    assert nan_loss[0]["fast"]["message"].startswith("the manual model's gradient dW1 became non-finite")
    for outcome in overflow:
        assert outcome["fast"]["message"].startswith("the manual model's gradient dW1 became non-finite (an "
                                                     "overflow: the loss is still ")
    for outcome in (*nan_loss, *overflow):
        assert outcome["fast"]["unchanged"]
    assert all(outcome["fast"]["message"] is None and not outcome["fast"]["unchanged"] for outcome in finite)


# --- the CLI under torchrun --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fake_idx")
    write_fake_idx(directory, n_train=128, n_test=32, seed=0)
    return directory


def torchrun(fake_data, logdir, *args, nproc=2, wait=True):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "experiments.train_mnist", "--no-progress", "--device", "cpu", "--dataset", "idx",
               "--data-dir", str(fake_data), "--hidden", "32", "--batch-size", "16", *args]
    if logdir is not None:
        command += ["--logdir", str(logdir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def run_dir_of(logdir: Path) -> Path:
    (run,) = [path for path in logdir.iterdir() if path.is_dir()]
    return run


@needs_gloo
def test_torchrun_trains_resumes_bitwise_and_refuses_another_world_size(fake_data, tmp_path):
    flags = ["--epochs", "2", "--dropout", "0.2", "--parity-every", "1"]
    whole = torchrun(fake_data, tmp_path / "whole", *flags)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "data-parallel over 2 processes, 8 images each per step" in whole.stdout
    summary = json.loads((run_dir_of(tmp_path / "whole") / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 16
    assert (summary["data_parallel"]["mode"] == "bucketed"
            and summary["data_parallel"]["twin"] == "DistributedDataParallel")
    assert summary["parity"]["bitwise_equal_checks"] == summary["parity"]["checks"] == 16  # engine vs DDP twin

    part = torchrun(fake_data, tmp_path / "part", *flags, "--max-steps", "5", "--dp-mode", "simple")
    assert part.returncode == 0, part.stdout + part.stderr
    checkpoint = run_dir_of(tmp_path / "part") / "checkpoint.pt"
    single = subprocess.run([sys.executable, "-m", "experiments.train_mnist", "--no-progress", "--dataset", "idx",
                             "--data-dir", str(fake_data), "--hidden", "32", "--batch-size", "16", *flags,
                             "--resume", str(checkpoint)], cwd=REPO, capture_output=True, text=True)
    assert single.returncode == 1
    assert "written by a run of 2 processes (world size 2) and this run has 1" in single.stderr
    missing = torchrun(fake_data, None, *flags, "--resume", str(tmp_path / "absent.pt"))
    assert missing.returncode != 0  # rank 0's error reaches rank 1 at once: no wait for a timeout
    assert "[rank 1] error: rank 0 could not prepare the run directory: --resume" in missing.stdout + missing.stderr
    rest = torchrun(fake_data, None, *flags, "--resume", str(checkpoint))
    assert rest.returncode == 0, rest.stdout + rest.stderr
    a = torch.load(run_dir_of(tmp_path / "whole") / "checkpoint.pt", weights_only=False)
    b = torch.load(checkpoint, weights_only=False)
    assert b["global_step"] == 16
    for name in a["engine"]:  # dropout masks, shards and updates all resumed: bit for bit (modes may differ)
        assert torch.equal(a["engine"][name], b["engine"][name]), name
    assert torch.equal(a["rank_rng"], b["rank_rng"])


@needs_gloo
def test_data_parallel_runs_without_the_twin_train_on_the_fast_path_bitwise(fake_data, tmp_path):
    """torchrun --no-twin: the fast path, its bucketed all-reduces launched from its backward; the weights and every
    optimizer-state tensor equal the engine's of the side-by-side run (engine + DDP twin, itself bitwise with DDP),
    with dropout, max-norm and Adam; a fast run stopped after 5 steps and resumed ends bit for bit the same."""
    # --bucket-mb 0.01: two buckets, [b2 W2] and [b1 W1], so the fast run updates layer 2 before waiting for W1's
    flags = ["--epochs", "2", "--dropout", "0.2", "--input-dropout", "0.1", "--max-norm", "1.5", "--optimizer", "adam",
             "--lr-schedule", "cosine", "--warmup-steps", "3", "--bucket-mb", "0.01"]
    pair = torchrun(fake_data, tmp_path / "pair", *flags, "--parity-every", "1")
    assert pair.returncode == 0, pair.stdout + pair.stderr
    summary = json.loads((run_dir_of(tmp_path / "pair") / "summary.json").read_text())
    assert summary["parity"]["bitwise_equal_checks"] == summary["parity"]["checks"] == 16  # engine vs DDP twin
    alone = torchrun(fake_data, tmp_path / "alone", *flags, "--no-twin")
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert ("engine: fast path (manual_backprop/fast.py), data-parallel over 2 processes: bucketed (2 buckets: "
            "[b2 W2] 1 KiB, [b1 W1] 98 KiB)") in alone.stdout
    a = torch.load(run_dir_of(tmp_path / "pair") / "checkpoint.pt", weights_only=False)
    b = torch.load(run_dir_of(tmp_path / "alone") / "checkpoint.pt", weights_only=False)

    def assert_same_engine(a, b):
        assert a["global_step"] == b["global_step"] == 16
        for name in a["engine"]:
            assert torch.equal(a["engine"][name], b["engine"][name]), name
        for name, entries in a["engine_optimizer"]["state"].items():
            assert sorted(entries) == sorted(b["engine_optimizer"]["state"][name])
            for key, tensor in entries.items():
                assert torch.equal(tensor, b["engine_optimizer"]["state"][name][key]), (name, key)

    assert_same_engine(a, b)
    part = torchrun(fake_data, tmp_path / "part", *flags, "--no-twin", "--max-steps", "5", "--dp-mode", "simple")
    assert part.returncode == 0, part.stdout + part.stderr
    checkpoint = run_dir_of(tmp_path / "part") / "checkpoint.pt"
    rest = torchrun(fake_data, None, *flags, "--no-twin", "--resume", str(checkpoint))
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert_same_engine(b, torch.load(checkpoint, weights_only=False))
    # without dropout every parity step also checks the averaged gradients against the global batch's
    plain = torchrun(fake_data, tmp_path / "plain", "--epochs", "1", "--optimizer", "nesterov", "--no-twin")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    summary = json.loads((run_dir_of(tmp_path / "plain") / "summary.json").read_text())
    assert summary["data_parallel"]["vs_single_process"]["checks"] >= 1


SIGTERM_FLAGS = ["--epochs", "25", "--max-steps", "160", "--no-twin", "--optimizer", "adam", "--dropout", "0.2",
                 "--bucket-mb", "0.01", "--log-interval", "1000", "--dist-timeout", "60"]


@pytest.fixture(scope="module")
def uninterrupted_fast_run(fake_data, tmp_path_factory):
    """The checkpoint of a fast data-parallel run of SIGTERM_FLAGS that nothing stops (160 steps)."""
    logdir = tmp_path_factory.mktemp("whole")
    whole = torchrun(fake_data, logdir, *SIGTERM_FLAGS)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    return torch.load(run_dir_of(logdir) / "checkpoint.pt", weights_only=False)


@needs_gloo
@pytest.mark.parametrize("target", ["rank 1", "torchrun"])
def test_sigterm_stops_both_ranks_of_a_fast_run_after_the_same_step_and_resumes_bitwise(
        fake_data, tmp_path, uninterrupted_fast_run, target):
    """What a scheduler's SIGTERM does to a data-parallel fast run (--no-twin, two buckets, Adam, dropout).

    "torchrun": the signal goes to torchrun, which passes it on to both ranks (they may note it in different
    steps). "rank 1": to rank 1 alone, so rank 0, which writes the checkpoint, learns of it only through the
    step's agreement and stops "because another rank was interrupted". Either way both ranks stop after the same
    step (had they stopped apart, one would wait in a collective until --dist-timeout; rank 0 gathers rank 1's
    dropout generator into the checkpoint at that step), and the run resumed from the checkpoint ends bitwise
    where the uninterrupted one does: weights, Adam's state, both ranks' generators. torchrun itself exits 1
    (rank 1 exits 143 as an interrupted run does, or torchrun was signalled), after rank 0 wrote everything."""
    process = torchrun(fake_data, tmp_path / "parts", *SIGTERM_FLAGS, wait=False)
    try:
        for line in process.stdout:
            if line.startswith("epoch 1/25"):  # rank 0's end of the first epoch: training is under way
                if target == "torchrun":
                    process.send_signal(signal.SIGTERM)
                else:
                    victim = next((pid for pid, rank in rank_pids(process.pid).items() if rank == "1"), None)
                    assert victim is not None, "rank 1 not found"
                    os.kill(victim, signal.SIGTERM)
                break
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    stop = "interrupted by SIGTERM" if target == "torchrun" else "stopped because another rank was interrupted"
    assert f"{stop} at step " in output, output[-3000:]
    stopped_at = int(output.split(f"{stop} at step ")[1].split(";")[0])
    assert 8 <= stopped_at < 160, output[-3000:]
    checkpoint = run_dir_of(tmp_path / "parts") / "checkpoint.pt"
    stopped = torch.load(checkpoint, weights_only=False)
    assert stopped["global_step"] == stopped_at and stopped["world_size"] == 2
    summary = json.loads((run_dir_of(tmp_path / "parts") / "summary.json").read_text())
    assert summary["steps"] == stopped_at and summary["stopped_early"]
    assert summary["interrupted"] == ("SIGTERM" if target == "torchrun" else None)  # rank 0's own signal

    rest = torchrun(fake_data, None, *SIGTERM_FLAGS, "--resume", str(checkpoint))
    assert rest.returncode == 0, rest.stdout + rest.stderr
    whole, resumed = uninterrupted_fast_run, torch.load(checkpoint, weights_only=False)
    assert whole["global_step"] == resumed["global_step"] == 160
    for name in whole["engine"]:
        assert torch.equal(whole["engine"][name], resumed["engine"][name]), name
    for name, entries in whole["engine_optimizer"]["state"].items():
        for key, tensor in entries.items():
            assert torch.equal(tensor, resumed["engine_optimizer"]["state"][name][key]), (name, key)
    assert torch.equal(whole["rank_rng"], resumed["rank_rng"])


@needs_gloo
def test_a_rank_that_dies_stops_the_others_and_keeps_the_checkpoint(fake_data, tmp_path):
    process = torchrun(fake_data, tmp_path / "runs", "--epochs", "1000", "--checkpoint-every", "8",
                       "--dist-timeout", "20", wait=False)
    try:
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.5)
            runs = tmp_path / "runs"
            if not (runs.exists() and any(runs.glob("*/checkpoint.pt"))):
                continue  # wait for a first checkpoint
            victim = next((pid for pid in rank_pids(process.pid) if rank_pids(process.pid)[pid] == "1"), None)
        assert victim is not None, "no checkpoint or no rank 1 within a minute"
        os.kill(victim, signal.SIGKILL)
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert "rank 0 of 2: a collective failed at step" in output, output[-3000:]
    assert "the last good checkpoint is" in output
    from side_by_side.checkpoint import load_checkpoint
    state = load_checkpoint(run_dir_of(tmp_path / "runs") / "checkpoint.pt")  # whole and verified
    assert state["world_size"] == 2 and state["global_step"] >= 8


def rank_pids(parent: int) -> dict[int, str]:
    """{pid: RANK} of the descendants of ``parent`` that torchrun started (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        values = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if values.get(b"TORCHELASTIC_RUN_ID") and b"RANK" in values and ancestor(int(entry.name), parent):
            found[int(entry.name)] = values[b"RANK"].decode()
    return found


def ancestor(pid: int, parent: int) -> bool:
    while pid > 1:
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == parent:
            return True
    return False


@needs_gloo
def test_rank_0_writes_one_tensorboard_run_with_the_pair_and_the_data_parallel_distance(fake_data, tmp_path):
    """Both models and the distance of the averaged gradient to the single-process one, in the run directory's one
    event file (rank 0's; the other rank writes nothing), the distance without a model in its tag."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    result = torchrun(fake_data, tmp_path / "logs", "--epochs", "1", "--parity-every", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = run_dir_of(tmp_path / "logs")
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert not [path for path in run_dir.iterdir() if path.is_dir()]
    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/train/manual", "loss/train/autograd", "loss/train/manual-autograd", "Parity/checks_out_of_policy",
            "parity_detail/dp_vs_single_process_eps_of_max", "parity_detail/dp_vs_single_process_max_rel"} <= scalars
    steps = [event.step for event in acc.Scalars("parity_detail/dp_vs_single_process_max_rel")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2  # every step: --parity-every 1
