"""The run folder's metrics log and the host-side helpers of a run (the loop itself: test_train.py)."""

import json

import pytest

from attent_jax.training import run_log


def test_resumed_log_drops_records_after_the_checkpoint_and_cut_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    log = run_log.MetricsLog(str(path), enabled=True)
    log.truncate_after(2)
    log.write({"step": 3, "again": True})
    log.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"step": 1}, {"step": 2}, {"step": 3, "again": True}]


def test_disabled_log_writes_nothing(tmp_path):
    log = run_log.MetricsLog(str(tmp_path / "metrics.jsonl"), enabled=False)
    log.truncate_after(-1)
    log.write({"step": 1})
    log.close()
    assert not (tmp_path / "metrics.jsonl").exists()


def test_write_atomic_replaces_the_whole_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old and longer")
    run_log.write_atomic(str(path), "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_warn_once_warns_once_per_message():
    message = "test_run_log: a message no other test uses"
    with pytest.warns(UserWarning, match="no other test"):
        run_log.warn_once(message)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_log.warn_once(message)   # a second time: silent


def test_resumed_log_keeps_only_the_evals_its_checkpoint_has_done(tmp_path):
    """Catches duplicated eval records: an epoch without steps logs at the step of the epoch before it,
    so a resume keyed by step alone keeps its record and then writes it again."""
    path = tmp_path / "metrics.jsonl"
    records = [{"event": "train", "step": 4}, {"event": "eval", "step": 4, "epoch": 0},
               {"event": "eval", "step": 4, "epoch": 1}, {"event": "eval", "step": 4, "epoch": 2}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    log = run_log.MetricsLog(str(path), enabled=True)
    log.truncate_after(4, evals=1)   # the checkpoint at step 4 has finished epoch 0 only
    log.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == records[:2]


def test_flush_reads_each_steps_packed_metrics_in_step_metrics_order(tmp_path):
    """A train step returns (loss, accuracy, lr, finite) as one array: the record must read each by its
    place (catches a misordered unpacking, e.g. the lr logged as the loss) and stop on finite == 0."""
    import types

    import jax.numpy as jnp

    from attent_jax.training.config import RunConfig

    assert run_log.STEP_METRICS == ("loss", "accuracy", "lr", "finite")
    log = run_log.MetricsLog(str(tmp_path / "m.jsonl"), enabled=True)
    session = run_log.Session(RunConfig(batch_size=4, progress_bar=False), 1e-3, [1], 3, None, log, {}, False)
    stage = types.SimpleNamespace(name="train", num_train=8, has_accuracy=True)
    for loss, acc in ((1.0, 0.25), (3.0, 0.75)):
        session.step_done(jnp.array([loss, acc, 0.5, 1.0], jnp.float32), compiled=True)
    session.flush(stage)
    log.close()
    record = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])
    assert (record["train_loss"], record["train_accuracy"], record["lr"]) == (2.0, 0.5, 0.5)
    assert session.epoch_loss == {"sum": 4.0, "count": 2}
    session.step_done(jnp.array([5.0, 0.5, 0.5, 0.0], jnp.float32), compiled=True)
    with pytest.raises(run_log.NonFiniteLossError, match="became 5.0 .* at step 3"):
        session.flush(stage)


def _session(tmp_path, name, log_every):
    from attent_jax.training.config import RunConfig

    log = run_log.MetricsLog(str(tmp_path / name), enabled=True)
    return run_log.Session(RunConfig(batch_size=4, log_every=log_every, progress_bar=False), 1e-3, [1], 10, None,
                           log, {}, False), log


def _records(path):
    drop = ("wall_time", "examples_per_s")
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in path.read_text().splitlines()]


def test_a_lagged_flush_leaves_the_newest_steps_queued_and_logs_the_same_records(tmp_path):
    """The loop flushes through each log_every-th step `LOG_LAG` steps later, leaving the newest on device (so the
    device is not idled by the host's logging). Catches a flush that fetches them anyway (it would stall
    the device again), and records that differ from flushing at the log_every-th step itself: the wrong
    step, examples_seen counted to the newest dispatched step, or two log periods merged into one record."""
    import types

    import jax.numpy as jnp

    stage = types.SimpleNamespace(name="train", num_train=52, has_accuracy=True)
    losses = [float(i) for i in range(1, 14)]   # 13 steps: the epoch ends between log steps
    now, now_log = _session(tmp_path, "now.jsonl", log_every=4)
    late, late_log = _session(tmp_path, "late.jsonl", log_every=4)
    for i, loss in enumerate(losses):
        step = i + 1
        metrics = jnp.array([loss, 0.5, 0.1 * step, 1.0], jnp.float32)
        now.step_done(metrics, compiled=True)
        late.step_done(metrics, compiled=True)
        if step % 4 == 0:
            now.flush(stage)
        if step % 4 == 2 and step > 2:
            late.flush(stage, through=step - 2)
            assert [s for s, _ in late.pending] == [step - 1, step]
        if step == 7:   # the step a mid-epoch checkpoint would save: a full flush, as the loop does before it
            now.flush(stage)
            late.flush(stage)
    now.flush(stage)
    late.flush(stage)
    now_log.close()
    late_log.close()
    expected = _records(tmp_path / "now.jsonl")
    assert [r["step"] for r in expected] == [4, 7, 8, 12, 13]
    assert [r["examples_seen"] for r in expected] == [16, 28, 32, 48, 52]
    assert _records(tmp_path / "late.jsonl") == expected
    assert late.epoch_loss == now.epoch_loss == {"sum": sum(losses), "count": 13}


def test_a_lagged_flush_names_the_step_that_went_non_finite(tmp_path):
    """Catches a NaN stop that names the newest dispatched step instead of the one whose loss was bad."""
    import types

    import jax.numpy as jnp

    stage = types.SimpleNamespace(name="train", num_train=40, has_accuracy=False)
    session, log = _session(tmp_path, "m.jsonl", log_every=4)
    for step in range(1, 7):
        session.step_done(jnp.array([1.0, 0.0, 0.1, 0.0 if step == 3 else 1.0], jnp.float32), compiled=True)
    with pytest.raises(run_log.NonFiniteLossError, match="at step 3,"):
        session.flush(stage, through=4)
    log.close()
