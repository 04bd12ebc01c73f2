"""Lecture 002's softmax Jacobian: a = softmax(z), da/dz = diag(a) - a a^T, at z = [5, -2, -1, 3].

The course prints a = [8.7817e-01, 8.0079e-04, 2.1768e-03, 1.1885e-01], the whole 4x4 matrix, and z.grad after
a[2].backward(), which is row 3 of the (symmetric) Jacobian. Engine: diag(a) - a a^T by hand. Twin:
``torch.autograd.functional.jacobian`` and the notebook's a[2].backward(). Five significant digits in the course:
checked to a relative 5e-5 (plus 1e-9 for the smallest entries).
"""

from __future__ import annotations

import torch

from experiments.labs.common import Lab

Z = [5.0, -2.0, -1.0, 3.0]
COURSE_A = [8.7817e-01, 8.0079e-04, 2.1768e-03, 1.1885e-01]
COURSE_J = [[1.0698e-01, -7.0323e-04, -1.9116e-03, -1.0437e-01],
            [-7.0323e-04, 8.0015e-04, -1.7431e-06, -9.5172e-05],
            [-1.9116e-03, -1.7431e-06, 2.1720e-03, -2.5871e-04],
            [-1.0437e-01, -9.5172e-05, -2.5871e-04, 1.0472e-01]]


def engine_jacobian(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.softmax(z, dim=0)
    return a, torch.diag(a) - torch.outer(a, a)


def twin_jacobian(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    J = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, dim=0), z)
    leaf = z.clone().requires_grad_(True)
    torch.softmax(leaf, dim=0)[2].backward()  # the notebook's a[2].backward(): z.grad = row 3 of J
    return J, leaf.grad


def run(args, report) -> None:
    z = torch.tensor(Z)
    a, J = engine_jacobian(z)
    twin_J, twin_row = twin_jacobian(z)
    report.say(f"a = softmax(z) = {a.tolist()}\ndiag(a) - a a^T =\n{J}")

    def relative(values):  # half a unit in the 5th significant digit of each printed value
        return max(5e-5 * abs(v) for v in torch.tensor(values).flatten().tolist()) + 1e-9

    report.check("a = softmax(z)", COURSE_A, a, torch.softmax(z, dim=0), tol=relative(COURSE_A))
    for row in range(4):
        report.check(f"J row {row + 1}", COURSE_J[row], J[row], twin_J[row], tol=relative(COURSE_J[row]), parity=1e-7)
    report.check("z.grad after a[2].backward()", [-1.9116e-03, -1.7431e-06, 2.1720e-03, -2.5871e-04], J[2], twin_row,
                 tol=relative(COURSE_J[2]), parity=1e-7)
    report.values.update(a=a, J=J)


LAB = Lab("softmax_jacobian", "002", "softmax Jacobian diag(a) - a a^T at z = [5, -2, -1, 3] vs autograd's jacobian",
          "< 1 s", run)
