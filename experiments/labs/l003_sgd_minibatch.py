"""Lecture 003's stochastic gradient descent: at step t take m samples, g = grad of 1/m sum_i L(f(x_i), y_i),
theta <- theta - eta_t g, with a decaying rate eta_t = eta_0 / (1 + t / tau). m = 1 is the lecture's "select 1
sample" SGD; m > 1 the mini-batch form. Both run on the iris lab's data and network for the same number of
epochs (so the same number of per-sample gradient evaluations), engine and twin side by side, curves per m in
TensorBoard (loss against epochs).
"""

from __future__ import annotations

from experiments.labs.common import Lab, new_lab_run_dir, positive_float, positive_int, positive_int_list, writer
from experiments.labs.l003_iris import lecture_data, train_side_by_side


def add_arguments(parser) -> None:
    parser.add_argument("--epochs", type=positive_int, default=None, help="default: 100, --fast 5")
    parser.add_argument("--batch-sizes", type=positive_int_list, default=[1, 16],
                        help="comma-separated m values")
    parser.add_argument("--eta0", type=positive_float, default=0.05)
    parser.add_argument("--tau", type=positive_float, default=500.0, help="eta_t = eta0 / (1 + t / tau)")


def run(args, report) -> None:
    if min(args.batch_sizes) < 1:
        raise ValueError(f"--batch-sizes: expected sizes >= 1; got {args.batch_sizes}")
    X, y = lecture_data()
    epochs = args.epochs or (5 if args.fast else 100)
    run_dir = report.run_dir = new_lab_run_dir(args, "sgd_minibatch")

    def eta(t: int) -> float:
        return args.eta0 / (1 + t / args.tau)

    for m in args.batch_sizes:
        engine, twin, history = train_side_by_side(X, y, epochs, m, eta, args.seed)
        log = writer(run_dir, f"m_{m}")
        for epoch, steps, engine_eval, _ in history:
            log.add_scalar("loss/train", engine_eval.loss, epoch)
            log.add_scalar("accuracy/train", engine_eval.accuracy, epoch)
            log.add_scalar("eta_t", eta(steps), epoch)
        log.close()
        _, steps, engine_eval, twin_eval = history[-1]
        report.say(f"m = {m:3d}: {steps} updates, last eta_t = {eta(steps):.4g}, loss {engine_eval.loss:.4f}, "
                   f"accuracy {engine_eval.accuracy:.4f}")
        report.check(f"m={m}: training loss", None, engine_eval.loss, twin_eval.loss)
        report.check(f"m={m}: accuracy", None, engine_eval.accuracy, twin_eval.accuracy)
        for name, tensor in twin.engine_parameters().items():
            report.check(f"m={m}: {name}", None, engine.params[name], tensor.detach())
        report.values[m] = {"loss": engine_eval.loss, "accuracy": engine_eval.accuracy, "steps": steps}


LAB = Lab("sgd_minibatch", "003", "SGD with 1 sample vs mini-batches of m, decaying eta_t, on iris",
          "51 s", run, add_arguments)
