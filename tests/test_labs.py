"""The course's labs (experiments/labs): every number the course states, every lab's fast form, the runner.

MNIST labs run here on a small synthetic IDX dataset (tests/fake_idx.py), never on the real download; the
course's MNIST figure (84.64 % / 83.58 %) is checked by the full run of the softmax_classifier lab.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
from pathlib import Path

import pytest
import torch
from fake_idx import write_fake_idx

from experiments.labs import __main__ as runner
from experiments.labs import common
from experiments.labs.common import all_labs

LABS = all_labs()
MNIST_LABS = [name for name, lab in LABS.items() if lab.uses_mnist]


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("idx")
    write_fake_idx(directory, n_train=64, n_test=32)
    return directory


def run(name: str, *flags: str, tmp_path: Path | None = None) -> common.Report:
    lab = LABS[name]
    logdir = ["--logdir", str(tmp_path)] if tmp_path is not None else ["--no-tensorboard"]
    args = runner.lab_parser(lab).parse_args([*flags, *logdir])
    return runner.run_lab(lab, args, quiet=True)


def rows(report: common.Report) -> dict[str, common.Row]:
    return {row.quantity: row for row in report.rows}


def assert_all_ok(report: common.Report) -> None:
    bad = [row.quantity for row in report.rows if not row.ok]
    assert not bad, f"{report.lab}: rows not ok: {bad}\n{report.table()}"


# --- the course's numbers, lecture by lecture --------------------------------------------------------------------


def test_one_layer_relu_numbers():
    report = run("one_layer_relu")
    assert_all_ok(report)
    values = report.values
    assert values["z"].tolist() == [[7, 6, 9]] and values["L"].item() == 32.5
    assert values["dL/dW"].tolist() == [[6, 12], [2, 4], [5, 10]]
    assert torch.allclose(values["W_new"], torch.tensor([[2.4, 0.8], [3.8, 0.6], [4.5, 1.0]], dtype=torch.float64))
    assert values["L_new"].item() == 8.125


def test_jacobian():
    report = run("jacobian")
    assert_all_ok(report)
    assert report.values["J"].tolist() == [[1, 2], [3, -1]]


def test_two_layer_net_trains_and_matches_twin():
    report = run("two_layer_net")
    assert_all_ok(report)
    losses = report.values["losses"]
    assert len(losses) == 20 and losses[-1] < 0.2 * losses[0]
    assert all(b < a for a, b in zip(losses[2:], losses[3:]))  # falls at every step after the first overshoot


def test_batch_formulas_lecture_and_engine_placements_agree():
    report = run("batch_formulas")
    assert_all_ok(report)
    for name, grad in report.values["grads"].items():
        assert torch.allclose(grad, report.values["lecture_grads"][name], rtol=1e-12, atol=1e-12)


def test_quadratic_regression_predicts_9_1_minus_6():
    report = run("quadratic_regression", "--fast")
    assert_all_ok(report)
    assert (report.values["prediction"] - torch.tensor([9.0, 1.0, -6.0], dtype=torch.float64)).abs().max() < 0.5


def test_graph_examples_numbers():
    report = run("graph_examples")
    assert_all_ok(report)
    table = rows(report)
    assert table["(x+y)z: f"].engine == -12 and table["(x+y)z: df/dx"].engine == -4
    assert table["(x+y)z: df/dy"].engine == -4 and table["(x+y)z: df/dz (total)"].engine == 3
    neuron = report.values["neuron"]
    assert round(neuron["f"], 2) == 0.73 and round(neuron["grad_s3"], 1) == 0.2
    assert round(neuron["grad_w0"], 1) == -0.2 and round(neuron["grad_x0"], 1) == 0.4


@pytest.mark.parametrize("name", ["gate_patterns", "activations", "vectorised_norm", "tensors", "parameter_count"])
def test_small_labs(name):
    assert_all_ok(run(name))


def test_svm_l2_numbers():
    report = run("svm_l2")
    assert_all_ok(report)
    assert [round(v, 1) for v in report.values["per_sample"].tolist()] == [2.9, 0.0, 12.9]
    assert round(report.values["loss"].item(), 2) == 5.27


def test_gradient_descent_rates():
    report = run("gradient_descent")
    assert_all_ok(report)
    assert report.values[0.1]["converged"] and report.values[0.2]["converged"]
    assert not report.values[0.25]["converged"]


def test_sigmoid_unit_numbers():
    report = run("sigmoid_unit")
    assert_all_ok(report)
    assert [round(v, 4) for v in report.values["z"].flatten().tolist()] == [-2.4591, 3.1721, 6.2782]
    assert [round(v, 4) for v in report.values["a"].flatten().tolist()] == [0.0788, 0.9598, 0.9981]


def test_mlp_5743_numbers():
    report = run("mlp_5743")
    assert_all_ok(report)
    assert round(report.values["L"].item(), 4) == 1.1394
    assert round(report.values["notebook's 1/N sum(Y*A3)"].item(), 4) == 0.3374
    assert torch.allclose(report.values["dL/dZ3"], report.values["(A3 - Y)/N"], atol=1e-7)


def test_softmax_jacobian_numbers():
    report = run("softmax_jacobian")
    assert_all_ok(report)
    assert round(report.values["J"][2, 2].item(), 7) == 0.0021720


def test_matmul_three_ways():
    report = run("tensors")
    for kind in ("triple loop", "sum of outer products", "torch @"):
        assert rows(report)[f"A@B: {kind}"].engine.tolist() == [[85, 70, 79, 68], [74, 72, 42, 52]]


def test_loops_equal_vectorised():
    report = run("loops_vs_vectorised", "--batch-sizes", "8,32")
    assert_all_ok(report)
    assert set(report.values) == {8, 32}


def test_iris_lab_learns(tmp_path):
    report = run("iris", "--fast", tmp_path=tmp_path)
    assert_all_ok(report)
    assert report.values["accuracy"] > 0.7
    # One TensorBoard run per lab run, the model last in the tag (as the training runs).
    events = list(tmp_path.glob("iris/*/events.out.tfevents.*"))
    assert len(events) == 1 and not list(tmp_path.glob("iris/*/manual"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = EventAccumulator(str(events[0].parent)).Reload().Tags()
    assert {"loss/train/manual", "loss/train/autograd", "accuracy/train/manual"} <= set(tags["scalars"])
    assert tags["images"] == ["decision_regions/manual"]


def test_sgd_minibatch_lab():
    report = run("sgd_minibatch", "--fast", "--epochs", "2")
    assert_all_ok(report)
    assert report.values[1]["steps"] == 300 and report.values[16]["steps"] == 20


# --- the MNIST labs on synthetic IDX data -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [name for name in MNIST_LABS if name != "softmax_classifier"])
def test_mnist_labs_fast_form(name, idx_dir):
    assert_all_ok(run(name, "--fast", "--dataset", "idx", "--data-dir", str(idx_dir)))


def test_softmax_classifier_on_synthetic_data(idx_dir):
    """Parity and the comparison of the two settings; the course's MNIST figure needs the real data."""
    report = run("softmax_classifier", "--dataset", "idx", "--data-dir", str(idx_dir))
    assert all(row.parity_ok for row in report.rows), report.table()
    assert {"course", "project"} <= set(report.values)
    assert rows(report)["course: test accuracy"].course == pytest.approx(0.8358)


def test_memory_freeing_lab():
    report = run("memory_freeing", "--fast", "--steps", "2")
    assert_all_ok(report)
    assert report.values["peaks"]["fast"] < report.values["peaks"]["reference"]


# --- the iris data ------------------------------------------------------------------------------------------------


def test_iris_csv_is_sklearns_and_complete():
    from experiments.labs.l003_iris import IRIS_CSV, IRIS_SHA256, load_iris

    assert hashlib.sha256(IRIS_CSV.read_bytes()).hexdigest() == IRIS_SHA256
    X, y = load_iris()
    assert X.shape == (150, 4) and torch.bincount(y).tolist() == [50, 50, 50]
    assert [round(v, 1) for v in X.sum(0).tolist()] == [876.5, 458.6, 563.7, 179.9]  # Fisher's corrected table


def test_iris_loader_refuses_a_changed_file(tmp_path):
    from experiments.labs.l003_iris import IRIS_CSV, load_iris

    changed = tmp_path / "iris.csv"
    changed.write_bytes(IRIS_CSV.read_bytes().replace(b"5.1,3.5,1.4,0.2", b"5.1,3.5,1.4,0.3", 1))
    with pytest.raises(ValueError, match="SHA-256"):
        load_iris(changed)


# --- the runner ---------------------------------------------------------------------------------------------------


def test_listing_names_every_lab(capsys):
    assert runner.main([]) == 0
    out = capsys.readouterr().out
    for name, lab in LABS.items():
        assert name in out and lab.description in out
    assert runner.main(["list"]) == 0 and capsys.readouterr().out == out  # `labs list` is the same listing


def test_runner_exit_codes(capsys, monkeypatch):
    assert runner.main(["one_layer_relu", "--no-tensorboard"]) == 0
    assert "one_layer_relu: PASS: all 9 course numbers reproduced" in capsys.readouterr().out
    assert runner.main(["no_such_lab"]) == 2
    assert "no lab named 'no_such_lab'" in capsys.readouterr().err
    assert runner.main(["one_layer_relu", "--bogus"]) == 2
    assert runner.main(["loops_vs_vectorised", "--batch-sizes", "0", "--no-tensorboard"]) == 2
    # A course number that is not reproduced makes the lab fail with exit status 1.
    from experiments.labs import l000_one_layer_relu

    monkeypatch.setitem(l000_one_layer_relu.COURSE, "L", 32.0)
    assert runner.main(["one_layer_relu", "--no-tensorboard"]) == 1
    assert "NOT reproduced" in capsys.readouterr().out


def test_table_reports_twin_disagreement():
    report = common.Report("x", quiet=True)
    report.check("bitwise", None, torch.tensor([1.0]), torch.tensor([1.0 + 2 ** -20]))
    report.check("close", None, torch.tensor([1.0]), torch.tensor([1.0 + 2 ** -20]), parity=1e-5)
    assert [row.ok for row in report.rows] == [False, True]
    assert "DISAGREE" in report.table()


def test_activation_images_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run("activations", tmp_path=tmp_path)
    (events_dir,) = tmp_path.glob("activations/*/manual")
    accumulator = EventAccumulator(str(events_dir), size_guidance={"images": 0})
    accumulator.Reload()
    assert {f"activations/{name}" for name in ("sigmoid", "tanh", "relu", "leaky_relu", "maxout", "elu")} \
        <= set(accumulator.Tags()["images"])


def test_engine_side_of_every_lab_is_written_by_hand():
    """No autograd in a lab's engine_* functions (the twin side may use it)."""
    forbidden = {"backward", "grad", "requires_grad", "requires_grad_", "retain_grad", "autograd", "enable_grad"}
    for name in common.LAB_MODULES:
        module = __import__(f"experiments.labs.{name}", fromlist=["LAB"])
        tree = ast.parse(inspect.getsource(module))
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef) and function.name.startswith("engine_"):
                used = {node.attr for node in ast.walk(function) if isinstance(node, ast.Attribute)}
                assert not used & forbidden, f"{name}.{function.name} uses {used & forbidden}"


# --- every printed claim can fail ---------------------------------------------------------------------------------


def lab_flags(name: str, idx_dir: Path) -> list[str]:
    mnist = ["--dataset", "idx", "--data-dir", str(idx_dir)] if LABS[name].uses_mnist else []
    return [name, "--fast", "--no-tensorboard", *mnist]


def wrong(value):
    """A value that no course number, twin or tolerance of the labs accepts in place of ``value``."""
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64) + 1e3 if value.numel() else torch.ones(1)
    if isinstance(value, (int, float)):
        return value + 1e3
    if isinstance(value, (list, tuple)):
        return [wrong(item) for item in value]
    return f"not {value}"


@pytest.mark.parametrize("name", list(LABS))
def test_every_lab_exits_1_when_one_of_its_claims_is_false(name, idx_dir, monkeypatch, capsys):
    """Flip one claim per lab: its first checked property made false (Report.claim), or, in a lab without one, the
    engine's first compared value made wrong; the lab must then print FAIL and exit 1. And every comparison row of
    the lab's table can fail: each one, given a wrong engine value, is no longer ok."""
    assert runner.main(lab_flags(name, idx_dir)) == 0, capsys.readouterr().out
    capsys.readouterr()
    reports = []
    original_init = common.Report.__init__

    def remember(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        reports.append(self)

    monkeypatch.setattr(common.Report, "__init__", remember)
    has_claim = False

    def first_claim_false(self, statement, holds):
        nonlocal has_claim
        flip = not any(row.claim is not None for row in self.rows)
        has_claim = True
        return original_claim(self, statement, (not holds) if flip else holds)

    def first_check_wrong(self, quantity, course, engine, *args, **kwargs):
        return original_check(self, quantity, course, wrong(engine) if not self.rows else engine, *args, **kwargs)

    original_claim, original_check = common.Report.claim, common.Report.check
    monkeypatch.setattr(common.Report, "claim", first_claim_false)
    status = runner.main(lab_flags(name, idx_dir))
    if not has_claim:  # no claim in this lab: make its first comparison wrong instead
        assert status == 0
        monkeypatch.setattr(common.Report, "claim", original_claim)
        monkeypatch.setattr(common.Report, "check", first_check_wrong)
        status = runner.main(lab_flags(name, idx_dir))
    assert status == 1
    out = capsys.readouterr().out
    assert f"{name}: FAIL: " in out, out[-2000:]
    for row in reports[0].rows:  # the comparisons; a claim's row is its computed truth value (flipped above)
        if row.claim is None:
            flipped = common.Row(row.quantity, row.course, wrong(row.engine), row.twin, row.tol, row.parity)
            assert not flipped.ok, f"{name}: the row {row.quantity!r} cannot fail"


def test_a_row_that_compares_nothing_is_refused_and_the_verdict_counts_what_was_compared():
    report = common.Report("x", quiet=True)
    with pytest.raises(ValueError, match="compares nothing"):
        report.check("a number", None, 3.0)
    report.check("bitwise", None, torch.tensor([1.0]), torch.tensor([1.0]))
    report.claim("it holds", True)
    assert report.verdict() == ("PASS: no course number to compare in this lab; the engine agrees with the twin in "
                                "the 1 comparison; the 1 claim holds")
    assert "all course numbers reproduced" not in report.table()
    report.claim("it does not", False)
    assert report.verdict().startswith("FAIL: ") and "1 of 2 claims do NOT hold" in report.verdict()


# --- the course items added last: derivatives, the sigmoid nets, the linear collapse, the sign slip ---------------


def test_derivatives_lab_limit_chain_and_bias_as_a_weight():
    report = run("derivatives")
    assert_all_ok(report)
    table = rows(report)
    assert table["y = x^2: f'(3) by the quotient at h = 1e-05"].engine == pytest.approx(6 + 1e-5, abs=1e-9)
    assert table["scalar chain: dL/dw = dL/dy_hat * dy_hat/dz * dz/dw"].engine.item() == 5.0
    dW_aug = report.values["dW_aug"]
    assert torch.equal(dW_aug[:, :2], report.values["dW"])  # the bias column leaves dW as it was


def test_sigmoid_nets_lab_fast_form_trains_the_twenty_line_net():
    report = run("sigmoid_nets", "--fast")
    assert_all_ok(report)
    losses = report.values["losses"]
    assert len(losses) == 200 and losses[-1] < 0.1 * losses[0]


def test_linear_collapse_and_the_sign_slip():
    report = run("linear_collapse")
    assert_all_ok(report)
    scores, single = report.values["outputs"]["identity"]
    assert torch.allclose(scores, single, atol=1e-12)
    mlp = run("mlp_5743")
    assert_all_ok(mlp)
    assert any(row.claim and "sign slip" in row.quantity for row in mlp.rows)


def test_docs_table_has_every_lab_with_the_listings_run_time():
    """docs/labs.md's table and `labs list` give the same run time for every lab (one number, measured once)."""
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "labs.md").read_text()
    rows_ = re.findall(r"^\| \d{3} \| .* \| `python -m experiments\.labs ([a-z_0-9]+)` \| .* \| ([^|]+) \|$", text,
                       re.MULTILINE)
    documented = {name: runtime.strip() for name, runtime in rows_}
    assert set(documented) == set(LABS)
    assert {name: LABS[name].runtime for name in LABS} == documented
