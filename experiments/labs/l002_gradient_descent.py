"""Lecture 002's step-size example: gradient descent on f(x) = x1^2 + x1 x2 + 4 x2^2 from x0 = (3, 3),

    x_{k+1} = x_k - eta grad f(x_k),  grad f = [2 x1 + x2, x1 + 8 x2],  stop when |f(x_{k+1}) - f(x_k)| < eps,

with the slides' eta = 0.1 and eta = 0.2, and eta = 0.25. f has the constant Hessian H = [[2, 1], [1, 8]] with
eigenvalues 5 -+ sqrt(10) = 1.84 and 8.16; each step multiplies the error by I - eta H, so the iteration
converges exactly when eta < 2 / 8.16 = 0.245. Both of the slides' rates converge: eta = 0.1 smoothly, eta = 0.2
zig-zagging (the factor 1 - 0.2 * 8.16 = -0.63 flips the sign of that component every step). eta = 0.25
(factor -1.04) diverges, which is the run that does not converge. Its first step lands on f = 54 again
(from (3, 3) to (0.75, -3.75)), so the test |f(x_{k+1}) - f(x_k)| < eps alone would stop it at once and call
it converged; the lab therefore also asks for the slides' second criterion, ||grad f(x_k)|| < eps2.
Engine: the gradient by hand; twin: autograd of f. Curves and trajectories go to TensorBoard.
"""

from __future__ import annotations

import math

import torch

from experiments.labs.common import Lab, new_lab_run_dir, plot_curves, positive_float, positive_int, writer

F64 = torch.float64
RATES = (0.1, 0.2, 0.25)


def f(x: torch.Tensor) -> torch.Tensor:
    return x[0] ** 2 + x[0] * x[1] + 4 * x[1] ** 2


def engine_gradient(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([2 * x[0] + x[1], x[0] + 8 * x[1]])


def twin_gradient(x: torch.Tensor) -> torch.Tensor:
    leaf = x.clone().requires_grad_(True)
    f(leaf).backward()
    return leaf.grad


def descend(eta: float, eps: float, eps2: float, max_steps: int, gradient):
    """Iterates until |f(x_{k+1}) - f(x_k)| < eps and ||grad f|| < eps2 (converged), f > 1e6, or max_steps."""
    x = torch.tensor([3.0, 3.0], dtype=F64)
    path, values = [x], [f(x).item()]
    for _ in range(max_steps):
        x = x - eta * gradient(x)
        path.append(x)
        values.append(f(x).item())
        if abs(values[-1] - values[-2]) < eps and torch.linalg.vector_norm(gradient(x)).item() < eps2:
            return path, values, True
        if not math.isfinite(values[-1]) or values[-1] > 1e6:
            break
    return path, values, False


def add_arguments(parser) -> None:
    parser.add_argument("--eps", type=positive_float, default=1e-6, help="stop when |f(x_k+1) - f(x_k)| < eps")
    parser.add_argument("--eps2", type=positive_float, default=1e-3, help="and ||grad f(x_k)|| < eps2")
    parser.add_argument("--max-steps", type=positive_int, default=500)


def run(args, report) -> None:
    eigenvalues = torch.linalg.eigvalsh(torch.tensor([[2.0, 1.0], [1.0, 8.0]], dtype=F64))
    report.say(f"Hessian eigenvalues {eigenvalues.tolist()}: converges iff eta < 2/{eigenvalues[-1].item():.4f} "
               f"= {2 / eigenvalues[-1].item():.4f}")
    run_dir = report.run_dir = new_lab_run_dir(args, "gradient_descent")
    curves = {}
    for eta in RATES:
        path, values, converged = descend(eta, args.eps, args.eps2, args.max_steps, engine_gradient)
        twin_path, twin_values, twin_converged = descend(eta, args.eps, args.eps2, args.max_steps, twin_gradient)
        log = writer(run_dir, f"eta_{eta}")
        for k, (x, value) in enumerate(zip(path, values)):
            log.add_scalar("f(x_k)", value, k)
            log.add_scalar("x1", x[0].item(), k)
            log.add_scalar("x2", x[1].item(), k)
        log.close()
        curves[f"eta {eta}"] = (list(range(len(values))), [math.log10(max(v, 1e-300)) for v in values])
        report.say(f"eta = {eta}: {'converged' if converged else 'did NOT converge'} after {len(values) - 1} steps, "
                   f"x = {path[-1].tolist()}, f = {values[-1]:.3g}; "
                   f"first x2: {[round(p[1].item(), 3) for p in path[:5]]}")
        report.check(f"eta {eta}: converged (1 = yes)", None, float(converged), float(twin_converged))
        stable = eta < 2 / eigenvalues[-1].item()
        report.claim(f"eta {eta} {'converged' if converged else 'did not converge'}, as eta "
                     f"{'<' if stable else '>='} 2/lambda_max predicts", converged == stable)
        report.check(f"eta {eta}: final x", None, path[-1], twin_path[-1])
        report.values[eta] = {"converged": converged, "steps": len(values) - 1, "x": path[-1]}
    if run_dir is not None:
        image = writer(run_dir, "plots")
        image.add_image("log10_f", plot_curves(curves, "log10 f(x_k) for each eta"), 0)
        image.close()


LAB = Lab("gradient_descent", "002", "GD on x1^2 + x1 x2 + 4 x2^2 from (3, 3), eta 0.1 / 0.2 / 0.25, test |df| < eps",
          "< 1 s", run, add_arguments)
