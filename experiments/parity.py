"""Compare the hand-written backprop with autograd, tensor by tensor, on one batch.

    python -m experiments.parity --sizes 784,256,128,10 --activation relu --loss cross_entropy
    python -m experiments.parity --activation maxout --maxout-pieces 3 --dropout 0.5 --input-dropout 0.2 \
        --max-norm 2 --init kaiming_uniform --input-grad --exact

Exit status: 0 when every tensor is within the tolerance policy, 1 when not, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from experiments import arguments
from experiments.optimizer_flags import (
    OPTIMIZER_DESTS,
    add_optimizer_flags,
    flag_named_error,
    optimizer_config,
    schedule_config,
)
from experiments.preflight import flags_without_effect, memory_fits, schedule_past_the_run
from manual_backprop.config import HIDDEN_ACTIVATIONS, INITS, LOSSES, MSE_CONVENTIONS, OUTPUT_ACTIVATIONS, MLPConfig
from manual_backprop.optim_config import OptimizerConfig
from side_by_side.training_parity import run_optimizer_parity
from torch_reference.parity import run_parity


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints such as 784,256,10; got {text!r}")
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected at least an input and an output width, all >= 1; got {text!r}")
    return sizes


def resolve_device(name: str) -> str:
    """'auto' picks cuda when there is a GPU, else cpu; an explicit 'cuda' without a GPU is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to PyTorch here (use --device cpu or auto)")
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.parity",
        description="Layer-by-layer parity of the manual backprop engine against its autograd twin.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=(784, 256, 128, 10),
                        help="layer widths, input first and output last")
    parser.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="relu", help="hidden activation")
    parser.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS, default=None,
                        help="default: softmax for cross_entropy, identity otherwise")
    parser.add_argument("--leaky-slope", type=float, default=0.1, help="negative slope of leaky_relu")
    parser.add_argument("--elu-alpha", type=float, default=1.0, help="alpha of elu")
    parser.add_argument("--loss", choices=LOSSES, default="cross_entropy")
    parser.add_argument("--mse-convention", choices=MSE_CONVENTIONS, default="course",
                        help="course: 1/(2m)||Y_hat-Y||^2; mean: PyTorch's MSELoss")
    parser.add_argument("--l2", type=float, default=0.0, help="L2 strength on the weights")
    parser.add_argument("--maxout-pieces", type=int, default=2, metavar="K",
                        help="pieces per unit with --activation maxout")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="drop probability of the hidden units (the pass is a training pass; both sides "
                             "draw the same masks)")
    parser.add_argument("--input-dropout", type=float, default=0.0, help="drop probability of the input pixels")
    parser.add_argument("--max-norm", type=float, default=None, metavar="C",
                        help="apply the max-norm constraint (rows of every W to norm <= C) to both sides' initial "
                             "weights first and compare the constrained weights too")
    parser.add_argument("--init", choices=INITS, default="torch_linear", help="weight initialisation")
    parser.add_argument("--input-grad", action="store_true", help="also compare dL/dX (layer 0, dX)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--numeric", action="store_true",
                        help="add a float64 central-finite-difference check of the parameter gradients")
    parser.add_argument("--exact", action="store_true", help="fail unless every tensor is bitwise equal")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--steps", type=int, default=0, metavar="N",
                        help="train both models N steps with the optimizer below and compare weights, every "
                             "optimizer state tensor and the learning rate after each (0: one gradient check)")
    add_optimizer_flags(parser)
    return parser


# Flags of the optimizer/schedule groups: they act only with --steps N (the one-batch check has no update).
TRAINING_FLAGS = ("optimizer", *OPTIMIZER_DESTS, "no_decay_biases", "eps_placement", "lr_schedule", "lr_gamma",
                  "lr_step_size", "lr_milestones", "lr_t_max", "lr_eta_min", "warmup_steps", "warmup_start_factor")


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        arguments.integer(args.batch_size, "--batch-size", low=1, expected="at least 1")
        arguments.integer(args.steps, "--steps", low=0)
        arguments.seed(args.seed)
        arguments.nonempty_path(args.json, "--json")
        config = MLPConfig(sizes=args.sizes, activation=args.activation, output_activation=args.output_activation,
                           leaky_slope=args.leaky_slope, elu_alpha=args.elu_alpha, loss=args.loss,
                           mse_convention=args.mse_convention, l2=args.l2, maxout_pieces=args.maxout_pieces,
                           dropout=args.dropout, input_dropout=args.input_dropout, max_norm=args.max_norm,
                           init=args.init, dtype=args.dtype, device=resolve_device(args.device))
        explicit = arguments.given_flags(build_parser(), argv)
        flags_without_effect(args, explicit)
        optimizer = schedule = None
        if args.steps:
            if args.numeric or args.input_grad:
                raise ValueError("--steps: --numeric and --input-grad belong to the one-batch check (--steps 0)")
            optimizer = optimizer_config(args)
            if optimizer.eps_placement != "torch":
                raise ValueError(f"--eps-placement {optimizer.eps_placement}: torch.optim (the twin) has only torch's "
                                 "placement, so --steps cannot compare this one; the engine's own tests cover it")
            schedule = schedule_config(args, total_steps=args.steps)
            schedule.check_against(optimizer.lr)
            schedule_past_the_run(schedule, args.steps, optimizer.lr, explicit | {"lr_schedule"})
        else:
            given = sorted(explicit & set(TRAINING_FLAGS))
            if given:
                raise ValueError(f"{', '.join('--' + dest.replace('_', '-') for dest in given)}: the optimizer and "
                                 "schedule flags act only with --steps N (the one-batch check makes no update); "
                                 "add --steps N or leave them out")
        memory_fits(config, optimizer or OptimizerConfig("sgd"), args.batch_size, 0, True,
                    f"--sizes {','.join(map(str, args.sizes))}", f"--batch-size {args.batch_size}")
        if args.json is not None:
            arguments.output_file(args.json, "--json")  # before the check, not after it
    except (ValueError, TypeError) as error:
        parser.error(flag_named_error(error))
    if args.steps:
        report = run_optimizer_parity(config, optimizer, schedule, steps=args.steps, batch_size=args.batch_size,
                                      seed=args.seed, require_exact=args.exact)
    else:
        report = run_parity(config, batch_size=args.batch_size, seed=args.seed, numeric=args.numeric,
                            require_exact=args.exact, input_grad=args.input_grad)
    print(f"config: {config.slug()}, {config.dtype} on {config.device}, batch {args.batch_size}, seed {args.seed}")
    print(report.table())
    if args.json:
        try:
            arguments.write_output(args.json, json.dumps(report.to_json(), indent=2) + "\n", "--json")
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
