"""Level 2: a network, layer by layer, against an ``nn.Module`` (or a list of torch callables) run with
``retain_grad`` on every intermediate, as lecture 002's notebook does.

Your layers::

    Layer(forward, backward, params={"W": W, "b": b}, name="fc1")
    forward(x, **params) -> (out, cache)
    backward(d_out, cache) -> {"x": dx, "W": dW, "b": db}

and optionally a loss, ``Layer(loss_forward, loss_backward)`` with ``loss_forward(out, target) -> (loss, cache)``
and ``loss_backward(d_loss, cache) -> {"x": d_out}`` (d_loss is 1), against ``reference_loss(out, target)``.

The reference takes your parameters' values (a copy; your tensors are never modified): an ``nn.Module``'s
children are matched to your layers one to one (``nn.Sequential`` order), each child's parameters to your
layer's ``params`` in order (``nn.Linear``: weight, bias); a list of callables is called as ``f(x, **params)``.

Rows in graph order: every layer's output, the loss; then from the loss back, each layer's upstream gradient
``name.d_out`` and its parameter gradients ``name.dW``...; the input gradient ``name.dx`` of the first layer.
A failing row is triaged on the op that produced it, re-run in float64 on both sides from the float64 copies
of the very inputs (and upstream gradient) your layer received.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from torch_reference.checker.contracts import ContractBook
from torch_reference.checker.errors import CheckError, call_user
from torch_reference.checker.fingerprint import fingerprint
from torch_reference.checker.op import cast, check_gradient_dict, check_scale, differentiable, upstream_gradients
from torch_reference.checker.report import Report, Triage
from torch_reference.checker.rows import compare_row, structural_row, triage_row


@dataclass
class Layer:
    forward: Callable
    backward: Callable
    params: dict[str, Tensor] = field(default_factory=dict)
    name: str | None = None


class _ReferenceOp:
    """One reference layer as a function of (x, params): a module copy that takes the given parameter values,
    or the user's callable."""

    def __init__(self, reference, layer: Layer, position: int):
        self.module = reference if isinstance(reference, nn.Module) else None
        self.function = reference
        self.names = list(layer.params)
        if self.module is not None:
            own = list(self.module.parameters())
            if len(own) != len(self.names):
                raise CheckError(f"layer {position} ({layer.name}): the reference {type(self.module).__name__} has "
                                 f"{len(own)} parameter(s), your layer {len(self.names)} ({self.names}); match them "
                                 f"in order (nn.Linear: weight, bias)")
            for (name, value), theirs in zip(layer.params.items(), own):
                if tuple(value.shape) != tuple(theirs.shape):
                    raise CheckError(f"layer {position} ({layer.name}): your {name} has shape {tuple(value.shape)}, "
                                     f"the reference's matching parameter {tuple(theirs.shape)}")
        elif not callable(reference):
            raise CheckError(f"reference layer {position}: expected an nn.Module or a function; got "
                             f"{type(reference).__name__}")

    def __call__(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """params: leaves (requires_grad where wanted) in the wanted dtype; returns the output under autograd."""
        if self.module is None:
            return call_user("the reference", self.function, x, **params)
        module = copy.deepcopy(self.module).to(dtype=x.dtype)  # buffers too (BatchNorm's running statistics)
        for name, parameter in zip(self.names, list(module.parameters())):
            # the module's parameter becomes the given leaf itself, so its gradient lands on that leaf
            _set_parameter(module, parameter, params[name])
        return call_user("the reference", module, x)


def _set_parameter(module: nn.Module, old: nn.Parameter, new: Tensor) -> None:
    for submodule in module.modules():
        for key, value in list(submodule._parameters.items()):
            if value is old:
                del submodule._parameters[key]
                setattr(submodule, key, new)


def _reference_pass(ops, x, params_list, target, reference_loss, upstream, dtype, input_grad):
    """The whole reference network under autograd in ``dtype``: outputs, loss, retained gradients."""
    with torch.enable_grad():
        h = cast(x, dtype).requires_grad_(input_grad)
        leaves = [{name: cast(value, dtype).requires_grad_(True) for name, value in params.items()}
                  for params in params_list]
        x_leaf, outputs = h, []
        for op, params in zip(ops, leaves):
            h = op(h, params)
            if not isinstance(h, Tensor):
                raise CheckError(f"the reference returned {type(h).__name__}; expected a tensor")
            if h.requires_grad:
                h.retain_grad()
            outputs.append(h)
        loss = None
        if reference_loss is not None:
            loss = call_user("the reference loss", reference_loss, h, cast(target, dtype))
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise CheckError("the reference loss must return a scalar tensor")
            end, grad = loss, torch.ones_like(loss)
        else:
            end, grad = h, upstream.to(dtype)
        if not end.requires_grad:
            raise CheckError("the reference is not differentiable: its output does not depend on the input or the "
                             "parameters through ops autograd can differentiate")
        end.backward(grad)
    return {"outputs": [o.detach() for o in outputs], "loss": None if loss is None else loss.detach(),
            "d_out": [o.grad if o.grad is not None else torch.zeros_like(o) for o in outputs],
            "param_grads": [{n: (t.grad if t.grad is not None else torch.zeros_like(t)) for n, t in p.items()}
                            for p in leaves],
            "dx": x_leaf.grad if input_grad else None}


def _user_layer(layer: Layer, position: int, x, params, d_out=None, dtype=None):
    """Forward (and backward when d_out is given) of one of the user's layers on copies in ``dtype``."""
    role = f"your layer {layer.name}"
    x_in = cast(x, dtype) if dtype is not None else x
    params_in = {n: cast(v, dtype) for n, v in params.items()} if dtype is not None else params
    with torch.no_grad():
        result = call_user(f"{role}'s forward", layer.forward, x_in, **params_in)
        if not isinstance(result, (tuple, list)) or len(result) != 2 or not isinstance(result[0], Tensor):
            raise CheckError(f"{role}'s forward must return (output tensor, cache); got {type(result).__name__}")
        out, cache = result
        if d_out is None:
            return out, cache, None
        d_in = d_out.to(dtype) if dtype is not None else d_out
        grads = check_gradient_dict(call_user(f"{role}'s backward", layer.backward, d_in, cache),
                                    f"{role}'s backward")
    return out, cache, grads


def check_layers(layers: Sequence[Layer], reference, x: Tensor, *, target=None, loss: Layer | None = None,
                 reference_loss: Callable | None = None, contracts=None, exact: bool = False,
                 input_grad: bool = True, seed: int = 0, name: str = "network") -> Report:
    """Compare every intermediate value and gradient of your layers with the reference's, in graph order.

    x: the network's input (float32 or float64; its dtype is the check's). target: passed to both losses.
    Without a loss, the last output gets an upstream gradient drawn from ``seed``.
    """
    layers = [layer if isinstance(layer, Layer) else Layer(*layer) for layer in layers]
    for position, layer in enumerate(layers, start=1):
        layer.name = layer.name or f"layer{position}"
        if not isinstance(layer.params, Mapping):
            raise CheckError(f"layer {layer.name}: params must be a dict {{name: tensor}}")
    if len({layer.name for layer in layers}) != len(layers):
        raise CheckError(f"layer names must be unique; got {[layer.name for layer in layers]}")
    if not differentiable(x) or x.dtype not in (torch.float32, torch.float64):
        raise CheckError(f"x: expected a float32 or float64 tensor; got "
                         f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
    if (loss is None) != (reference_loss is None):
        raise CheckError("give both loss (your loss layer) and reference_loss, or neither")
    references = list(reference.children()) if isinstance(reference, nn.Module) else list(reference)
    if len(references) != len(layers):
        raise CheckError(f"reference: {len(references)} layer(s) against your {len(layers)}; they must match one to "
                         f"one (an nn.Module is split into its children, in order)")
    ops = [_ReferenceOp(ref, layer, i) for i, (ref, layer) in enumerate(zip(references, layers), start=1)]
    dtype, book = x.dtype, ContractBook(contracts, exact)
    params_list = [layer.params for layer in layers]

    # The user's network: each layer's received input (for the triage) and cache.
    received, caches, outs, h = [], [], [], x.detach()
    for position, layer in enumerate(layers, start=1):
        received.append(h)
        h, cache, _ = _user_layer(layer, position, h, {n: v.detach() for n, v in layer.params.items()})
        caches.append(cache)
        outs.append(h)
    my_loss = loss_cache = None
    if loss is not None:
        result = call_user("your loss's forward", loss.forward, h, target)
        if not isinstance(result, (tuple, list)) or len(result) != 2 or not isinstance(result[0], Tensor):
            raise CheckError("your loss's forward must return (loss tensor, cache)")
        my_loss, loss_cache = result
        upstream = torch.ones_like(my_loss)
        d = check_gradient_dict(call_user("your loss's backward", loss.backward, upstream, loss_cache),
                                "your loss's backward").get("x")
        if d is None:
            raise CheckError("your loss's backward must return {'x': gradient of the loss w.r.t. its input}")
    else:
        (upstream,) = upstream_gradients((h,), seed)
        d = upstream
    d_outs, my_param_grads, my_dx = [None] * len(layers), [None] * len(layers), None
    for index in range(len(layers) - 1, -1, -1):
        d_outs[index] = d
        grads = check_gradient_dict(call_user(f"your layer {layers[index].name}'s backward", layers[index].backward,
                                              d, caches[index]), f"your layer {layers[index].name}'s backward")
        my_param_grads[index] = grads
        d = grads.get("x")
        if d is None and (index > 0 or input_grad):
            raise CheckError(f"your layer {layers[index].name}'s backward returned no 'x' (the gradient for its "
                             f"input, which the layer below needs); it returned {sorted(grads)}")
        my_dx = d

    ref = _reference_pass(ops, x, params_list, target, reference_loss, upstream, dtype, input_grad)
    ref64 = _reference_pass(ops, x, params_list, target, reference_loss, upstream.double(), torch.float64,
                            input_grad)
    rows, producers, tensors = [], {}, {}
    scale = check_scale([*ref64["outputs"], ref64["loss"], *ref64["d_out"], ref64["dx"], upstream,
                         *(grad for grads in ref64["param_grads"] for grad in grads.values())])

    def add(row_name, kind, mine, ref_value, ref64_value, producer):
        rows.append(compare_row(row_name, kind, mine, ref_value, ref64_value, book.for_tensor(row_name, dtype),
                                scale=scale))
        producers[row_name], tensors[row_name] = producer, (mine, ref_value)

    for index, layer in enumerate(layers):
        add(f"{layer.name}.out", "forward", outs[index], ref["outputs"][index], ref64["outputs"][index],
            (index, "out"))
    if loss is not None:
        add("loss", "loss", my_loss, ref["loss"], ref64["loss"], ("loss", "out"))
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        producer = ("loss", "x") if index == len(layers) - 1 and loss is not None else \
            (None if index == len(layers) - 1 else (index + 1, "x"))
        if producer is not None:  # without a loss the top upstream is given, not computed
            add(f"{layer.name}.d_out", "gradient", d_outs[index], ref["d_out"][index], ref64["d_out"][index],
                producer)
        grads = my_param_grads[index]
        for param in layer.params:
            row_name = f"{layer.name}.d{param}"
            if param not in grads:
                rows.append(structural_row(row_name, "gradient", "missing gradient",
                                           f"your layer {layer.name}'s backward returned no gradient for {param!r} "
                                           f"(it returned {sorted(grads)})"))
                continue
            add(row_name, "gradient", grads[param], ref["param_grads"][index][param],
                ref64["param_grads"][index][param], (index, param))
        for extra in sorted(set(grads) - set(layer.params) - {"x"}):
            rows.append(structural_row(f"{layer.name}.d{extra}", "gradient", "unexpected gradient",
                                       f"your layer {layer.name}'s backward returned a gradient for {extra!r}, which "
                                       f"is not one of its inputs (x, {', '.join(layer.params)})", grads[extra]))
    if input_grad:
        add(f"{layers[0].name}.dx", "gradient", my_dx, ref["dx"], ref64["dx"], (0, "x"))

    report = Report("layers", name, rows, fingerprint(x.device, dtype))
    unused = book.unused_patterns([row.name for row in rows])
    if unused:
        report.notes.append(f"contract pattern(s) {unused} matched no tensor")
    if not report.passed:
        context = dict(layers=layers, ops=ops, received=received, outs=outs, d_outs=d_outs, target=target,
                       loss=loss, reference_loss=reference_loss, my_loss=my_loss)
        _triage(report, producers, tensors, context)
    return report


def _op_in_float64(op_index, context):
    """The op that produced a row, re-run in float64 on both sides from the float64 copies of what your op
    received: returns ({part: yours}, {part: reference's}) with parts "out", "x" and the parameter names."""
    layers, ops = context["layers"], context["ops"]
    if op_index == "loss":
        out_in = context["outs"][-1]
        x64 = cast(out_in, torch.float64)
        mine = call_user("your loss's forward", context["loss"].forward, x64, context["target"])
        loss64, cache = mine
        grads = check_gradient_dict(call_user("your loss's backward", context["loss"].backward,
                                              torch.ones_like(loss64), cache), "your loss's backward")
        with torch.enable_grad():
            leaf = x64.clone().requires_grad_(True)
            ref_loss = context["reference_loss"](leaf, cast(context["target"], torch.float64))
            (dx,) = torch.autograd.grad(ref_loss, [leaf])
        return {"out": loss64, "x": grads.get("x")}, {"out": ref_loss.detach(), "x": dx}
    layer, x_in, d_out = layers[op_index], context["received"][op_index], context["d_outs"][op_index]
    out64, _, grads64 = _user_layer(layer, op_index + 1, x_in, layer.params, d_out, torch.float64)
    with torch.enable_grad():
        leaf = cast(x_in, torch.float64).requires_grad_(True)
        params = {n: cast(v, torch.float64).requires_grad_(True) for n, v in layer.params.items()}
        out = ops[op_index](leaf, params)
        wanted = [leaf, *params.values()]
        found = torch.autograd.grad(out, wanted, grad_outputs=d_out.double(), allow_unused=True)
    found = [g if g is not None else torch.zeros_like(w) for g, w in zip(found, wanted)]
    return {"out": out64, **grads64}, {"out": out.detach(), "x": found[0], **dict(zip(params, found[1:]))}


def _received_off(op_index, part, report, context) -> bool:
    """Did the op that produced a row receive a value that had already left its contract: its input (the
    layer below's output), or for its backward parts the upstream gradient it was given?"""
    failed = {row.name for row in report.rows if not row.passed}
    layers = context["layers"]
    if op_index == "loss":
        return f"{layers[-1].name}.out" in failed
    inputs = [f"{layers[op_index - 1].name}.out"] if op_index > 0 else []
    if part != "out":
        inputs.append(f"{layers[op_index].name}.d_out")
    return any(name in failed for name in inputs)


def _triage(report, producers, tensors, context) -> None:
    cache = {}
    first = report.first_divergence
    for row in report.rows:
        if row.passed or row.name not in producers:
            continue
        op_index, part = producers[row.name]
        if op_index not in cache:
            mine64, ref64 = _op_in_float64(op_index, context)
            received = [] if op_index == "loss" else [context["d_outs"][op_index]]
            cache[op_index] = mine64, ref64, check_scale([*ref64.values(), *received])
        mine64, ref64, scale = cache[op_index]
        mine, ref_value = tensors[row.name]
        others = {key: value for key, value in ref64.items() if key not in (part, "out")}
        triage = triage_row(row, mine, ref_value, ref64[part], mine64.get(part), others if part != "out" else None,
                            mine64, scale)
        if row is first:
            report.triage = triage
        elif row.verdict == "rounding" and _received_off(op_index, part, report, context):
            # This op is right on what it received (its float64 re-run agrees), but what it received was already
            # off: the difference is the first divergence's, carried down the graph.
            row.verdict = "inherited"
            row.detail = f"your op is right on its inputs; they carry the error of {first.label} ({row.detail})"
    if report.triage is None and first is not None:
        report.triage = Triage(first.label, first.verdict, f"{first.label}: {first.verdict}: {first.detail}")
