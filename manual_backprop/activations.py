"""Pointwise activations from the course (lecture 001), each a forward/backward pair.

``*_forward(z) -> (a, cache)`` and ``*_backward(da, cache) -> dz``, all shapes (m, n). The Jacobian of a
pointwise activation is diagonal (lecture 000), so the backward is an elementwise product
``dz = da * f'(z)``. Where the float32 result depends on how that product is written, the formulation is
the one PyTorch's own CPU kernel evaluates, so the engine matches autograd bit for bit; each such choice
says so next to it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from manual_backprop.maxout import make_maxout
from manual_backprop.vectorised_exp import vectorised_exp


def relu_forward(z: Tensor) -> tuple[Tensor, Tensor]:
    """a = max(0, z)."""
    a = torch.relu(z)
    return a, a


def relu_backward(da: Tensor, a: Tensor) -> Tensor:
    """f'(z) = 1 where z > 0, else 0 (the subgradient 0 at the kink, as PyTorch).

    A select, not ``da * (z > 0)``: the product gives -0.0 where da < 0, and autograd gives +0.0.
    """
    return torch.where(a > 0, da, 0.0)


def make_leaky_relu(slope: float):
    """Leaky ReLU ``max(slope*z, z)`` (the course uses slope 0.1)."""

    def leaky_relu_forward(z: Tensor) -> tuple[Tensor, Tensor]:
        return F.leaky_relu(z, slope), z

    def leaky_relu_backward(da: Tensor, z: Tensor) -> Tensor:
        """f'(z) = 1 where z > 0, else slope (PyTorch's choice at 0 too)."""
        return torch.where(z > 0, da, da * slope)

    return leaky_relu_forward, leaky_relu_backward


def sigmoid_forward(z: Tensor) -> tuple[Tensor, Tensor]:
    """a = 1 / (1 + exp(-z))."""
    a = torch.sigmoid(z)
    return a, a


def sigmoid_backward(da: Tensor, a: Tensor) -> Tensor:
    """f'(z) = a (1 - a).

    Written ``da * (1 - a) * a``, the order of PyTorch's sigmoid_backward kernel: ``da * a * (1 - a)`` rounds
    differently and misses autograd by an ulp in places.
    """
    return da * (1 - a) * a


def tanh_forward(z: Tensor) -> tuple[Tensor, Tensor]:
    """a = tanh(z)."""
    a = torch.tanh(z)
    return a, a


def tanh_backward(da: Tensor, a: Tensor) -> Tensor:
    """f'(z) = 1 - a^2.

    ``1 - a*a`` is formed with addcmul (one fused multiply-add, as PyTorch's tanh_backward kernel does):
    ``da * (1 - a * a)`` rounds a*a first and lands up to hundreds of ulps away where a is near +-1.
    """
    return torch.addcmul(torch.ones_like(a), a, a, value=-1) * da


def make_elu(alpha: float):
    """ELU: z for z > 0, alpha (exp(z) - 1) otherwise."""

    def elu_forward(z: Tensor) -> tuple[Tensor, Tensor]:
        return F.elu(z, alpha), z

    def elu_backward(da: Tensor, z: Tensor) -> Tensor:
        """f'(z) = 1 for z > 0, alpha exp(z) otherwise.

        From the input z, not the output: PyTorch's elu_backward (is_result=False) does the same, and
        ``a + alpha`` would lose the low bits of alpha*exp(z) for very negative z. The exp is the one PyTorch's
        vectorised kernels use (see vectorised_exp.py). The elu_backward kernel switches to the C
        library's exp for the last (numel mod 2*vector width) entries of each thread's chunk; there the two
        exps can differ by an ulp, which is the only place this can differ from autograd on the CPU.
        """
        exp_z = vectorised_exp(torch.clamp(z, max=0.0))  # only used where z <= 0
        return torch.where(z > 0, da, da * alpha * exp_z)

    return elu_forward, elu_backward


def identity_forward(z: Tensor) -> tuple[Tensor, None]:
    return z, None


def identity_backward(da: Tensor, cache: None) -> Tensor:
    return da


class Activation(NamedTuple):
    name: str
    forward_fn: Callable[[Tensor], tuple[Tensor, object]]
    backward_fn: Callable[[Tensor, object], Tensor]
    # Whether f' jumps at z = 0. Finite differences across a jump are meaningless, so the numeric oracle
    # skips the entries whose perturbation moves some z across 0. (Maxout's kinks are where the winning
    # piece changes; the model's kink_pattern handles it from the cache.)
    has_kink: bool


def get_activation(name: str, *, leaky_slope: float = 0.1, elu_alpha: float = 1.0,
                   maxout_pieces: int = 2) -> Activation:
    """The forward/backward pair for a hidden or output activation name (softmax is fused into the loss).

    Maxout maps (m, n * k) pre-activations to (m, n) outputs (maxout.py); the others are pointwise.
    """
    if name == "relu":
        return Activation(name, relu_forward, relu_backward, True)
    if name == "leaky_relu":
        return Activation(name, *make_leaky_relu(leaky_slope), leaky_slope != 1.0)
    if name == "sigmoid":
        return Activation(name, sigmoid_forward, sigmoid_backward, False)
    if name == "tanh":
        return Activation(name, tanh_forward, tanh_backward, False)
    if name == "elu":
        return Activation(name, *make_elu(elu_alpha), elu_alpha != 1.0)
    if name == "identity":
        return Activation(name, identity_forward, identity_backward, False)
    if name == "maxout":
        return Activation(name, *make_maxout(maxout_pieces), False)
    raise ValueError(
        f"activation: expected one of relu, leaky_relu, sigmoid, tanh, elu, identity, maxout; got {name!r}"
    )
