"""Lecture 000's first principles: the derivative as the limit of a difference quotient, its examples, the chain
rule in one dimension, and the bias as one more weight.

- f'(x) = lim_{h -> 0} (f(x + h) - f(x)) / h. The lecture's examples: y = x gives 1 everywhere; y = x^2 gives
  lim (2x + h) = 2x; y = x + 1 and y = x + 2 keep the slope 1 (a vertical translation changes no derivative);
  f(x, y) = x^2 + 3y has the partial derivatives 2x and 3. Engine: the difference quotient itself, at shrinking
  h (float64); twin: autograd. For x^2 the quotient is exactly 2x + h in exact arithmetic, so its error must
  shrink with h: a checked claim.
- The chain rule dy/dx = dy/du du/dx, in one dimension: y = u^2 with u = x + 1 (the lecture's own two functions),
  and the lecture's scalar chain x -> z = x w + b -> y_hat = ReLU(z) -> L = 1/2 (y_hat - y)^2, whose dL/dw is the
  product dL/dy_hat * dy_hat/dz * dz/dw of three local derivatives. The lecture gives the formulas, no numbers:
  the points are this lab's (x = 2, w = 3, b = 0.5, y = 4).
- The bias as a weight: x~ = [x1, x2, 1], W~ = [W | b] give z = x~ W~^T = x W^T + b, dL/dW~ = delta^T x~, whose last
  column is dL/db = delta. On the one-layer lab's x = [1, 2], W = [[3, 2], [4, 1], [5, 2]], y = [1, 4, 4], with a
  bias b = [0.5, -1, 2] of this lab's choosing.
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab
from manual_backprop.activations import relu_backward, relu_forward
from manual_backprop.linear import linear_backward, linear_forward

F64 = torch.float64
STEPS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)  # h, shrinking; below about 1e-8 float64 cancellation takes over
X0 = 3.0  # the point of the one-variable examples
POINT = (3.0, 2.0)  # (x, y) of the partial-derivative example


def quotient(f, x: float, h: float) -> float:
    """The difference quotient (f(x + h) - f(x)) / h in float64: the definition before the limit."""
    x = torch.tensor(x, dtype=F64)
    return ((f(x + h) - f(x)) / h).item()


def autograd_derivative(f, *point: float) -> list[float]:
    leaves = [torch.tensor(value, dtype=F64, requires_grad=True) for value in point]
    f(*leaves).backward()
    return [leaf.grad.item() for leaf in leaves]


def limit_definition(report) -> None:
    h = STEPS[-1]
    examples = {"y = x": (lambda x: x, 1.0), "y = x + 1": (lambda x: x + 1, 1.0),
                "y = x + 2": (lambda x: x + 2, 1.0), "y = x^2": (lambda x: x * x, 2 * X0)}
    for name, (f, course) in examples.items():
        engine = quotient(f, X0, h)
        [twin] = autograd_derivative(f, X0)
        report.say(f"{name}: (f(x + h) - f(x)) / h at x = {X0:g}, h = {h:g}: {engine:.8f}; autograd {twin:g}")
        # the quotient of x^2 is 2x + h: within h of the limit; the others within float64 rounding of 1/h
        report.check(f"{name}: f'({X0:g}) by the quotient at h = {h:g}", course, engine, twin, tol=2 * h,
                     parity=2 * h)
    errors = [abs(quotient(lambda x: x * x, X0, step) - 2 * X0) for step in STEPS]
    report.say("y = x^2: |quotient - 2x| for h = " + ", ".join(f"{step:g}: {error:.2e}" for step, error in
                                                           zip(STEPS, errors)))
    report.claim("the quotient of x^2 approaches 2x as h shrinks (its error is about h)",
                 all(b < a for a, b in zip(errors, errors[1:]))
                 and all(abs(error - step) < 1e-6 * step + 1e-9 for error, step in zip(errors, STEPS)))
    f = lambda x, y: x * x + 3 * y
    x, y = POINT
    engine = [quotient(lambda t: f(t, torch.tensor(y, dtype=F64)), x, h),
              quotient(lambda t: f(torch.tensor(x, dtype=F64), t), y, h)]
    twin = autograd_derivative(f, x, y)
    report.check(f"f = x^2 + 3y at {POINT}: (df/dx, df/dy) = (2x, 3)", [2 * x, 3.0], engine, twin, tol=2 * h,
                 parity=2 * h)


def chain_rule(report) -> None:
    x = 2.0
    u = x + 1                                   # u = g(x) = x + 1, du/dx = 1
    dy_du, du_dx = 2 * u, 1.0                   # y = f(u) = u^2, dy/du = 2u
    [twin] = autograd_derivative(lambda t: (t + 1) ** 2, x)
    report.check("y = u^2, u = x + 1 at x = 2: dy/dx = dy/du * du/dx = 2(x + 1)", 2 * (x + 1), dy_du * du_dx, twin)

    # x -> z = x w + b -> y_hat = ReLU(z) -> L = 1/2 (y_hat - y)^2, one dimension, with the engine's pairs
    xs, w, b, target = (torch.tensor([[value]], dtype=F64) for value in (2.0, 3.0, 0.5, 4.0))
    z, linear_cache = linear_forward(xs, w, b.reshape(1))
    y_hat, relu_cache = relu_forward(z)
    dL_dyhat = y_hat - target                   # dL/dy_hat
    dL_dz = relu_backward(dL_dyhat, relu_cache)  # * dy_hat/dz (1 where z > 0)
    _, dL_dw, dL_db = linear_backward(dL_dz, linear_cache, input_grad=False)  # * dz/dw = x, * dz/db = 1
    w_leaf, b_leaf = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss = 0.5 * ((torch.relu(xs @ w_leaf.T + b_leaf) - target) ** 2).sum()
    loss.backward()
    report.say(f"scalar chain at x = 2, w = 3, b = 0.5, y = 4: z = {z.item():g}, y_hat = {y_hat.item():g}, "
               f"dL/dy_hat = {dL_dyhat.item():g}, dL/dw = dL/dy_hat * 1 * x = {dL_dw.item():g}")
    course = (6.5 - 4.0) * 1.0 * 2.0             # the lecture's product of the three local derivatives
    report.check("scalar chain: dL/dw = dL/dy_hat * dy_hat/dz * dz/dw", course, dL_dw.reshape(()),
                 w_leaf.grad.reshape(()))
    report.check("scalar chain: dL/db = dL/dy_hat * dy_hat/dz * 1", 6.5 - 4.0, dL_db.reshape(()),
                 b_leaf.grad.reshape(()))


def bias_as_weight(report) -> None:
    x = torch.tensor([[1.0, 2.0]], dtype=F64)
    W = torch.tensor([[3.0, 2.0], [4.0, 1.0], [5.0, 2.0]], dtype=F64)
    b = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    y = torch.tensor([[1.0, 4.0, 4.0]], dtype=F64)
    # the engine: one layer with the bias, and the augmented layer without one
    z, cache = linear_forward(x, W, b)
    delta = relu_backward(relu_forward(z)[0] - y, relu_forward(z)[1])
    _, dW, db = linear_backward(delta, cache, input_grad=False)
    x_aug, W_aug = torch.cat([x, torch.ones(1, 1, dtype=F64)], 1), torch.cat([W, b[:, None]], 1)
    z_aug, cache_aug = linear_forward(x_aug, W_aug, torch.zeros(3, dtype=F64))
    _, dW_aug, _ = linear_backward(delta, cache_aug, input_grad=False)
    # the twin: autograd of the layer with the bias
    W_leaf, b_leaf = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
    (0.5 * ((torch.relu(x @ W_leaf.T + b_leaf) - y) ** 2).sum()).backward()
    report.say(f"x~ = {x_aug.tolist()}, W~ = [W | b]: z = {z_aug.tolist()}; dL/dW~ = {dW_aug.tolist()}")
    report.check("bias as a weight: z = x~ W~^T equals x W^T + b (autograd's)", None, z_aug,
                 (x @ W.T + b).detach())
    report.check("bias as a weight: dL/dW~ = delta^T x~, first columns = dL/dW", None, dW_aug[:, :2], W_leaf.grad)
    report.check("bias as a weight: last column of dL/dW~ = dL/db = delta", None, dW_aug[:, 2], b_leaf.grad)
    report.check("bias as a weight: the engine's own db equals that column", None, db, dW_aug[:, 2])
    report.values.update(dW_aug=dW_aug, dW=dW)


def run(args, report) -> None:
    limit_definition(report)
    chain_rule(report)
    bias_as_weight(report)


LAB = Lab("derivatives", "000", "the derivative as a limit (y = x, x^2, x + 1, x^2 + 3y), the 1-D chain rule, the "
          "bias as a weight", "< 1 s", run)
