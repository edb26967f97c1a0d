"""experiments/quickstart.py: the README's first command, timed in a fresh process, with honest verdicts."""

import json

from attent_experiments import quickstart


def test_quick_mode_times_the_readme_command(tmp_path):
    """Catches a timing of something other than the README's command (its steps: 2 epochs of the quick mnist1d
    batch), a failed command read as a result, and a verdict printed for a shortened run (the targets are about
    the full first run only)."""
    assert quickstart.main(["--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "quickstart.json").read_text())
    (run,) = payload["runs"]
    assert run["variant"] == "readme" and run["steps"] > 0 and 0.0 <= run["eval_accuracy"] <= 1.0
    assert run["command_s"] > run["in_run_s"] > 0   # the command includes imports and data generation
    assert payload["checks"] == {} and "Targets" not in (tmp_path / "quickstart.md").read_text()


def test_bad_values_exit_2(tmp_path, capsys):
    assert quickstart.main(["--repeats", "0", "--out", str(tmp_path)]) == 2
    assert "repeats: got 0" in capsys.readouterr().err
    assert quickstart.main(["--variants", "nope", "--out", str(tmp_path)]) == 2
