"""experiments/mae_pretrain.py (with mae_report.py, mae_downstream.py): settling measures and the quick run."""

import dataclasses
import json
import os

import numpy as np
import pytest

from attent_experiments import mae_pretrain, mae_report


def test_settling_calls_a_settling_kernel_settled_and_the_control_not():
    """Catches a settling measure that cannot fail (e.g. measured against the run's own final kernel, which is
    0 at T by construction) or that never succeeds: an exponentially settling kernel settles within the first
    quarter; a kernel moving at constant speed (the control) does not."""
    rng = np.random.default_rng(0)
    k_star, e = rng.standard_normal((10, 10)), rng.standard_normal((10, 10))
    T = 16
    epochs = list(range(T + 1))
    settling = [k_star + np.exp(-t) * e for t in epochs]
    config = mae_pretrain.Config()
    m = mae_report.settling(settling, epochs, k_star, config)
    assert m["window_settled"] <= config.settle_fraction and m["ref_settled"] <= config.settle_fraction
    assert m["window_holds"] and m["ref_holds"] and m["control_caught"]
    moving = [k_star + (1 - t / T) * 5 * e for t in epochs]
    m = mae_report.settling(moving, epochs, k_star, config)
    assert m["window_settled"] > config.settle_fraction and not m["window_holds"]
    # The window change is measured over Δ = window_fraction·T epochs, from the kernels given.
    assert m["lag_epochs"] == 2 and len(m["window"]) == T + 1 - 2
    np.testing.assert_allclose(m["window"][3], np.linalg.norm(moving[5] - moving[3]) / np.linalg.norm(moving[0]))


def test_bad_config_is_a_one_line_error():
    with pytest.raises(ValueError, match="long_methods"):
        dataclasses.replace(mae_pretrain.QUICK, long_methods=("attent",))
    with pytest.raises(ValueError, match="mask_ratio: got 1.0"):
        dataclasses.replace(mae_pretrain.QUICK, mask_ratio=1.0)
    assert mae_pretrain.main(["--quick", "--budgets", "1.5"]) == 2


def test_a_patch_size_that_does_not_divide_the_signal_fails_before_any_work(tmp_path, capsys):
    """Catches the check left to the encoder, which runs only after MNIST-1D is generated: a traceback after
    work instead of a one-line error and exit code 2 with nothing written."""
    with pytest.raises(ValueError, match="patch_size: got 3, expected a divisor of MNIST-1D's signal length 40"):
        dataclasses.replace(mae_pretrain.QUICK, patch_size=3)
    assert mae_pretrain.main(["--quick", "--patch-size", "3", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "mae_pretrain: error: patch_size: got 3, expected a divisor of MNIST-1D's signal length 40"]
    assert not (tmp_path / "out").exists()


def test_quick_run_writes_its_outputs_and_its_numbers_follow(tmp_path):
    assert mae_pretrain.main(["--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "mae_pretrain.json").read_text())
    md = (tmp_path / "mae_pretrain.md").read_text()
    assert md.startswith("# ") and "|---|" in md and "no pre-training" in md
    for name in ("mae_pretrain.png", "mae_ntk.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "mae_pretrain_partial.json").exists()
    q = mae_pretrain.QUICK
    for part, methods in (("race", q.methods), ("long", q.long_methods)):
        d = payload[part]
        assert set(d["points"]) == set(methods)
        for m in methods:
            for p in d["points"][m]["0.5"]:
                assert p["cost"] > 0 and 0 <= p["probe_acc_pct"] <= 100 and 0 <= p["finetune_acc_pct"] <= 100
                assert np.isfinite(p["pretrain_eval_loss"]) and p["cost_wall"] > 0
                # Step-unit cost: each run's time over its own step time, over the reference's (catches the
                # wall-time ratio reported as the headline, or a run divided by the reference's step time).
                ref = next(r for r in d["references"] if r["seed"] == p["seed"])
                assert p["cost_wall"] == pytest.approx(p["train_time_s"] / ref["train_time_s"])
                assert p["cost"] == pytest.approx(p["step_units"] / ref["step_units"])
                assert not os.path.exists(os.path.join(p["workdir"], "checkpoints"))   # deleted once used
        # The verdict is AtteNT minus the same seed's compute-matched all-data run (catches a swapped sign or
        # a difference taken against another method).
        for v in d["verdicts"]:
            base = {p["seed"]: p[v["metric"]] for p in d["points"]["all_data"]["0.5"]}
            diffs = [p[v["metric"]] - base[p["seed"]] for p in d["points"]["attent"]["0.5"]]
            assert v["diff_points"] == pytest.approx(diffs)
        assert {v["metric"] for v in d["verdicts"]} == {"probe_acc_pct", "finetune_acc_pct"}
    assert payload["long"]["num_train"] == q.long_num_train and payload["long"]["epochs"] == q.long_epochs
    # The all-data baseline at budget 0.5 ran about half the reference's epochs; AtteNT trained on fewer examples.
    race = payload["race"]
    assert race["points"]["all_data"]["0.5"][0]["plan"]["epochs"] == max(1, round(0.5 * q.epochs))
    assert race["points"]["attent"]["0.5"][0]["fraction_seen_of_reference"] < 1.0
    # AtteNT scores at initialization: the scoring pass's compilation is recognised and kept out of its cost
    # (catches experiments/timing.py missing the scoring functions' names, as after the scoring.py split).
    assert race["points"]["attent"]["0.5"][0]["compile_scoring_s"] > 0
    ntk = payload["ntk"]["runs"]["soft"]
    kernels = np.asarray(ntk["kernels"])
    assert kernels.shape == (q.ntk_epochs + 1, 10, 10) and ntk["epochs"] == list(range(q.ntk_epochs + 1))
    for k in kernels:   # a Gram matrix: symmetric positive semi-definite
        np.testing.assert_allclose(k, k.T, rtol=1e-4, atol=1e-4 * np.abs(k).max())
        assert np.linalg.eigvalsh((k + k.T) / 2).min() > -1e-3 * np.abs(k).max()
    k2 = np.asarray(ntk["kernel_2T"])
    np.testing.assert_allclose(ntk["ref_distance"], [np.linalg.norm(k - k2) / np.linalg.norm(k2) for k in kernels],
                               rtol=1e-9)
    assert ntk["ref_distance"][0] > 1e-4     # pre-training moved the kernel
    assert ntk["control_caught"]
    # --report-only rebuilds the settling measures from the stored kernels: planted wrong values are replaced
    # by what the kernels give (catches a rebuild that keeps the stored measures), the race is kept as measured.
    planted = dict(payload, ntk=dict(payload["ntk"], runs={k: dict(v, window=[9.0], window_settled=9.0)
                                                           for k, v in payload["ntk"]["runs"].items()}))
    (tmp_path / "mae_pretrain.json").write_text(json.dumps(planted))
    assert mae_pretrain.main(["--report-only", "--out", str(tmp_path)]) == 0
    rebuilt = json.loads((tmp_path / "mae_pretrain.json").read_text())
    for name, run in rebuilt["ntk"]["runs"].items():
        assert run["window"] == pytest.approx(payload["ntk"]["runs"][name]["window"])
        assert run["window_settled"] == payload["ntk"]["runs"][name]["window_settled"]
    assert rebuilt["race"] == payload["race"]
    assert rebuilt["rebuilt"][-1]["previous"][name]["window_settled"] == 9.0   # what it replaced is kept
    assert mae_pretrain.main(["--report-only", "--out", str(tmp_path / "empty")]) == 2
    # A file it cannot rebuild (no kernels) is a one-line error, exit 2, and is left as it was.
    broken = dict(rebuilt, ntk=dict(rebuilt["ntk"], runs={k: {kk: vv for kk, vv in v.items() if kk != "kernels"}
                                                        for k, v in rebuilt["ntk"]["runs"].items()}))
    (tmp_path / "mae_pretrain.json").write_text(json.dumps(broken))
    assert mae_pretrain.main(["--report-only", "--out", str(tmp_path)]) == 2
    assert json.loads((tmp_path / "mae_pretrain.json").read_text()) == broken
