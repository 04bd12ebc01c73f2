"""Level 3: a training trajectory. Your training step against the reference trained with ``torch.optim``.

    step(params, state, batch) -> loss    your forward, backward and update; it changes ``params`` (and
                                          ``state``, your optimizer's buffers) in place and returns the loss

``params`` is {name: tensor}; ``state`` starts as {} and, where you expose it, holds ``torch.optim``'s layout:
{param name: {"momentum_buffer": tensor}} (SGD), {"exp_avg": ..., "exp_avg_sq": ...} (Adam), and so on; every
key present on both sides is compared. The reference is an ``nn.Module`` (its parameters matched to yours in
order) or a function ``reference(x, **params)``; ``optimizer(parameters)`` builds its ``torch.optim`` optimizer
and ``loss_fn(output, target)`` its loss. Both start from copies of your ``params`` (yours are not modified).

After every step: the loss, each parameter and each exposed state tensor are compared. The report names the
first step and tensor that left its contract; the triage re-runs both trajectories in float64 from the same
float64 start and compares them at that step (rounding if they agree there, else a formula error).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from torch_reference.checker.contracts import ContractBook
from torch_reference.checker.errors import CheckError, call_user
from torch_reference.checker.fingerprint import fingerprint
from torch_reference.checker.op import cast
from torch_reference.checker.report import Report, Triage
from torch_reference.checker.rows import compare_row, structural_row, triage_row


def _reference_trainer(reference, optimizer: Callable, params: Mapping[str, Tensor], dtype):
    """(leaves {name: Parameter}, forward(x), torch optimizer) for the reference, from copies of ``params``."""
    leaves = {name: nn.Parameter(cast(value, dtype)) for name, value in params.items()}
    if isinstance(reference, nn.Module):
        module = copy.deepcopy(reference).to(dtype=dtype)
        own = list(module.parameters())
        if len(own) != len(leaves):
            raise CheckError(f"reference: the module has {len(own)} parameter(s), your params {len(leaves)} "
                             f"({list(leaves)}); match them in order")
        for (name, leaf), theirs in zip(leaves.items(), own):
            if tuple(leaf.shape) != tuple(theirs.shape):
                raise CheckError(f"reference: your {name} has shape {tuple(leaf.shape)}, the module's matching "
                                 f"parameter {tuple(theirs.shape)}")
            for submodule in module.modules():
                for key, value in list(submodule._parameters.items()):
                    if value is theirs:
                        submodule._parameters[key] = leaf
        forward = lambda x: call_user("the reference", module, x)
    elif callable(reference):
        forward = lambda x: call_user("the reference", reference, x, **leaves)
    else:
        raise CheckError(f"reference: expected an nn.Module or a function; got {type(reference).__name__}")
    torch_optimizer = call_user("optimizer", optimizer, list(leaves.values()))
    if not isinstance(torch_optimizer, torch.optim.Optimizer):
        raise CheckError(f"optimizer: expected a function that builds a torch.optim.Optimizer from a list of "
                         f"parameters; it returned {type(torch_optimizer).__name__}")
    return leaves, forward, torch_optimizer


def _reference_step(forward, torch_optimizer, loss_fn, batch, dtype) -> Tensor:
    x, target = batch
    torch_optimizer.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = call_user("loss_fn", loss_fn, forward(cast(x, dtype)), cast(target, dtype))
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise CheckError("loss_fn must return a scalar tensor")
        loss.backward()
    torch_optimizer.step()
    return loss.detach()


def _user_trajectory(step, params, batches, dtype):
    """Your steps on copies in ``dtype``: after each step (loss, {name: param}, state) as clones."""
    mine = {name: cast(value, dtype) for name, value in params.items()}
    state: dict = {}
    history = []
    for number, batch in enumerate(batches, start=1):
        x, target = batch
        with torch.no_grad():
            loss = call_user(f"your step (step {number})", step, mine, state, (cast(x, dtype), cast(target, dtype)))
        if not isinstance(loss, Tensor):
            raise CheckError(f"your step returned {type(loss).__name__} at step {number}; expected the loss tensor")
        if not isinstance(state, dict):
            raise CheckError("your step replaced its state dict; update it in place")
        history.append((loss.detach().clone(), {n: t.detach().clone() for n, t in mine.items()},
                        {n: {k: v.detach().clone() for k, v in entries.items() if isinstance(v, Tensor)}
                         for n, entries in state.items() if isinstance(entries, Mapping)}))
    return history


def _reference_trajectory(reference, optimizer, loss_fn, params, batches, dtype):
    leaves, forward, torch_optimizer = _reference_trainer(reference, optimizer, params, dtype)
    history = []
    for batch in batches:
        loss = _reference_step(forward, torch_optimizer, loss_fn, batch, dtype)
        state = {name: {key: value.detach().clone() for key, value in torch_optimizer.state[leaf].items()
                        if isinstance(value, Tensor)} for name, leaf in leaves.items()}
        history.append((loss, {name: leaf.detach().clone() for name, leaf in leaves.items()}, state))
    return history


def check_training(step: Callable, params: Mapping[str, Tensor], reference, optimizer: Callable,
                   loss_fn: Callable, batches: Sequence, *, contracts=None, exact: bool = False,
                   name: str = "training") -> Report:
    """Train your step and the reference side by side on ``batches`` ((x, target) pairs), comparing the loss,
    the parameters and the exposed optimizer state after every step."""
    if not isinstance(params, Mapping) or not params or not all(isinstance(v, Tensor) and v.is_floating_point()
                                                                  for v in params.values()):
        raise CheckError("params: expected a non-empty dict {name: floating-point tensor}")
    dtypes = {value.dtype for value in params.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
        raise CheckError(f"params: expected one dtype, float32 or float64; got {sorted(map(str, dtypes))}")
    batches = list(batches)
    if not batches or not all(isinstance(b, (tuple, list)) and len(b) == 2 for b in batches):
        raise CheckError("batches: expected a non-empty sequence of (x, target) pairs")
    (dtype,) = dtypes
    book = ContractBook(contracts, exact)
    mine = _user_trajectory(step, params, batches, dtype)
    ref = _reference_trajectory(reference, optimizer, loss_fn, params, batches, dtype)
    ref64 = _reference_trajectory(reference, optimizer, loss_fn, params, batches, torch.float64)
    rows, where = [], {}
    for number, ((my_loss, my_params, my_state), (r_loss, r_params, r_state), (q_loss, q_params, q_state)) in \
            enumerate(zip(mine, ref, ref64), start=1):
        def add(row_name, kind, a, b, c, key):
            rows.append(compare_row(row_name, kind, a, b, c, book.for_tensor(row_name, dtype), step=number))
            where[(number, row_name)] = key
        add("loss", "loss", my_loss.reshape(r_loss.shape) if my_loss.numel() == 1 else my_loss, r_loss, q_loss,
            ("loss", None))
        for param in r_params:
            add(param, "parameter", my_params[param], r_params[param], q_params[param], ("param", param))
        for param, entries in my_state.items():
            if param not in r_state:
                rows.append(structural_row(f"state.{param}", "state", "unexpected state", f"your state has an "
                                           f"entry {param!r}, which is not a parameter ({list(r_params)})",
                                           step=number))
                continue
            for key, tensor in entries.items():
                if key in r_state[param]:
                    add(f"{param}.{key}", "state", tensor, r_state[param][key], q_state[param][key],
                        ("state", param, key))
    report = Report("training", name, rows, fingerprint(next(iter(params.values())).device, dtype))
    exposed = {key for entries in mine[-1][2].values() for key in entries}
    torch_keys = {key for entries in ref[-1][2].values() for key in entries}
    if torch_keys - exposed:
        report.notes.append(f"optimizer state not compared (your state does not expose it): "
                            f"{sorted(torch_keys - exposed)}")
    if exposed - torch_keys:
        report.notes.append(f"your state keys with no torch.optim counterpart (not compared): "
                            f"{sorted(exposed - torch_keys)}")
    first = report.first_divergence
    if first is not None:
        report.triage = _triage(first, where[(first.step, first.name)], step, params, batches, mine, ref, ref64)
    return report


def _pick(history_entry, key):
    loss, params, state = history_entry
    if key[0] == "loss":
        return loss
    if key[0] == "param":
        return params[key[1]]
    return state.get(key[1], {}).get(key[2])


def _triage(row, key, step, params, batches, mine, ref, ref64) -> Triage:
    if row.verdict not in ("outside contract", "non-finite"):
        return Triage(row.label, row.verdict, f"{row.label}: {row.verdict}: {row.detail}")
    if row.dtype == "float64":
        mine64 = _pick(mine[row.step - 1], key)
    else:
        # your whole trajectory again in float64 from the float64 copy of the same start and batches
        mine64 = _pick(_user_trajectory(step, params, batches[:row.step], torch.float64)[row.step - 1], key)
    if isinstance(mine64, Tensor) and key[0] == "loss":
        mine64 = mine64.reshape(_pick(ref64[row.step - 1], key).shape)
    triage = triage_row(row, _pick(mine[row.step - 1], key), _pick(ref[row.step - 1], key),
                        _pick(ref64[row.step - 1], key), mine64)
    triage.explanation = triage.explanation.replace("from the same inputs", "from the same start and batches")
    return triage
