"""Run the course's worked examples as labs.

    python -m experiments.labs [list]          list the labs (name, lecture, description, measured run time)
    python -m experiments.labs NAME [flags]    run one lab (NAME --help lists its flags)
    python -m experiments.labs all --fast      run every lab in its fast form

Exit status: 0 when every number the course states is reproduced and the engine agrees with its twin,
1 when not, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from experiments import arguments
from experiments.labs.common import Report, add_common_arguments, all_labs
from mnist_data.errors import DatasetError


def lab_parser(lab) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m experiments.labs {lab.name}",
                                     description=f"lecture {lab.lecture}: {lab.description}",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_arguments(parser)
    if lab.add_arguments is not None:
        lab.add_arguments(parser)
    return parser


def run_lab(lab, args: argparse.Namespace, quiet: bool = False) -> Report:
    report = Report(lab.name, quiet=quiet)
    torch.set_num_threads(args.threads)
    lab.run(args, report)
    return report


def check_common(args: argparse.Namespace) -> None:
    """The common flags, by the shared policy (experiments/arguments.py), before any lab runs."""
    arguments.seed(args.seed)
    arguments.integer(args.threads, "--threads", low=1, high=4096)
    if args.data_dir is not None:
        arguments.nonempty_path(str(args.data_dir), "--data-dir")
        if args.data_dir.exists() and not args.data_dir.is_dir():
            raise ValueError(f"--data-dir {args.data_dir}: is not a directory")
    if not args.no_tensorboard:
        arguments.writable_dir(args.logdir, "--logdir")


def failure(error: BaseException) -> str:
    """Why a lab could not run, in one line (the data, a file, a value out of range)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if isinstance(error, (DatasetError, ValueError, OSError)) else f"{type(error).__name__}: {text}"


def listing(labs) -> str:
    lines = [f"{'lab':<26} {'lecture':<8} {'full run':<10} description"]
    lines += [f"{lab.name:<26} {lab.lecture:<8} {lab.runtime:<10} {lab.description}" for lab in labs.values()]
    lines.append("\nRun one with `python -m experiments.labs NAME` (NAME --help for its flags), every fast form "
                 "with `python -m experiments.labs all --fast`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    labs = all_labs()
    if not argv or argv[0] in ("list", "-l", "--list"):
        print(listing(labs))
        return 0
    if argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "all":
        return run_all(labs, rest)
    if name not in labs:
        print(f"lab: no lab named {name!r}; expected list, all or one of: {', '.join(labs)}", file=sys.stderr)
        return 2
    lab = labs[name]
    try:
        args = lab_parser(lab).parse_args(rest)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        check_common(args)
    except ValueError as error:
        return arguments.usage_error(f"python -m experiments.labs {name}", str(error))
    try:
        report = run_lab(lab, args)
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except ValueError as error:  # bad flag values the parser cannot see (e.g. sizes that do not fit together)
        print(f"{name}: {error}", file=sys.stderr)
        return 2
    except (DatasetError, OSError, RuntimeError) as error:
        print(f"{name}: failed: {failure(error)}", file=sys.stderr)
        return 1
    print()
    print(report.table())
    return 0 if report.passed else 1


def run_all(labs, rest: list[str]) -> int:
    common = argparse.ArgumentParser(prog="python -m experiments.labs all",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_arguments(common)
    try:
        common_args = common.parse_args(rest)  # only the common flags make sense for every lab
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        check_common(common_args)
    except ValueError as error:
        return arguments.usage_error("python -m experiments.labs all", str(error))
    summary, failed = [], []
    for lab in labs.values():
        print(f"\n=== {lab.name} (lecture {lab.lecture}): {lab.description}")
        start = time.perf_counter()
        try:
            report = run_lab(lab, lab_parser(lab).parse_args(rest))
        except KeyboardInterrupt:
            print(f"\ninterrupted (Ctrl-C) during {lab.name}; " + (f"{len(summary)} labs had run" if summary
                                                                   else "no lab had finished"), file=sys.stderr)
            print("\n".join(summary))
            return 130
        except Exception as error:  # one lab's failure (its data, a file) must not stop the others
            seconds = time.perf_counter() - start
            print(f"{lab.name}: failed: {failure(error)}")
            summary.append(f"{lab.name:<26} {seconds:7.2f} s  failed: {failure(error)}")
            failed.append(lab.name)
            continue
        seconds = time.perf_counter() - start
        print(report.table())
        summary.append(f"{lab.name:<26} {seconds:7.2f} s  {'ok' if report.passed else 'FAIL'}")
        if not report.passed:
            failed.append(lab.name)
    print("\n" + "\n".join(summary))
    print(f"{len(labs) - len(failed)}/{len(labs)} labs passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
