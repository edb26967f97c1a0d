"""`attent verify`: the report files, the exit code, and failures that must not pass silently."""

import dataclasses
import json
import types

import pytest

from attent_jax.cli import main as cli
from attent_theory import verify
from attent_theory import loss_reduction
from attent_theory.report import Check, Report

FIGURES = ("gradient_form.png", "antk.png", "functional_consistency.png", "loss_reduction.png", "greedy.png",
           "kernel_drift.png", "kernel_heatmaps.png", "kernel_width.png")


def test_quick_run_writes_report_json_and_figures(tmp_path, capsys):
    rc = cli.main(["verify", "--quick", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == (0 if summary["passed"] else 1)
    assert summary["passed"] == all(c["passed"] for c in summary["checks"])
    for name in verify.REGISTRY:
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["script"] == name and record["checks"], name
        assert "ran without error" not in [c["name"] for c in record["checks"]], record["checks"]
    for png in FIGURES:
        assert (tmp_path / png).stat().st_size > 1000, png
    md = (tmp_path / "report.md").read_text()
    assert "| script | check | measured | threshold | result |" in md
    assert all(f"## {name}" in md for name in verify.REGISTRY)
    out = capsys.readouterr().out
    assert "measured" in out and "threshold" in out


def _fake_module(checks=None, error=None):
    """A stand-in theory script whose run returns the given checks (or raises)."""
    def run(config):
        if error:
            raise error
        return Report("fake", "a claim", list(checks))

    return types.SimpleNamespace(Config=_FakeConfig, run=run, plot=lambda report, out: [])


@dataclasses.dataclass(frozen=True)
class _FakeConfig:
    size: int = 1  # unused

    @classmethod
    def quick(cls) -> "_FakeConfig":
        return cls()


@pytest.mark.parametrize("checks, expected", [
    ([Check("holds", 0.0, 1e-10, "<=")], 0),
    ([Check("holds", 0.0, 1e-10, "<="), Check("broken", 0.5, 1e-10, "<=")], 1),
    ([Check("nan is never a pass", float("nan"), 1.0, "<=")], 1),
])
def test_exit_code_follows_the_checks(tmp_path, monkeypatch, checks, expected):
    monkeypatch.setattr(verify, "REGISTRY", {"fake": _fake_module(checks)})
    assert cli.main(["verify", "--only", "fake", "--out", str(tmp_path)]) == expected
    record = json.loads((tmp_path / "fake.json").read_text())
    assert [c["passed"] for c in record["checks"]] == [c.passed for c in checks]
    assert ("FAIL" in (tmp_path / "report.md").read_text()) == (expected == 1)


def test_a_crashing_script_is_a_failed_check(tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "REGISTRY", {"fake": _fake_module(error=RuntimeError("boom"))})
    assert cli.main(["verify", "--only", "fake", "--out", str(tmp_path)]) == 1
    record = json.loads((tmp_path / "fake.json").read_text())
    assert record["checks"][0]["name"] == "ran without error" and "boom" in record["checks"][0]["detail"]


def test_unknown_script_name_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["verify", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "--only" in capsys.readouterr().err


def test_script_main_writes_json_and_figure(tmp_path, capsys):
    assert loss_reduction.main(["--quick", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "loss_reduction.json").read_text())["passed"]
    assert (tmp_path / "loss_reduction.png").exists()
    assert "PASS" in capsys.readouterr().out


def test_check_verdicts_are_computed_not_stored():
    assert Check("in", 1.0, (0.9, 1.1), "in").passed
    assert not Check("out", 1.2, (0.9, 1.1), "in").passed
    assert not Check("inf", float("inf"), 1.0, ">=").passed
    with pytest.raises(ValueError, match="relation"):
        Check("bad", 1.0, 1.0, "==")
    with pytest.raises(ValueError, match="interval"):
        Check("bad", 1.0, 1.0, "in")
