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
