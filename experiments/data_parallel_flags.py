"""The data-parallel flags of train_mnist, and joining the process group when torchrun started the run.

    torchrun --nproc-per-node 2 -m experiments.train_mnist --batch-size 128 [--dp-mode simple] [--bucket-mb 1]

Without torchrun these flags are refused: a single process has nothing to average with.
"""

from __future__ import annotations

import argparse
import os

from manual_backprop.data_parallel import DEFAULT_BUCKET_MB, MODES
from side_by_side.process_group import DEFAULT_TIMEOUT_S, DataParallel, from_environment, launched_by_torchrun

FLAGS = ("dp_mode", "bucket_mb", "dist_timeout")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, except that under torchrun only rank 0 prints a usage error. Every rank parses the same
    command line, so the others would print the same message again; they exit with the same status, silently."""

    def error(self, message):
        if launched_by_torchrun() and os.environ.get("RANK") != "0":
            self.exit(2)
        super().error(message)


def add_data_parallel_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "data-parallel (under torchrun: --batch-size is the global batch, split evenly over the processes)")
    group.add_argument("--dp-mode", choices=MODES, default=None,
                       help="how the engine averages its gradients: bucketed (all-reduces launched during the backward "
                            "as each bucket of gradients is final, like DDP) or simple (one blocking all-reduce per "
                            "gradient after the backward) (default: bucketed)")
    group.add_argument("--bucket-mb", type=float, default=None,
                       help="bucket size cap in MiB, for the engine's buckets and DDP's "
                            f"(default: {DEFAULT_BUCKET_MB})")
    group.add_argument("--dist-timeout", type=float, default=None,
                       help="seconds a process waits in a collective for the others before it gives up with an error "
                            f"(default: {DEFAULT_TIMEOUT_S:g}); rank 0's evaluation at the end of an epoch must fit "
                            "in it")


def start_data_parallel(args: argparse.Namespace, device: str) -> DataParallel | None:
    """Join torchrun's process group, or return None for a single-process run.
    Raises ValueError for data-parallel flags without torchrun, DistributedError when joining fails."""
    given = [f"--{name.replace('_', '-')}" for name in FLAGS if getattr(args, name) is not None]
    if not launched_by_torchrun():
        if given:
            raise ValueError(f"{', '.join(given)}: only for data-parallel runs; start them with "
                             f"torchrun --nproc-per-node N -m experiments.train_mnist ...")
        return None
    return from_environment(args.dp_mode or "bucketed",
                            DEFAULT_BUCKET_MB if args.bucket_mb is None else args.bucket_mb,
                            DEFAULT_TIMEOUT_S if args.dist_timeout is None else args.dist_timeout, device)
