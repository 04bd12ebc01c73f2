"""The checker's mutation test (issue 15, "How it is checked").

* BUGS: deliberate, realistic bugs in hand-written backward (and two forward) functions. Each must be caught by
  check_op with the right first tensor and the verdict "formula error" ("wrong name" where a gradient is
  returned under another input's name), in float32 and float64.
* REFORMULATIONS: correct rewrites of the same math (reordered sums, where vs multiply-by-mask, fused vs split,
  einsum vs matmul, x.sum(0) vs ones @ x, one-pass vs two-pass statistics...). Each must pass, or at worst be
  called "rounding", never "formula error".
* A few through check_layers and check_training (a manual SGD-momentum step with a bug in the velocity update is
  caught at the right step and tensor).
* Integer labels pass through with no gradient; bad input gets a clear CheckError (API) or exit 2 (CLI).

Inputs are drawn from their own generator (not the upstream gradient's seed 0), small, in float64 and then cast,
so both dtypes see the same values.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import experiments.check
from experiments.check import main as cli_main
from torch_reference.checker import CheckError, Layer, UserCodeError, check_layers, check_op, check_training

DTYPES = [torch.float32, torch.float64]
EPS = 1e-5


def draw(*shape, scale=1.0, shift=0.0, generator):
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale + shift


def cast_all(named: dict, dtype) -> dict:
    return {name: value.to(dtype) if value.is_floating_point() else value for name, value in named.items()}


@dataclass
class Op:
    """One op: a correct forward/backward, the reference autograd differentiates, and its inputs (float64)."""

    forward: Callable
    backward: Callable
    reference: Callable
    make_inputs: Callable  # generator -> {name: float64 tensor or integer tensor}

    def inputs(self, dtype, seed=1234):
        return cast_all(self.make_inputs(torch.Generator().manual_seed(seed)), dtype)


# ---- the ops ---------------------------------------------------------------------------------------------------

def linear_forward(x, W, b):
    return x @ W.T + b, (x, W)


def linear_backward(d, cache):
    x, W = cache
    return {"x": d @ W, "W": d.T @ x, "b": d.sum(0)}


# square: batch = in = out, so a transposed product or a sum over the wrong axis keeps the shape
LINEAR = Op(linear_forward, linear_backward, lambda x, W, b: F.linear(x, W, b),
            lambda g: {"x": draw(6, 6, generator=g), "W": draw(6, 6, generator=g), "b": draw(6, generator=g)})


def mse_forward(yhat, y):
    return ((yhat - y) ** 2).mean(), (yhat, y)


def mse_backward(d, cache):
    yhat, y = cache
    g = d * 2 * (yhat - y) / yhat.numel()
    return {"yhat": g, "y": -g}


MSE = Op(mse_forward, mse_backward, lambda yhat, y: F.mse_loss(yhat, y),
         lambda g: {"yhat": draw(8, 3, generator=g), "y": draw(8, 3, generator=g)})


def relu_forward(x):
    y = x.clamp(min=0)
    return y, (x, y)


def relu_backward(d, cache):
    x, _ = cache
    return {"x": d * (x > 0).to(d.dtype)}


def relu_inputs(g):
    x = draw(8, 10, generator=g)
    x[::2, ::3] = 0.0  # exact zeros: where a mask off by one at zero shows
    return {"x": x}


RELU = Op(relu_forward, relu_backward, lambda x: torch.relu(x), relu_inputs)


def silu_forward(x):
    s = torch.sigmoid(x)
    return x * s, (x, s)


def silu_backward(d, cache):
    x, s = cache
    return {"x": d * (s + x * s * (1 - s))}  # product rule: (x s)' = s + x s'


SILU = Op(silu_forward, silu_backward, lambda x: F.silu(x), lambda g: {"x": draw(8, 10, scale=2, generator=g)})


def tanh_forward(x):
    y = torch.tanh(x)
    return y, (x, y)


def tanh_backward(d, cache):
    _, y = cache
    return {"x": d * (1 - y * y)}


TANH = Op(tanh_forward, tanh_backward, lambda x: torch.tanh(x), lambda g: {"x": draw(8, 10, generator=g)})


def sigmoid_forward(x):
    s = torch.sigmoid(x)
    return s, s


def sigmoid_backward(d, s):
    return {"x": d * s * (1 - s)}


SIGMOID = Op(sigmoid_forward, sigmoid_backward, lambda x: torch.sigmoid(x),
             lambda g: {"x": draw(8, 10, scale=2, generator=g)})


def softmax_forward(x):
    y = torch.softmax(x, 1)
    return y, y


def softmax_backward(d, y):
    return {"x": y * (d - (d * y).sum(1, keepdim=True))}


SOFTMAX = Op(softmax_forward, softmax_backward, lambda x: torch.softmax(x, 1),
             lambda g: {"x": draw(6, 6, scale=2, generator=g)})


def ce_forward(logits, labels):
    shifted = logits - logits.max(1, keepdim=True).values
    log_p = shifted - shifted.exp().sum(1, keepdim=True).log()
    loss = -log_p[torch.arange(len(labels)), labels].mean()
    return loss, (log_p.exp(), labels)


def ce_backward(d, cache):
    p, labels = cache
    return {"logits": d * (p - F.one_hot(labels, p.shape[1]).to(p.dtype)) / p.shape[0]}


def ce_inputs(g):
    return {"logits": draw(8, 5, scale=2, generator=g), "labels": torch.randint(0, 5, (8,), generator=g)}


CROSS_ENTROPY = Op(ce_forward, ce_backward, lambda logits, labels: F.cross_entropy(logits, labels), ce_inputs)


def layernorm_forward(x, gamma, beta):
    mu = x.mean(-1, keepdim=True)
    xc = x - mu
    rstd = 1 / torch.sqrt((xc * xc).mean(-1, keepdim=True) + EPS)
    xhat = xc * rstd
    return gamma * xhat + beta, (xhat, rstd, gamma)


def layernorm_backward(d, cache):
    xhat, rstd, gamma = cache
    dxhat = d * gamma
    dx = rstd * (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True))
    return {"x": dx, "gamma": (d * xhat).sum(0), "beta": d.sum(0)}


def layernorm_inputs(g):
    return {"x": draw(6, 16, scale=2, shift=0.5, generator=g), "gamma": draw(16, scale=0.3, shift=1, generator=g),
            "beta": draw(16, scale=0.1, generator=g)}


LAYERNORM = Op(layernorm_forward, layernorm_backward,
               lambda x, gamma, beta: F.layer_norm(x, x.shape[-1:], gamma, beta, eps=EPS), layernorm_inputs)


def batchnorm_forward(x, gamma, beta):
    mu = x.mean(0)
    xc = x - mu
    var = (xc * xc).mean(0)
    rstd = 1 / torch.sqrt(var + EPS)
    xhat = xc * rstd
    return gamma * xhat + beta, (x, xc, var, rstd, xhat, gamma)


def batchnorm_backward(d, cache):
    _, _, _, rstd, xhat, gamma = cache
    n = d.shape[0]
    dxhat = d * gamma
    dx = rstd / n * (n * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0))
    return {"x": dx, "gamma": (d * xhat).sum(0), "beta": d.sum(0)}


def batchnorm_split_backward(d, cache, var_divisor=None):
    """The chain rule node by node (xhat, var, mu), as the course's computational graph draws it."""
    x, xc, var, rstd, xhat, gamma = cache
    n = d.shape[0]
    dxhat = d * gamma
    dvar = (dxhat * xc).sum(0) * -0.5 * (var + EPS) ** -1.5
    dmu = -(dxhat * rstd).sum(0) + dvar * (-2 * xc).sum(0) / n
    dx = dxhat * rstd + dvar * 2 * xc / (var_divisor or n) + dmu / n
    return {"x": dx, "gamma": (d * xhat).sum(0), "beta": d.sum(0)}


def batchnorm_inputs(g):
    return {"x": draw(12, 5, scale=3, shift=-1, generator=g), "gamma": draw(5, scale=0.3, shift=1, generator=g),
            "beta": draw(5, scale=0.1, generator=g)}


BATCHNORM = Op(batchnorm_forward, batchnorm_backward,
               lambda x, gamma, beta: F.batch_norm(x, None, None, gamma, beta, training=True, eps=EPS),
               batchnorm_inputs)


def matmul_forward(A, B):
    return A @ B, (A, B)


def matmul_backward(d, cache):
    A, B = cache
    return {"A": d @ B.T, "B": A.T @ d}


MATMUL = Op(matmul_forward, matmul_backward, lambda A, B: A @ B,
            lambda g: {"A": draw(5, 5, generator=g), "B": draw(5, 5, generator=g)})


def residual_forward(x, W):
    a = torch.tanh(x @ W.T)
    return x + a, (x, W, a)


def residual_backward(d, cache):
    x, W, a = cache
    dz = d * (1 - a * a)
    return {"x": d + dz @ W, "W": dz.T @ x}


RESIDUAL = Op(residual_forward, residual_backward, lambda x, W: x + torch.tanh(x @ W.T),
              lambda g: {"x": draw(6, 4, generator=g), "W": draw(4, 4, scale=0.5, generator=g)})


def mean_forward(x):
    return x.mean(1), x.shape[1]


def mean_backward(d, m):
    return {"x": d[:, None].expand(-1, m) / m}


MEAN = Op(mean_forward, mean_backward, lambda x: x.mean(1), lambda g: {"x": draw(6, 9, generator=g)})


def mul_forward(a, b):
    return a * b, (a, b)


def mul_backward(d, cache):
    a, b = cache
    return {"a": d * b, "b": d * a}


MUL = Op(mul_forward, mul_backward, lambda a, b: a * b,
         lambda g: {"a": draw(4, 5, generator=g), "b": draw(4, 5, generator=g)})

# ---- the bugs --------------------------------------------------------------------------------------------------


def ln_parts(cache):
    xhat, rstd, gamma = cache
    return xhat, rstd, gamma


def layernorm_with(dx_of):
    """A LayerNorm backward whose dx is dx_of(d, xhat, rstd, gamma); dgamma, dbeta right."""
    def backward(d, cache):
        xhat, rstd, gamma = cache
        return {"x": dx_of(d, xhat, rstd, gamma), "gamma": (d * xhat).sum(0), "beta": d.sum(0)}
    return backward


def mean_last(t):
    return t.mean(-1, keepdim=True)


BUGS = {
    # id: (op, {"backward" or "forward": the mutant}, first tensor, verdict)
    "linear: dx with the wrong sign": (LINEAR, dict(backward=lambda d, c: {
        "x": -(d @ c[1]), "W": d.T @ c[0], "b": d.sum(0)}), "op.dx", "formula error"),
    "linear: dx = d W^T (transposed product)": (LINEAR, dict(backward=lambda d, c: {
        "x": d @ c[1].T, "W": d.T @ c[0], "b": d.sum(0)}), "op.dx", "formula error"),
    "linear: dW = x^T d (transposed product)": (LINEAR, dict(backward=lambda d, c: {
        "x": d @ c[1], "W": c[0].T @ d, "b": d.sum(0)}), "op.dW", "formula error"),
    "linear: db summed over the wrong axis": (LINEAR, dict(backward=lambda d, c: {
        "x": d @ c[1], "W": d.T @ c[0], "b": d.sum(1)}), "op.db", "formula error"),
    "linear: db as a mean (an extra 1/m)": (LINEAR, dict(backward=lambda d, c: {
        "x": d @ c[1], "W": d.T @ c[0], "b": d.mean(0)}), "op.db", "formula error"),
    "mse: missing 1/m": (MSE, dict(backward=lambda d, c: {
        "yhat": d * 2 * (c[0] - c[1]), "y": -d * 2 * (c[0] - c[1])}), "op.dyhat", "formula error"),
    "mse: 1/N of the batch instead of 1/(N K)": (MSE, dict(backward=lambda d, c: {
        "yhat": d * 2 * (c[0] - c[1]) / c[0].shape[0], "y": -d * 2 * (c[0] - c[1]) / c[0].numel()}),
        "op.dyhat", "formula error"),
    "mse: missing factor 2": (MSE, dict(backward=lambda d, c: {
        "yhat": d * (c[0] - c[1]) / c[0].numel(), "y": -d * 2 * (c[0] - c[1]) / c[0].numel()}),
        "op.dyhat", "formula error"),
    "mse: the target's gradient without the factor 2": (MSE, dict(backward=lambda d, c: {
        "yhat": d * 2 * (c[0] - c[1]) / c[0].numel(), "y": -d * (c[0] - c[1]) / c[0].numel()}),
        "op.dy", "formula error"),
    "relu: mask off by one at zero (x >= 0)": (RELU, dict(backward=lambda d, c: {
        "x": d * (c[0] >= 0).to(d.dtype)}), "op.dx", "formula error"),
    "silu: dropped term of the product rule (x s)' = s": (SILU, dict(backward=lambda d, c: {
        "x": d * c[1]}), "op.dx", "formula error"),
    "tanh: 1 - x^2 (the input instead of the output)": (TANH, dict(backward=lambda d, c: {
        "x": d * (1 - c[0] * c[0])}), "op.dx", "formula error"),
    "sigmoid: s (1 + s) for s (1 - s)": (SIGMOID, dict(backward=lambda d, s: {
        "x": d * s * (1 + s)}), "op.dx", "formula error"),
    "softmax: diagonal of the Jacobian only": (SOFTMAX, dict(backward=lambda d, y: {
        "x": d * y * (1 - y)}), "op.dx", "formula error"),
    "softmax: the row sum over the wrong axis": (SOFTMAX, dict(backward=lambda d, y: {
        "x": y * (d - (d * y).sum(0, keepdim=True))}), "op.dx", "formula error"),
    "softmax: missing the y factor": (SOFTMAX, dict(backward=lambda d, y: {
        "x": d - (d * y).sum(1, keepdim=True)}), "op.dx", "formula error"),
    "cross-entropy: missing 1/N": (CROSS_ENTROPY, dict(backward=lambda d, c: {
        "logits": d * (c[0] - F.one_hot(c[1], c[0].shape[1]).to(c[0].dtype))}), "op.dlogits", "formula error"),
    "cross-entropy: onehot - p (wrong sign)": (CROSS_ENTROPY, dict(backward=lambda d, c: {
        "logits": d * (F.one_hot(c[1], c[0].shape[1]).to(c[0].dtype) - c[0]) / c[0].shape[0]}),
        "op.dlogits", "formula error"),
    "layernorm: dx missing the mean term": (LAYERNORM, dict(backward=layernorm_with(
        lambda d, xhat, rstd, gamma: rstd * (d * gamma - xhat * mean_last(d * gamma * xhat)))),
        "op.dx", "formula error"),
    "layernorm: dx missing the gamma factor": (LAYERNORM, dict(backward=layernorm_with(
        lambda d, xhat, rstd, gamma: rstd * (d - mean_last(d) - xhat * mean_last(d * xhat)))),
        "op.dx", "formula error"),
    "layernorm: the variance branch detached (rstd taken as a constant)": (LAYERNORM, dict(backward=layernorm_with(
        lambda d, xhat, rstd, gamma: rstd * (d * gamma - mean_last(d * gamma)))), "op.dx", "formula error"),
    "layernorm: dgamma and dbeta swapped": (LAYERNORM, dict(backward=lambda d, c: {
        **layernorm_backward(d, c), "gamma": d.sum(0), "beta": (d * c[0]).sum(0)}), "op.dgamma", "wrong name"),
    "batchnorm: unbiased variance in the forward (x.var(0))": (BATCHNORM, dict(forward=lambda x, gamma, beta: (
        lambda mu, var: (gamma * (x - mu) / torch.sqrt(var + EPS) + beta,
                         (x, x - mu, var, 1 / torch.sqrt(var + EPS), (x - mu) / torch.sqrt(var + EPS), gamma)))(
        x.mean(0), x.var(0))), "op.out", "formula error"),
    "batchnorm: unbiased 1/(N-1) in the backward's variance path": (BATCHNORM, dict(
        backward=lambda d, c: batchnorm_split_backward(d, c, var_divisor=d.shape[0] - 1)), "op.dx", "formula error"),
    "batchnorm: dx missing the sum(dxhat) term": (BATCHNORM, dict(backward=lambda d, c: {
        **batchnorm_backward(d, c),
        "x": c[3] / d.shape[0] * (d.shape[0] * d * c[5] - c[4] * (d * c[5] * c[4]).sum(0))}),
        "op.dx", "formula error"),
    "matmul: dB = d^T A (transposed product)": (MATMUL, dict(backward=lambda d, c: {
        "A": d @ c[1].T, "B": d.T @ c[0]}), "op.dB", "formula error"),
    "residual: the skip branch detached (dx = dz W)": (RESIDUAL, dict(backward=lambda d, c: {
        "x": (d * (1 - c[2] * c[2])) @ c[1], "W": (d * (1 - c[2] * c[2])).T @ c[0]}), "op.dx", "formula error"),
    "mean: missing 1/m": (MEAN, dict(backward=lambda d, m: {"x": d[:, None].expand(-1, m).clone()}),
                          "op.dx", "formula error"),
    "mul: da and db swapped": (MUL, dict(backward=lambda d, c: {"a": d * c[0], "b": d * c[1]}), "op.da", "wrong name"),
}

# ---- the correct reformulations --------------------------------------------------------------------------------


def layernorm_split_backward(d, cache):
    """LayerNorm node by node: dxhat, dvar, dmu, then dx."""
    xhat, rstd, gamma = cache
    n = d.shape[-1]
    xc = xhat / rstd
    dxhat = d * gamma
    dvar = (dxhat * xc).sum(-1, keepdim=True) * -0.5 * rstd ** 3
    dmu = -(dxhat * rstd).sum(-1, keepdim=True) + dvar * (-2 * xc).mean(-1, keepdim=True)
    dx = dxhat * rstd + dvar * 2 * xc / n + dmu / n
    return {"x": dx, "gamma": torch.einsum("nd,nd->d", d, xhat), "beta": d.sum(0)}


def layernorm_one_pass_forward(x, gamma, beta):
    mu = x.mean(-1, keepdim=True)
    var = (x * x).mean(-1, keepdim=True) - mu * mu  # E[x^2] - E[x]^2: one pass over x
    rstd = torch.rsqrt(var + EPS)
    xhat = (x - mu) * rstd
    return gamma * xhat + beta, (xhat, rstd, gamma)


def softmax_jacobian_backward(d, y):
    jacobian = torch.diag_embed(y) - y[:, :, None] * y[:, None, :]  # diag(y) - y y^T, per row
    return {"x": torch.einsum("nij,nj->ni", jacobian, d)}


REFORMULATIONS = {
    "relu: torch.where instead of multiply-by-mask": (RELU, dict(backward=lambda d, c: {
        "x": torch.where(c[0] > 0, d, torch.zeros_like(d))})),
    "relu: the mask from the output (y > 0)": (RELU, dict(backward=lambda d, c: {"x": d * (c[1] > 0).to(d.dtype)})),
    "linear: einsum instead of matmul": (LINEAR, dict(backward=lambda d, c: {
        "x": torch.einsum("no,oi->ni", d, c[1]), "W": torch.einsum("no,ni->oi", d, c[0]),
        "b": torch.einsum("no->o", d)})),
    "linear: db = ones @ d instead of d.sum(0), dx as a broadcast sum": (LINEAR, dict(backward=lambda d, c: {
        "x": (d[:, :, None] * c[1][None]).sum(1), "W": d.T @ c[0], "b": torch.ones(d.shape[0], dtype=d.dtype) @ d})),
    "matmul: dB reordered as (d^T A)^T, dA by torch.mm": (MATMUL, dict(backward=lambda d, c: {
        "A": torch.mm(d, c[1].t()), "B": (d.T @ c[0]).T})),
    "mse: (yhat - y) (2/m), fused constant": (MSE, dict(backward=lambda d, c: {
        "yhat": (c[0] - c[1]) * (2 / c[0].numel()) * d, "y": (c[1] - c[0]) * (2 / c[0].numel()) * d})),
    "sigmoid: s - s^2 instead of s (1 - s)": (SIGMOID, dict(backward=lambda d, s: {"x": d * (s - s * s)})),
    "tanh: (1 - y)(1 + y) instead of 1 - y^2": (TANH, dict(backward=lambda d, c: {"x": d * (1 - c[1]) * (1 + c[1])})),
    "silu: factored s (1 + x (1 - s))": (SILU, dict(backward=lambda d, c: {"x": d * c[1] * (1 + c[0] * (1 - c[1]))})),
    "softmax: the explicit Jacobian diag(y) - y y^T (einsum)": (SOFTMAX, dict(backward=softmax_jacobian_backward)),
    "cross-entropy: no max shift, softmax recomputed in the backward": (CROSS_ENTROPY, dict(
        forward=lambda logits, labels: (-torch.log(torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True))[
            torch.arange(len(labels)), labels].mean(), (logits, labels)),
        backward=lambda d, c: {"logits": d * (torch.softmax(c[0], 1) - F.one_hot(c[1], c[0].shape[1]).to(
            c[0].dtype)) / c[0].shape[0]})),
    "layernorm: split node by node, einsum for dgamma": (LAYERNORM, dict(backward=layernorm_split_backward)),
    "layernorm: one-pass variance E[x^2] - mu^2, rsqrt": (LAYERNORM, dict(forward=layernorm_one_pass_forward)),
    "batchnorm: split node by node (dvar, dmu)": (BATCHNORM, dict(backward=batchnorm_split_backward)),
    "batchnorm: dbeta = ones @ d, dgamma by einsum": (BATCHNORM, dict(backward=lambda d, c: {
        **batchnorm_backward(d, c), "beta": torch.ones(d.shape[0], dtype=d.dtype) @ d,
        "gamma": torch.einsum("nc,nc->c", d, c[4])})),
    "mean: x.sum(1) / m forward, d * (1/m) backward": (MEAN, dict(
        forward=lambda x: (x.sum(1) / x.shape[1], x.shape[1]),
        backward=lambda d, m: {"x": d[:, None] * torch.full((d.shape[0], m), 1 / m, dtype=d.dtype)})),
    "residual: split skip and branch, summed the other way": (RESIDUAL, dict(backward=lambda d, c: {
        "x": (d * (1 - c[2] * c[2])) @ c[1] + d, "W": torch.einsum("ni,nj->ij", d * (1 - c[2] ** 2), c[0])})),
}


def run_case(op: Op, mutant: dict, dtype) -> object:
    forward = mutant.get("forward", op.forward)
    backward = mutant.get("backward", op.backward)
    return check_op(forward, backward, op.reference, op.inputs(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(BUGS))
def test_bug_is_caught(case, dtype):
    op, mutant, first, verdict = BUGS[case]
    report = run_case(op, mutant, dtype)
    assert not report.passed, report.table()
    assert report.first_divergence.name == first, report.failure_message()
    assert report.first_divergence.verdict == verdict, report.failure_message()
    assert report.triage is not None and report.triage.row == first and report.triage.verdict == verdict
    assert report.summary().startswith(f"FAIL (op): first divergence {first}: {verdict}")
    if verdict == "formula error":
        assert report.triage.float64_normwise_error > 1e-6  # far from the 1e-10 rounding line, not a close call
        assert report.triage.farther_side == "yours"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(REFORMULATIONS))
def test_correct_reformulation_is_not_a_formula_error(case, dtype):
    op, mutant = REFORMULATIONS[case]
    report = run_case(op, mutant, dtype)
    verdicts = {row.name: row.verdict for row in report.rows}
    assert set(verdicts.values()) <= {"bitwise", "within contract", "rounding"}, report.failure_message()
    if report.triage is not None:
        assert report.triage.verdict == "rounding", report.failure_message()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(REFORMULATIONS))
def test_reformulation_under_an_exact_contract_is_rounding(case, dtype):
    """With every tensor held to bitwise, a reformulation that is not bitwise fails, and the triage must call
    every such row rounding (the float64 re-run agrees), never a formula error."""
    op, mutant = REFORMULATIONS[case]
    report = check_op(mutant.get("forward", op.forward), mutant.get("backward", op.backward), op.reference,
                      op.inputs(dtype), exact=True)
    assert {row.verdict for row in report.rows} <= {"bitwise", "rounding"}, report.failure_message()
    if not report.passed:
        assert report.triage.verdict == "rounding" and report.triage.float64_normwise_error <= 1e-10
        assert report.triage.cause


def test_the_unmutated_ops_pass():
    for op in {id(op): op for op, *_ in [*BUGS.values(), *REFORMULATIONS.values()]}.values():
        for dtype in DTYPES:
            report = check_op(op.forward, op.backward, op.reference, op.inputs(dtype))
            assert report.passed, report.failure_message()


def test_a_sign_error_that_equals_another_inputs_gradient_is_a_formula_error_not_a_wrong_name():
    """mse's dy with the wrong sign is exactly dyhat; but dyhat came back right (no swap), so it is a sign error."""
    backward = lambda d, c: {"yhat": d * 2 * (c[0] - c[1]) / c[0].numel(), "y": d * 2 * (c[0] - c[1]) / c[0].numel()}
    report = check_op(MSE.forward, backward, MSE.reference, MSE.inputs(torch.float32))
    assert report.first_divergence.name == "op.dy" and report.triage.verdict == "formula error"


def test_swapped_gradients_read_as_wrong_name():
    grad = lambda d, c: d * 2 * (c[0] - c[1]) / c[0].numel()
    backward = lambda d, c: {"yhat": -grad(d, c), "y": grad(d, c)}
    report = check_op(MSE.forward, backward, MSE.reference, MSE.inputs(torch.float32))
    assert report.first_divergence.name == "op.dyhat" and report.triage.verdict == "wrong name"
    assert "'y'" in report.triage.explanation


def test_the_mutation_test_is_big_enough():
    assert len(BUGS) >= 20 and len(REFORMULATIONS) >= 10
    assert sum(verdict == "wrong name" for *_, verdict in BUGS.values()) >= 1


def test_relu_inputs_have_exact_zeros():
    assert int((RELU.inputs(torch.float32)["x"] == 0).sum()) > 0


def test_multiply_by_mask_is_not_bitwise_but_passes():
    """x * mask gives -0.0 where the upstream gradient is negative, autograd's relu +0.0: equal numbers,
    different bits. The default contract passes it; an exact check calls it rounding (the sign of zero)."""
    report = check_op(RELU.forward, RELU.backward, RELU.reference, RELU.inputs(torch.float32), exact=True)
    if report.passed:
        pytest.skip("this torch build's relu backward gives -0.0 as well")
    assert report.first_divergence.name == "op.dx" and report.triage.verdict == "rounding"
    assert "sign of zero" in report.triage.cause

# ---- level 2 and 3 ---------------------------------------------------------------------------------------------


def relu_layer_forward(x):
    return x.clamp(min=0), x


def relu_layer_backward(d, x):
    return {"x": d * (x > 0).to(d.dtype)}


def linear_layer_backward(d, cache):
    x, W = cache
    return {"x": d @ W, "W": d.T @ x, "b": d.sum(0)}


def mse_loss_forward(out, target):
    return ((out - target) ** 2).mean(), (out, target)


def mse_loss_backward(d, cache):
    out, target = cache
    return {"x": d * 2 * (out - target) / out.numel()}


def small_network(relu_backward=relu_layer_backward, fc1_backward=linear_layer_backward,
                  fc2_backward=linear_layer_backward,
                  loss_backward=mse_loss_backward, dtype=torch.float32):
    g = torch.Generator().manual_seed(7)
    x = draw(6, 6, generator=g)
    x[::2, ::2] = 0.0  # exact zeros at the relu's input
    target = draw(6, 3, generator=g).to(dtype)
    params = [{"W": draw(6, 6, scale=0.5, generator=g), "b": draw(6, generator=g)},
              {"W": draw(3, 6, scale=0.5, generator=g), "b": draw(3, generator=g)}]
    params = [{name: value.to(dtype) for name, value in p.items()} for p in params]
    layers = [Layer(relu_layer_forward, relu_backward, {}, "relu"),
              Layer(linear_forward, fc1_backward, params[0], "fc1"),
              Layer(tanh_forward, lambda d, c: {"x": d * (1 - c[1] ** 2)}, {}, "tanh"),
              Layer(linear_forward, fc2_backward, params[1], "fc2")]
    reference = nn.Sequential(nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    return check_layers(layers, reference, x.to(dtype), target=target, loss=Layer(mse_loss_forward, loss_backward),
                        reference_loss=F.mse_loss)


LAYER_BUGS = {
    "correct": ({}, None),
    "relu mask off by one at zero": (dict(relu_backward=lambda d, x: {"x": d * (x >= 0).to(d.dtype)}), "relu.dx"),
    "fc1: dW = x^T d (transposed product)": (dict(fc1_backward=lambda d, c: {
        "x": d @ c[1], "W": c[0].T @ d, "b": d.sum(0)}), "fc1.dW"),
    "fc2: db as a mean (an extra 1/m)": (dict(fc2_backward=lambda d, c: {
        "x": d @ c[1], "W": d.T @ c[0], "b": d.mean(0)}), "fc2.db"),
    "loss: missing 1/m": (dict(loss_backward=lambda d, c: {"x": d * 2 * (c[0] - c[1])}), "fc2.d_out"),
    "relu: where instead of mask (correct)": (dict(relu_backward=lambda d, x: {
        "x": torch.where(x > 0, d, torch.zeros_like(d))}), None),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(LAYER_BUGS))
def test_layers(case, dtype):
    changes, first = LAYER_BUGS[case]
    report = small_network(dtype=dtype, **changes)
    if first is None:
        assert all(row.verdict in ("bitwise", "within contract", "rounding") for row in report.rows), \
            report.failure_message()
        return
    assert report.first_divergence.name == first, report.failure_message()
    assert report.triage.verdict == "formula error", report.failure_message()
    assert all(row.passed for row in report.rows[:report.rows.index(report.first_divergence)])


def sgd_momentum_step(lr=0.1, momentum=0.9, bug=None):
    """A linear regression trained by hand: forward, backward, then SGD with momentum, torch.optim's layout."""
    def step(params, state, batch):
        x, y = batch
        W, b = params["W"], params["b"]
        out = x @ W.T + b
        loss = ((out - y) ** 2).mean()
        d = 2 * (out - y) / out.numel()
        grads = {"W": d.T @ x, "b": d.sum(0)}
        for name, grad in grads.items():
            entry = state.setdefault(name, {})
            buf = entry.get("momentum_buffer")
            if buf is None:
                buf = grad.clone() if bug != "dampened" else (1 - momentum) * grad
            elif bug == "swapped":
                buf = momentum * grad + buf  # momentum on the new gradient instead of the velocity
            elif bug == "dampened":
                buf = momentum * buf + (1 - momentum) * grad  # an EMA; torch.optim.SGD's dampening is 0
            else:
                buf = momentum * buf + grad
            entry["momentum_buffer"] = buf
            params[name] -= lr * buf
        return loss
    return step


def training_setup(dtype):
    g = torch.Generator().manual_seed(11)
    params = {"W": draw(2, 4, scale=0.5, generator=g).to(dtype), "b": draw(2, generator=g).to(dtype)}
    true_W = draw(2, 4, generator=g)
    batches = []
    for _ in range(4):
        x = draw(8, 4, generator=g)
        batches.append((x.to(dtype), (x @ true_W.T + 0.1 * draw(8, 2, generator=g)).to(dtype)))
    return params, batches


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bug, first", [(None, None), ("swapped", (2, "W")), ("dampened", (1, "W"))])
def test_training_sgd_momentum(bug, first, dtype):
    params, batches = training_setup(dtype)
    report = check_training(sgd_momentum_step(bug=bug), params, lambda x, W, b: x @ W.T + b,
                            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), F.mse_loss, batches)
    assert any(row.name == "W.momentum_buffer" for row in report.rows)  # the exposed state is compared
    if first is None:
        assert report.passed, report.failure_message()
        assert len({row.step for row in report.rows}) == 4
        return
    step, name = first
    row = report.first_divergence
    assert (row.step, row.name) == (step, name), report.failure_message()
    assert report.triage.verdict == "formula error", report.failure_message()
    assert all(r.passed for r in report.rows if r.step < step)

# ---- integer labels, and bad input -----------------------------------------------------------------------------


def test_labels_pass_through_with_no_gradient():
    inputs = CROSS_ENTROPY.inputs(torch.float32)
    seen = []

    def reference(logits, labels):
        seen.append(labels)
        return F.cross_entropy(logits, labels)

    def forward(logits, labels):
        seen.append(labels)
        return ce_forward(logits, labels)

    report = check_op(forward, ce_backward, reference, inputs)
    assert report.passed, report.failure_message()
    assert [row.name for row in report.rows] == ["op.out", "op.dlogits"]  # no row for the labels
    assert all(t.dtype == torch.int64 and torch.equal(t, inputs["labels"]) for t in seen) and len(seen) >= 2


def test_a_gradient_for_the_labels_is_told():
    backward = lambda d, c: {**ce_backward(d, c), "labels": torch.zeros_like(c[1])}
    report = check_op(ce_forward, backward, CROSS_ENTROPY.reference, CROSS_ENTROPY.inputs(torch.float32))
    assert report.first_divergence.name == "op.dlabels"
    assert report.first_divergence.verdict == "gradient for a non-differentiable input"
    assert "labels" in report.first_divergence.detail


def raising_backward(d, cache):
    raise ValueError("boom in my backward")


def test_backward_that_raises_shows_the_users_frame():
    with pytest.raises(UserCodeError) as caught:
        check_op(MUL.forward, raising_backward, MUL.reference, MUL.inputs(torch.float32))
    message = str(caught.value)
    assert "your backward" in message and "raising_backward" in message
    assert "boom in my backward" in message and 'raise ValueError("boom in my backward")' in message
    assert "test_checker_mutations.py" in message
    assert "torch_reference/checker" not in message  # the tool's own frames are left out


@pytest.mark.parametrize("returned, words", [(None, "returned None"), ([1.0], "expected a dict"),
                                             ({"a": [1.0], "b": 2.0}, "expected a tensor")])
def test_backward_that_returns_no_tensors(returned, words):
    with pytest.raises(CheckError, match=words):
        check_op(MUL.forward, lambda d, c: returned, MUL.reference, MUL.inputs(torch.float32))


def test_gradient_of_the_wrong_shape():
    backward = lambda d, c: {**linear_backward(d, c), "b": d.sum(0, keepdim=True)}
    report = check_op(LINEAR.forward, backward, LINEAR.reference, LINEAR.inputs(torch.float32))
    assert report.first_divergence.name == "op.db" and report.first_divergence.verdict == "shape mismatch"
    assert "(1, 6)" in report.first_divergence.detail


def test_gradient_with_nan():
    backward = lambda d, c: {"a": d * c[1], "b": torch.where(c[0] > 0, d * c[0], torch.nan)}
    report = check_op(MUL.forward, backward, MUL.reference, MUL.inputs(torch.float32))
    assert report.first_divergence.name == "op.db" and report.first_divergence.verdict == "non-finite"


@pytest.mark.parametrize("reference", [lambda a, b: (a * b).detach(), lambda a, b: torch.from_numpy(
    a.detach().numpy() * b.detach().numpy())], ids=["detached", "numpy"])
def test_reference_that_is_not_differentiable(reference):
    with pytest.raises(CheckError, match="not differentiable"):
        check_op(MUL.forward, MUL.backward, reference, MUL.inputs(torch.float32))


def test_missing_and_unexpected_gradient_names():
    report = check_op(MUL.forward, lambda d, c: {"a": d * c[1], "B": d * c[0]}, MUL.reference,
                      MUL.inputs(torch.float32))
    verdicts = {row.name: row.verdict for row in report.rows if not row.passed}
    assert verdicts == {"op.db": "missing gradient", "op.dB": "unexpected gradient"}


# The CLI on files a user might write: exit 2, with a message and no traceback from inside the tool.

CLI_HEAD = """
import torch

def inputs(dtype, device, generator):
    return {"a": torch.randn(3, 4, generator=generator, dtype=torch.float64).to(dtype),
            "b": torch.randn(3, 4, generator=generator, dtype=torch.float64).to(dtype),
            "labels": torch.tensor([0, 1, 2])}

def forward(a, b, labels):
    return a * b, (a, b, labels)

def reference(a, b, labels):
    return a * b
"""

CLI_CASES = {
    "raises": ("def backward(grad_output, cache):\n    raise RuntimeError('my own mistake')\n",
               ["your backward", "my own mistake", "raise RuntimeError('my own mistake')"]),
    "returns None": ("def backward(grad_output, cache):\n    return None\n", ["returned None"]),
    "non-tensor": ("def backward(grad_output, cache):\n    a, b, _ = cache\n"
                   "    return {'a': 1.0, 'b': grad_output * a}\n",
                   ["expected a tensor"]),
    "wrong shape": ("def backward(grad_output, cache):\n    a, b, _ = cache\n"
                    "    return {'a': (grad_output * b).sum(0), 'b': grad_output * a}\n", ["shape mismatch"]),
    "NaN": ("def backward(grad_output, cache):\n    a, b, _ = cache\n"
            "    return {'a': grad_output * b / 0 * 0, 'b': grad_output * a}\n", ["non-finite"]),
    "labels gradient": ("def backward(grad_output, cache):\n    a, b, labels = cache\n"
                        "    return {'a': grad_output * b, 'b': grad_output * a, 'labels': labels * 0}\n",
                        ["gradient for a non-differentiable input"]),
    "wrong name": ("def backward(grad_output, cache):\n    a, b, _ = cache\n"
                   "    return {'a': grad_output * a, 'b': grad_output * b}\n", ["wrong name"]),
    "reference not differentiable": ("def backward(grad_output, cache):\n    a, b, _ = cache\n"
                                     "    return {'a': grad_output * b, 'b': grad_output * a}\n"
                                     "def reference(a, b, labels):\n    return (a * b).detach()\n",
                                     ["not differentiable"]),
    "no backward": ("", ["missing backward()"]),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_exits_2(case, tmp_path, capsys):
    body, words = CLI_CASES[case]
    path = tmp_path / "my_op.py"
    path.write_text(textwrap.dedent(CLI_HEAD) + "\n" + body)
    status = cli_main([str(path)])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert status == 2, output
    for word in words:
        assert word in output, output
    assert experiments.check.__file__ not in output  # no traceback from inside the tool
    assert "torch_reference/checker/" not in output


def test_cli_good_file_exits_0_and_labels_are_fine(tmp_path, capsys):
    path = tmp_path / "my_op.py"
    path.write_text(textwrap.dedent(CLI_HEAD) + "\ndef backward(grad_output, cache):\n    a, b, _ = cache\n"
                    "    return {'a': grad_output * b, 'b': grad_output * a}\n")
    assert cli_main([str(path)]) == 0, capsys.readouterr()
    assert cli_main([str(path), "--dtype", "float64"]) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cli_cuda_where_there_is_none(tmp_path, capsys):
    path = tmp_path / "my_op.py"
    path.write_text(textwrap.dedent(CLI_HEAD) + "\ndef backward(grad_output, cache):\n    return {}\n")
    assert cli_main([str(path), "--device", "cuda"]) == 2
    assert "no CUDA" in capsys.readouterr().err
