"""Lecture 001's computational-graph examples, every local and upstream gradient.

1. f(x, y, z) = (x + y) z at x = -2, y = 5, z = -4: q = x + y, f = q z.
2. The sigmoid neuron f(w, x) = sigmoid(w0 x0 + w1 x1 + w2) in the lecture's "flat" code, at the point of the
   slides (w0 = 2, x0 = -1, w1 = -3, x1 = -2, w2 = -3, from the CS231n slides the lecture modifies; its text
   gives w0 and x0 through the products [0.2] x [-1] and [0.2] x [2]).
Engine: the backward written out line by line, [upstream] x [local]. Twin: autograd with retain_grad().
The course prints two significant digits, so its numbers are checked to half a unit of the last one.
"""

from __future__ import annotations

import math

import torch

from experiments.labs.common import Lab

F64 = torch.float64
XYZ = {"x": -2.0, "y": 5.0, "z": -4.0}
NEURON = {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0}


def engine_add_mul(x, y, z) -> dict:
    q = x + y                      # add gate
    f = q * z                      # mul gate
    grad_f = 1.0                   # the root: df/df
    local = {"dq/dx": 1.0, "dq/dy": 1.0, "df/dq": z, "df/dz": q}
    grad_q = grad_f * local["df/dq"]          # [upstream] x [local]
    grad_z = grad_f * local["df/dz"]
    grad_x = grad_q * local["dq/dx"]
    grad_y = grad_q * local["dq/dy"]
    return {"q": q, "f": f, **local, "df/dx": grad_x, "df/dy": grad_y, "df/dz (total)": grad_z,
            "df/dq (upstream)": grad_q}


def twin_add_mul(x, y, z) -> dict:
    x, y, z = (torch.tensor(v, dtype=F64, requires_grad=True) for v in (x, y, z))
    q = x + y
    q.retain_grad()
    f = q * z
    f.backward()
    return {"q": q.item(), "f": f.item(), "df/dx": x.grad.item(), "df/dy": y.grad.item(),
            "df/dz (total)": z.grad.item(), "df/dq (upstream)": q.grad.item()}


def engine_neuron(w0, x0, w1, x1, w2) -> dict:
    """The lecture's flat code: forward, then one grad_ line per forward line, in reverse."""
    s0 = w0 * x0
    s1 = w1 * x1
    s2 = s0 + s1
    s3 = s2 + w2
    L = 1.0 / (1.0 + math.exp(-s3))
    grad_L = 1.0
    local_sigmoid = (1 - L) * L    # d sigmoid / ds3 = (1 - sigma) sigma
    grad_s3 = grad_L * local_sigmoid
    grad_w2 = grad_s3
    grad_s2 = grad_s3
    grad_s0 = grad_s2
    grad_s1 = grad_s2
    grad_w1 = grad_s1 * x1
    grad_x1 = grad_s1 * w1
    grad_w0 = grad_s0 * x0
    grad_x0 = grad_s0 * w0
    return {"s3": s3, "f": L, "local sigmoid'": local_sigmoid, "grad_s3": grad_s3, "grad_w0": grad_w0,
            "grad_x0": grad_x0, "grad_w1": grad_w1, "grad_x1": grad_x1, "grad_w2": grad_w2}


def twin_neuron(w0, x0, w1, x1, w2) -> dict:
    leaves = {name: torch.tensor(value, dtype=F64, requires_grad=True)
              for name, value in zip(("w0", "x0", "w1", "x1", "w2"), (w0, x0, w1, x1, w2))}
    s3 = leaves["w0"] * leaves["x0"] + leaves["w1"] * leaves["x1"] + leaves["w2"]
    s3.retain_grad()
    L = torch.sigmoid(s3)
    L.backward()
    return {"s3": s3.item(), "f": L.item(), "grad_s3": s3.grad.item(),
            **{f"grad_{name}": leaf.grad.item() for name, leaf in leaves.items()}}


def run(args, report) -> None:
    engine, twin = engine_add_mul(**XYZ), twin_add_mul(**XYZ)
    report.say("f = (x + y) z at (-2, 5, -4): q = x + y = 3, f = q z = -12")
    report.say(f"  local: dq/dx = dq/dy = 1, df/dq = z = {engine['df/dq']}, df/dz = q = {engine['df/dz']}")
    report.say(f"  chain: df/dx = df/dq * dq/dx = {engine['df/dx']}, df/dy = {engine['df/dy']}, "
               f"df/dz = {engine['df/dz (total)']}")
    course = {"q": 3, "f": -12, "dq/dx": 1, "dq/dy": 1, "df/dq": -4, "df/dz": 3, "df/dx": -4, "df/dy": -4,
              "df/dz (total)": 3, "df/dq (upstream)": -4}
    for name, value in course.items():
        report.check(f"(x+y)z: {name}", value, engine[name], twin.get(name))
    engine, twin = engine_neuron(**NEURON), twin_neuron(**NEURON)
    report.say("sigmoid neuron: s3 = w0 x0 + w1 x1 + w2 = 1, f = sigmoid(1)")
    for line in ("grad_s3", "grad_w2", "grad_w1", "grad_x1", "grad_w0", "grad_x0"):
        report.say(f"  {line} = {engine[line]:.4f}")
    # (course value, tolerance): 0.73 to 2 decimals; 0.2, -0.2 and 0.4 are [0.2] x [local] with 0.2 rounded.
    course = {"f": (0.73, 0.005), "local sigmoid'": (0.2, 0.05), "grad_s3": (0.2, 0.05), "grad_w0": (-0.2, 0.05),
              "grad_x0": (0.4, 0.05), "s3": (None, 0), "grad_w1": (None, 0), "grad_x1": (None, 0), "grad_w2": (None, 0)}
    for name, (value, tol) in course.items():
        report.check(f"neuron: {name}", value, engine[name], twin.get(name), tol=tol, parity=1e-15)
    report.values.update(neuron=engine)


LAB = Lab("graph_examples", "001", "(x+y)z at (-2,5,-4) and the sigmoid neuron: every local and upstream gradient",
          "< 1 s", run)
