"""experiments/frontier.py: plans fitted to a budget, the paired interval, and the quick run's outputs."""

import dataclasses
import json
import math
import os

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


def test_rescore_unseen_is_charged_for_its_first_scoring_pass_only():
    """Catches attent_unseen planned without rescore="unseen" (it would be attent_lr_steps under another name)
    or charged for every scheduled pass (it would be fitted to fewer epochs than its budget buys)."""
    config = dataclasses.replace(frontier.QUICK, epochs=8, num_train=640)
    cal = _cal(reference_s=8 * (640 // 32) * 0.01)
    tc, _ = frontier.plan(config, "attent_unseen", 0.5, 0, cal)
    assert tc.resolve().selection.rescore == "unseen" and tc.resolve().optim.lr_schedule_by == "steps"
    assert timing.scoring_passes(tc) > 1   # the schedule asks for several passes; only the first scores all N
    steps_s = frontier.predicted_cost(tc.replace(rescore="all"), cal, 0) - frontier.predicted_cost(tc, cal, 0)
    assert steps_s == pytest.approx((timing.scoring_passes(tc) - 1) * 640 * cal.score_s(0, 32))
    assert frontier.plan(config, "attent_lr_steps", 0.5, 0, cal)[0].resolve().selection.rescore == "all"


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


def _points(acc, budgets=(0.5, 1.0), seeds=(0, 1, 2)):
    """Points as `frontier.run` builds them: acc[method][budget] is a per-seed accuracy list."""
    return {m: {b: [{"seed": s, "accuracy_pct": acc[m][b][i], "cost": b} for i, s in enumerate(seeds)]
                for b in budgets} for m in acc}


def test_moonshot_needs_the_interval_not_the_mean():
    """Catches a moonshot read off the mean alone, or against the compute-matched baseline instead of the
    all-data run at budget 1.0: a mean within the gap whose interval reaches below it is not reached."""
    config = dataclasses.replace(frontier.QUICK, seeds=(0, 1, 2))
    ref = [90.0, 91.0, 92.0]
    close = {"all_data": {0.5: [80.0, 80.0, 80.0], 1.0: ref}, "attent": {0.5: [90.0, 90.95, 92.05], 1.0: ref}}
    shot = frontier.moonshot(config, _points(close))
    (row,) = shot["rows"]
    assert row["diff_points"] == pytest.approx([0.0, -0.05, 0.05]) and row["reached"] and shot["reached"]
    noisy = {"all_data": {0.5: [80.0] * 3, 1.0: ref}, "attent": {0.5: [91.0, 89.0, 92.5], 1.0: ref}}
    shot = frontier.moonshot(config, _points(noisy))
    assert abs(shot["rows"][0]["mean"]) < config.moonshot_gap and not shot["reached"]
    assert "not reached" in shot["sentence"] and "closest" in shot["sentence"]


def test_report_only_rebuilds_from_the_saved_points(tmp_path):
    """Catches --report-only recomputing nothing (stale verdicts kept) or dropping a method: verdicts and the
    moonshot in the rewritten file follow the saved points."""
    from attent_experiments import common
    config = dataclasses.replace(frontier.QUICK, seeds=(0, 1, 2), methods=("all_data", "attent"))
    points = _points({"all_data": {0.5: [80.0, 81.0, 82.0], 1.0: [90.0, 91.0, 92.0]},
                      "attent": {0.5: [84.0, 85.0, 86.5], 1.0: [90.0, 91.0, 92.0]}})
    payload = {"config": dataclasses.asdict(config), "environment": common.environment(config.seeds),
               "verdicts": [], "points": {m: {f"{b:g}": ps for b, ps in bs.items()} for m, bs in points.items()}}
    (tmp_path / "frontier.json").write_text(json.dumps(payload))
    assert frontier.main(["--report-only", "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "frontier.json").read_text())
    v05 = [v for v in out["verdicts"] if v["budget"] == 0.5 and v["method"] == "attent"][0]
    assert v05["diff_points"] == pytest.approx([4.0, 4.0, 4.5]) and v05["verdict"] == "better"
    assert out["moonshot"]["rows"][0]["diff_points"] == pytest.approx([-6.0, -6.0, -5.5])
    assert "Moonshot" in (tmp_path / "frontier.md").read_text()
    assert frontier.main(["--report-only", "--out", str(tmp_path / "missing")]) == 2


def test_extra_seeds_go_to_the_close_budgets_only():
    """Catches the 5-seed rule applied everywhere, nowhere, or by the mean alone: a budget whose AtteNT mean
    lies within 2 std of the baseline's gets the extra seeds (that method and the baseline), a resolved one
    does not."""
    config = dataclasses.replace(frontier.QUICK, seeds=(0, 1, 2), methods=("all_data", "attent"), extra_seeds=(3, 4))
    points = _points({"all_data": {0.5: [80.0, 81.0, 82.0], 1.0: [90.0, 91.0, 92.0]},
                      "attent": {0.5: [84.0, 85.0, 86.5], 1.0: [88.5, 90.5, 92.5]}})
    assert frontier.close_pairs(config, points) == {("attent", 1.0), ("all_data", 1.0)}
    assert len(frontier.close_pairs(config, None)) == 4
    with pytest.raises(ValueError, match="seeds"):
        dataclasses.replace(config, extra_seeds=(3, -1))
    from attent_experiments import common
    parsed, _ = common.parse_args(["--extra-seeds", "none"], frontier.Config, frontier.QUICK, "")
    assert parsed.extra_seeds == ()
    with pytest.raises(ValueError, match="extra_seeds"):
        common.parse_args(["--extra-seeds", "3", "none"], frontier.Config, frontier.QUICK, "")


def test_an_extra_seed_runs_its_reference_and_the_close_pairs(monkeypatch, tmp_path):
    """Catches an extra seed that trains every method (the cost the rule saves) or skips its own reference (the
    baseline at budget 1.0, which the moonshot pairs with)."""
    ran = []

    def fake_run(train_config, workdir):
        ran.append(os.path.basename(workdir))
        st = {"train_time_s": 1.0, "steps_s": 1.0, "steps": 10, "scoring_s": 0.0, "selection_s": 0.0,
              "examples_seen": 100}
        return {"stages": {"train": st}, "epochs": [], "evals": [{"eval_accuracy": 0.5, "eval_loss": 1.0}],
                "workdir": workdir, "load_average": None}

    monkeypatch.setattr(timing, "timed_run", fake_run)
    monkeypatch.setattr(timing, "final", lambda run, key, stage=None: 0.5)
    config = dataclasses.replace(frontier.QUICK, methods=("all_data", "attent", "random"))
    points = {m: {b: [] for b in config.budgets} for m in config.methods}
    frontier._measure_seed(config, str(tmp_path), 3, _cal(3), points, [], {("attent", 0.5), ("all_data", 0.5)})
    assert ran == ["reference_seed3", "all_data_b0.5_seed3", "attent_b0.5_seed3"]
    assert [p["seed"] for p in points["all_data"][1.0]] == [3] and points["random"][0.5] == []


def test_report_only_of_a_file_from_before_extra_seeds_claims_none(tmp_path):
    """Catches --report-only filling a missing extra_seeds with the default (3, 4): the rebuilt report would
    say seeds were added that the run never trained."""
    from attent_experiments import common
    config = dataclasses.replace(frontier.QUICK, seeds=(0, 1, 2), methods=("all_data", "attent"))
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "extra_seeds"}
    points = _points({"all_data": {0.5: [80.0, 81.0, 82.0], 1.0: [90.0, 91.0, 92.0]},
                      "attent": {0.5: [84.0, 85.0, 86.5], 1.0: [90.0, 91.0, 92.0]}})
    payload = {"config": fields, "environment": common.environment(config.seeds), "verdicts": [],
               "points": {m: {f"{b:g}": ps for b, ps in bs.items()} for m, bs in points.items()}}
    (tmp_path / "frontier.json").write_text(json.dumps(payload))
    assert frontier.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert "plus seeds" not in (tmp_path / "frontier.md").read_text()
    assert json.loads((tmp_path / "frontier.json").read_text())["config"]["extra_seeds"] == []
