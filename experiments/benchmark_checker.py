"""How long the checker takes on one op of a million float32 elements, with and without the float64 triage.

    python -m experiments.benchmark_checker [--elements 1000000] [--repeats 5]

The op is tanh; its backward is written in another order than autograd's (``g - g a^2`` against
``g (1 - a^2)``), so with ``--exact`` contracts the gradient fails and the triage re-runs the op in float64.
Prints the best of ``--repeats`` timings of each case (the first call, which warms up torch, is not counted).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from experiments import arguments
from torch_reference.checker import check_op


def forward(x):
    a = torch.tanh(x)
    return a, a


def backward(g, a):
    return {"x": g - g * a * a}


def reference(x):
    return torch.tanh(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark_checker", description=__doc__.split("\n")[0])
    parser.add_argument("--elements", type=int, default=1_000_000, help="elements of the op's input (1 to 10**8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed turns of each case; the best is reported")
    args = parser.parse_args(argv)
    try:
        arguments.integer(args.elements, "--elements", low=1, high=10**8)
        arguments.integer(args.repeats, "--repeats", low=1, high=1000)
    except ValueError as error:
        parser.error(str(error))
    x = torch.randn(args.elements, generator=torch.Generator().manual_seed(0))
    cases = {"noise floor (passes, no triage)": False, "exact (fails, with float64 triage)": True}
    try:
        for exact in cases.values():  # warm-up
            check_op(forward, backward, reference, {"x": x}, exact=exact)
        best = dict.fromkeys(cases, float("inf"))
        for _ in range(args.repeats):
            for label, exact in cases.items():  # interleaved, so a burst of load hits both cases alike
                started = time.perf_counter()
                report = check_op(forward, backward, reference, {"x": x}, exact=exact)
                best[label] = min(best[label], time.perf_counter() - started)
                assert report.passed != exact, report.summary()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"check_op on {args.elements} float32 elements, torch {torch.__version__}, {torch.get_num_threads()} threads,"
          f" best of {args.repeats}:")
    for label, seconds in best.items():
        print(f"  {label}: {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
