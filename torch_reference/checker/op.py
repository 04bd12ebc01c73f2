"""Level 1: one op. The user's ``forward`` and ``backward`` against a ``reference`` that autograd differentiates.

    forward(**inputs) -> (output, cache)          output: a tensor or a tuple of tensors
    backward(grad_output, cache) -> {name: grad}  one gradient per floating-point input (by its name)
    reference(**inputs) -> output                 written with torch ops; autograd gives its gradients

Integer tensors (class labels) and plain Python values pass through to both sides and get no gradient. Both
sides see the same inputs and the same upstream gradient (drawn from ``seed``: standard normal, or 1 for a
scalar output, so a transposed or mis-summed gradient cannot hide behind an all-ones upstream).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from torch_reference.checker.contracts import ContractBook
from torch_reference.checker.errors import CheckError, call_user
from torch_reference.checker.fingerprint import fingerprint
from torch_reference.checker.report import Report, Triage
from torch_reference.checker.rows import compare_row, structural_row, triage_row

SUPPORTED_DTYPES = (torch.float32, torch.float64)


def differentiable(value) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point()


def working_dtype(inputs: Mapping, what: str = "inputs") -> torch.dtype:
    """The one floating dtype of the inputs (float32 or float64); a clear error otherwise."""
    dtypes = {value.dtype for value in inputs.values() if differentiable(value)}
    if not dtypes:
        raise CheckError(f"{what}: no floating-point tensor to differentiate; give at least one float32 or "
                         f"float64 tensor")
    if len(dtypes) > 1:
        raise CheckError(f"{what}: mixed floating dtypes {sorted(map(str, dtypes))}; give every floating input "
                         f"the same dtype (the check compares at one precision)")
    (dtype,) = dtypes
    if dtype not in SUPPORTED_DTYPES:
        raise CheckError(f"{what}: {dtype} is not supported; use float32 or float64")
    return dtype


def as_tuple(output, role: str) -> tuple[Tensor, ...]:
    items = tuple(output) if isinstance(output, (tuple, list)) else (output,)
    if not items:
        raise CheckError(f"{role} returned an empty sequence; expected a tensor or a tuple of tensors")
    for position, item in enumerate(items):
        if not isinstance(item, Tensor):
            where = "" if len(items) == 1 else f" (item {position})"
            raise CheckError(f"{role} returned {type(item).__name__}{where}; expected a tensor or a tuple of tensors")
    return items


def cast(value, dtype: torch.dtype):
    """A fresh copy: floating tensors in ``dtype``, other tensors cloned, anything else as is."""
    if differentiable(value):
        return value.detach().to(dtype).clone()
    if isinstance(value, Tensor):
        return value.detach().clone()
    return value


UPSTREAM_STREAM = 0x5DEECE66D  # the upstream gradient's draws: a stream of their own, see upstream_gradients


def upstream_gradients(outputs: tuple[Tensor, ...], seed: int) -> tuple[Tensor, ...]:
    """Standard normal upstream gradients (1 for a scalar output), from a generator seeded with ``seed`` offset
    by UPSTREAM_STREAM: inputs drawn from the same ``seed`` (the CLI gives inputs() that seed) must not come out
    equal to the upstream gradient, or dy = x would hide a mask or a sign taken from the wrong tensor."""
    generator = torch.Generator().manual_seed((seed + UPSTREAM_STREAM) % 2**63)
    grads = []
    for output in outputs:
        if output.numel() == 1:
            grads.append(torch.ones_like(output))
        else:
            drawn = torch.randn(output.shape, generator=generator, dtype=torch.float64)
            grads.append(drawn.to(dtype=output.dtype, device=output.device))
    return tuple(grads)


def unpack_forward(result, role: str):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise CheckError(f"{role} must return (output, cache); got {_describe(result)}")
    output, cache = result
    return as_tuple(output, f"{role}'s output"), cache


def check_gradient_dict(grads, role: str) -> dict:
    if grads is None:
        raise CheckError(f"{role} returned None; expected a dict {{input name: gradient tensor}}")
    if not isinstance(grads, Mapping):
        raise CheckError(f"{role} returned {_describe(grads)}; expected a dict {{input name: gradient tensor}}")
    for name, grad in grads.items():
        if not isinstance(grad, Tensor):
            raise CheckError(f"{role} returned {_describe(grad)} for {name!r}; expected a tensor")
    return dict(grads)


def _check_constants(constants, inputs: Mapping) -> tuple[str, ...]:
    if isinstance(constants, str):
        constants = (constants,)
    constants = tuple(constants)
    unknown = [name for name in constants if name not in inputs]
    if unknown:
        raise CheckError(f"constants: {unknown} are not inputs (inputs: {sorted(inputs)})")
    return constants


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"


def reference_pass(reference: Callable, inputs: Mapping, upstream: tuple[Tensor, ...] | None, dtype, seed: int,
                   role: str = "the reference", constants=()):
    """Run ``reference`` under autograd on copies of ``inputs`` in ``dtype``; returns (outputs, {name: grad},
    upstream) with the upstream gradient drawn from ``seed`` when not given (in the reference's output dtype)."""
    leaves = {name: cast(value, dtype) for name, value in inputs.items()}
    wanted_names = [name for name, value in leaves.items() if differentiable(value) and name not in constants]
    for name in wanted_names:
        leaves[name].requires_grad_(True)
    with torch.enable_grad():
        outputs = as_tuple(call_user(role, reference, **leaves), role)
        if upstream is None:
            upstream = upstream_gradients(outputs, seed)
        wanted = [leaves[name] for name in wanted_names]
        connected = [(output, grad.to(output.dtype)) for output, grad in zip(outputs, upstream)
                     if output.requires_grad]
        if not connected:
            raise CheckError(f"{role} is not differentiable: none of its outputs depends on a floating input through "
                             f"ops autograd can differentiate (was it computed under no_grad, detached, or through "
                             f"numpy?)")
        grads = torch.autograd.grad([output for output, _ in connected], wanted,
                                    grad_outputs=[grad for _, grad in connected], allow_unused=True)
    gradients = {name: (grad if grad is not None else torch.zeros_like(leaves[name])).detach()
                 for name, grad in zip(wanted_names, grads)}
    return tuple(output.detach() for output in outputs), gradients, upstream


def user_pass(forward: Callable, backward: Callable, inputs: Mapping, upstream, dtype):
    """The user's forward and backward on copies of ``inputs`` in ``dtype``: (outputs, {name: grad})."""
    copies = {name: cast(value, dtype) for name, value in inputs.items()}
    with torch.no_grad():
        outputs, cache = unpack_forward(call_user("your forward", forward, **copies), "your forward")
        grad_out = tuple(grad.to(dtype) if grad.is_floating_point() else grad for grad in upstream)
        grads = call_user("your backward", backward, grad_out[0] if len(grad_out) == 1 else grad_out, cache)
    return outputs, check_gradient_dict(grads, "your backward")


def check_op(forward: Callable, backward: Callable, reference: Callable, inputs: Mapping, *,
             contracts=None, exact: bool = False, grad_output=None, seed: int = 0, name: str = "op",
             constants: Sequence[str] = ()) -> Report:
    """Check one op: the user's forward and backward against ``reference`` under autograd, at the inputs' dtype.

    inputs: {name: value}; floating tensors are differentiated (all of one dtype, float32 or float64), integer
        tensors and Python values pass through. The caller's tensors are never modified.
    contracts: {pattern: contract} by row name (``"op.dx"``, ``"*.dW"``), or one contract for all; default:
        the noise floor in float32, normwise 1e-10 in float64. ``exact``: every row bitwise by default.
    grad_output: the upstream gradient (a tensor, or a tuple for several outputs); default drawn from ``seed``.
    constants: names of floating inputs that get no gradient (regression targets, running statistics).
    Returns a Report; raises CheckError (UserCodeError when the user's code or the reference raised) when the
    check cannot be made.
    """
    for role, function in (("forward", forward), ("backward", backward), ("reference", reference)):
        if not callable(function):
            raise CheckError(f"{role}: expected a function; got {_describe(function)}")
    if not isinstance(inputs, Mapping):
        raise CheckError(f"inputs: expected a dict {{name: tensor}}; got {_describe(inputs)}")
    dtype = working_dtype(inputs)
    devices = {value.device for value in inputs.values() if isinstance(value, Tensor)}
    if len(devices) > 1:
        raise CheckError(f"inputs: tensors on several devices {sorted(map(str, devices))}; put them on one")
    device = devices.pop()
    constants = _check_constants(constants, inputs)
    book = ContractBook(contracts, exact)
    upstream = None if grad_output is None else as_tuple(grad_output, "grad_output")
    ref_out, ref_grads, upstream = reference_pass(reference, inputs, upstream, dtype, seed, constants=constants)
    ref64_out, ref64_grads, _ = reference_pass(reference, inputs, tuple(g.double() for g in upstream),
                                               torch.float64, seed, constants=constants)
    my_out, my_grads = user_pass(forward, backward, inputs, upstream, dtype)
    scale = check_scale([*ref64_out, *ref64_grads.values(), *upstream])

    rows, mine_of, ref_of, ref64_of = [], {}, {}, {}
    output_names = [f"{name}.out"] if len(ref_out) == 1 else [f"{name}.out[{i}]" for i in range(len(ref_out))]
    if len(my_out) != len(ref_out):
        rows.append(structural_row(f"{name}.out", "forward", "shape mismatch", f"your forward returned "
                                   f"{len(my_out)} output(s), the reference {len(ref_out)}"))
    else:
        for row_name, mine, ref, ref64 in zip(output_names, my_out, ref_out, ref64_out):
            rows.append(compare_row(row_name, "forward", mine, ref, ref64, book.for_tensor(row_name, dtype),
                                    scale=scale))
            mine_of[row_name], ref_of[row_name], ref64_of[row_name] = mine, ref, ref64
    for input_name, value in inputs.items():
        row_name = f"{name}.d{input_name}"
        if not differentiable(value) or input_name in constants:
            if input_name in my_grads:
                kind = ("listed in constants" if input_name in constants else f"a {value.dtype} tensor"
                        if isinstance(value, Tensor) else f"a {type(value).__name__}")
                rows.append(structural_row(row_name, "gradient", "gradient for a non-differentiable input",
                                           f"{input_name!r} is {kind}: it gets no gradient, but your backward "
                                           f"returned one", my_grads[input_name]))
            continue
        if input_name not in my_grads:
            rows.append(structural_row(row_name, "gradient", "missing gradient", f"your backward returned no "
                                       f"gradient for {input_name!r} (it returned {sorted(my_grads)})"))
            continue
        mine = my_grads[input_name]
        rows.append(compare_row(row_name, "gradient", mine, ref_grads[input_name], ref64_grads[input_name],
                                book.for_tensor(row_name, dtype), scale=scale))
        mine_of[row_name], ref_of[row_name], ref64_of[row_name] = mine, ref_grads[input_name], \
            ref64_grads[input_name]
    for extra in sorted(set(my_grads) - set(inputs)):
        rows.append(structural_row(f"{name}.d{extra}", "gradient", "unexpected gradient",
                                   f"your backward returned a gradient for {extra!r}, which is not an input "
                                   f"(inputs: {sorted(inputs)})", my_grads[extra]))

    report = Report("op", name, rows, fingerprint(device, dtype))
    unused = book.unused_patterns([row.name for row in rows])
    if unused:
        report.notes.append(f"contract pattern(s) {unused} matched no tensor (tensors: "
                            f"{', '.join(row.name for row in rows)})")
    if not report.passed:
        triage_op(report, forward, backward, inputs, upstream, mine_of, ref_of, ref64_of, name, scale)
    return report


def check_scale(tensors) -> float:
    """The largest magnitude among a check's float64 reference tensors and its upstream gradient: the floor of
    the normwise measures (a gradient that is analytically zero is judged against the size of what it is made
    of, not against its own cancellation noise)."""
    finite = [float(t.detach().double().abs().nan_to_num(0, 0, 0).max()) for t in tensors
              if isinstance(t, Tensor) and t.numel() and t.is_floating_point()]
    return max(finite, default=0.0)


def triage_op(report: Report, forward, backward, inputs, upstream, mine_of, ref_of, ref64_of, name,
              scale: float = 0.0) -> None:
    """Re-run the user's op in float64 (once: it serves every failing row) and give each failing row its verdict;
    the first divergence gets the full explanation."""
    failing = [row for row in report.rows if not row.passed and row.name in ref64_of]
    mine64_of = {}
    if failing:
        outputs64, grads64 = user_pass(forward, backward, inputs, tuple(g.double() for g in upstream), torch.float64)
        names = [f"{name}.out"] if len(outputs64) == 1 else [f"{name}.out[{i}]" for i in range(len(outputs64))]
        mine64_of.update(zip(names, outputs64))
        mine64_of.update({f"{name}.d{key}": grad for key, grad in grads64.items()})
    gradient_refs64 = {row_name.split(".d", 1)[1]: tensor for row_name, tensor in ref64_of.items()
                       if row_name.startswith(f"{name}.d")}
    gradient_mine64 = {row_name.split(".d", 1)[1]: tensor for row_name, tensor in mine64_of.items()
                       if row_name.startswith(f"{name}.d")}
    first = report.first_divergence
    for row in failing:
        others = {key: tensor for key, tensor in gradient_refs64.items() if f"{name}.d{key}" != row.name}
        triage = triage_row(row, mine_of[row.name], ref_of[row.name], ref64_of[row.name], mine64_of.get(row.name),
                            others if row.kind == "gradient" else None, gradient_mine64, scale)
        if row is first:
            report.triage = triage
    if report.triage is None and first is not None:
        report.triage = Triage(first.label, first.verdict, f"{first.label}: {first.verdict}: {first.detail}")
