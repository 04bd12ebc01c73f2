"""Check your own backward: the project's parity harness, for anyone's hand-written backprop.

Three levels, one report:

* :func:`check_op`: one op, your ``forward``/``backward`` against a ``reference`` autograd differentiates;
* :func:`check_layers`: a network layer by layer, every intermediate value and gradient in graph order against
  an ``nn.Module`` (or a list of torch callables) with ``retain_grad``;
* :func:`check_training`: your training step against ``torch.optim`` for N steps, weights and optimizer state
  after every step.

Each returns a :class:`Report` (a table, a dataclass, JSON) that names the first tensor to leave its contract
and says why: **rounding** (the op re-run in float64 on both sides agrees) or a **formula error**.
:func:`assert_backward` raises an AssertionError whose message starts with that verdict (for pytest).
"""

from torch_reference.checker.contracts import ContractBook, ContractError
from torch_reference.checker.contracts import parse as parse_contract
from torch_reference.checker.errors import CheckError, UserCodeError
from torch_reference.checker.fingerprint import fingerprint
from torch_reference.checker.layers import Layer, check_layers
from torch_reference.checker.op import check_op
from torch_reference.checker.report import Report, Row, Triage
from torch_reference.checker.trajectory import check_training


def assert_backward(report_or_forward, *args, **kwargs) -> Report:
    """Fail with the report's first divergence and verdict unless every contract holds.

    Call it with a Report, or with check_op's arguments (``assert_backward(forward, backward, reference,
    inputs)``). Returns the report when it passes. Every report it sees is recorded for ``--backward-report``.
    """
    report = report_or_forward if isinstance(report_or_forward, Report) else check_op(report_or_forward, *args,
                                                                                       **kwargs)
    from torch_reference.checker import pytest_plugin

    pytest_plugin.record(report)
    if not report.passed:
        raise AssertionError(report.failure_message())
    return report


__all__ = ["CheckError", "ContractBook", "ContractError", "Layer", "Report", "Row", "Triage", "UserCodeError",
           "assert_backward", "check_layers", "check_op", "check_training", "fingerprint", "parse_contract"]
