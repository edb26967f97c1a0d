"""`attent plot`: a PNG of loss and accuracy against wall time and examples seen; bad input exits 2."""

import json

import pytest

from attent_jax.cli import main as cli
from attent_jax.cli.plot import plot_runs, read_metrics


def _fake_run(folder, kind="classification", epochs=3):
    folder.mkdir(parents=True)
    records = []
    for e in range(epochs):
        for s in range(1, 5):
            step = e * 4 + s
            record = {"event": "train", "step": step, "epoch": e, "wall_time": step * 0.5,
                      "examples_seen": step * 32, "train_loss": 2.0 / step}
            if kind == "classification":
                record["train_accuracy"] = 0.1 * e
            records.append(record)
        record = {"event": "eval", "step": step, "epoch": e, "wall_time": step * 0.5 + 0.1,
                  "examples_seen": step * 32, "eval_loss": 1.5 / (e + 1)}
        if kind == "classification":
            record["eval_accuracy"] = 0.3 + 0.1 * e
        records.append(record)
    text = "\n".join(json.dumps(r) for r in records) + "\n" + '{"event": "train", "step": 99, "wall'  # cut by a kill
    (folder / "metrics.jsonl").write_text(text)
    return str(folder)


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_two_runs_writes_png(tmp_path, capsys):
    a = _fake_run(tmp_path / "full")
    b = _fake_run(tmp_path / "soft")
    out = tmp_path / "cmp.png"
    assert cli.main(["plot", a, b, "--out", str(out)]) == 0
    assert _is_png(out) and out.stat().st_size > 10_000
    assert str(out) in capsys.readouterr().out


def test_plot_defaults_into_the_run_and_handles_regression(tmp_path):
    run = _fake_run(tmp_path / "teach", kind="regression")
    out = plot_runs([run])
    assert out == str(tmp_path / "teach" / "curves.png") and _is_png(out)


def test_read_metrics_skips_a_cut_line(tmp_path):
    records = read_metrics(_fake_run(tmp_path / "r", epochs=1))
    assert len(records) == 5 and records[-1]["event"] == "eval"


@pytest.mark.parametrize("args,message", [
    (["plot", "/no/such/run"], "run: got '/no/such/run'"),
    (["plot", "RUN", "--out", "x.pdf"], "out: got 'x.pdf'"),
])
def test_bad_input_exits_2(args, message, tmp_path, capsys):
    run = _fake_run(tmp_path / "ok")
    args = [a.replace("RUN", run) for a in args]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
