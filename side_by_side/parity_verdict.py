"""The run's parity verdict in words, for TensorBoard's Text tab, the terminal summary and summary.json.

A chart of the worst ulp distance can read 1.7e9 for a run that is entirely within tolerance (an entry that cancels
to almost zero is many ulps from its twin after an honest rounding difference), so the verdict is stated outright:
PASS bitwise, PASS within tolerance (and why the elementwise figures may still look large), or FAIL with the first
tensor that left the policy, when, and by how much.
"""

from __future__ import annotations


def verdict_text(tally, policy, accuracies: dict[str, float] | None = None, where: str = "") -> str:
    """``tally``: the run's ParityTally; ``policy``: its TolerancePolicy; ``accuracies``: {"manual": 0.98, ...}
    (fractions) of the last evaluation; ``where``: e.g. "after epoch 2 of 10, step 14"."""
    if not tally.checks:
        return "no parity check yet" + (f" ({where})" if where else "")
    tensors = f"{tally.tensors} tensors (loss, every Z, A, dA, dZ, dW, db, the weights, optimizer state and lr)"
    tolerance = f"rtol {policy.rtol:g}, atol {policy.atol:g}" + (", bitwise required" if policy.require_exact else "")
    if tally.failed_checks:
        first = tally.first_failure or {}
        text = (f"FAIL: {tally.failed_checks} of {tally.checks} parity checks out of policy ({tolerance}). First at "
                f"step {first.get('step')}: {first.get('tensor')}, max abs error {first.get('max_abs', 0):.3g}, "
                f"normwise error {first.get('normwise', 0):.3g} (tolerance rtol {policy.rtol:g}), max rel error "
                f"{first.get('max_rel', 0):.3g}.")
    elif tally.bitwise_checks == tally.checks:
        text = f"PASS: {tally.checks}/{tally.checks} parity checks bitwise equal over {tensors}."
    else:
        key, worst = max(tally.worst.items(), key=lambda item: item[1].get("normwise", 0.0))
        elementwise = max(tally.worst.values(), key=lambda metrics: metrics["max_ulp"])
        text = (f"PASS, within tolerance (not bitwise): 0 of {tally.checks} parity checks out of policy "
                f"({tolerance}); {tally.bitwise_checks}/{tally.checks} bitwise equal over {tensors}. Worst normwise "
                f"error {worst.get('normwise', 0.0):.2g} ({key}) against the tolerance rtol {policy.rtol:g}. Entry by "
                f"entry the worst is {elementwise['max_ulp']:.3g} ulp and relative error "
                f"{elementwise['max_rel']:.2g}: entries near zero can be that far apart after one rounding "
                f"difference, and the policy (|mine - ref| <= atol + rtol |ref|) allows it.")
    if accuracies:
        values = {model: f"{100 * accuracy:.2f} %" for model, accuracy in accuracies.items()}
        if len(set(values.values())) == 1 and len(values) > 1:
            text += f" Test accuracy {next(iter(values.values()))} for both models."
        else:
            text += " Test accuracy " + ", ".join(f"{model} {value}" for model, value in values.items()) + "."
    return text + (f" ({where})" if where else "")
