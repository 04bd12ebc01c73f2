"""Time a training step of the reference engine, the fast path (and its low-memory form), autograd, torch.compile
and the GEMM floor.

    python -m experiments.benchmark                       # 784-256-128-10 ReLU, cross-entropy, batches 1..2048
    python -m experiments.benchmark --batch-sizes 16,128 --repeats 7 --json bench.json
    python -m experiments.benchmark --optimizer adam  # the fast path's and the engine's Adam against torch.optim.Adam
    python -m experiments.benchmark --preset record   # one epoch of the record preset: fast, reference, PyTorch

A step is forward, loss, backward and the optimizer's update: by default SGD with momentum (lr 0.001, momentum
0.9); ``--optimizer`` picks another of the engine's optimizers with torch.optim's defaults (the fast path runs
each of them). Each time is the
best of ``--repeats`` runs of enough steps to last about ``--min-seconds``; the variants take turns within
each repeat, so a burst of load from elsewhere hits them alike. Peak memory is that of one step (see
experiments/benchmark_variants.py for how). Then one full MNIST epoch at ``--epoch-batch-size`` gives images/s
for the engine alone (reference and fast path, no twin) and for plain autograd. Ratios: autograd / fast and
autograd / reference (> 1: the engine is faster), fast / gemm_floor (1.0: nothing but the matrix products).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from experiments import arguments
from experiments.benchmark_record import RECORD_VARIANTS, record_main, record_variant_names
from experiments.benchmark_variants import (
    CPU_MEMORY_METHOD,
    CUDA_MEMORY_METHOD,
    DEFAULT_VARIANTS,
    VARIANTS,
    build_variant,
    peak_step_bytes,
    sgd_momentum,
)
from experiments.optimizer_flags import flag_named_error
from experiments.parity import parse_sizes, resolve_device
from experiments.preflight import memory_fits
from manual_backprop.config import MLPConfig
from manual_backprop.model import init_parameters
from manual_backprop.optim_config import OPTIMIZERS, OptimizerConfig
from torch_reference.parity import synthetic_batch

LR, MOMENTUM = 1e-3, 0.9  # the default optimizer: SGD with momentum
DEFAULT_BATCH_SIZES = "1,16,64,128,512,2048"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_steps(variant, steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` steps."""
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        variant.step()
    sync(device)
    return (time.perf_counter() - started) / steps


def measure_batch_size(config: MLPConfig, batch_size: int, names: list[str], repeats: int, min_seconds: float,
                       fuse_velocity: bool, seed: int = 0, optimizer: OptimizerConfig | None = None) -> dict:
    """{"batch_size", "ms", "ms_repeats", "peak_bytes", "notes"} for one batch size; None where a variant could
    not run. "ms" is each variant's best repeat, "ms_repeats" every repeat in order (the variants take turns
    within a repeat, so repeat i of two variants ran a fraction of a second apart: see ``paired_ratio``).
    optimizer: every variant's optimizer (default: SGD with momentum 0.9, lr 0.001)."""
    optimizer = optimizer or sgd_momentum(LR, MOMENTUM)
    generator = torch.Generator().manual_seed(seed)
    params = init_parameters(config, generator)
    X, y = synthetic_batch(config, batch_size, generator)
    device = config.torch_device
    variants, notes = {}, {}
    for name in names:
        try:
            variant = build_variant(name, config, params, X, y, optimizer, fuse_velocity)
            for _ in range(3):  # warm-up (and, for compiled, the compilation)
                variant.step()
            variants[name] = variant
        except Exception as error:  # a variant that cannot run here is reported, not fatal
            notes[name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300] if str(error) else ''}"
    steps = {name: max(1, int(min_seconds / max(run_steps(variant, 3, device), 1e-7)))
             for name, variant in variants.items()}
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, variant in variants.items():
            times[name].append(run_steps(variant, steps[name], device))
    best = {name: min(seconds) for name, seconds in times.items()}
    peaks = {}
    for name, variant in variants.items():
        try:
            peaks[name] = peak_step_bytes(variant, device)
        except Exception as error:
            notes[f"{name} peak_bytes"] = f"{type(error).__name__}: {error}"
    return {"batch_size": batch_size,
            "ms": {name: (1e3 * best[name] if name in best else None) for name in VARIANTS},
            "ms_repeats": {name: ([1e3 * t for t in times[name]] if name in times else None) for name in VARIANTS},
            "peak_bytes": {name: peaks.get(name) for name in VARIANTS},
            "notes": notes}


def ratio(numerator, denominator):
    return None if numerator is None or denominator is None or denominator == 0 else numerator / denominator


QUIET_TOLERANCE = 0.15  # a repeat is quiet when every variant ran within 15 % of its own best repeat


def quiet_repeats(row: dict) -> list[int]:
    """The repeats in which every variant that ran was within QUIET_TOLERANCE of its own best time; all repeats
    if there is none.

    This VM shares its host. For seconds at a time every variant runs up to 2.5x slower (the GEMM floor included:
    a busy neighbour on the other hyperthread, by the look of it), and such a stretch can cover most repeats of a
    batch size. The ratios of such a stretch are compressed (the slowdown is not proportional), so the paired
    ratio is taken over the quiet repeats only."""
    repeats = [seconds for seconds in (row.get("ms_repeats") or {}).values() if seconds]
    if not repeats:
        return []
    count = min(len(seconds) for seconds in repeats)
    quiet = [i for i in range(count)
             if all(seconds[i] <= (1 + QUIET_TOLERANCE) * min(seconds) for seconds in repeats)]
    return quiet or list(range(count))


def paired_ratio(row: dict, numerator: str, denominator: str):
    """The median, over the quiet repeats, of numerator_i / denominator_i: two runs a fraction of a second apart.

    The best-of ratio divides two bests that may come from different moments; within a repeat both variants
    ran under the same conditions. Where the two ratios disagree, the run was disturbed."""
    repeats = row.get("ms_repeats") or {}
    a, b = repeats.get(numerator), repeats.get(denominator)
    if not a or not b:
        return None
    return statistics.median(a[i] / b[i] for i in quiet_repeats(row))


def ratios(row: dict) -> dict:
    ms = row["ms"]
    return {"autograd/fast": ratio(ms["autograd"], ms["fast"]),
            "autograd/fast paired median": paired_ratio(row, "autograd", "fast"),
            "autograd/reference paired median": paired_ratio(row, "autograd", "reference"),
            "fast/gemm_floor paired median": paired_ratio(row, "fast", "gemm_floor"),
            "autograd/reference": ratio(ms["autograd"], ms["reference"]),
            "fast/gemm_floor": ratio(ms["fast"], ms["gemm_floor"]),
            "peak fast/autograd": ratio(row["peak_bytes"]["fast"], row["peak_bytes"]["autograd"]),
            "autograd/fast_low_memory": ratio(ms["autograd"], ms["fast_low_memory"]),
            "autograd/fast_fused": ratio(ms["autograd"], ms["fast_fused"]),
            "autograd/fast_fused paired median": paired_ratio(row, "autograd", "fast_fused"),
            "peak fast_low_memory/autograd": ratio(row["peak_bytes"]["fast_low_memory"], row["peak_bytes"]["autograd"])}


def load_training_images(dataset: str, data_dir, dtype: torch.dtype, device: str):
    """The training images and labels of ``dataset`` ("mnist", or "idx": IDX files in ``data_dir``), from
    whichever data module this checkout has."""
    try:
        from mnist_data import load_splits
    except ImportError:  # before the data code moved into its own package
        from manual_backprop.datasets import load_splits
    splits = load_splits(dataset, data_dir, dtype=dtype, device=device)
    return splits.train_x, splits.train_y


def epoch_images_per_second(config: MLPConfig, names: list[str], batch_size: int, dataset: str, data_dir,
                            fuse_velocity: bool, seed: int = 0, optimizer: OptimizerConfig | None = None,
                            repeats: int = 1) -> dict:
    """{"batch_size", "images", "seconds": {variant: s}, "images_per_s": {variant: n}} for one shuffled epoch of
    the training images (MNIST's 60000), the same order for every variant; the last batch is the partial one.
    With ``repeats`` > 1 each variant trains that many epochs, the variants taking turns epoch by epoch (so a
    burst of load from elsewhere hits them alike), and its fastest epoch counts.
    A variant that cannot train with ``optimizer`` (the fast path with Adam) is left out, its reason in "notes"."""
    optimizer = optimizer or sgd_momentum(LR, MOMENTUM)
    train_x, train_y = load_training_images(dataset, data_dir, config.torch_dtype, config.device)
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed)).to(config.torch_device)
    params = init_parameters(config, torch.Generator().manual_seed(seed))
    device = config.torch_device
    variants, seconds, notes = {}, {}, {}
    for name in names:
        try:
            variants[name] = build_variant(name, config, params, train_x[:batch_size], train_y[:batch_size],
                                           optimizer, fuse_velocity)
        except ValueError as error:  # the fast path and an optimizer it does not run
            notes[name] = f"{type(error).__name__}: {error}"
            continue
        variants[name].step()  # warm-up outside the clock
    for _ in range(repeats):
        for name, variant in variants.items():
            sync(device)
            started = time.perf_counter()
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                variant.X, variant.y = train_x[index], train_y[index]
                variant.step()
            sync(device)
            seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - started)
    return {"dataset": dataset, "batch_size": batch_size, "images": len(order), "repeats": repeats, "seconds": seconds,
            "images_per_s": {name: len(order) / s for name, s in seconds.items()}, "notes": notes}


def format_table(result: dict) -> str:
    def cell(value, spec):
        return "-" if value is None else format(value, spec)

    def pair(best_of, paired):
        return cell(best_of, ".2f") + ("" if paired is None else f" ({paired:.2f})")

    lines = [f"{result['config_slug']}, {result['optimizer_slug']}, {result['config']['dtype']} on {result['device']}, "
             f"{result['threads']} threads, torch {result['torch']}",
             f"{'batch':>5} | " + " | ".join(f"{name + ' ms':>14}" for name in VARIANTS)
             + " | autograd/fast (paired) | autograd/ref | fast/floor (paired) | "
             + " | ".join(f"{name + ' KiB':>14}" for name in VARIANTS)]
    for row in result["rows"]:
        r = ratios(row)
        lines.append(f"{row['batch_size']:>5} | "
                     + " | ".join(f"{cell(row['ms'][name], '.3f'):>14}" for name in VARIANTS)
                     + f" | {pair(r['autograd/fast'], r['autograd/fast paired median']):>22} | "
                     f"{cell(r['autograd/reference'], '.2f'):>12} | "
                     f"{pair(r['fast/gemm_floor'], r['fast/gemm_floor paired median']):>19} | "
                     + " | ".join(format(cell(None if row['peak_bytes'][name] is None
                                              else row['peak_bytes'][name] / 1024, '.0f'), ">14")
                                  for name in VARIANTS))
        for name, note in row["notes"].items():
            lines.append(f"      note ({name}): {note}")
    epoch = result.get("epoch")
    if epoch:
        lines.append(f"one {epoch['dataset']} epoch ({epoch['images']} images, batch {epoch['batch_size']}, fastest of "
                     f"{epoch.get('repeats', 1)}): " + ", ".join(
            f"{name} {rate:.0f} images/s ({epoch['seconds'][name]:.2f} s)"
            for name, rate in epoch["images_per_s"].items()))
        for name, note in epoch.get("notes", {}).items():
            lines.append(f"      epoch note ({name}): {note}")
    lines.append("ratios: of the best repeats; in parentheses the median of the ratio within each quiet repeat (every "
                 f"variant within {QUIET_TOLERANCE:.0%} of its best), the steadier one when load from elsewhere comes "
                 "and goes")
    lines.append(f"peak memory: {result['memory_method']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=(784, 256, 128, 10), help="layer widths")
    parser.add_argument("--activation", default="relu", help="hidden activation (an MLPConfig activation)")
    parser.add_argument("--loss", default="cross_entropy", help="an MLPConfig loss")
    parser.add_argument("--l2", type=float, default=0.0, help="L2 penalty strength")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="momentum",
                        help="every variant's optimizer, with torch.optim's defaults (momentum: SGD with momentum "
                             "0.9); every variant, the fast path included, runs it")
    parser.add_argument("--lr", type=float, default=LR, help="learning rate")
    parser.add_argument("--batch-sizes", default=DEFAULT_BATCH_SIZES, help="comma-separated batch sizes")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant; the best is reported")
    parser.add_argument("--min-seconds", type=float, default=0.2, help="length of one timed run")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--fuse-velocity", action="store_true",
                        help="fast path: the GEMM writes the momentum buffer (not bitwise; see "
                             "manual_backprop/fast.py); --variants fast,fast_fused,... times both forms in one run "
                             "instead")
    parser.add_argument("--epoch-batch-size", type=int, default=64, help="batch size of the MNIST epoch; 0 skips it")
    parser.add_argument("--epoch-repeats", type=int, default=3,
                        help="epochs per variant, taking turns; the fastest counts")
    parser.add_argument("--epoch-dataset", choices=("mnist", "idx"), default="mnist",
                        help="the epoch's data: MNIST, or your own IDX files in --data-dir")
    parser.add_argument("--data-dir", default=None, help="data directory (default: the data module's MNIST cache)")
    parser.add_argument("--preset", choices=("record",), default=None,
                        help="instead of the step table: one MNIST epoch of the record preset timed three ways "
                             "(experiments/benchmark_record.py); --epoch-repeats, --epoch-dataset, --data-dir, "
                             "--device, --dtype, --threads and --json apply")
    parser.add_argument("--record-variants", default=",".join(RECORD_VARIANTS),
                        help="--preset record: comma-separated subset of " + ",".join(RECORD_VARIANTS))
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    return parser


def parse_batch_sizes(text: str) -> list[int]:
    """"1,16,64" -> [1, 16, 64]; a ValueError naming --batch-sizes for anything else."""
    try:
        batch_sizes = [int(part) for part in text.split(",")]
    except ValueError:
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"--batch-sizes: expected comma-separated positive integers; got {text!r}")
    return batch_sizes


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        batch_sizes = parse_batch_sizes(args.batch_sizes)
        names = [name for name in args.variants.split(",") if name]
        unknown = sorted(set(names) - set(VARIANTS))
        if unknown or not names:
            raise ValueError(f"--variants: expected names from {','.join(VARIANTS)}; got {args.variants!r}")
        record_variant_names(args.record_variants)
        arguments.integer(args.repeats, "--repeats", low=1)
        arguments.integer(args.epoch_batch_size, "--epoch-batch-size", low=0)
        arguments.integer(args.epoch_repeats, "--epoch-repeats", low=1)
        if args.threads is not None:
            arguments.integer(args.threads, "--threads", low=1, high=4096)
        arguments.number(args.min_seconds, "--min-seconds", low=0, low_open=True, high=3600)
        arguments.number(args.lr, "--lr", low=0, low_open=True)
        config = MLPConfig(sizes=args.sizes, activation=args.activation, loss=args.loss, l2=args.l2,
                           dtype=args.dtype, device=resolve_device(args.device))
        optimizer = (sgd_momentum(args.lr, MOMENTUM) if args.optimizer == "momentum"
                     else OptimizerConfig(args.optimizer, lr=args.lr))
        memory_fits(config, optimizer, max(batch_sizes), 0, "autograd" in names or "compiled" in names,
                    f"--sizes {','.join(map(str, args.sizes))}", f"--batch-sizes {max(batch_sizes)}")
        if args.epoch_batch_size and args.data_dir is not None:
            arguments.nonempty_path(args.data_dir, "--data-dir")
            if Path(args.data_dir).exists() and not Path(args.data_dir).is_dir():
                raise ValueError(f"--data-dir {args.data_dir}: is not a directory")
        if args.json is not None:
            arguments.output_file(args.json, "--json")  # now, not after minutes of measuring
    except ValueError as error:
        parser.error(flag_named_error(error))
    if args.epoch_batch_size and args.epoch_dataset == "idx":  # the epoch's files, before minutes of measuring
        from mnist_data import DatasetError, default_data_dir
        from mnist_data.idx_format import user_idx_paths

        try:
            user_idx_paths(Path(args.data_dir) if args.data_dir else default_data_dir())
        except DatasetError as error:
            print(f"error: --epoch-dataset idx: {error} (--epoch-batch-size 0 skips the epoch)", file=sys.stderr)
            return 1
    try:
        return measure_and_report(args, config, optimizer, batch_sizes, names)
    except KeyboardInterrupt:
        print("\nbenchmark: interrupted (Ctrl-C); nothing was written", file=sys.stderr)
        return 130


def measure_and_report(args, config: MLPConfig, optimizer: OptimizerConfig, batch_sizes: list[int],
                       names: list[str]) -> int:
    """Measure, print and write; the exit status: 1 when nothing that was asked for could be measured (no variant
    ran at any batch size, or the MNIST epoch could not be timed), with the reason."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preset == "record":
        return record_main(args, config)
    device = config.torch_device
    result = {"config": config.to_dict(), "config_slug": config.slug(), "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "optimizer": optimizer.to_dict(), "optimizer_slug": optimizer.slug(),
              "fuse_velocity": args.fuse_velocity,
              "memory_method": CUDA_MEMORY_METHOD if device.type == "cuda" else CPU_MEMORY_METHOD,
              "rows": []}
    for batch_size in batch_sizes:
        result["rows"].append(measure_batch_size(config, batch_size, names, args.repeats, args.min_seconds,
                                                 args.fuse_velocity, optimizer=optimizer))
        print(f"batch {batch_size}: done", file=sys.stderr, flush=True)
    for row in result["rows"]:
        row["ratios"] = ratios(row)
    if args.epoch_batch_size:
        epoch_names = [name for name in ("reference", "fast", "fast_fused", "autograd") if name in names]
        try:
            result["epoch"] = epoch_images_per_second(config, epoch_names, args.epoch_batch_size, args.epoch_dataset,
                                                      args.data_dir, args.fuse_velocity, optimizer=optimizer,
                                                      repeats=args.epoch_repeats)
        except Exception as error:
            result["epoch"] = None
            result["epoch_note"] = f"{type(error).__name__}: {error}"
    print(format_table(result))
    failures = []
    if not any(ms is not None for row in result["rows"] for ms in row["ms"].values()):
        failures.append(f"no variant of {','.join(names)} could run at any batch size (the notes above say why)")
    if result.get("epoch_note"):
        print(f"MNIST epoch skipped: {result['epoch_note']}")
        failures.append(f"the {args.epoch_dataset} epoch could not be timed ({result['epoch_note']}); "
                        "--epoch-batch-size 0 skips it")
    if args.json:
        try:
            arguments.write_output(args.json, json.dumps(result, indent=2), "--json")
        except OSError as error:
            failures.append(str(error))
    for reason in failures:
        print(f"error: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
