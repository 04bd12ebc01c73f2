"""Train the hand-written-backprop MLP on MNIST next to its autograd twin, with parity checks and TensorBoard.

    .venv/bin/python -m experiments.train_mnist              # the default 784-256-128-10 ReLU run
    .venv/bin/python -m experiments.train_mnist --dry-run    # a few batches, for smoke tests
    .venv/bin/tensorboard --logdir runs                      # watch both models' curves overlaid

Exit status: 0 on success, 1 when the run fails (data, checkpoint, diverging loss), 2 for bad arguments,
130 / 143 when Ctrl-C / SIGTERM stopped it (after a checkpoint it can resume from).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from experiments import arguments
from experiments.cli_format import DefaultsOnceFormatter
from experiments.data_parallel_flags import ArgumentParser, add_data_parallel_flags, start_data_parallel
from experiments.optimizer_flags import (
    OPTIMIZER_DESTS,
    add_optimizer_flags,
    flag_named_error,
    optimizer_config,
    schedule_config,
)
from experiments.parity import resolve_device
from experiments.preflight import (
    existing_checkpoint,
    flags_without_effect,
    lr_fits_dtype,
    memory_fits,
    resume_logdir,
    schedule_past_the_run,
)
from experiments.presets import PRESETS, expand_preset, split_preset
from manual_backprop.config import HIDDEN_ACTIVATIONS, INITS, LOSSES, MSE_CONVENTIONS, MLPConfig
from manual_backprop.optim_config import DEFAULTS as OPTIMIZER_DEFAULTS
from mnist_data import STANDARDIZE_MODES, DatasetError, default_data_dir, load_splits
from side_by_side.checkpoint import CheckpointError
from side_by_side.guarded_logger import LoggingError
from side_by_side.process_group import DistributedError
from side_by_side.run import DRY_RUN_BATCHES, DRY_RUN_EVAL_IMAGES, TrainingError, TrainSettings, train
from side_by_side.run_directory import RunLockError
from side_by_side.run_report import print_summary
from side_by_side.settings import NothingToTrain
from side_by_side.signals import signals_held
from side_by_side.tensorboard_layout import auto_log_interval, run_name
from side_by_side.tensorboard_writer import new_run_dir

DEFAULT_LOGDIR = Path(__file__).resolve().parent.parent / "runs"


def parse_hidden(text: str) -> tuple[int, ...]:
    """'256,128' -> (256, 128); '' or 'none' -> () (no hidden layer: the softmax classifier)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints such as 256,128; got {text!r}")
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected widths >= 1; got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m experiments.train_mnist",
                       description="Manual backprop vs autograd on MNIST, side by side.",
                       formatter_class=DefaultsOnceFormatter)
    p.add_argument("--epochs", type=int, default=10, help="number of epochs to train")
    p.add_argument("--batch-size", type=int_or_word("full", "images"), default=64,
                   help="images per optimizer step, or 'full' for full-batch gradient descent")
    p.add_argument("--hidden", type=parse_hidden, default=(256, 128),
                   help="hidden layer widths, comma-separated ('none' for the softmax classifier)")
    p.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="relu", help="hidden activation")
    p.add_argument("--loss", choices=LOSSES, default="cross_entropy",
                   help="cross_entropy: softmax output; mse: the course's squared error on one-hot labels; "
                        "hinge: the multiclass SVM loss")
    p.add_argument("--mse-convention", choices=MSE_CONVENTIONS, default="course",
                   help="course: 1/(2m)||Y_hat-Y||^2; mean: PyTorch's MSELoss")
    p.add_argument("--l2", type=float, default=0.0, help="L2 strength on the weights")
    p.add_argument("--maxout-pieces", type=int, default=2, help="linear pieces per unit of --activation maxout")
    p.add_argument("--dropout", type=float, default=0.0, help="inverted dropout rate on every hidden layer")
    p.add_argument("--input-dropout", type=float, default=0.0, help="inverted dropout rate on the input pixels")
    p.add_argument("--max-norm", type=float, default=None,
                   help="after each update, rescale every unit's incoming weights to 2-norm <= this (default: off)")
    p.add_argument("--init", choices=INITS, default="torch_linear",
                   help="weight initialisation: nn.Linear's default, the course's N(0,1), Kaiming or Xavier")
    p.add_argument("--seed", type=int, default=0, help="seed for the initial weights and the data order")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when a GPU is visible, else cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="float32 is compared bit for bit on the CPU; float64 to 1e-10")
    p.add_argument("--dataset", choices=("mnist", "fashion-mnist", "idx"), default="mnist",
                   help="idx: your own four IDX files (MNIST's format and names) in --data-dir")
    p.add_argument("--data-dir", default=None,
                   help=f"dataset cache (default: ${'{'}MANUAL_BACKPROP_DATA{'}'} or {default_data_dir()})")
    p.add_argument("--standardize", choices=STANDARDIZE_MODES, default="none",
                   help="after scaling pixels to [0, 1]: none; global: minus the training pixels' mean, over their "
                        "std; pixel: each pixel minus its own training mean, over its own std (the course's lab)")
    p.add_argument("--val-size", type=int, default=0, help="hold out this many training images for validation")
    p.add_argument("--limit", type=int, default=None, help="train on the first N training images only")
    p.add_argument("--logdir", default=str(DEFAULT_LOGDIR),
                   help="parent of the run directories (with --resume: the run continues in the checkpoint's own "
                        "directory; another --logdir is refused)")
    p.add_argument("--log-interval", type=int_or_word("auto", "steps"), default="auto",
                   help="steps between train-loss points (default: auto, ceil(total steps / 100): about 100 points "
                        "per run)")
    p.add_argument("--parity-every", type=int_or_word("auto", "steps"), default="auto",
                   help="steps between parity checks (default: auto, ceil(total steps / 100))")
    p.add_argument("--no-twin", action="store_true", help="train the manual engine alone")
    p.add_argument("--dry-run", action="store_true", help="one epoch of a few batches, for smoke tests")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="steps between checkpoints (0: at the end of every epoch only)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in total, with a checkpoint")
    p.add_argument("--resume", metavar="PATH", default=None, help="continue the run of this checkpoint")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the run summary here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice, one per core); float32 results depend on it, "
                        "since the matrix products split their sums by thread")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="a named bundle of flags (later flags override it): "
                        + "; ".join(f"{name}: {text}" for name, (text, _) in PRESETS.items()).replace("%", "%%"))
    add_optimizer_flags(p)
    add_data_parallel_flags(p)
    return p


def int_or_word(word: str, unit: str):
    """An argparse type: an int, or ``word`` ('auto', 'full') whose meaning is settled once the data are loaded.
    Ranges are checked with the other settings."""
    def parse(text: str) -> int | str:
        if text.strip().lower() == word:
            return word
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {unit} or '{word}'; got {text!r}")
    return parse


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        preset, _, own_argv = split_preset(argv)
        args = parser.parse_args(expand_preset(argv))
    except ValueError as error:
        parser.error(str(error))
    notes: list[str] = []  # what was left out of a preset, printed once and recorded in the summary
    args.explicit = arguments.given_flags(build_parser(), own_argv)  # the flags given on the command line itself
    if preset is not None:
        notes = drop_unused_preset_flags(args, preset, args.explicit)
    epochs = 1 if args.dry_run else args.epochs
    try:
        check_numbers(args)
        flags_without_effect(args, args.explicit)
        device = resolve_device(args.device)
        config = MLPConfig(sizes=(784, *args.hidden, 10), activation=args.activation, loss=args.loss,
                           mse_convention=args.mse_convention, l2=args.l2, init=args.init,
                           maxout_pieces=args.maxout_pieces, dropout=args.dropout, input_dropout=args.input_dropout,
                           max_norm=args.max_norm, dtype=args.dtype, device=device)
        optimizer = optimizer_config(args)
        schedule_config(args, total_steps=1)  # the flags alone; the cosine length needs the data (below)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        for flag, path in (("--logdir", args.logdir), ("--resume", args.resume)):  # --data-dir: mnist_data's
            arguments.nonempty_path(path, flag)
        lr_fits_dtype(optimizer.lr, config.torch_dtype)
        if args.resume is not None:
            resume_logdir(args.logdir, parser.get_default("logdir"), Path(args.resume))
        if args.json is not None:  # now, not after the training; a resumed run may replace its own summary
            own = (Path(args.resume).resolve().parent / "summary.json",) if args.resume is not None else ()
            arguments.output_file(args.json, "--json", own=own)
        logdir = arguments.writable_dir(Path(args.logdir), "--logdir") if args.resume is None else None
        data_parallel = start_data_parallel(args, device)  # None unless torchrun started this process
    except (ValueError, TypeError) as error:
        parser.error(flag_named_error(error))
    except DistributedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    finished = False
    try:
        status = run(args, argv, parser, config, optimizer, epochs, logdir, data_parallel, notes)
        finished = status in (0, 130, 143)  # every rank gets these together (the ranks agree on a stop)
        return status
    except KeyboardInterrupt:  # a second Ctrl-C before any checkpoint: nothing to keep
        print("error: stopped at once by a second Ctrl-C before the first checkpoint; there is nothing to resume",
              file=sys.stderr)
        return 130
    except RuntimeError as error:
        if data_parallel is None:
            raise
        # A collective outside the training loop (setting up, resuming) failed: a peer stopped or died first.
        print(f"error: rank {data_parallel.rank} of {data_parallel.world_size}: a collective with the other "
              f"processes failed ({error}); another process probably stopped first, and its own error comes "
              "before this one in the log", file=sys.stderr)
        return 1
    finally:
        if data_parallel is not None:
            data_parallel.close(finished)


def check_numbers(args) -> None:
    """Every count the run uses, before anything is computed from it (the auto log interval divides by them)."""
    arguments.integer(args.epochs, "--epochs", low=1)
    if args.batch_size != "full":
        arguments.integer(args.batch_size, "--batch-size", low=1, expected="an integer >= 1 or 'full'")
    if args.limit is not None:
        arguments.integer(args.limit, "--limit", low=1, expected="a number of images >= 1")
    arguments.integer(args.val_size, "--val-size", low=0, expected="a number of images >= 0")
    arguments.integer(args.checkpoint_every, "--checkpoint-every", low=0)
    if args.max_steps is not None:
        arguments.integer(args.max_steps, "--max-steps", low=1)
    for flag, value in (("--log-interval", args.log_interval), ("--parity-every", args.parity_every)):
        if value != "auto":
            arguments.integer(value, flag, low=1)
    if args.threads is not None:
        arguments.integer(args.threads, "--threads", low=1, high=4096)
    arguments.seed(args.seed)  # the schedule's step counts are checked by ScheduleConfig


def drop_unused_preset_flags(args, preset: str, given: set[str]) -> list[str]:
    """A preset's optimizer hyperparameters that the optimizer chosen on the command line does not take (the
    record preset's --momentum 0.9 with --optimizer adam) are left out rather than blamed on the user; returns a
    note for each. A flag the user gave is never dropped: it is refused as usual."""
    notes = []
    takes = OPTIMIZER_DEFAULTS.get(args.optimizer, {})
    for dest in OPTIMIZER_DESTS:
        value = getattr(args, dest, None)
        if value is not None and dest not in given and dest not in takes:
            setattr(args, dest, None)
            notes.append(f"--preset {preset}'s --{dest.replace('_', '-')} {value} is left out: {args.optimizer} "
                         f"has no {dest} hyperparameter")
    return notes


def run(args, argv, parser, config, optimizer, epochs, logdir, data_parallel, notes) -> int:
    """Load the data, build the settings and train; the exit status. Data-parallel, only rank 0 prints and
    writes; every rank returns the same status. ``notes``: what was left out of a preset (for the summary)."""
    main_rank = data_parallel is None or data_parallel.is_main
    rank_tag = f"[rank {data_parallel.rank}] " if data_parallel is not None and not main_rank else ""

    def log(line: str) -> None:
        if main_rank:
            print(line, flush=True)

    def load():
        return load_splits(args.dataset, args.data_dir, device=config.torch_device, dtype=config.torch_dtype,
                           standardize=args.standardize, val_size=args.val_size, limit=args.limit,
                           log=lambda line: print(line, file=sys.stderr, flush=True) if main_rank else None)

    try:
        # Rank 0 first: a download or a cache file is written once, and its failure stops every rank.
        data = data_parallel.main_first(load, "loading the data") if data_parallel is not None else load()
    except (DatasetError, DistributedError, ValueError) as error:
        print(f"{rank_tag}error: {error}", file=sys.stderr)
        return 1
    n_train = data.train_x.shape[0]
    batch_size = n_train if args.batch_size == "full" else args.batch_size
    batches_per_epoch = -(-n_train // batch_size)
    if args.dry_run:
        batches_per_epoch = min(batches_per_epoch, DRY_RUN_BATCHES)
    total_steps = epochs * batches_per_epoch
    points_over = min(total_steps, args.max_steps) if args.max_steps else total_steps
    log_interval = auto_log_interval(points_over) if args.log_interval == "auto" else args.log_interval
    parity_every = auto_log_interval(points_over) if args.parity_every == "auto" else args.parity_every
    try:
        if data_parallel is not None:
            data_parallel.check_batches(n_train, batch_size, DRY_RUN_BATCHES if args.dry_run else None)
        settings = TrainSettings(epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                                 schedule=schedule_config(args, total_steps=total_steps),
                                 seed=args.seed, log_interval=log_interval, parity_every=parity_every,
                                 twin=not args.no_twin, dry_run=args.dry_run,
                                 checkpoint_every=args.checkpoint_every, max_steps=args.max_steps)
        note = schedule_past_the_run(settings.schedule, total_steps, optimizer.lr, args.explicit)
        if note is not None:
            notes.append(note)
            if main_rank:
                print(f"note: {note}", file=sys.stderr)
    except (ValueError, TypeError) as error:
        parser.error(flag_named_error(error))

    try:
        eval_images = min(data.test_x.shape[0], DRY_RUN_EVAL_IMAGES) if args.dry_run else data.test_x.shape[0]
        world_size = data_parallel.world_size if data_parallel is not None else 1
        memory_fits(config, optimizer, batch_size // world_size, max(eval_images, data.val_x.shape[0]), settings.twin,
                    f"--hidden {','.join(map(str, args.hidden)) or 'none'}", f"--batch-size {args.batch_size}")
        run_dir = None
        if data_parallel is None:
            run_dir = prepare_run_dir(args, config, settings, logdir, data_parallel)
        else:  # rank 0 prepares it; the others learn its path, or rank 0's error (rather than wait for it)
            failure = None
            if main_rank:
                try:
                    run_dir = prepare_run_dir(args, config, settings, logdir, data_parallel)
                except (CheckpointError, ValueError) as error:
                    failure = error
            shared, message = data_parallel.from_main((str(run_dir), None if failure is None else str(failure)))
            if failure is not None:
                raise failure
            if message is not None:
                raise DistributedError(f"rank 0 could not prepare the run directory: {message}")
            run_dir = Path(shared)
        description = {"command": "python -m experiments.train_mnist " + " ".join(argv),
                       "dataset": args.dataset, "data_source": data.source, "standardize": args.standardize,
                       "val_size": args.val_size, "limit": args.limit, "train_images": n_train,
                       "epochs": settings.epochs, "batch_size": settings.batch_size, "seed": settings.seed,
                       "optimizer": optimizer.to_dict(), "schedule": settings.schedule.to_dict(),
                       "twin": settings.twin, "torch": torch.__version__, "threads": torch.get_num_threads(),
                       **({"data_parallel": data_parallel.describe()} if data_parallel is not None else {}),
                       **({"notes": notes} if notes else {}), **config.to_dict()}
        log(f"run directory: {run_dir}")
        log(f"data: {data.name}, {n_train} train / {data.val_x.shape[0]} val / {data.test_x.shape[0]} "
            f"test images ({data.source}); model {config.slug()}, {config.dtype} on {config.device}; "
            f"optimizer {optimizer.slug()}, batch {batch_size}"
            + (f", lr schedule {settings.schedule.name}" if settings.schedule.name != "constant" else "")
            + (f" after {settings.schedule.warmup_steps} warm-up steps" if settings.schedule.warmup_steps else "")
            + (f"; data-parallel over {world_size} processes, {batch_size // world_size} images each per step"
               if data_parallel is not None else ""))
        summary = train(config, settings, data, run_dir, description,
                        resume=Path(args.resume) if args.resume else None, log=log,
                        progress=not args.no_progress and main_rank, data_parallel=data_parallel)
    except NothingToTrain as reason:
        log(f"nothing to train: {reason}")
        return 0
    except (DatasetError, CheckpointError, TrainingError, RunLockError, LoggingError, ValueError,
            DistributedError) as error:
        print(f"{rank_tag}error: {error}", file=sys.stderr)
        return 1
    if not main_rank:
        return {"SIGINT": 130, "SIGTERM": 143}.get(summary["interrupted"], 0)

    summary_path = run_dir / "summary.json"
    text = json.dumps(summary, indent=2) + "\n"
    with signals_held():  # a late Ctrl-C must not leave the summary behind the checkpoint
        try:
            arguments.write_output(summary_path, text, "run summary")
        except OSError as error:
            print(f"error: {error}; the checkpoint {summary['checkpoint']} holds the run", file=sys.stderr)
            return 1
        if args.json:
            try:
                arguments.write_output(args.json, text, "--json")
            except OSError as error:
                print(f"error: {error}; the run's own summary is {summary_path}", file=sys.stderr)
                return 1
    print_summary(summary, log)
    # An interrupted run is not a finished one: exit as shells report a death by that signal (128 + number).
    return {"SIGINT": 130, "SIGTERM": 143}.get(summary["interrupted"], 0)


def prepare_run_dir(args, config, settings, logdir, data_parallel) -> Path:
    """The run directory: the checkpoint's own on --resume (checked now, not after the training), else a new one
    named after what differs in this run."""
    if args.resume is not None:
        existing_checkpoint(Path(args.resume))
        run_dir = Path(args.resume).resolve().parent
        summary = run_dir / "summary.json"
        arguments.output_file(summary, "run summary", own=(summary,))  # before the training, not after it
        return run_dir
    # Every setting that differs from the defaults shows in the name, the data and process group's too.
    name = run_name(config.to_dict(), {
        **settings.identity(), "dataset": args.dataset, "limit": args.limit, "standardize": args.standardize,
        "val_size": args.val_size, "world_size": data_parallel.world_size if data_parallel is not None else 1,
        "dp_mode": data_parallel.mode if data_parallel is not None else None})
    return new_run_dir(logdir, name)


if __name__ == "__main__":
    sys.exit(main())
