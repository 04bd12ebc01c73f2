"""The fast training step: the reference engine's math, with lecture 004's memory-freeing backward.

``model.py`` chains readable forward/backward pairs and keeps a record of every Z, A and gradient (the parity
report needs it). This module computes the same step for training only, and keeps nothing it does not need:

* a workspace per batch shape, allocated once and written with ``out=`` / in-place ops; no record of
  intermediates survives the step;
* ReLU in place (Z_l becomes A_l); its derivative 1[A_l > 0] = sign(A_l) is formed in the backward from A_l,
  once A_l's last other use (dW_{l+1} = dZ_{l+1}^T A_l) is done, and written over A_l, so no Z and no separate
  mask is kept;
* the loss gradient of softmax + cross-entropy written straight into its buffer;
* lecture 004's order: going down from the output, each layer's gradient is used as soon as it is final and
  its memory then serves the next layer down. With momentum (ReLU network): V_l <- beta V_l + dZ_l^T A_{l-1}
  (it needs A_{l-1}, not W_l), then dZ_{l-1} = (dZ_l W_l) * f' written over A_{l-1} (it needs the old W_l, not
  A_{l-1}'s values); W_l <- W_l - lr V_l for all layers at the end (one _foreach_add_, as dZ_{l-1} needs the
  old W_l). dW and dA share one scratch for every layer (no Z is kept);
  ``low_memory`` forms them in row blocks at large batches, so that no whole dW or dA exists (slower on this
  CPU), and ``fuse_velocity`` forms no dW at all (``addmm_`` with ``beta=momentum`` writes the new velocity
  straight from dZ^T A). Without momentum: dA_{l-1} with the old W_l, then dW_l, the update, dZ_{l-1};
* the first layer's input gradient, which nobody needs, is not computed;
* at small batches a step is a chain of ATen calls of a few microseconds each, so the Python around them counts:
  every view the step writes through (per-layer slices of the scratch, transposes of W and dZ) is made once per
  batch size, the parameters are bound once (not looked up by name), the momentum is a 0-dim tensor (a Python
  number is wrapped into a new tensor for each buffer), and the NaN/Inf screen of X reads Z_1, a third of X's
  size for MNIST (see _screen_inputs).

Supported: every config ``MLPConfig`` accepts but maxout, bce and l1 (ReLU hidden layers take the fast route;
other activations and the mse / hinge losses use the reference pairs), dropout and input dropout with the
reference's masks and max-norm after each update (fast_dropout.py); SGD with or without momentum on its tuned
route, every other engine optimizer and setting (nesterov, adagrad, rmsprop, adam, adamw, weight decay, dampening)
through ``FastOptimizer`` (fast_optim.py), each layer updated as soon as its gradient is final; float32/float64,
CPU and CUDA, and on CUDA an optional CUDA graph of the whole step (SGD route, no dropout). No autograd, like the
rest of the engine.

Parity (tests/test_fast.py): with ``fuse_velocity=False`` (the default) every op is the one the reference engine
and ``manual_backprop.optim.SGD`` run, on the same operands in the same order, so after any number of steps
the weights and momentum buffers equal theirs bit for bit in float32 on the CPU. ``fuse_velocity=True`` lets
the GEMM add beta V itself; MKL then rounds beta V + dZ^T A once, or (for batches above ~192 rows, where it
splits the sum over the batch into blocks) adds partial products into C, so the result moves by a few ulps
a step; docs/benchmark.md gives the measured distances.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from manual_backprop.config import MLPConfig
from manual_backprop.constraints import max_norm_
from manual_backprop.fast_cuda_graph import CudaGraphs
from manual_backprop.fast_deferred import DeferredUpdate
from manual_backprop.fast_dropout import Dropout
from manual_backprop.fast_loss import LossHead
from manual_backprop.fast_momentum import MomentumSGD
from manual_backprop.fast_optim import FastOptimizer
from manual_backprop.fast_screen import (  # noqa: F401 (public here)
    FAST_LOSSES,
    FLOAT_TARGET_LOSSES,
    POINTWISE,
    BatchScreen,
    check_supported,
)
from manual_backprop.fast_state import OptimizerStateIO
from manual_backprop.fast_workspace import Workspace
from manual_backprop.model import MLP
from manual_backprop.optim_config import OptimizerConfig


class FastTrainer(BatchScreen, OptimizerStateIO, MomentumSGD, Dropout, LossHead, DeferredUpdate):
    """Trains ``params`` in place, one ``step(X, y)`` per batch: SGD with momentum on its own tuned route, any
    other engine optimizer (``optimizer=``) through ``FastOptimizer``; dropout and max-norm as the config says.

    params: {"W1": (n1, n0), "b1": (n1,), ...} the engine's parameters; updated in place (pass
        ``MLP.params`` and the MLP sees every update).
    lr, momentum: the engine SGD's V <- momentum V + G, W <- W - lr V (V_1 = G), or W <- W - lr G when
        momentum is 0. ``lr`` may be changed between steps (a schedule).
    optimizer: an ``OptimizerConfig`` of any engine optimizer (nesterov, adagrad, rmsprop, adam, adamw, SGD with
        dampening or weight decay): each layer is updated with it as soon as its gradient is final, op for op as
        manual_backprop.optim (fast_optim.py). Then ``momentum`` must be 0 and ``lr`` is the config's rate unless
        changed. (``from_optimizer_config`` picks the route.)
    fuse_velocity: let the GEMM write the momentum buffer (or, without momentum, the weights) directly; faster
        and lighter, not bitwise (see the module docstring).
    cuda_graph: on CUDA, capture the whole step in a CUDA graph after two eager warm-up steps of a batch size,
        and replay it; a new batch size or a new lr captures again.
    validate: check each batch as the reference engine does (a NaN/Inf screen of X, the label range). Shape,
        dtype and device are always checked.
    low_memory: form dW and dA in row blocks from batch 256 on (Workspace.LARGE_BATCH): a much smaller workspace,
        bitwise the same numbers, a slower step.
    refuse_divergence: raise ``DivergedBeforeUpdate`` (fast_screen.py) when a batch's loss or output scores are
        not finite, after the forward and before anything is updated, as a training run's reference step refuses
        them (side_by_side.model_pair). Off, the trainer updates on, as the reference engine's bare
        ``MLP`` + optimizer do.
    """

    def __init__(self, config: MLPConfig, params: dict[str, Tensor], lr: float, momentum: float = 0.0, *,
                 fuse_velocity: bool = False, cuda_graph: bool = False, validate: bool = True,
                 low_memory: bool = False, optimizer: OptimizerConfig | None = None,
                 refuse_divergence: bool = False):
        if not isinstance(config, MLPConfig):
            raise TypeError(f"config: expected an MLPConfig; got {type(config).__name__}")
        for name, value in (("lr", lr), ("momentum", momentum)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value:
                raise ValueError(f"{name}: expected a number; got {value!r}")
        if not lr > 0:
            raise ValueError(f"lr: expected a learning rate > 0; got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum: the fast path supports 0 <= momentum < 1; got {momentum}")
        if cuda_graph and config.torch_device.type != "cuda":
            raise ValueError(f"cuda_graph: CUDA graphs need a CUDA device; the config's device is {config.device!r}")
        check_supported(config)
        if optimizer is not None and (momentum or fuse_velocity or cuda_graph):
            raise ValueError("optimizer: the general optimizer route takes its momentum from the OptimizerConfig and "
                             "has no fuse_velocity or cuda_graph form")
        if cuda_graph and (config.dropout or config.input_dropout):
            raise ValueError("cuda_graph: dropout draws new masks every step; a CUDA graph would replay one")
        self.config = config
        self._checker = MLP(config, params)  # checks names, shapes, dtypes and devices, and every batch
        # Layer l's pointwise pair at index l - 1 (None for softmax, which the cross-entropy path fuses).
        # Layer l's pair at index l - 1, as the reference's (None for a fused output: softmax + cross-entropy,
        # sigmoid + bce, whose loss reads Z_L).
        self.activations = self._checker.activations
        self.params = self._checker.params
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.fused = bool(fuse_velocity)
        self.cuda_graph = bool(cuda_graph)
        self.validate = bool(validate)
        self.low_memory = bool(low_memory)
        self.refuse_divergence = bool(refuse_divergence)
        self._relu_hidden = config.activation == "relu"
        self._velocity = ({name: torch.zeros_like(tensor) for name, tensor in self.params.items()}
                          if self.momentum else {})
        self._velocity_started = False  # V_0 = 0: the first step sets V_1 = G (a copy, as the engine's clone)
        self._workspaces: dict[int, Workspace] = {}
        self._split_workspaces: dict[int, Workspace] = {}  # gradients(): the no-momentum layout (dW, dA apart)
        self._graphs = CudaGraphs()
        self._momentum_tensor = (None, None)  # (the momentum it holds, a 0-dim tensor of it): see _scale_velocity
        self._optimizer = FastOptimizer(optimizer, self.params) if optimizer is not None else None
        # With dropout the reference checks the whole batch before it draws a mask: so does the step then, that a
        # refused batch leaves the generator where the reference leaves it (see step).
        self._draws_masks = bool(config.dropout or config.input_dropout)
        self._bind()

    def _bind(self) -> None:
        """Per-layer references to the parameters, their transposes and their momentum buffers, so that a step
        formats no names and makes no views (at small batches each costs as much as an op). The parameters are
        updated in place; were a tensor of ``params`` replaced, the next step binds again (see _check_bound)."""
        params, L = self.params, self.config.num_layers
        self._bound = list(params.values())
        self._W = {layer: params[f"W{layer}"] for layer in range(1, L + 1)}
        self._b = {layer: params[f"b{layer}"] for layer in range(1, L + 1)}
        self._W_T = {layer: W.t() for layer, W in self._W.items()}
        self._V_W = {layer: self._velocity[f"W{layer}"] for layer in range(1, L + 1)} if self.momentum else {}
        self._V_b = {layer: self._velocity[f"b{layer}"] for layer in range(1, L + 1)} if self.momentum else {}
        self._velocity_list = [self._velocity[name] for name in params] if self.momentum else []

    def _check_bound(self) -> None:
        if not all(map(operator.is_, self._bound, self.params.values())):
            self._bind()
            self._graphs = CudaGraphs()  # a captured graph replays on the old tensors

    @classmethod
    def from_optimizer_config(cls, config: MLPConfig, params: dict[str, Tensor], optimizer: OptimizerConfig,
                              **options) -> "FastTrainer":
        """A trainer for the engine optimizer ``optimizer`` (manual_backprop.optim_config): "sgd" and "momentum"
        without dampening or weight decay take the tuned SGD route (``fuse_velocity``, ``cuda_graph`` apply);
        every other optimizer and setting the general one (``FastOptimizer``)."""
        if not isinstance(optimizer, OptimizerConfig):
            raise TypeError(f"optimizer: expected an OptimizerConfig; got {type(optimizer).__name__}")
        if cls.takes_sgd_route(optimizer):
            return cls(config, params, optimizer.lr, optimizer.momentum or 0.0, **options)
        for name in ("fuse_velocity", "cuda_graph"):
            if options.get(name):
                raise ValueError(f"{name}: the fast path has this form for sgd and momentum without dampening or "
                                 f"weight decay only; got {optimizer.slug()}")
        options = {key: value for key, value in options.items() if key not in ("fuse_velocity", "cuda_graph")}
        return cls(config, params, optimizer.lr, 0.0, optimizer=optimizer, **options)

    @staticmethod
    def takes_sgd_route(optimizer: OptimizerConfig) -> bool:
        """True for "sgd" and "momentum" without dampening or weight decay (the route with fuse_velocity and CUDA
        graphs)."""
        return optimizer.name in ("sgd", "momentum") and not optimizer.dampening and not optimizer.weight_decay

    # --- the step -------------------------------------------------------------------------------------------

    def step(self, X: Tensor, y: Tensor) -> Tensor:
        """One forward, loss, backward and update on the batch (X (m, n0), y (m,) labels or (m, k) mse
        targets). Returns the 0-dim loss of the batch (before the update), data term plus L2 term."""
        m = self._check_batch(X, y)
        self._check_bound()
        with torch.inference_mode():
            if self.momentum and self.cuda_graph:
                self._momentum_scalar()  # made here, never inside a CUDA graph's capture
            # The NaN/Inf screen of X reads Z_1 inside the eager step (see _screen_inputs); a CUDA graph cannot
            # read a value back mid-step, so there X itself is screened first.
            screen_in_step = self.validate and not self.cuda_graph and not self._draws_masks
            if self.validate or self.config.loss in FLOAT_TARGET_LOSSES:
                y = self._screen(X, y, m, screen_inputs=not screen_in_step)
            if self.cuda_graph:
                return self._graphs.step(self, X, y)
            deferred = self._defer is not None  # gradients() only: apply_gradients updates
            if self._optimizer is not None and not deferred:
                self._optimizer.lr = self.lr
                self._optimizer.start_step()
            loss = self._eager_step(X, y, self._workspace(m), screen_inputs=screen_in_step)
            if self.config.max_norm is not None and not deferred:  # after each update, as the reference run's loop
                max_norm_(self.params, self.config.max_norm, self.config)
            return loss

    def _eager_step(self, X: Tensor, y: Tensor, ws: Workspace, screen_inputs: bool = False) -> Tensor:
        config = self.config
        L = config.num_layers
        loss_penalty = self._l2_penalty() if config.l2 > 0 else None  # from the weights before any update

        # Forward: keep only each layer's A (in place of its Z) and, for other activations, the pair's cache. With
        # dropout, inputs[l] is D_l = A_l * noise_l, what layer l + 1 reads, and acts[l] the A_l under it; the masks
        # are drawn in the reference's order (the input's, then each hidden layer's after its activation).
        input_p, hidden_p = config.input_dropout, config.dropout
        D, noise = self._drop(X, input_p, ws.dropout.get(0))
        A, caches, inputs, acts, noises = D, {}, {0: D}, {0: X}, {0: noise}
        for layer in range(1, L):
            Z = torch.addmm(self._b[layer], A, self._W_T[layer], out=ws.A[layer] if self._relu_hidden else None)
            if layer == 1 and screen_inputs:
                self._screen_inputs(X, Z)
            if self._relu_hidden:
                A = Z.relu_()  # the reference's relu(addmm), in place
            else:
                A, caches[layer] = self.activations[layer - 1].forward_fn(Z)
            acts[layer] = A
            A, noises[layer] = self._drop(A, hidden_p, ws.dropout.get(layer))
            inputs[layer] = A
        Z_out = torch.addmm(self._b[L], A, self._W_T[L], out=ws.out)
        if L == 1 and screen_inputs:
            self._screen_inputs(X, Z_out)
        try:
            loss, dZ = self._loss_and_output_delta(Z_out, y, ws, caches)
        except (IndexError, RuntimeError):  # nll_loss / scatter_ refuse a bad label, before any update
            self._checker.check_targets(y, Z_out.shape[0])  # raises the reference's message naming it
            raise
        if loss_penalty is not None:
            loss = loss + loss_penalty
        if self.refuse_divergence and self._defer is None:  # the split step's ranks check and agree first
            self._screen_divergence(loss, Z_out)

        # Backward, lecture 004's order: each layer's gradient is used (for dZ_{l-1} and the update) and then
        # its buffer serves the next layer down. The data X needs no gradient (layer 1 has no dA_0).
        momentum_route = bool(self.momentum) and self._relu_hidden and self._defer is None
        if momentum_route and self._velocity_started and not self.fused:
            # The engine SGD's V.mul_(momentum) for every buffer in one call, ahead of the adds: an elementwise
            # multiply of V alone, so doing it before the layer's gradient exists changes no bit (fewer calls).
            self._scale_velocity(self._velocity_list)
        for layer in range(L, 0, -1):
            below = (inputs[layer - 1], acts[layer - 1], noises[layer - 1])
            if momentum_route:
                dZ = self._momentum_layer(layer, dZ, below, ws)
            else:
                dZ = self._plain_layer(layer, dZ, below, ws, caches)
        if momentum_route:
            # W.add_(V_W, alpha=-lr), b.add_(V_b, alpha=-lr) for every layer in one call, once no dZ needs an
            # old W any more: the same per-tensor add_ on the same operands as updating layer by layer.
            torch._foreach_add_(self._bound, self._velocity_list, alpha=-self.lr)
        if self._defer is None:  # the split step's update (and first velocity) comes in apply_gradients
            self._velocity_started = True
        return loss

    def _momentum_layer(self, layer: int, dZ: Tensor, below: tuple, ws: Workspace) -> Tensor | None:
        """ReLU network with momentum: V_l from dW_l = dZ_l^T A_{l-1} and db_l; then dZ_{l-1} = dZ_l W_l * f'
        written over A_{l-1} (which has had its last use). Returns dZ_{l-1}; W_l, b_l <- W_l, b_l - lr V_l waits for
        the end of the step (all layers in one call), since dZ_{l-1} needs the old W_l.
        below: (D_{l-1} the tensor layer l read, A_{l-1}, the dropout noise_{l-1} or None); without dropout
        D_{l-1} is A_{l-1}. With dropout dA_{l-1} = dD_{l-1} * noise_{l-1} (dropout_backward, in place).

        The velocity comes first because it needs A_{l-1} and not W_l, and dZ_{l-1} needs the old W_l and not
        A_{l-1}'s values: so no Z is stored, and dW and dA share one scratch for every layer."""
        A_prev, A_under, noise = below
        W, V_W, V_b = self._W[layer], self._V_W[layer], self._V_b[layer]
        db = torch.sum(dZ, 0, out=ws.db[layer])
        if self.fused:
            self._fused_velocity(V_W, W, dZ, A_prev)
            self._fold_into_velocity([V_b], [db])
        elif ws.dW[layer] is not None:  # dW_l whole
            dZ_T = ws.dZ_T[layer] if dZ is ws.dZ[layer] else dZ.t()  # mse / hinge: dZ_L is not dZ_out
            dW = torch.mm(dZ_T, A_prev, out=ws.dW[layer])
            self._fold_into_velocity([V_W, V_b], [self._add_l2_gradient(dW, W, ws), db], scaled=True)
        else:  # low_memory: row blocks (a row block of dW is bitwise that block of the whole product)
            n_out, n_in = W.shape
            rows = max(1, ws.dW_budget // n_in)
            for start in range(0, n_out, rows):
                block = slice(start, start + rows)
                dW = torch.mm(dZ[:, block].t(), A_prev, out=ws.view(ws.scratch, min(rows, n_out - start), n_in))
                self._fold_into_velocity([V_W[block]], [self._add_l2_gradient(dW, W[block], ws)], scaled=True)
            self._fold_into_velocity([V_b], [db], scaled=True)
        if layer == 1:
            return None  # W_l, b_l <- W_l, b_l - lr V_l for every layer at the end of _eager_step
        if ws.dA[layer] is not None:  # dA_{l-1} whole
            dA = torch.mm(dZ, W, out=ws.dA[layer])
            self._relu_delta(A_under, dA if noise is None else dA.mul_(noise), ws.zero_A[layer])
        else:  # low_memory: blocks of batch rows
            m, n_in = A_prev.shape
            for start in range(0, m, ws.row_chunk):
                block = slice(start, start + ws.row_chunk)
                dA = torch.mm(dZ[block], W, out=ws.view(ws.scratch, min(ws.row_chunk, m - start), n_in))
                self._relu_delta(A_under[block], dA if noise is None else dA.mul_(noise[block]),
                                 ws.zero.expand_as(dA))
        return A_under

    def _add_l2_gradient(self, dW: Tensor, W: Tensor, ws: Workspace) -> Tensor:
        """dW + l2 * (2 * W) in place, the reference's penalty gradient rounded the same way (a no-op without L2);
        W's rows match dW's, and 2 W is formed in the workspace's l2 scratch."""
        if self.config.l2 > 0:
            dW.add_(torch.mul(W, 2, out=ws.view(ws.l2_term, *dW.shape)).mul_(self.config.l2))
        return dW

    def _plain_layer(self, layer: int, dZ: Tensor, below: tuple, ws: Workspace, caches: dict) -> Tensor | None:
        """Any other case: dA_{l-1} = dZ_l W_l with the old W_l, then dW_l, db_l and the update of W_l, b_l right
        away (the optimizer's, FastOptimizer or SGD), so their gradient buffers serve the next layer; then
        dZ_{l-1} = dA_{l-1} * f' (times the dropout noise first). ``below`` as in _momentum_layer. Returns
        dZ_{l-1}."""
        A_prev, A_under, noise = below
        W, b = self._W[layer], self._b[layer]
        dA = None
        if layer > 1:
            dA = torch.mm(dZ, W, out=ws.dA[layer]) if self._relu_hidden else dZ.mm(W)
        db = torch.sum(dZ, 0, out=ws.db[layer])
        if self.fused:
            self._fused_weight_update(f"W{layer}", W, dZ, A_prev)
        else:
            dW = self._add_l2_gradient(torch.mm(dZ.t(), A_prev, out=ws.dW[layer]), W, ws)
            self._update(f"W{layer}", W, dW)
        self._update(f"b{layer}", b, db)
        if layer == 1:
            return None
        if noise is not None:
            dA = dA.mul_(noise)  # dropout_backward's dD * noise, in the buffer
        if self._relu_hidden:
            self._relu_delta(A_under, dA, ws.zero_A[layer])
            return A_under
        return self.activations[layer - 2].backward_fn(dA, caches[layer - 1])

    def _update(self, name: str, param: Tensor, grad: Tensor) -> None:
        """The optimizer's update of one parameter from its final gradient (which it may overwrite); in the split
        step (gradients()), the hand-over instead."""
        if self._defer is not None:
            self._hand_over(name, grad)
        elif self._optimizer is not None:
            self._optimizer.update(name, param, grad)
        else:
            self._sgd(name, param, grad)

    @staticmethod
    def _relu_delta(A: Tensor, dA: Tensor, zero: Tensor) -> None:
        """Overwrite A (whose values are no longer needed) with dZ = 0 + dA * sign(A), sign(A) = 1[A > 0];
        ``zero`` is a stride-0 zero of A's shape.

        A multiply by the 0/1 mask, not where(A > 0, dA, 0) as relu_backward writes it: the same numbers (adding
        +0 turns the product's -0.0 into where's +0.0), a vectorised kernel instead of a select. It differs only
        where dA is inf or NaN (0 * inf is NaN, not 0)."""
        mask = A.sign_()
        torch.addcmul(zero, dA, mask, out=mask)

    # --- inputs and buffers -----------------------------------------------------------------------------------

    def _workspace(self, m: int) -> Workspace:
        momentum_layout = bool(self.momentum) and self._defer is None  # the momentum route's shared scratch
        workspaces = self._workspaces if self._defer is None else self._split_workspaces
        ws = workspaces.get(m)
        if ws is None:
            ws = workspaces[m] = Workspace(self.config, m, self.fused, self._relu_hidden, momentum_layout,
                                           self.low_memory)
            ws.dropout = self.dropout_buffers(m, self.config.sizes, self.config.input_dropout, self.config.dropout,
                                              {"dtype": self.config.torch_dtype, "device": self.config.torch_device})
        return ws

    def workspace_bytes(self) -> int:
        """Bytes held between steps in workspaces and the optimizer's scratch (not counting the parameters and the
        optimizer state)."""
        scratch = self._optimizer.scratch_bytes() if self._optimizer is not None else 0
        workspaces = [*self._workspaces.values(), *self._split_workspaces.values()]
        return scratch + sum(ws.nbytes() for ws in workspaces)

    def release_workspaces(self) -> None:
        """Drop every workspace, the optimizer's scratch (and captured graph); the next step allocates them again."""
        self._workspaces.clear()
        self._split_workspaces.clear()
        if self._optimizer is not None:
            self._optimizer.release_scratch()
        self._graphs = CudaGraphs()
