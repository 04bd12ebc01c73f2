"""Max-norm (Srivastava et al. 2014, section 5.1): after each update, every unit's incoming weight vector is
rescaled to norm <= c. No gradient is involved: it is a projection applied to the parameters in place.

Which layers: all of them, hidden and output. The paper speaks of hidden units; its MNIST results and the
common implementations (pylearn2's max_col_norm on the softmax layer too, Keras's MaxNorm on every Dense
layer) bound every layer's incoming weights, and a bounded output layer keeps the logits' scale in check
as well. Biases are not constrained. For a maxout layer each piece's weight row is a unit's incoming vector
and is bounded on its own.
"""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig


def max_norm_(params: dict[str, Tensor], c: float, config: MLPConfig, layers=None) -> None:
    """Rescale, in place, each row of every W_l (l = 1..L) whose 2-norm exceeds c to norm c / (1 + 1e-7/||w||).
    ``layers``: only these l (the fast data-parallel step bounds a bucket's layers once they are updated; each
    layer's projection reads its own W_l alone, so doing them apart changes no bit).

    Written as ``torch.renorm(W, 2, 0, c)`` computes it (the twin calls renorm_), so the two sides stay
    bitwise equal: norm = vector_norm(row); factor = c / (norm + 1e-7) where norm > c, else 1; W *= factor.
    The 1e-7 is PyTorch's: a constrained row ends just below c. c and 1e-7 are rounded to W's dtype first, as
    the kernel does; ``c / tensor`` would go through a reciprocal and round differently, hence a tensor c.
    """
    if not c > 0:
        raise ValueError(f"max_norm: expected a norm bound c > 0; got {c!r}")
    for layer in range(1, config.num_layers + 1) if layers is None else layers:
        W = params[f"W{layer}"]
        norm = torch.linalg.vector_norm(W, 2, dim=1, keepdim=True)  # (outputs, 1)
        bound = torch.tensor(c, dtype=W.dtype, device=W.device)
        factor = torch.where(norm > bound, bound / (norm + 1e-7), 1.0)
        W.mul_(factor)
