"""`attent verify`: the report files, the exit code, and failures that must not pass silently."""

import dataclasses
import json
import re
import types

import pytest

from attent_jax.cli import main as cli
from attent_theory import verify
from attent_theory import loss_reduction
from attent_theory.report import VERDICTS, Check, Report, script_main

FIGURES = ("gradient_form.png", "antk.png", "functional_consistency.png", "loss_reduction.png", "greedy.png",
           "kernel_drift.png", "kernel_heatmaps.png", "kernel_width.png")


SECTION_TITLES = ("Identities", "Paper claims", "Negative controls")


def _assert_sections_in_order(text: str, prefix: str) -> None:
    positions = [text.find(f"{prefix}{title}") for title in SECTION_TITLES]
    assert -1 not in positions and positions == sorted(positions), positions


def test_quick_run_writes_report_json_and_figures(tmp_path, capsys):
    """Catches a quick run that fails an identity or misses a control, and report files without the three sections."""
    rc = cli.main(["verify", "--quick", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    failing = {(c["script"], c["name"]) for c in summary["checks"] if c["kind"] != "claim" and not c["passed"]}
    assert not failing, failing   # every identity passes and every control is caught on a correct implementation
    assert rc == 0                # ... so the README's command exits 0, whatever the paper's claims do
    # The summary's claim verdict is its rows' (whichever way the paper's claims come out; that a claim that does
    # not hold leaves rc at 0 is tested with a planted one below).
    assert summary["claims_hold"] == all(c["passed"] for c in summary["checks"] if c["kind"] == "claim")
    assert summary["controls_caught"] and any(c["kind"] == "control" for c in summary["checks"])
    assert summary["exit_code"] == rc and summary["identities_pass"]
    for c in summary["checks"]:
        assert c["status"] in VERDICTS[c["kind"]], c
    for name in verify.REGISTRY:
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["script"] == name and record["checks"], name
        assert "ran without error" not in [c["name"] for c in record["checks"]], record["checks"]
    for png in FIGURES:
        assert (tmp_path / png).stat().st_size > 1000, png
    md = (tmp_path / "report.md").read_text()
    _assert_sections_in_order(md, "## ")
    assert "| script | check | measured | threshold | result |" in md
    assert all(f"### {name}" in md for name in verify.REGISTRY)
    out = capsys.readouterr().out
    _assert_sections_in_order(out, "")
    assert re.search(r"^  control: .+ caught \(", out, re.M), out[-2000:]
    assert not re.search(r"^  control: .+ MISSED \(", out, re.M)


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


IDENTITY = Check("holds", 0.0, 1e-10, "<=")
CLAIM_NOT = Check("paper: greedy is faster", 0.5, 1.0, ">", kind="claim")
CLAIM_HOLDS = Check("paper: greedy is faster", 2.0, 1.0, ">", kind="claim")
CAUGHT = Check("control: term dropped", 0.5, 1e-10, "<=", kind="control", of="holds")
MISSED = Check("control: term dropped", 0.0, 1e-10, "<=", kind="control", of="holds")


@pytest.mark.parametrize("checks, strict, expected", [
    ([IDENTITY], False, 0),
    ([IDENTITY, Check("broken", 0.5, 1e-10, "<=")], False, 1),   # a failed identity
    ([Check("nan is never a pass", float("nan"), 1.0, "<=")], False, 1),
    ([IDENTITY, CLAIM_NOT], False, 0),     # a claim that does not hold is a finding, not a failure
    ([IDENTITY, CLAIM_NOT], True, 1),      # ... unless --strict
    ([IDENTITY, CLAIM_HOLDS], True, 0),
    ([IDENTITY, CAUGHT], False, 0),
    ([IDENTITY, MISSED], False, 1),        # a control that meets the threshold: the identity cannot fail
], ids=["identity", "failed identity", "nan", "claim not holding", "claim --strict", "claim holds --strict",
        "control caught", "control MISSED"])
def test_exit_code_follows_identities_controls_and_strict_claims(tmp_path, monkeypatch, capsys, checks, strict,
                                                                  expected):
    """Catches claims deciding the exit status without --strict, --strict ignoring them, and a MISSED control passing."""
    monkeypatch.setattr(verify, "REGISTRY", {"fake": _fake_module(checks)})
    argv = ["verify", "--only", "fake", "--out", str(tmp_path)] + (["--strict"] if strict else [])
    assert cli.main(argv) == expected
    record = json.loads((tmp_path / "fake.json").read_text())
    assert [(c["kind"], c["status"], c["passed"]) for c in record["checks"]] == [
        (c.kind, c.status, c.passed) for c in checks]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exit_code"] == expected
    assert summary["claims_hold"] == (CLAIM_NOT not in checks)
    assert summary["controls_caught"] == (MISSED not in checks)
    out, md = capsys.readouterr().out, (tmp_path / "report.md").read_text()
    _assert_sections_in_order(out, "")
    _assert_sections_in_order(md, "## ")
    for control in (CAUGHT, MISSED):
        if control in checks:
            line = f"control: term dropped {control.status} (fake"
            assert line in out and line in md, (line, out)
    if CLAIM_NOT in checks:
        claims = out[out.index("Paper claims"):out.index("Negative controls")]
        assert "paper: greedy is faster" in claims and "DOES NOT HOLD" in claims


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


def _fake_script(checks) -> types.ModuleType:
    module = types.ModuleType("theory.fake", "A stand-in theory script.")
    fake = _fake_module(checks)
    module.Config, module.run, module.plot = fake.Config, fake.run, fake.plot
    return module


@pytest.mark.parametrize("checks, strict, expected", [
    ([IDENTITY, CLAIM_NOT, CAUGHT], False, 0),
    ([IDENTITY, CLAIM_NOT, CAUGHT], True, 1),
    ([IDENTITY, MISSED], False, 1),
    ([IDENTITY, Check("broken", 0.5, 1e-10, "<=")], False, 1),
])
def test_script_main_exit_code_and_sections(tmp_path, capsys, checks, strict, expected):
    """Catches `python -m theory.X` failing on a claim without --strict, or passing a MISSED control."""
    argv = ["--out", str(tmp_path)] + (["--strict"] if strict else [])
    assert script_main(_fake_script(checks), argv) == expected
    out = capsys.readouterr().out
    _assert_sections_in_order(out, "")
    assert json.loads((tmp_path / "fake.json").read_text())["passed"] == (expected == 0 or strict)


def test_a_control_must_name_an_existing_identity():
    """Catches a control whose `of` points at a renamed or mistyped identity (it would vouch for nothing)."""
    with pytest.raises(ValueError, match="of"):
        Report("fake", "a claim", [IDENTITY, Check("control: x", 1.0, 1e-10, kind="control", of="no such row")])
    with pytest.raises(ValueError, match="of"):
        Check("identity with of", 0.0, 1e-10, of="holds")
    assert Report("fake", "a claim", [IDENTITY, CAUGHT]).passed
    assert not Report("fake", "a claim", [IDENTITY, MISSED]).passed


def test_check_verdicts_are_computed_not_stored():
    assert Check("in", 1.0, (0.9, 1.1), "in").passed
    assert not Check("out", 1.2, (0.9, 1.1), "in").passed
    assert not Check("inf", float("inf"), 1.0, ">=").passed
    with pytest.raises(ValueError, match="relation"):
        Check("bad", 1.0, 1.0, "==")
    with pytest.raises(ValueError, match="interval"):
        Check("bad", 1.0, 1.0, "in")
