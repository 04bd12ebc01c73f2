"""The public checker's own behaviour: bitwise by bit patterns, the report's numbers, contracts, triage,
the three levels, the JSON, the pytest plugin and the command line."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_reference.checker import (
    CheckError,
    ContractError,
    Layer,
    UserCodeError,
    assert_backward,
    check_layers,
    check_op,
    check_training,
    parse_contract,
)
from torch_reference.tensor_metrics import measure

REPO = Path(__file__).resolve().parent.parent


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def linear_forward(x, W, b):
    return x @ W.T + b, (x, W)


def linear_backward(d, cache):
    x, W = cache
    return {"x": d @ W, "W": d.T @ x, "b": d.sum(0)}


def linear_reference(x, W, b):
    return F.linear(x, W, b)


def linear_inputs(dtype=torch.float32, m=16):
    return {"x": _randn(m, 8, seed=1, dtype=dtype), "W": _randn(5, 8, seed=2, dtype=dtype),
            "b": _randn(5, seed=3, dtype=dtype)}


# --- the numbers -------------------------------------------------------------------------------------------


def test_bitwise_counts_the_sign_of_zero_and_nan_payloads():
    plus, minus = torch.tensor([0.0, 1.0]), torch.tensor([-0.0, 1.0])
    stats = measure(plus, minus)
    assert not stats.bitwise and stats.differing == 1 and stats.max_ulp == 0 and stats.worst_index == [0]
    quiet = torch.tensor([float("nan")])
    payload = torch.tensor([0x7FC00001], dtype=torch.int32).view(torch.float32)
    assert torch.isnan(payload).all()
    stats = measure(quiet, payload)
    assert not stats.bitwise and stats.nan_mine == 1 and stats.nan_ref == 1 and stats.max_abs == 0
    assert measure(plus, plus.clone()).bitwise


def test_ulp_histogram_worst_element_and_counts():
    ref = torch.ones(6)
    mine = ref.clone()
    mine[1] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))  # 1 ulp
    mine[4] = ref[4] + 10 * torch.finfo(torch.float32).eps  # 10 ulp
    stats = measure(mine, ref)
    assert stats.ulp_histogram == {"0": 4, "1": 1, "2-4": 0, "5-16": 1, ">16": 0}
    assert stats.differing == 2 and stats.worst_index == [4] and stats.max_ulp == 10
    assert stats.worst_mine == pytest.approx(1 + 10 * 2**-23) and stats.worst_ref == 1.0


def test_non_finite_on_one_side_only_is_infinitely_far():
    stats = measure(torch.tensor([1.0, float("inf")]), torch.tensor([1.0, 2.0]))
    assert math.isinf(stats.max_abs) and math.isinf(stats.max_ulp) and stats.inf_mine == 1 and stats.inf_ref == 0


# --- contracts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, kind", [("bitwise", "Bitwise"), ("ulp<=4", "Ulp"), ("rtol=1e-5,atol=1e-8", "Tolerance"),
                                        ("atol=0.1", "Tolerance"), ("norm<=1e-10", "Norm"), ("noise", "Noise"),
                                        ("noise<=8", "Noise")])
def test_contracts_parse(spec, kind):
    assert type(parse_contract(spec)).__name__ == kind


@pytest.mark.parametrize("spec", ["exact", "ulp<4", "rtol=-1", "rtol=1,foo=2", "norm<=x", "", 3])
def test_bad_contracts_are_refused_with_the_forms_that_work(spec):
    with pytest.raises(ContractError, match="bitwise"):
        parse_contract(spec)


def test_contract_patterns_pick_per_tensor_and_the_last_match_wins():
    report = check_op(linear_forward, linear_backward, linear_reference, linear_inputs(),
                      contracts={"*": "ulp<=100", "*.dW": "bitwise"}, name="lin")
    contracts = {row.name: row.contract for row in report.rows}
    assert contracts == {"lin.out": "ulp<=100", "lin.dx": "ulp<=100", "lin.dW": "bitwise", "lin.db": "ulp<=100"}


def test_a_pattern_that_matches_nothing_is_reported():
    report = check_op(linear_forward, linear_backward, linear_reference, linear_inputs(),
                      contracts={"*.dw": "bitwise"}, name="lin")
    assert any("'*.dw'" in note and "matched no tensor" in note for note in report.notes)


# --- level 1 -----------------------------------------------------------------------------------------------


def test_a_correct_op_passes_and_the_report_has_every_part():
    report = check_op(linear_forward, linear_backward, linear_reference, linear_inputs(), name="lin")
    assert report.passed and [row.name for row in report.rows] == ["lin.out", "lin.dx", "lin.dW", "lin.db"]
    document = json.loads(json.dumps(report.to_json()))
    assert document["passed"] and document["fingerprint"]["torch"] == torch.__version__
    assert {"threads", "cpu_capability", "deterministic_algorithms", "float32_matmul_precision"} <= set(
        document["fingerprint"])
    row = document["rows"][2]
    assert set(row) >= {"shape", "dtype", "bitwise", "max_abs", "max_rel", "max_ulp", "ulp_histogram", "differing",
                        "worst_index", "worst_mine", "worst_ref", "nan_mine", "inf_mine"}
    assert "bitwise results hold for this fingerprint only" in report.table()


def test_a_reordered_sum_is_rounding_with_its_cause_never_a_formula_error():
    def backward(d, cache):  # db as ones @ d: the same sum in another order
        x, W = cache
        return {"x": d @ W, "W": d.T @ x, "b": (torch.ones(1, d.shape[0], dtype=d.dtype) @ d).flatten()}

    inputs = linear_inputs(m=64)
    report = check_op(linear_forward, backward, linear_reference, inputs, exact=True, name="lin")
    assert not report.passed and report.first_divergence.name == "lin.db"
    assert report.triage.verdict == "rounding" and "order of additions" in report.triage.cause
    assert check_op(linear_forward, backward, linear_reference, inputs, name="lin").passed  # the noise floor
    # Over 4096 rows the sequential sum of a matrix product rounds ~20x more than torch's pairwise sum: outside
    # the noise floor, and still rounding, never a formula error.
    report = check_op(linear_forward, backward, linear_reference, linear_inputs(m=4096), name="lin")
    assert report.first_divergence.name == "lin.db" and report.triage.verdict == "rounding"
    assert "less accurate than autograd's" in report.triage.explanation


def test_the_sign_of_zero_is_named():
    def forward(x):
        return x.clamp_min(0), x

    def backward(d, x):  # -0.0 where the reference (threshold_backward) writes +0.0
        return {"x": d * (x > 0).to(d.dtype) * torch.sign(d).abs().where(d != 0, torch.tensor(1.0))}

    x = torch.tensor([[-1.0, 2.0, -3.0]])
    report = check_op(forward, backward, lambda x: torch.relu(x), {"x": x}, grad_output=torch.tensor([[-1.0, 1, -1]]),
                      exact=True, name="relu")
    assert report.first_divergence.name == "relu.dx" and report.triage.verdict == "rounding"
    assert "sign of zero" in report.triage.cause


def test_a_formula_error_names_the_tensor_the_side_and_the_element():
    def backward(d, cache):
        x, W = cache
        return {"x": d @ W, "W": -(d.T @ x), "b": d.sum(0)}

    report = check_op(linear_forward, backward, linear_reference, linear_inputs(), name="lin")
    assert report.first_divergence.name == "lin.dW" and report.triage.verdict == "formula error"
    assert report.triage.farther_side == "yours" and report.triage.worst_index is not None
    assert report.summary().startswith("FAIL (lin): first divergence lin.dW: formula error")


def test_float64_uses_the_normwise_default():
    report = check_op(linear_forward, linear_backward, linear_reference, linear_inputs(torch.float64), name="lin")
    assert report.passed and {row.contract for row in report.rows} == {"norm<=1e-10"}


@pytest.mark.parametrize("backward, verdict, name", [
    (lambda d, c: {"x": d @ c[1], "W": d.T @ c[0]}, "missing gradient", "lin.db"),
    (lambda d, c: {**linear_backward(d, c), "bias": d.sum(0)}, "unexpected gradient", "lin.dbias"),
    (lambda d, c: {**linear_backward(d, c), "b": d.sum(1)}, "shape mismatch", "lin.db"),
    (lambda d, c: {**linear_backward(d, c), "b": d.sum(0).double()}, "dtype mismatch", "lin.db"),
    (lambda d, c: {**linear_backward(d, c), "b": d.sum(0) * float("nan")}, "non-finite", "lin.db"),
])
def test_structural_problems_are_verdicts_not_tracebacks(backward, verdict, name):
    report = check_op(linear_forward, backward, linear_reference, linear_inputs(), name="lin")
    assert not report.passed
    (row,) = [row for row in report.rows if not row.passed]
    assert (row.name, row.verdict) == (name, verdict)


def test_integer_labels_pass_through_and_a_gradient_for_them_is_told():
    labels = torch.tensor([0, 2, 1, 2])

    def forward(z, y):
        p = z.softmax(1)
        return -p[torch.arange(4), y].log().mean(), (p, y)

    def backward(g, cache):
        p, y = cache
        dz = p.clone()
        dz[torch.arange(4), y] -= 1
        return {"z": g * dz / 4}

    inputs = {"z": _randn(4, 3, seed=4), "y": labels}
    assert check_op(forward, backward, lambda z, y: F.cross_entropy(z, y), inputs, name="ce").passed
    report = check_op(forward, lambda g, c: {**backward(g, c), "y": torch.zeros(4)},
                      lambda z, y: F.cross_entropy(z, y), inputs, name="ce")
    assert [row.verdict for row in report.rows if not row.passed] == ["gradient for a non-differentiable input"]
    assert torch.equal(inputs["y"], labels)


def test_a_backward_that_raises_is_framed_as_the_users_code():
    def backward(d, cache):
        raise RuntimeError("my bug")

    with pytest.raises(UserCodeError, match=r"your backward \(.*backward\) raised RuntimeError: my bug") as caught:
        check_op(linear_forward, backward, linear_reference, linear_inputs())
    assert "test_checker_api.py" in str(caught.value) and "op.py" not in str(caught.value)


@pytest.mark.parametrize("backward, message", [
    (lambda d, c: None, "returned None"),
    (lambda d, c: [d], "returned a list"),
    (lambda d, c: {"x": 1.0}, "returned a float for 'x'"),
])
def test_a_backward_returning_the_wrong_kind_of_thing_is_a_clear_error(backward, message):
    with pytest.raises(CheckError, match=message):
        check_op(linear_forward, backward, linear_reference, linear_inputs())


def test_a_reference_autograd_cannot_differentiate_is_a_clear_error():
    with pytest.raises(CheckError, match="the reference is not differentiable"):
        check_op(linear_forward, linear_backward, lambda x, W, b: F.linear(x, W, b).detach(), linear_inputs())


def test_the_callers_tensors_are_never_modified():
    inputs = linear_inputs()
    before = {name: tensor.clone() for name, tensor in inputs.items()}

    def forward(x, W, b):
        x.mul_(2)  # a careless forward writes into its input
        return linear_forward(x, W, b)

    check_op(forward, linear_backward, linear_reference, inputs)
    assert all(torch.equal(before[name], inputs[name]) for name in inputs)


# --- level 2 -----------------------------------------------------------------------------------------------


def _network(bug=False):
    def relu_backward(d, x):
        return {"x": d * (x > 0)}

    def buggy_linear_backward(d, cache):
        grads = linear_backward(d, cache)
        return {**grads, "x": grads["x"] * 2}

    g = torch.Generator().manual_seed(0)
    W1, W2 = torch.randn(6, 8, generator=g) * 0.5, torch.randn(3, 6, generator=g) * 0.5
    layers = [Layer(linear_forward, linear_backward, {"W": W1, "b": torch.zeros(6)}, "fc1"),
              Layer(lambda x: (x.clamp_min(0), x), relu_backward, name="relu"),
              Layer(linear_forward, buggy_linear_backward if bug else linear_backward,
                    {"W": W2, "b": torch.zeros(3)}, "fc2")]
    return layers, nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


def _cross_entropy():
    def forward(z, y):
        p = z.softmax(1)
        return -p[torch.arange(len(y)), y].log().mean(), (p, y)

    def backward(g, cache):
        p, y = cache
        dz = p.clone()
        dz[torch.arange(len(y)), y] -= 1
        return {"x": g * dz / len(y)}

    return Layer(forward, backward)


def test_layers_in_graph_order_with_the_loss():
    layers, model = _network()
    x, y = _randn(16, 8, seed=5), torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1))
    report = check_layers(layers, model, x, target=y, loss=_cross_entropy(), reference_loss=F.cross_entropy)
    assert report.passed, report.failure_message()
    assert [row.name for row in report.rows] == [
        "fc1.out", "relu.out", "fc2.out", "loss", "fc2.d_out", "fc2.dW", "fc2.db", "relu.d_out", "fc1.d_out",
        "fc1.dW", "fc1.db", "fc1.dx"]
    assert all(param.grad is None for param in model.parameters())  # the user's module is left alone


def test_a_wrong_input_gradient_is_found_at_the_tensor_it_produces_and_triaged_on_its_op():
    layers, model = _network(bug=True)
    x, y = _randn(16, 8, seed=5), torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1))
    report = check_layers(layers, model, x, target=y, loss=_cross_entropy(), reference_loss=F.cross_entropy)
    assert report.first_divergence.name == "relu.d_out" and report.triage.verdict == "formula error"
    # below it, each op is right on what it received: the error is inherited, not another formula error
    below = {row.name: row.verdict for row in report.rows if not row.passed and row.name != "relu.d_out"}
    assert below == {"fc1.d_out": "inherited", "fc1.dW": "inherited", "fc1.db": "inherited", "fc1.dx": "inherited"}


def test_layers_and_reference_must_match_one_to_one():
    layers, model = _network()
    with pytest.raises(CheckError, match="2 layer"):
        check_layers(layers, nn.Sequential(nn.Linear(8, 6), nn.ReLU()), _randn(4, 8))


# --- level 3 -----------------------------------------------------------------------------------------------


def _momentum_step(lr=0.1, beta=0.9, bug=False):
    def step(params, state, batch):
        x, y = batch
        z, cache = linear_forward(x, params["W"], params["b"])
        loss = ((z - y) ** 2).mean()
        grads = linear_backward(2 * (z - y) / z.numel(), cache)
        for name in ("W", "b"):
            entry = state.setdefault(name, {})
            if "momentum_buffer" not in entry:
                entry["momentum_buffer"] = grads[name].clone()
            else:
                entry["momentum_buffer"].mul_(beta if not bug else 1 - beta).add_(grads[name])
            params[name].sub_(lr * entry["momentum_buffer"])
        return loss

    return step


def _batches(n=4):
    return [(_randn(16, 8, seed=10 + i), _randn(16, 5, seed=20 + i)) for i in range(n)]


def test_training_trajectory_with_optimizer_state():
    params = {"W": _randn(5, 8, seed=2), "b": torch.zeros(5)}
    report = check_training(_momentum_step(), params, nn.Linear(8, 5),
                            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), F.mse_loss, _batches())
    assert report.passed, report.failure_message()
    assert {row.name for row in report.rows} == {"loss", "W", "b", "W.momentum_buffer", "b.momentum_buffer"}
    assert max(row.step for row in report.rows) == 4


def test_a_wrong_momentum_is_found_at_the_first_step_it_acts():
    params = {"W": _randn(5, 8, seed=2), "b": torch.zeros(5)}
    report = check_training(_momentum_step(bug=True), params, nn.Linear(8, 5),
                            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), F.mse_loss, _batches())
    first = report.first_divergence
    assert (first.step, first.name) == (2, "W") and report.triage.verdict == "formula error"


# --- pytest plugin and command line ------------------------------------------------------------------------


def test_assert_backward_starts_with_the_verdict():
    def backward(d, cache):
        return {**linear_backward(d, cache), "W": linear_backward(d, cache)["W"].T.contiguous().T * 2}

    with pytest.raises(AssertionError) as caught:
        assert_backward(linear_forward, backward, linear_reference, linear_inputs(), name="lin")
    assert str(caught.value).startswith("FAIL (lin): first divergence lin.dW: formula error")


def test_the_pytest_plugin_fixture_and_report(tmp_path):
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import torch

        def forward(x):
            return x * x, x

        def good(d, x):
            return {"x": 2 * x * d}

        def bad(d, x):
            return {"x": x * d}

        def test_good(backward_check):
            backward_check(forward, good, lambda x: x * x, {"x": torch.randn(5, 3)})

        def test_bad(backward_check):
            backward_check(forward, bad, lambda x: x * x, {"x": torch.randn(5, 3)}, name="square")
    """))
    report = tmp_path / "reports.json"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path),
                             "--backward-report", str(report)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL (square): first divergence square.dx: formula error" in result.stdout
    assert "1 failed, 1 passed" in result.stdout
    document = json.loads(report.read_text())
    assert [(entry["test"].split("::")[1], entry["passed"]) for entry in document["reports"]] == [
        ("test_good", True), ("test_bad", False)]


def test_the_plugin_refuses_an_unusable_report_path_before_running(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path),
                             "--backward-report", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 4 and "is a directory" in result.stderr


def run_check(*args):
    return subprocess.run([sys.executable, "-m", "experiments.check", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


def test_cli_on_the_template_passes_and_writes_json(tmp_path):
    result = run_check("examples/template.py", "--json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert "PASS (template)" in result.stdout and json.loads((tmp_path / "r.json").read_text())["passed"]


@pytest.mark.parametrize("body, message", [
    ("def forward(x):\n    return x, x\n", "missing inputs(), backward(), reference()"),
    ("import nonexistent_module_xyz\n", "importing it raised ModuleNotFoundError"),
    ("def (:\n", "not valid Python"),
])
def test_cli_files_that_do_not_follow_the_convention_exit_2(tmp_path, body, message):
    path = tmp_path / "user_op.py"
    path.write_text(body)
    result = run_check(path)
    assert result.returncode == 2 and message in result.stderr and "Traceback (most recent" not in result.stderr


def test_cli_a_formula_error_exits_1_and_a_raising_backward_2(tmp_path):
    template = (REPO / "examples" / "template.py").read_text()
    wrong = tmp_path / "wrong.py"
    wrong.write_text(template.replace('"b": grad_output.sum(0)', '"b": grad_output.sum(0) * 2'))
    result = run_check(wrong)
    assert result.returncode == 1 and "first divergence wrong.db: formula error" in result.stderr
    raising = tmp_path / "raising.py"
    raising.write_text(template.replace("    x, W = cache\n", "    x, W = cache\n    raise ValueError('oops')\n"))
    result = run_check(raising)
    assert result.returncode == 2 and "your backward (backward) raised ValueError: oops" in result.stderr
    assert "raising.py" in result.stderr


def test_cli_refuses_cuda_without_a_gpu_and_an_output_over_its_input(tmp_path):
    if not torch.cuda.is_available():
        result = run_check("examples/template.py", "--device", "cuda")
        assert result.returncode == 2 and "no CUDA GPU" in result.stderr
    copy = tmp_path / "op.py"
    copy.write_text((REPO / "examples" / "template.py").read_text())
    result = run_check(copy, "--json", copy)
    assert result.returncode == 2 and "the file being checked" in result.stderr
    assert copy.read_text() == (REPO / "examples" / "template.py").read_text()


def test_inputs_drawn_from_the_seed_are_not_the_upstream_gradient():
    """The CLI seeds inputs() and the upstream gradient with one --seed; if both drew the same numbers, a mask
    taken from the upstream gradient instead of x would pass (dy = x)."""
    def forward(x):
        return x.clamp(min=0), x

    def backward(grad_output, x):
        return {"x": grad_output * (grad_output > 0)}  # the mask of the wrong tensor

    for seed in range(3):
        x = torch.randn(8, 10, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()
        report = check_op(forward, backward, torch.relu, {"x": x}, seed=seed, name="relu")
        assert report.triage.verdict == "formula error", seed


def test_a_gradient_that_is_analytically_zero_is_not_judged_against_its_own_noise():
    """Batch norm with an all-ones upstream: dx is zero up to cancellation; float64's normwise default is
    measured against the check's scale, so the correct backward passes and a wrong one still fails."""
    def forward(x, gamma, beta):
        mean = x.mean(0)
        xc = x - mean
        var = (xc * xc).mean(0)
        inv = 1 / torch.sqrt(var + 1e-5)
        xhat = xc * inv
        return gamma * xhat + beta, (xhat, inv, gamma)

    def backward(d, cache, bug=False):
        xhat, inv, gamma = cache
        dxhat = d * gamma
        dx = inv * (dxhat - dxhat.mean(0) - xhat * (dxhat * xhat).mean(0))
        return {"x": dx * (1.5 if bug else 1), "gamma": (d * xhat).sum(0), "beta": d.sum(0)}

    def reference(x, gamma, beta):
        return F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)

    inputs = {"x": _randn(32, 4, seed=1, dtype=torch.float64), "gamma": _randn(4, seed=2, dtype=torch.float64),
              "beta": _randn(4, seed=3, dtype=torch.float64)}
    ones = torch.ones(32, 4, dtype=torch.float64)
    assert check_op(forward, backward, reference, inputs, grad_output=ones).passed
    wrong = check_op(forward, lambda d, c: backward(d, c, bug=True), reference, inputs)
    assert wrong.first_divergence.name == "op.dx" and wrong.triage.verdict == "formula error"


def test_the_checker_benchmark_runs_small(capsys):
    from experiments import benchmark_checker

    assert benchmark_checker.main(["--elements", "1000", "--repeats", "1"]) == 0
    assert "check_op on 1000 float32 elements" in capsys.readouterr().out
    with pytest.raises(SystemExit) as caught:
        benchmark_checker.main(["--repeats", "0"])
    assert caught.value.code == 2
