"""The packages form a stack: each imports only from the packages below it (README, "What is in here")."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Lowest first. manual_backprop and mnist_data are independent of each other (same level).
LEVELS = {"manual_backprop": 0, "mnist_data": 0, "torch_reference": 1, "side_by_side": 2, "experiments": 3}
MAX_MODULE_LINES = 400


def imported_packages(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(LEVELS)


def package_modules():
    for package in LEVELS:
        yield from sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", list(package_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_points_up_or_sideways(path):
    package = path.relative_to(ROOT).parts[0]
    level = LEVELS[package]
    wrong = {other for other in imported_packages(path) if other != package and LEVELS[other] >= level}
    assert not wrong, f"{path.relative_to(ROOT)} ({package}) imports {sorted(wrong)}, which is not below it"


def test_the_layout_check_can_fail(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from side_by_side.run import train\nimport experiments.parity\n")
    assert imported_packages(module) == {"side_by_side", "experiments"}


@pytest.mark.parametrize("path", list(package_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_crowded(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by concern"
