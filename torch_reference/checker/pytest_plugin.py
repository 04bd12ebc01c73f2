"""The pytest plugin (registered through the ``pytest11`` entry point, so it loads wherever this project is
installed): a ``backward_check`` fixture, and ``--backward-report PATH`` to write every report of the session
as one JSON file.

    def test_my_layernorm(backward_check):
        backward_check(forward, backward, reference, inputs)       # check_op's arguments; fails with the verdict

    def test_my_network():
        from torch_reference.checker import assert_backward, check_layers
        assert_backward(check_layers(layers, model, x, target=y, loss=..., reference_loss=...))
"""

from __future__ import annotations

import json
import os

import pytest

_reports: list[tuple[str | None, dict]] = []
_current_test: list[str | None] = [None]


def record(report) -> None:
    """Keep a report for --backward-report (called by assert_backward and the fixture)."""
    _reports.append((_current_test[0], report.to_json()))


def pytest_addoption(parser):
    group = parser.getgroup("backward-check", "checking hand-written backward passes (manual-backprop)")
    group.addoption("--backward-report", metavar="PATH", default=None,
                    help="write every backward-check report of the session to PATH as JSON")


def pytest_configure(config):
    path = config.getoption("backward_report", None)
    if path:
        # checked before any test runs, so a long session never ends in an unwritable report
        directory = os.path.dirname(os.path.abspath(path)) or "."
        if os.path.isdir(path):
            raise pytest.UsageError(f"--backward-report {path}: is a directory; give a file path")
        if not os.path.isdir(directory):
            raise pytest.UsageError(f"--backward-report {path}: the directory {directory} does not exist")
        if not os.access(directory, os.W_OK):
            raise pytest.UsageError(f"--backward-report {path}: the directory {directory} is not writable")


def pytest_runtest_setup(item):
    _current_test[0] = item.nodeid


def pytest_runtest_teardown(item):
    _current_test[0] = None


def pytest_sessionfinish(session):
    path = session.config.getoption("backward_report", None)
    if not path:
        return
    document = {"reports": [{"test": test, **report} for test, report in _reports]}
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, path)  # a reader never sees half a file


@pytest.fixture
def backward_check():
    """A function with check_op's arguments that fails the test with the report's first divergence and
    verdict (not two Jacobians) and returns the report when every contract holds."""
    from torch_reference.checker import assert_backward

    return assert_backward
