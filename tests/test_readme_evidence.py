"""experiments/readme_evidence.py: the README's frontier and dial blocks follow their result files."""

import dataclasses
import json

from attent_experiments import common, frontier, readme_evidence
from attent_experiments.readme_values import Results


def _frontier_file(root, attent_05):
    config = dataclasses.replace(frontier.QUICK, seeds=(0, 1, 2), methods=("all_data", "attent"))
    acc = {"all_data": {0.5: [80.0, 81.0, 82.0], 1.0: [90.0, 91.0, 92.0]},
           "attent": {0.5: attent_05, 1.0: [88.0, 89.5, 90.0]}}
    points = {m: {f"{b:g}": [{"seed": s, "accuracy_pct": a[i], "cost": b} for i, s in enumerate(config.seeds)]
                  for b, a in bs.items()} for m, bs in acc.items()}
    out = root / "experiments" / "results" / "frontier"
    out.mkdir(parents=True)
    (out / "frontier.json").write_text(json.dumps({"config": dataclasses.asdict(config), "points": points,
                                                   "environment": common.environment(config.seeds)}))
    assert frontier.main(["--report-only", "--out", str(out)]) == 0
    return Results(str(root))


def test_headline_is_composed_from_the_verdicts(tmp_path):
    """Catches a headline that does not follow the file: budget 0.5 better, budget 1 worse, and the moonshot."""
    results = _frontier_file(tmp_path, [84.0, 85.0, 86.5])
    line = readme_evidence.frontier_headline(results)
    assert "better at budget 0.5" in line and "worse at budget 1" in line and "Moonshot" in line
    table = readme_evidence.frontier_verdicts(results)
    assert "+4.17" in table and table.count("\n") == 2 + 2   # header, rule, one row per budget


def test_headline_changes_when_a_verdict_does(tmp_path):
    """Catches a sentence typed once and kept: a run that is worse at 0.5 must say so."""
    results = _frontier_file(tmp_path, [70.0, 71.0, 72.5])
    assert "worse at budgets 0.5 and 1" in readme_evidence.frontier_headline(results)


def test_headline_counts_the_extra_seeds(tmp_path):
    """Catches a headline that says '3 seeds' where a verdict rests on 5 (the extra seeds at close budgets)."""
    results = _frontier_file(tmp_path, [84.0, 85.0, 86.5])
    path = tmp_path / "experiments" / "results" / "frontier" / "frontier.json"
    payload = json.loads(path.read_text())
    for m, accs in (("all_data", [79.0, 83.0]), ("attent", [84.5, 85.5])):
        payload["points"][m]["0.5"] += [{"seed": s, "accuracy_pct": a, "cost": 0.5} for s, a in zip((3, 4), accs)]
    # The extra seeds' references land in all data at budget 1 only: the verdict row there must compare
    # AtteNT with the baseline over AtteNT's own 3 seeds (mean 91.00), not over all 5 (mean 92.60).
    payload["points"]["all_data"]["1"] += [{"seed": s, "accuracy_pct": 95.0, "cost": 1.0} for s in (3, 4)]
    path.write_text(json.dumps(payload))
    assert frontier.main(["--report-only", "--out", str(path.parent)]) == 0
    line = readme_evidence.frontier_headline(Results(str(tmp_path)))
    assert "(3 seeds, 5 at budget 0.5; 95% paired intervals)" in line
    table = readme_evidence.frontier_verdicts(Results(str(tmp_path)))
    assert "| 0.5 | AtteNT (Soft, paper schedules) | 5 |" in table
    assert "| 1 | AtteNT (Soft, paper schedules) | 3 | 1.00 ± 0.00 | 1.00 ± 0.00 | 89.17 ± 1.04 | 91.00 ± 1.00 | -1.83 |" in table
    others = readme_evidence.frontier_others(Results(str(tmp_path)))
    assert "91.00 ± 1.00 (1.00)" in others and "92.60" not in others


def test_dial_edges_one_row_per_dataset(tmp_path):
    """Catches an edge shown against the wrong method or level."""
    out = tmp_path / "experiments" / "results" / "dial"
    out.mkdir(parents=True)
    edges = [{"dataset": "standard", "dial": None, "level": 0.0, "versus": "all_data", "mean": -1.0, "ci95": [-2, 0]},
             {"dataset": "label_noise0.3", "dial": "label_noise", "level": 0.3, "versus": "all_data", "mean": -3.5,
              "ci95": [-5.0, -2.0]}]
    datasets = [{"name": "standard", "dial": None, "level": 0.0},
                {"name": "label_noise0.3", "dial": "label_noise", "level": 0.3}]
    (out / "dial.json").write_text(json.dumps({"edges": edges, "datasets": datasets}))
    table = readme_evidence.dial_edges(Results(str(tmp_path)))
    assert "| label_noise | 30% | −3.50 [−5.00, −2.00] |" in table.replace("-", "−")


def test_dial_headline_follows_the_intervals(tmp_path):
    """Catches a headline word that ignores the interval (worse below 0, not resolved across it) or hides
    that the run stopped before its planned seeds."""
    out = tmp_path / "experiments" / "results" / "dial"
    out.mkdir(parents=True)
    edges = [{"dataset": "standard", "dial": None, "level": 0.0, "versus": "all_data", "ci95": [-2.0, 0.5]},
             {"dataset": "label_noise0.3", "dial": "label_noise", "level": 0.3, "versus": "all_data",
              "ci95": [-5.0, -2.0]},
             {"dataset": "duplicate_share0.8", "dial": "duplicate_share", "level": 0.8, "versus": "all_data",
              "ci95": [0.1, 0.9]}]
    (out / "dial.json").write_text(json.dumps({"edges": edges, "seeds_completed": [0, 1],
                                               "config": {"seeds": [0, 1, 2], "budget": 0.5}}))
    line = readme_evidence.dial_headline(Results(str(tmp_path)))
    assert ("better at near-duplicates 80%; not resolved at standard; worse at label noise 30% "
            "(2 seeds of 3 planned" in line), line
