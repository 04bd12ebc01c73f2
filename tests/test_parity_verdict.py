"""The parity verdict in words and the tally behind it: bitwise, within tolerance, out of policy (with the first
tensor that left it), and the normwise error each comparison row now carries."""

from __future__ import annotations

import math

import pytest
import torch

from side_by_side.parity_heatmap import parity_heatmap
from side_by_side.parity_verdict import verdict_text
from torch_reference.compare import compare_tensors, policy_for
from torch_reference.parity_tally import ParityTally

POLICY = policy_for(torch.float32)


def rows(delta: float = 0.0, scale: float = 1.0):
    """The loss and one layer's dW, dW off by ``delta`` in one entry; its entries range up to ``scale``."""
    reference = torch.linspace(-scale, scale, 12, dtype=torch.float32).reshape(3, 4)
    mine = reference.clone()
    mine[0, 0] += delta
    loss = torch.tensor(0.5, dtype=torch.float32)
    return [compare_tensors("loss", "loss", loss, loss.clone(), POLICY),
            compare_tensors(1, "dW", mine, reference, POLICY)]


def test_normwise_error_is_the_worst_difference_over_the_largest_entry():
    [_, row] = rows(delta=1e-3, scale=2.0)
    assert row.normwise == (row.max_abs / 2.0)
    assert compare_tensors(1, "x", torch.zeros(3), torch.zeros(3), POLICY).normwise == 0.0
    nan = compare_tensors(1, "x", torch.tensor([math.nan]), torch.tensor([1.0]), POLICY)
    assert math.isnan(nan.normwise) and not nan.passed


def test_bitwise_run_says_pass_and_the_accuracy_once():
    tally = ParityTally()
    for step in (1, 2):
        tally.add(rows(), [], step=step)
    text = verdict_text(tally, POLICY, {"manual": 0.9813, "autograd": 0.9813}, "epoch 1 of 1, step 2")
    assert text.startswith("PASS: 2/2 parity checks bitwise equal over 2 tensors")
    assert "Test accuracy 98.13 % for both models." in text and text.endswith("(epoch 1 of 1, step 2)")


def test_within_tolerance_but_not_bitwise_says_pass_and_explains_the_ulp_figures():
    tally = ParityTally()
    tally.add(rows(), [], step=1)
    tally.add(rows(delta=1e-6), [], step=2)  # within rtol 1e-4 of an entry of size 1
    assert tally.failed_checks == 0 and tally.bitwise_checks == 1 and tally.first_failure is None
    text = verdict_text(tally, POLICY, {"manual": 0.5, "autograd": 0.25})
    assert text.startswith("PASS, within tolerance (not bitwise): 0 of 2 parity checks out of policy")
    assert "1/2 bitwise equal" in text and "layer1.dW" in text and f"{tally.worst_normwise:.2g}" in text
    assert "Test accuracy manual 50.00 %, autograd 25.00 %." in text


def test_out_of_policy_says_fail_with_the_first_tensor_its_step_and_size():
    tally = ParityTally()
    tally.add(rows(), [], step=1)
    tally.add(rows(delta=0.5), [], step=7)
    tally.add(rows(delta=0.9), [], step=9)  # later and worse: the first one is reported
    assert tally.failed_checks == 2
    assert tally.first_failure["step"] == 7 and tally.first_failure["tensor"] == "layer1.dW"
    text = verdict_text(tally, POLICY)
    assert text.startswith("FAIL: 2 of 3 parity checks out of policy (rtol 0.0001, atol 1e-06). First at step 7: "
                           "layer1.dW, max abs error 0.5")
    assert "PASS" not in text


def test_a_checkpoint_tally_without_the_later_fields_restores():
    old = {"checks": 3, "bitwise_checks": 3, "worst": {"layer1.dW": {"max_abs": 0.0, "max_rel": 0.0, "max_ulp": 0.0}},
           "worst_weight_diff": 0.0, "failed_checks": 0}
    tally = ParityTally(**old)
    tally.add(rows(delta=1e-6), [], step=4)
    assert tally.checks == 4 and tally.worst["layer1.dW"]["normwise"] > 0


def test_heatmap_is_white_where_bitwise_and_red_where_out_of_policy():
    white = parity_heatmap(rows(), 1)
    red = parity_heatmap(rows(delta=0.5), 2)
    is_red = lambda image: ((image[..., 0] > 200) & (image[..., 1] < 80) & (image[..., 2] < 80)).any()
    assert white.dtype.name == "uint8" and white.shape[2] == 3
    assert not is_red(white) and is_red(red)


def test_gradient_flow_of_one_sgd_step_is_lr_times_the_gradient():
    from side_by_side.gradient_flow import flow_scalars, snapshot

    W = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    grad = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    before = snapshot({"W1": W, "b1": torch.zeros(1)})
    after = {"W1": W - 0.5 * grad}
    flow = flow_scalars(before, after, {"W1": grad})
    assert set(flow) == {"gradient_flow/layer1/grad_norm", "gradient_flow/layer1/update_norm",
                         "gradient_flow/layer1/update_to_weight"}
    assert flow["gradient_flow/layer1/grad_norm"] == pytest.approx(1.0)
    assert flow["gradient_flow/layer1/update_norm"] == pytest.approx(0.5)
    assert flow["gradient_flow/layer1/update_to_weight"] == pytest.approx(0.5 / torch.linalg.norm(W - 0.5 * grad))
    assert "gradient_flow/layer1/grad_norm" not in flow_scalars(before, after, {})  # the fast path keeps none
