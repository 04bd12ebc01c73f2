"""What the MLP checks before it computes: its parameters (names, shapes, dtypes, device), every batch X and
every target. Each refusal names the tensor, what was expected and what came, so a wrong call is told at once
instead of failing deep inside a matrix product."""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop.init import parameter_names, parameter_shape


class ModelChecks:
    """Mixed into ``MLP``: needs ``self.config`` (an ``MLPConfig``)."""

    def _checked_parameters(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        expected = parameter_names(self.config)
        if sorted(params) != sorted(expected):
            raise ValueError(f"params: expected exactly the names {expected}; got {sorted(params)}")
        checked = {}
        for name in expected:
            layer = int(name[1:])
            shape = parameter_shape(self.config, name)
            tensor = params[name]
            if not isinstance(tensor, Tensor):
                raise TypeError(f"params[{name!r}]: expected a tensor; got {type(tensor).__name__}")
            if tuple(tensor.shape) != shape:
                raise ValueError(f"params[{name!r}] (layer {layer}): expected shape {shape}; got {tuple(tensor.shape)}")
            if tensor.dtype != self.config.torch_dtype:
                raise TypeError(f"params[{name!r}] (layer {layer}): expected dtype {self.config.torch_dtype}; "
                                f"got {tensor.dtype}")
            if not _same_device(tensor.device, self.config.torch_device):
                raise ValueError(f"params[{name!r}] (layer {layer}): expected device {self.config.device}; "
                                 f"got {tensor.device}")
            checked[name] = tensor
        return checked

    def check_inputs(self, X: Tensor) -> None:
        """Raise a ValueError/TypeError naming the problem unless X is a (m >= 1, sizes[0]) finite batch."""
        config = self.config
        if not isinstance(X, Tensor):
            raise TypeError(f"X: expected a torch.Tensor of shape (m, {config.sizes[0]}); got {type(X).__name__}")
        if X.dim() != 2:
            raise ValueError(f"X: expected a 2-D batch of shape (m, {config.sizes[0]}); got shape {tuple(X.shape)}")
        if X.shape[0] == 0:
            raise ValueError(f"X: the batch is empty (shape {tuple(X.shape)}); need at least one sample")
        if X.shape[1] != config.sizes[0]:
            raise ValueError(f"X: layer 1 expects input width {config.sizes[0]}; got width {X.shape[1]} "
                             f"(shape {tuple(X.shape)})")
        if X.dtype != config.torch_dtype:
            raise TypeError(f"X: the model is {config.dtype}; got a {X.dtype} batch (convert it with "
                            f"X.to({config.torch_dtype}))")
        if not _same_device(X.device, config.torch_device):
            raise ValueError(f"X: the model is on {config.device}; got a batch on {X.device}")
        # One sum is a cheap screen (NaN and Inf propagate into it); only a non-finite sum, which a finite batch
        # can also overflow to, pays for the elementwise check that finds the entry.
        if not torch.isfinite(X.sum()) and not torch.isfinite(X).all():
            bad = (~torch.isfinite(X)).nonzero()[0].tolist()
            raise ValueError(f"X: contains NaN or Inf (first at row {bad[0]}, column {bad[1]}: "
                             f"{X[bad[0], bad[1]].item()})")

    def check_targets(self, target: Tensor, m: int) -> Tensor:
        """Return the target in the form the loss needs, or raise an error naming what is wrong.

        One rule for integer targets, every loss: class labels are int64 of shape (m,) in [0, k) (other
        integer dtypes are refused, whatever the loss). cross_entropy and hinge use them as class indices;
        mse, l1 and bce turn them into one-hot rows (the course's MNIST lab trains MSE on one-hot labels; bce
        then trains k one-vs-rest outputs), except that bce with a single output (k = 1) takes 0/1 labels as
        the target column itself.
        Float targets (m, k) in the model's dtype: mse and l1 (any finite values), bce (values in [0, 1]).
        """
        config = self.config
        k = config.sizes[-1]
        if not isinstance(target, Tensor):
            raise TypeError(f"target: expected a torch.Tensor; got {type(target).__name__}")
        if not _same_device(target.device, config.torch_device):
            raise ValueError(f"target: the model is on {config.device}; got target on {target.device}")
        float_targets = config.loss in ("mse", "l1", "bce")
        if target.is_floating_point():
            if not float_targets:
                raise TypeError(f"target: {config.loss} expects int64 class labels of shape ({m},); got a "
                                f"{target.dtype} tensor of shape {tuple(target.shape)} (one-hot or probability "
                                f"targets are not accepted: pass the class indices)")
            if tuple(target.shape) != (m, k):
                raise ValueError(f"target: {config.loss} expects float targets of shape ({m}, {k}) (or int64 "
                                 f"class labels of shape ({m},)); got {tuple(target.shape)}")
            if target.dtype != config.torch_dtype:
                raise TypeError(f"target: the model is {config.dtype}; got {target.dtype} targets")
            if not torch.isfinite(target).all():
                raise ValueError("target: contains NaN or Inf")
            if config.loss == "bce" and not ((target >= 0) & (target <= 1)).all():
                raise ValueError(f"target: bce expects targets in [0, 1] (labels or probabilities); got values "
                                 f"in [{target.min().item()}, {target.max().item()}]")
            return target
        if target.dtype != torch.int64:
            raise TypeError(f"target: class labels must be int64 (torch.long) for every loss; got dtype "
                            f"{target.dtype} (convert with target.long())")
        if tuple(target.shape) != (m,):
            raise ValueError(f"target: expected labels of shape ({m},) to match the batch; got {tuple(target.shape)}")
        classes = 2 if config.loss == "bce" and k == 1 else k  # one bce output: labels 0 and 1
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= classes:
            raise ValueError(f"target: labels must lie in [0, {classes - 1}] for the {k} output"
                             f"{'s' if k > 1 else ''} of layer {config.num_layers}"
                             f"{' (bce with one output: 0 or 1)' if classes != k else ''}; "
                             f"got values in [{low}, {high}]")
        if not float_targets:
            return target
        if config.loss == "bce" and k == 1:
            return target.to(config.torch_dtype).unsqueeze(1)
        return torch.nn.functional.one_hot(target, k).to(config.torch_dtype)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """'cuda' and 'cuda:0' name the same device when the current device is 0."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        current = torch.cuda.current_device() if a.type == "cuda" and torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index
