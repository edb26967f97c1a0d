"""experiments/dial.py: the dial points, the edges, and the quick run's outputs."""

import json

import numpy as np
import pytest

from attent_experiments import dial


def test_dial_points_share_one_standard_set():
    """Catches a dial without its 0% point or a level routed to another dial's generator argument."""
    pts = dial.datasets(dial.Config())
    assert pts[0]["name"] == "standard" and pts[0]["kwargs"] == {}
    assert [p["level"] for p in pts if p["dial"] == "easy_share"] == [0.5, 0.8, 0.95]
    assert [p["level"] for p in pts if p["dial"] == "duplicate_share"] == [0.5, 0.8, 0.95]
    assert [p["level"] for p in pts if p["dial"] == "label_noise"] == [0.1, 0.3]
    assert all(p["kwargs"] == {p["dial"]: p["level"]} for p in pts[1:])


def test_bad_dial_config_is_one_line_error():
    with pytest.raises(ValueError, match=r"noise_levels: got \(0.0,\)"):
        dial.Config(noise_levels=(0.0,))
    with pytest.raises(ValueError, match="expected all_data and an AtteNT method"):
        dial.Config(methods=("all_data", "random"))


def test_edges_of_a_run_stopped_after_its_first_seed(tmp_path):
    """Catches a partial write (after each seed) that fails on the seeds not yet run, or pairs across seeds."""
    config = dial.Config(seeds=(0, 1, 2), easy_levels=(0.8,), duplicate_levels=(0.8,), noise_levels=(0.3,))
    points = dial.datasets(config)
    results = {p["name"]: {m: [{"seed": 0, "accuracy_pct": acc, "cost": 0.5}] for m, acc in
                           zip(config.methods, (90.0, 88.5, 89.0))} for p in points}
    edges = dial.edge_rows(config, points, results)
    assert {e["versus"] for e in edges} == {"all_data", "random"}
    assert all(len(e["diff_points"]) == 1 for e in edges)
    assert [e["mean"] for e in edges if e["versus"] == "all_data"] == pytest.approx([-1.5] * len(points))
    from attent_experiments import common
    text = dial.markdown(config, common.environment(config.seeds), points, results, edges)
    assert "seeds [0] of [0, 1, 2]" in text


def test_dial_quick(tmp_path):
    """The quick run trains every method on every dialled set (the loop really gets the dialled data: the
    label-noise set's runs differ from the standard set's), and each edge is the paired mean difference."""
    assert dial.main(["--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "dial.json").read_text())
    assert (tmp_path / "dial.png").read_bytes()[:4] == b"\x89PNG"
    names = [d["name"] for d in payload["datasets"]]
    assert names == ["standard", "easy_share0.8", "duplicate_share0.8", "label_noise0.3"]
    res = payload["results"]
    for n in names:
        for m in dial.QUICK.methods:
            assert [p["seed"] for p in res[n][m]] == list(dial.QUICK.seeds)
    # Same seed, same plan, other data: a swap that failed to reach the loop would give identical losses.
    assert res["label_noise0.3"]["all_data"][0]["final_loss"] != res["standard"]["all_data"][0]["final_loss"]
    for e in payload["edges"]:
        a = {p["seed"]: p["accuracy_pct"] for p in res[e["dataset"]][e["method"]]}
        b = {p["seed"]: p["accuracy_pct"] for p in res[e["dataset"]][e["versus"]]}
        assert e["mean"] == pytest.approx(np.mean([a[s] - b[s] for s in a]))
