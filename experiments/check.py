"""Check a hand-written backward in one file against autograd: the quick form of torch_reference.checker.

    python -m experiments.check examples/layernorm.py
    python -m experiments.check my_op.py --dtype float64 --json report.json

FILE defines four module-level functions (examples/template.py is a copy-ready start):

    inputs(dtype, device, generator) -> {name: tensor}   the inputs (integer tensors pass through, no gradient)
    forward(**inputs) -> (output, cache)
    backward(grad_output, cache) -> {name: gradient}      one per floating-point input
    reference(**inputs) -> output                         the same op with torch ops autograd can differentiate

and optionally ``CONTRACTS = {"*.dW": "bitwise", ...}`` (contracts by tensor name), ``CONSTANTS = ("target",)``
(floating inputs that get no gradient) and ``NAME = "my_op"`` (see docs/check_your_backward.md).

Exit status: 0 when every contract holds, 1 when one does not, 2 when the file does not follow the convention,
its code raises, or a gradient has the wrong structure (shape, dtype, name, NaN where the reference has none).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import traceback

import torch

from experiments import arguments
from torch_reference.checker import CheckError, ContractError, check_op
from torch_reference.checker.errors import UserCodeError
from torch_reference.checker.report import STRUCTURAL

REQUIRED = ("inputs", "forward", "backward", "reference")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ConventionError(Exception):
    """The file cannot be checked; the message says why and what to do (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.check",
        description="Check the hand-written backward in FILE against autograd: every output and gradient compared "
                    "bit for bit, with ulp distances, and the first divergence triaged as rounding or formula error.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("file", metavar="FILE.py", help="a Python file defining inputs, forward, backward, reference")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="precision of the check")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--exact", action="store_true", help="require every tensor to be bitwise equal")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator given to inputs() and of the "
                        "upstream gradient")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    return parser


def load_user_file(path: str):
    try:
        arguments.input_file(path, "FILE", "Python file")
    except ValueError as error:
        raise ConventionError(str(error)) from None
    if not path.endswith(".py"):
        raise ConventionError(f"{path}: expected a Python file ending in .py")
    name = "user_check_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # so it can import its neighbours
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ConventionError(f"{path}: not valid Python: {error}") from error
    except Exception as error:
        shown = "".join(traceback.format_exception(type(error), error, error.__traceback__)[1:])
        raise ConventionError(f"{path}: importing it raised {type(error).__name__}: {error}\n{shown}") from error
    finally:
        sys.path.pop(0)
    missing = [function for function in REQUIRED if not callable(getattr(module, function, None))]
    if missing:
        raise ConventionError(f"{path}: missing {', '.join(f'{m}()' for m in missing)}. A checkable file defines "
                              f"inputs(dtype, device, generator) -> {{name: tensor}}, forward(**inputs) -> "
                              f"(output, cache), backward(grad_output, cache) -> {{name: gradient}} and "
                              f"reference(**inputs) -> output (see examples/template.py)")
    return module


def check_output_path(path: str, user_file: str) -> None:
    """--json: checked before any work (experiments/arguments.py's policy), and never the file being checked."""
    if os.path.exists(path) and os.path.exists(user_file) and os.path.samefile(path, user_file):
        raise ConventionError(f"--json {path}: that is the file being checked; choose another path")
    try:
        arguments.output_file(path, "--json")
    except ValueError as error:
        raise ConventionError(str(error)) from None


def write_json(report, path: str) -> None:
    try:
        arguments.write_output(path, json.dumps(report.to_json(), indent=2) + "\n", "--json")
    except OSError as error:
        raise ConventionError(f"could not write the report: {error}") from error


def run(args) -> int:
    try:
        arguments.seed(args.seed)
    except ValueError as error:
        raise ConventionError(str(error)) from None
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConventionError("--device cuda: no CUDA GPU is visible to PyTorch here; use --device cpu")
    if args.json:
        check_output_path(args.json, args.file)
    module = load_user_file(args.file)
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    try:
        inputs = module.inputs(dtype, device, generator)
    except Exception as error:
        shown = "".join(traceback.format_exception(type(error), error, error.__traceback__)[1:])
        raise ConventionError(f"{args.file}: inputs() raised {type(error).__name__}: {error}\n{shown}") from error
    if not isinstance(inputs, dict) or not inputs:
        raise ConventionError(f"{args.file}: inputs() must return a non-empty dict {{name: tensor}}; got "
                              f"{type(inputs).__name__}")
    contracts = getattr(module, "CONTRACTS", None)
    name = getattr(module, "NAME", os.path.splitext(os.path.basename(args.file))[0])
    report = check_op(module.forward, module.backward, module.reference, inputs, contracts=contracts,
                      exact=args.exact, seed=args.seed, name=name, constants=getattr(module, "CONSTANTS", ()))
    print(report.table())
    if report.triage is not None or not report.passed:
        print(report.failure_message().split("\n\n")[0], file=sys.stderr)
    if args.json:
        write_json(report, args.json)
        print(f"report written to {args.json}")
    if report.passed:
        return 0
    return 2 if any(row.verdict in STRUCTURAL for row in report.rows if not row.passed) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ConventionError, UserCodeError, CheckError, ContractError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
