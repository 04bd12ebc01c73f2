"""The worked examples in examples/, run as a user runs them: through the CLI (python -m experiments.check FILE,
a subprocess from the repository root) in float32 and float64, and examples/layers_mlp.py as a script. Each run
must end with the expected exit status, and a failing one must name the expected first divergence and verdict,
in the printed report and in its JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# file -> (exit status, first divergence, its verdict, rows that must still pass); None: every contract holds
EXAMPLES = {
    "layernorm.py": (0, None, None, ()),
    "layernorm_bug.py": (1, "layernorm_bug.dx", "formula error", ("layernorm_bug.out", "layernorm_bug.dgamma",
                                                                  "layernorm_bug.dbeta")),
    "batchnorm1d.py": (0, None, None, ()),
    "batchnorm1d_bug.py": (1, "batchnorm1d_bug.out", "formula error", ("batchnorm1d_bug.dbeta",)),
    "softmax_cross_entropy.py": (0, None, None, ()),
    "tanh_mlp.py": (0, None, None, ()),
}


def run(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_every_example_is_covered():
    """A new example file gets a line in EXAMPLES (or is the template or the layer-level script)."""
    files = {path.name for path in (ROOT / "examples").glob("*.py")}
    assert files - {"template.py", "layers_mlp.py"} == set(EXAMPLES)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_example_through_the_cli(example, dtype, tmp_path):
    status, first, verdict, still_passing = EXAMPLES[example]
    report_path = tmp_path / "report.json"
    result = run("-m", "experiments.check", f"examples/{example}", "--dtype", dtype, "--json", str(report_path))
    assert result.returncode == status, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] == (status == 0)
    assert {row["dtype"] for row in report["rows"]} == {dtype}
    name = example[:-3]
    if first is None:
        assert f"PASS ({name})" in result.stdout
        assert report["first_divergence"] is None and report["triage"] is None
        assert all(row["verdict"] in ("bitwise", "within contract") for row in report["rows"])
        return
    assert f"FAIL ({name}): first divergence {first}: {verdict}" in result.stdout
    assert f"why: {first} is a {verdict}" in result.stdout
    assert f"first divergence {first}: {verdict}" in result.stderr  # the short form, on stderr
    assert report["first_divergence"] == first
    assert report["triage"]["row"] == first and report["triage"]["verdict"] == verdict
    assert report["triage"]["farther_side"] == "yours"
    assert report["triage"]["float64_normwise_error"] > 1e-6  # far from rounding, not a borderline call
    rows = {row["name"]: row for row in report["rows"]}
    assert rows[first]["verdict"] == verdict and not rows[first]["passed"]
    for passing in still_passing:
        assert rows[passing]["passed"], rows[passing]


def test_layers_mlp_passes():
    result = run("examples/layers_mlp.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS (mlp_5743): " in result.stdout
    for row in ("fc1.out", "tanh2.out", "loss", "fc3.d_out", "tanh2.d_out", "fc1.dW", "fc1.dx"):
        assert f"\n{row} " in result.stdout  # every intermediate and gradient has its row


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layers_mlp_with_the_tanh_bug(dtype):
    result = run("examples/layers_mlp.py", "--bug", "--dtype", dtype)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL (mlp_5743): first divergence fc2.d_out: formula error" in result.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line and not line.startswith("-")}
    for row in ("fc1.out", "tanh1.out", "fc2.out", "tanh2.out", "fc3.out", "loss", "fc3.d_out", "tanh2.d_out"):
        assert lines[row].endswith("bitwise") or lines[row].endswith("within contract"), lines[row]
    assert lines["fc2.d_out"].endswith("FAIL: formula error")
