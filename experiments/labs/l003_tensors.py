"""Lecture 003's tensor manipulation: broadcasting, pairwise ops against reductions (np.maximum vs np.max),
reductions over an axis (and keepdim), and the matrix product three ways.

Engine: torch (and, for the product, the lecture's two loops written out); twin: numpy, the lecture's own
library (no autograd here: there are no gradients in these slides). Every array the lecture prints is checked.
"""

from __future__ import annotations

import numpy as np
import torch

from experiments.labs.common import Lab

A = np.arange(3 * 2 * 4).reshape([3, 2, 4])  # the lecture's a
B = np.arange(12).reshape((3, 4))            # the lecture's b in the np.maximum examples
BROADCASTS = {  # b of each "a + b" slide: (b, the printed result or None where the slide asks "?" or errors)
    "a + arange(4)": (np.arange(4), [[[0, 2, 4, 6], [4, 6, 8, 10]], [[8, 10, 12, 14], [12, 14, 16, 18]],
                                     [[16, 18, 20, 22], [20, 22, 24, 26]]]),
    "a + arange(8).reshape(2,4)": (np.arange(8).reshape([2, 4]),
                                   [[[0, 2, 4, 6], [8, 10, 12, 14]], [[8, 10, 12, 14], [16, 18, 20, 22]],
                                    [[16, 18, 20, 22], [24, 26, 28, 30]]]),
    "a + arange(12).reshape(3,1,4)": (np.arange(12).reshape([3, 1, 4]),
                                      [[[0, 2, 4, 6], [4, 6, 8, 10]], [[12, 14, 16, 18], [16, 18, 20, 22]],
                                       [[24, 26, 28, 30], [28, 30, 32, 34]]]),
    "a + arange(3).reshape(3,1,1)": (np.arange(3).reshape([3, 1, 1]),
                                     [[[0, 1, 2, 3], [4, 5, 6, 7]], [[9, 10, 11, 12], [13, 14, 15, 16]],
                                      [[18, 19, 20, 21], [22, 23, 24, 25]]]),
    "a + arange(2).reshape(2,1)": (np.arange(2).reshape([2, 1]), None),
    "a + arange(2).reshape(1,2,1)": (np.arange(2).reshape([1, 2, 1]), None),
}
ERRORS = {"a + arange(12).reshape(3,4)": np.arange(12).reshape([3, 4]), "a + arange(3)": np.arange(3),
          "a + arange(3).reshape(3,1)": np.arange(3).reshape([3, 1])}
MAXIMUMS = {  # np.maximum(x, b) examples
    "maximum(5, b)": (np.array(5), [[5, 5, 5, 5], [5, 5, 6, 7], [8, 9, 10, 11]]),
    "maximum([5,5,6,6], b)": (np.array([5, 5, 6, 6]), [[5, 5, 6, 6], [5, 5, 6, 7], [8, 9, 10, 11]]),
    "maximum([2,6,9] as (3,1), b)": (np.array([2, 6, 9]).reshape((3, 1)), [[2, 2, 2, 3], [6, 6, 6, 7], [9, 9, 10, 11]]),
    "maximum([2,6,9] as (3,1,1), b)": (np.array([2, 6, 9]).reshape((3, 1, 1)), None),  # the breakout: (3, 3, 4)
}
MAX_REDUCTIONS = {"max(a)": (None, 23), "max(a, axis=0)": (0, [[16, 17, 18, 19], [20, 21, 22, 23]]),
                  "max(a, axis=1)": (1, [[4, 5, 6, 7], [12, 13, 14, 15], [20, 21, 22, 23]]),
                  "max(a, axis=-1)": (-1, [[3, 7], [11, 15], [19, 23]])}


def broadcast_fails(a, b) -> float:
    try:
        torch.as_tensor(a) + torch.as_tensor(b)
    except RuntimeError:
        return 1.0
    return 0.0


def matmul_three_ways(A_: np.ndarray, B_: np.ndarray):
    """C[i, j] = sum_k A[i, k] B[k, j] as a triple loop; as a sum over k of outer products; and A @ B."""
    A_, B_ = torch.as_tensor(A_, dtype=torch.float64), torch.as_tensor(B_, dtype=torch.float64)
    C = torch.zeros(2, 4, dtype=torch.float64)
    for i in range(A_.shape[0]):
        for j in range(B_.shape[1]):
            for k in range(A_.shape[1]):
                C[i, j] += A_[i, k] * B_[k, j]
    D = torch.zeros(2, 4, dtype=torch.float64)
    for k in range(A_.shape[1]):
        D += torch.outer(A_[:, k], B_[k, :])
    return C, D, A_ @ B_


def run(args, report) -> None:
    a = torch.as_tensor(A)
    for name, (b, course) in BROADCASTS.items():
        engine = a + torch.as_tensor(b)
        report.check(f"{name} -> {tuple(engine.shape)}", course, engine, torch.as_tensor(A + b))
    for name, b in ERRORS.items():
        report.check(f"{name} raises (1 = yes)", 1.0 if name.endswith("(3,4)") else None, broadcast_fails(A, b),
                     float(_numpy_fails(A, b)))
    for name, (x, course) in MAXIMUMS.items():
        engine = torch.maximum(torch.as_tensor(x), torch.as_tensor(B))  # pairwise: broadcasts like +
        report.check(f"{name} -> {tuple(engine.shape)}", course, engine, torch.as_tensor(np.maximum(x, B)))
    for name, (axis, course) in MAX_REDUCTIONS.items():
        engine = a.max() if axis is None else a.amax(dim=axis)  # reduction: removes the axis
        report.check(name, course, engine, torch.as_tensor(np.max(A) if axis is None else np.max(A, axis=axis)))
    kept = a.amax(dim=1, keepdim=True)
    report.say(f"max over axis 1 with keepdim: shape {tuple(kept.shape)} (without: {tuple(a.amax(dim=1).shape)}); "
               "a - max(a, keepdim) then broadcasts back over the kept axis")
    report.check("a - max(a, axis=1, keepdims)", None, a - kept, torch.as_tensor(A - np.max(A, axis=1, keepdims=True)))

    rng = np.random.RandomState(42)  # np.random.seed(42)
    A_ = rng.randint(0, 9, (2, 3))
    B_ = rng.randint(0, 9, (3, 4))
    C, D, product = matmul_three_ways(A_, B_)
    course = [[85, 70, 79, 68], [74, 72, 42, 52]]
    report.say(f"A = {A_.tolist()}, B = {B_.tolist()}\nA @ B = {product.tolist()}")
    report.check("A@B: triple loop", course, C, torch.as_tensor(A_ @ B_, dtype=torch.float64))
    report.check("A@B: sum of outer products", course, D, torch.as_tensor(A_ @ B_, dtype=torch.float64))
    report.check("A@B: torch @", course, product, torch.as_tensor(A_ @ B_, dtype=torch.float64))


def _numpy_fails(a, b) -> bool:
    try:
        a + b
    except ValueError:
        return True
    return False


LAB = Lab("tensors", "003",
          "broadcasting, maximum vs max, reductions with keepdim, matmul three ways ([[85, 70, ...]])", "< 1 s", run)
