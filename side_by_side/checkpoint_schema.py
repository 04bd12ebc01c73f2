"""What a checkpoint must hold, checked before anything in it is used: checksums, keys, types, shapes, ranges.

``torch.load(..., weights_only=True)`` keeps pickled code out, but it accepts any dict of tensors and numbers: a
damaged file (a flipped bit inside a weight tensor) or a hand-made one (a missing key, a wrong shape, a negative
step, an index permutation that is not one) would load, then crash deep in the loop or train on nonsense. Three
layers of checks, each raising ``CheckpointError`` naming the file and the field:

``content_checksums`` / ``verify_checksums``
    one sha256 per top-level field over a canonical serialisation (every tensor's dtype, shape and bytes; every
    number, string, list and dict, keys sorted), written with the checkpoint and compared on load;
``validate_structure``
    the keys and types every checkpoint of this format has, and the ranges that need no run (steps >= 0, RNG
    states of the right size, finite tensors);
``validate_for_run``
    what depends on the run being resumed: parameter and optimizer-state shapes and dtypes, the permutation of
    the training images, the epoch within ``--epochs`` and a step count consistent with the position in the data.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import fields

import torch
from torch import Tensor

from torch_reference.parity_tally import ParityTally

CHECKSUM_ALGORITHM = "sha256"


class CheckpointError(Exception):
    """A checkpoint cannot be written, read, or used with the current settings."""


# --- checksums -------------------------------------------------------------------------------------------------

def _feed(digest, value, where: str) -> None:
    """Canonical bytes of ``value`` into ``digest``: a type tag, then a length or the exact value, so that no two
    different contents give the same byte stream (floats by ``float.hex``, which is exact)."""
    if value is None:
        digest.update(b"N")
    elif isinstance(value, bool):
        digest.update(b"B1" if value else b"B0")
    elif isinstance(value, int):
        digest.update(b"I%d;" % value)
    elif isinstance(value, float):
        digest.update(b"F" + value.hex().encode() + b";")
    elif isinstance(value, str):
        encoded = value.encode("utf-8", "surrogatepass")
        digest.update(b"S%d:" % len(encoded) + encoded)
    elif isinstance(value, (list, tuple)):
        digest.update(b"%s%d;" % (b"L" if isinstance(value, list) else b"T", len(value)))
        for index, item in enumerate(value):
            _feed(digest, item, f"{where}[{index}]")
    elif isinstance(value, dict):
        digest.update(b"D%d;" % len(value))
        for key in sorted(value, key=lambda key: (type(key).__name__, repr(key))):
            _feed(digest, key, f"{where} key")
            _feed(digest, value[key], f"{where}.{key}")
    elif isinstance(value, Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(b"X%s%s;" % (str(flat.dtype).encode(), repr(tuple(value.shape)).encode()))
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    else:
        raise TypeError(f"{where}: a {type(value).__name__} has no place in a checkpoint")


def field_checksum(value, where: str) -> str:
    digest = hashlib.new(CHECKSUM_ALGORITHM)
    _feed(digest, value, where)
    return digest.hexdigest()


def content_checksums(state: dict) -> dict:
    """``{"algorithm": "sha256", "fields": {field: hexdigest}}`` for every top-level field of ``state``."""
    return {"algorithm": CHECKSUM_ALGORITHM,
            "fields": {key: field_checksum(value, key) for key, value in state.items()}}


def verify_checksums(path, state: dict, checksums) -> None:
    """Every field present, none added, each with the content it was written with."""
    where = f"--resume {path}"
    if not isinstance(checksums, dict) or checksums.get("algorithm") != CHECKSUM_ALGORITHM or not isinstance(
            checksums.get("fields"), dict):
        raise CheckpointError(f"{where}: checksums: expected {{'algorithm': 'sha256', 'fields': {{...}}}}; got "
                              f"{_short(checksums)}")
    listed = checksums["fields"]
    missing = sorted(set(listed) - set(state), key=str)
    if missing:
        raise CheckpointError(f"{where}: field {missing[0]} is missing (the checkpoint's checksums list it)")
    extra = sorted(set(state) - set(listed), key=str)
    if extra:
        raise CheckpointError(f"{where}: field {extra[0]} is not covered by the checkpoint's checksums")
    for key, value in state.items():
        try:
            found = field_checksum(value, str(key))
        except TypeError as error:
            raise CheckpointError(f"{where}: {error}") from None
        if found != listed[key]:
            raise CheckpointError(f"{where}: field {key}: the content does not match its {CHECKSUM_ALGORITHM} "
                                  f"checksum; the file was damaged or edited after it was written")


# --- structure -------------------------------------------------------------------------------------------------

def _short(value) -> str:
    text = repr(value) if not isinstance(value, Tensor) else f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return text if len(text) <= 80 else text[:77] + "..."


class _Checker:
    """Field access that names the file and the dotted field in every refusal."""

    def __init__(self, path):
        self.where = f"--resume {path}"

    def fail(self, field: str, expected: str, value) -> None:
        raise CheckpointError(f"{self.where}: {field}: expected {expected}; got {_short(value)}")

    def get(self, container: dict, key, field: str):
        if not isinstance(container, dict) or key not in container:
            raise CheckpointError(f"{self.where}: {field}: missing")
        return container[key]

    def dict_of(self, container: dict, key, field: str) -> dict:
        value = self.get(container, key, field)
        if not isinstance(value, dict):
            self.fail(field, "a dict", value)
        return value

    def integer(self, value, field: str, low: int = 0, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            self.fail(field, f"an integer >= {low}" + (f" and <= {high}" if high is not None else ""), value)
        return value

    def number(self, value, field: str, low: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
            self.fail(field, f"a finite number >= {low:g}", value)
        return value

    def tensor(self, value, field: str, dtype: torch.dtype | None = None, shape: tuple | None = None,
               floating: bool = False) -> Tensor:
        if not isinstance(value, Tensor):
            self.fail(field, "a tensor", value)
        if (dtype is not None and value.dtype != dtype) or (floating and not value.is_floating_point()) or (
                shape is not None and tuple(value.shape) != tuple(shape)):
            wanted = f"{dtype if dtype is not None else 'a floating-point'} tensor"
            self.fail(field, wanted + (f" of shape {tuple(shape)}" if shape is not None else ""), value)
        if value.is_floating_point() and value.numel() and not (
                torch.isfinite(value.sum()) or torch.isfinite(value).all()):
            raise CheckpointError(f"{self.where}: {field}: holds NaN or Inf; "
                                  "a checkpoint never stores a diverged state")
        return value

    def tensors(self, value, field: str) -> dict:
        """A dict of floating-point tensors, each finite."""
        if not isinstance(value, dict) or not value:
            self.fail(field, "a non-empty dict of tensors", value)
        for key, tensor in value.items():
            self.tensor(tensor, f"{field}.{key}", floating=True)
        return value

    def losses(self, value, field: str) -> None:
        if not isinstance(value, dict):
            self.fail(field, "a dict of loss lists", value)
        for model, losses in value.items():
            if not isinstance(losses, list):
                self.fail(f"{field}.{model}", "a list of losses", losses)
            for index, loss in enumerate(losses):
                self.number(loss, f"{field}.{model}[{index}]", low=-math.inf)


def validate_structure(path, state: dict) -> None:
    """The keys, types and run-independent ranges of a checkpoint (after its checksums matched)."""
    check = _Checker(path)
    for key in ("config", "settings", "data"):
        check.dict_of(state, key, key)
    twin = check.get(state["settings"], "twin", "settings.twin")
    if not isinstance(twin, bool):
        check.fail("settings.twin", "True or False", twin)
    check.tensors(check.get(state, "engine", "engine"), "engine")
    optimizer = check.dict_of(state, "engine_optimizer", "engine_optimizer")
    check.number(check.get(optimizer, "lr", "engine_optimizer.lr"), "engine_optimizer.lr")
    for name, entries in check.dict_of(optimizer, "state", "engine_optimizer.state").items():
        if not isinstance(entries, dict):
            check.fail(f"engine_optimizer.state.{name}", "a dict of tensors", entries)
        for key, tensor in entries.items():
            check.tensor(tensor, f"engine_optimizer.state.{name}.{key}", floating=True)
    schedule = check.dict_of(state, "engine_schedule", "engine_schedule")
    check.integer(check.get(schedule, "steps", "engine_schedule.steps"), "engine_schedule.steps")
    check.number(check.get(schedule, "lr", "engine_schedule.lr"), "engine_schedule.lr")
    if twin:
        check.tensors(check.get(state, "twin", "twin"), "twin")
        twin_optimizer = check.dict_of(state, "twin_optimizer", "twin_optimizer")
        for index, entries in check.dict_of(twin_optimizer, "state", "twin_optimizer.state").items():
            check.integer(index, f"twin_optimizer.state key {index!r}")
            if not isinstance(entries, dict):
                check.fail(f"twin_optimizer.state.{index}", "a dict of tensors", entries)
            for key, tensor in entries.items():
                check.tensor(tensor, f"twin_optimizer.state.{index}.{key}", floating=True)
        groups = check.get(twin_optimizer, "param_groups", "twin_optimizer.param_groups")
        if not isinstance(groups, list) or not groups or not all(isinstance(group, dict) for group in groups):
            check.fail("twin_optimizer.param_groups", "a non-empty list of dicts", groups)
        twin_schedule = check.get(state, "twin_schedule", "twin_schedule")
        if twin_schedule is not None and not isinstance(twin_schedule, dict):
            check.fail("twin_schedule", "None or a dict", twin_schedule)
    check.integer(check.get(state, "epoch", "epoch"), "epoch")
    check.integer(check.get(state, "global_step", "global_step"), "global_step")
    order = check.dict_of(state, "order", "order")
    permutation = check.tensor(check.get(order, "permutation", "order.permutation"), "order.permutation",
                               dtype=torch.int64)
    if permutation.dim() != 1:
        check.fail("order.permutation", "a 1-d int64 tensor", permutation)
    check.integer(check.get(order, "batch_in_epoch", "order.batch_in_epoch"), "order.batch_in_epoch")
    rng_shape = tuple(torch.Generator().get_state().shape)
    check.tensor(check.get(order, "generator", "order.generator"), "order.generator", torch.uint8, rng_shape)
    check.tensor(check.get(state, "torch_rng", "torch_rng"), "torch_rng", torch.uint8,
                 tuple(torch.get_rng_state().shape))
    if "cuda_rng" in state:  # empty unless the run was on a GPU
        cuda_rng = check.tensor(state["cuda_rng"], "cuda_rng", torch.uint8)
        if cuda_rng.dim() != 1:
            check.fail("cuda_rng", "a 1-d uint8 tensor", cuda_rng)
    tally = check.dict_of(state, "tally", "tally")
    expected = {item.name for item in fields(ParityTally)}
    required = {"checks", "bitwise_checks", "worst", "worst_weight_diff", "failed_checks"}  # the first checkpoints'
    if not required <= set(tally) <= expected:
        check.fail("tally", f"the keys {sorted(expected)}", sorted(tally))
    for key in ("checks", "bitwise_checks", "failed_checks"):
        check.integer(tally[key], f"tally.{key}")
    if not isinstance(tally["worst"], dict):
        check.fail("tally.worst", "a dict", tally["worst"])
    if "tensors" in tally:
        check.integer(tally["tensors"], "tally.tensors")
    if tally.get("first_failure") is not None and not isinstance(tally["first_failure"], dict):
        check.fail("tally.first_failure", "a dict or None", tally["first_failure"])
    history = check.get(state, "history", "history")
    if not isinstance(history, list):
        check.fail("history", "a list of dicts", history)
    for index, entry in enumerate(history):  # one per finished epoch; the summary reads the last one
        for model in ("manual", "autograd") if twin else ("manual",):
            values = check.dict_of(entry, model, f"history[{index}].{model}")
            for key in ("loss/train_epoch", "loss/test", "accuracy/test"):
                check.number(check.get(values, key, f"history[{index}].{model}.{key}"),
                             f"history[{index}].{model}.{key}", low=-math.inf)
    check.number(check.get(state, "elapsed", "elapsed"), "elapsed")
    for key in ("interval_losses", "epoch_losses"):
        check.losses(check.get(state, key, key), key)
    # Data-parallel runs (checkpoints from before them have neither field: one process).
    world_size = check.integer(state.get("world_size", 1), "world_size", low=1)
    if "rank_rng" in state:  # every rank's dropout generator, in rank order
        check.tensor(state["rank_rng"], "rank_rng", torch.uint8, (world_size, *torch.get_rng_state().shape))
    tally = state.get("single_process_tally", {"checks": 0, "bitwise_checks": 0, "worst": {}})
    if not isinstance(tally, dict) or sorted(tally) != ["bitwise_checks", "checks", "worst"]:
        check.fail("single_process_tally", "a dict with checks, bitwise_checks and worst", tally)


def validate_for_run(path, state: dict, template: dict, n_train: int, batches_per_epoch: int, epochs: int) -> None:
    """Shapes and ranges against the run that resumes: ``template`` is that run's own fresh ``state()``."""
    check = _Checker(path)
    for key in ("engine", "twin"):
        if key not in template:
            continue
        expected, found = template[key], state[key]
        if list(found) != list(expected):
            check.fail(key, f"the parameters {list(expected)}", list(found))
        for name, tensor in expected.items():
            check.tensor(found[name], f"{key}.{name}", tensor.dtype, tuple(tensor.shape))
    params = template["engine"]
    for name, entries in state["engine_optimizer"]["state"].items():
        if name not in params:
            check.fail(f"engine_optimizer.state key {name!r}", f"one of {list(params)}", name)
        for key, tensor in entries.items():
            _check_state_tensor(check, f"engine_optimizer.state.{name}.{key}", key, tensor, params[name])
    if "twin" in template:
        order = list(params.values())  # torch.optim numbers the twin's parameters in the engine's order
        for index, entries in state["twin_optimizer"]["state"].items():
            check.integer(index, f"twin_optimizer.state key {index!r}", high=len(order) - 1)
            for key, tensor in entries.items():
                _check_state_tensor(check, f"twin_optimizer.state.{index}.{key}", key, tensor, order[index])
    permutation = state["order"]["permutation"]
    if permutation.numel() and (tuple(permutation.shape) != (n_train,)
                                or not torch.equal(permutation.sort().values, torch.arange(n_train))):
        check.fail("order.permutation", f"a permutation of range({n_train}) (the training images)", permutation)
    epoch, step = state["epoch"], state["global_step"]
    batch_in_epoch = check.integer(state["order"]["batch_in_epoch"], "order.batch_in_epoch", high=batches_per_epoch)
    check.integer(epoch, f"epoch (epochs completed, with --epochs {epochs})", high=epochs)
    # An epoch's last batch is counted in ``epoch`` as soon as it is taken (its position then reads "finished").
    expected_step = epoch * batches_per_epoch + (batch_in_epoch if batch_in_epoch < batches_per_epoch else 0)
    if permutation.numel() and step != expected_step:
        check.fail("global_step", f"{expected_step} ({epoch} epochs of {batches_per_epoch} batches, then "
                                  f"{batch_in_epoch % batches_per_epoch} batches)", step)


def _check_state_tensor(check: _Checker, field: str, key: str, tensor, param: Tensor) -> None:
    """An optimizer state tensor: the step count is a scalar, every other entry has its parameter's shape."""
    if key == "step":
        check.tensor(tensor, field, shape=(), floating=True)
        check.number(tensor.item(), field)
    else:
        check.tensor(tensor, field, param.dtype, tuple(param.shape))
