"""experiments/frontier.py: plans fitted to a budget, the paired interval, and the quick run's outputs."""

import dataclasses
import json
import math

import numpy as np
import pytest

from attent_experiments import frontier, timing


def _cal(seed=0, step_s=0.01, reference_s=None):
    cal = frontier.Calibration()
    cal.step_s[seed] = step_s
    E, n, B = frontier.QUICK.epochs, frontier.QUICK.num_train, frontier.QUICK.batch_size
    cal.reference_s[seed] = reference_s or E * (n // B) * step_s
    return cal


@pytest.mark.parametrize("budget", [0.25, 0.5, 1.0])
def test_plans_land_on_the_budget_by_the_cost_model(budget):
    """Catches a method fitted to the wrong budget (e.g. a ratio of B for InfoBatch, or AtteNT left at the
    reference's epochs): every plan's predicted cost is within one epoch's worth of B, all data trains
    round(B·E) epochs, the random subsets never score, and no other AtteNT epoch count comes closer."""
    config = dataclasses.replace(frontier.QUICK, epochs=8, num_train=640)
    cal = _cal(reference_s=8 * (640 // 32) * 0.01)
    target = budget * cal.reference_s[0]
    epoch_s = cal.reference_s[0] / config.epochs
    for method in frontier.METHODS:
        tc, desc = frontier.plan(config, method, budget, 0, cal)
        cost = frontier.predicted_cost(tc, cal, 0)
        assert abs(cost - target) <= epoch_s + 1e-9, (method, cost, target)
        if method == "all_data":
            assert desc["epochs"] == max(1, round(budget * config.epochs))
        if method == "random":
            assert timing.scoring_passes(tc) == 0 and desc["ratio"] == budget
    tc, desc = frontier.plan(config, "attent", budget, 0, cal)
    best = abs(frontier.predicted_cost(tc, cal, 0) - target)
    for e in range(2, 4 * config.epochs + 1):
        other = tc.replace(epochs=e)
        assert abs(frontier.predicted_cost(other, cal, 0) - target) >= best - 1e-12, e


def test_infobatch_prune_ratio_solves_its_cost_model():
    """Catches the prune ratio not scaled by the below-mean share m: with m = 0.5 the model's kept examples
    at the plan's q must add up to the budget."""
    config = dataclasses.replace(frontier.QUICK, epochs=8, num_train=640)
    cal = _cal(reference_s=8 * 20 * 0.01)
    cal.below_mean = [0.5]
    tc, desc = frontier.plan(config, "infobatch", 0.8, 0, cal)
    assert 0 < desc["prune_ratio"] <= 0.9
    assert frontier.predicted_cost(tc, cal, 0) == pytest.approx(0.8 * cal.reference_s[0], rel=0.06)


def test_paired_interval_is_the_student_t_interval():
    """Catches a normal (1.96) quantile, a population std or an unpaired difference: diffs 1 and 3 give
    mean 2 and half-width t(0.975, 1) · √2 / √2 = 12.706."""
    mean, lo, hi = frontier.paired_interval([1.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(12.7062, abs=1e-3) and mean - lo == pytest.approx(hi - mean)
    assert math.isnan(frontier.paired_interval([1.0])[1])


def test_bad_budget_is_one_line_error():
    with pytest.raises(ValueError, match=r"budgets: got \(0.0, 0.5\)"):
        frontier.Config(budgets=(0.0, 0.5))
    with pytest.raises(ValueError, match="all_data"):
        frontier.Config(methods=("attent",))


def test_frontier_quick(tmp_path):
    """The quick run writes JSON, markdown and PNG whose numbers follow from its points: measured costs (not
    the plans), the verdict as the paired mean and t-interval, every method at every budget and seed."""
    assert frontier.main(["--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "frontier.json").read_text())
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert "95%" in (tmp_path / "frontier.md").read_text()
    q = frontier.QUICK
    for m in q.methods:
        for b in q.budgets:
            ps = payload["points"][m][f"{b:g}"]
            assert [p["seed"] for p in ps] == list(q.seeds)
            for p in ps:
                assert p["cost"] == pytest.approx(p["train_time_s"] / p["reference_time_s"])
                assert len(p["load_average"]["start"]) == 3
    for v in payload["verdicts"]:
        base = {p["seed"]: p["accuracy_pct"] for p in payload["points"]["all_data"][f"{v['budget']:g}"]}
        diffs = [p["accuracy_pct"] - base[p["seed"]] for p in payload["points"][v["method"]][f"{v['budget']:g}"]]
        assert v["diff_points"] == pytest.approx(diffs) and v["mean"] == pytest.approx(np.mean(diffs))
        lo, hi = v["ci95"]
        assert v["verdict"] == ("better" if lo > 0 else "worse" if hi < 0 else "not resolved")
