"""Lecture 001's patterns in gradient flow, on small tensors with a random upstream gradient dz:

    add gate   z = x + y        dx = dz,           dy = dz            (distributes)
    mul gate   z = x * y        dx = dz * y,       dy = dz * x        (swaps the inputs)
    copy gate  (a, b) = (x, x)  dx = da + db                          (adds the branches)
    max gate   z = max(x, y)    dx = dz where x > y, dy = dz elsewhere (routes to the larger input)

Engine: the rules above. Twin: autograd's ``backward(dz)`` through the same forward.
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab

F64 = torch.float64


def engine_gates(x, y, dz, db):
    return {
        "add": (dz, dz),
        "mul": (dz * y, dz * x),
        "copy": (dz + db, None),
        "max": (torch.where(x > y, dz, 0.0), torch.where(x > y, 0.0, dz)),
    }


def twin_gates(x, y, dz, db):
    results = {}
    forwards = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b, "max": torch.maximum}
    for name, forward in forwards.items():
        a, b = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        forward(a, b).backward(dz)
        results[name] = (a.grad, b.grad)
    a = x.clone().requires_grad_(True)
    branch1, branch2 = a * 1, a * 1  # x used twice
    torch.autograd.backward([branch1, branch2], [dz, db])
    results["copy"] = (a.grad, None)
    return results


def run(args, report) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    x, y, dz, db = (torch.randn(2, 3, dtype=F64, generator=generator) for _ in range(4))
    engine, twin = engine_gates(x, y, dz, db), twin_gates(x, y, dz, db)
    report.say(f"x = {x.tolist()}\ny = {y.tolist()}\nupstream dz = {dz.tolist()}")
    for gate, (dx, dy) in engine.items():
        report.say(f"{gate:>4} gate: dx = {dx.tolist()}" + (f", dy = {dy.tolist()}" if dy is not None else ""))
        report.check(f"{gate}: dx", None, dx, twin[gate][0])
        if dy is not None:
            report.check(f"{gate}: dy", None, dy, twin[gate][1])
    # The patterns themselves, as the lecture states them: claims checked on autograd's (and the engine's) results.
    report.claim("add distributes: dx = dy = dz",
                 torch.equal(engine["add"][0], dz) and torch.equal(engine["add"][1], dz))
    report.claim("mul swaps: dx = dz*y, dy = dz*x",
                 torch.equal(twin["mul"][0], dz * y) and torch.equal(twin["mul"][1], dz * x))
    report.claim("copy adds: dx = da + db", torch.equal(twin["copy"][0], dz + db))
    routed = (twin["max"][0] != 0) ^ (twin["max"][1] != 0)
    report.claim("max routes: exactly one input gets dz", bool(routed.all()))


LAB = Lab("gate_patterns", "001", "add distributes, mul swaps, copy adds, max routes: rules vs autograd", "< 1 s", run)
