"""The README's code examples run as written (a newcomer copies them)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _example(name: str) -> str:
    match = re.search(rf"<!-- readme-example: {name} -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no example marked {name!r}"
    return match.group(1)


def test_teacher_example_runs_and_learns(capsys):
    namespace: dict = {}
    exec(compile(_example("teacher"), "README.md", "exec"), namespace)
    n, N = namespace["n"], namespace["N"]
    assert 0 < n < N  # the last epoch trained on a selected subset, not all data
    final = float(namespace["per_example_losses"](namespace["w"], namespace["jnp"].arange(N)).mean())
    initial = float((namespace["y_N"] ** 2).mean())
    assert final < 0.5 * initial  # training on the teacher's picks did reduce the loss
    assert "last epoch trained on" in capsys.readouterr().out


def test_fit_example_runs_selects_and_learns(tmp_path, monkeypatch, capsys):
    """The fit example trains a model the package lacks; fails if fit ignores the teacher (all data seen),
    leaves the user's module untrained, or does not learn above chance (10 classes)."""
    monkeypatch.chdir(tmp_path)  # the example writes runs/cnn1d in the current folder
    namespace: dict = {}
    exec(compile(_example("fit"), "README.md", "exec"), namespace)
    result, model, test = namespace["result"], namespace["model"], namespace["test"]
    assert 0 < result["examples_seen"] < 2 * 1024  # ratio 0.5 after scoring: a subset, not all data
    assert result["eval_accuracy"] > 0.2
    # The module was updated in place: its own accuracy is the loop's evaluation.
    own = float((model(test["x"]).argmax(-1) == test["y"]).mean())
    assert abs(own - result["eval_accuracy"]) < 1e-6
    assert (tmp_path / "runs" / "cnn1d" / "metrics.jsonl").is_file()
    assert "test accuracy" in capsys.readouterr().out
