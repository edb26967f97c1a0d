"""A run never throws its checkpoints away, never ranks non-finite scores, and re-running it repeats nothing.

Small runs of the teach task (64 examples, batches of 16): seconds each.
"""

import errno
import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from attent_jax.cli import main as cli
from attent_jax.teaching import selection
from attent_jax.training import loop as train
from attent_jax.training import scoring
from attent_jax.training.checkpoint import Checkpointer
from attent_jax.training.run_log import NonFiniteLossError, NonFiniteScoreError
from attent_jax.teaching.teacher import Teacher, TeacherConfig
from attent_jax.training.config import TrainConfig

SMALL = dict(task="teach", quick=True, batch_size=16, progress_bar=False, log_every=1)


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


class _Stop(Exception):
    pass


def test_restore_os_error_exits_nonzero_touches_nothing_and_the_next_run_resumes(tmp_path, monkeypatch, capsys):
    """Catches a transient OSError in the restore treated as damage: checkpoints moved to corrupt_checkpoints,
    metrics.jsonl emptied, a retrain from step 0 and exit 0."""
    config = TrainConfig.from_flat(**SMALL, epochs=2, selection="none", checkpoint_every=2)   # 4 steps an epoch
    workdir = str(tmp_path / "run")

    def stop_at_6(step):
        if step == 6:
            raise _Stop
    with pytest.raises(_Stop):
        train.train_and_evaluate(config, workdir, on_step=stop_at_6)   # checkpoints 2, 4, 6
    files, metrics = _files(workdir), open(os.path.join(workdir, "metrics.jsonl"), "rb").read()

    def failing(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(ocp.CheckpointManager, "restore", failing)
    argv = ["train", "--workdir", workdir, "--task", "teach", "--quick", "--batch-size", "16", "--no-progress-bar",
            "--log-every", "1", "--epochs", "2", "--selection", "none", "--checkpoint-every", "2"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "checkpoint 6" in err and "OSError" in err and len(err.strip().splitlines()) == 1, err
    assert _files(workdir) == files and open(os.path.join(workdir, "metrics.jsonl"), "rb").read() == metrics
    monkeypatch.undo()

    steps = []
    result = train.train_and_evaluate(config, workdir, on_step=steps.append)
    assert steps == [7, 8] and result["step"] == 8   # resumed at checkpoint 6, not retrained
    train_steps = [r["step"] for r in _records(workdir) if r["event"] == "train"]
    assert train_steps == list(range(1, 9))


def test_an_epoch_without_steps_is_checkpointed_and_a_finished_run_repeats_nothing(tmp_path):
    """Catches the end-of-epoch checkpoint of a zero-step epoch being skipped (its step already exists), so a
    re-run repeats that epoch and duplicates its eval record in metrics.jsonl."""
    # Epoch 0 trains all 64 examples (4 steps); epochs 1 and 2 select 13 < 16: no step.
    config = TrainConfig.from_flat(**SMALL, epochs=3, selection="hard", ratio=0.2, regime="every_epoch")
    workdir = str(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "fewer than batch_size": the point of this run
        train.train_and_evaluate(config, workdir)
    trainer = train.Trainer(config, workdir)
    ckpt = Checkpointer(os.path.join(workdir, train.CHECKPOINT_DIR))
    try:
        assert ckpt.all_steps() == [4]
        state, meta = trainer.restore(ckpt)
    finally:
        ckpt.close()
    assert int(meta["clock"]["epoch"]) == 3   # the state after the last epoch, not after epoch 0
    metrics = open(os.path.join(workdir, "metrics.jsonl"), "rb").read()
    planned = []
    trainer._plan_epoch = lambda *args: planned.append(args) or pytest.fail("a finished epoch was planned again")
    trainer.run()
    assert not planned and open(os.path.join(workdir, "metrics.jsonl"), "rb").read() == metrics
    assert [r["epoch"] for r in _records(workdir) if r["event"] == "eval"] == [0, 1, 2]


def test_a_non_finite_score_from_a_scoring_pass_stops_the_run(tmp_path, monkeypatch):
    """Catches a NaN from a scoring pass being written into the score table and ranked (the run went on)."""
    real = train.example_scores

    def nan_in_scoring(score, loss_B, batch):
        out = real(score, loss_B, batch)
        # Scoring chunks hold 32 examples (training batches 16): examples 3 and 35 score NaN.
        return out.at[3].set(jnp.nan) if out.shape[0] == 32 else out
    monkeypatch.setattr(scoring, "example_scores", nan_in_scoring)   # the scoring pass's own (training steps keep theirs)
    config = TrainConfig.from_flat(**SMALL, epochs=3, selection="hard", ratio=0.5, regime="every_epoch", eval_batch_size=32)
    with pytest.raises(NonFiniteScoreError, match="scoring pass gave 2 non-finite .* before epoch 2") as info:
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert isinstance(info.value, NonFiniteLossError)   # the CLI's exit 1 with its message
    assert "last good checkpoint is step" in str(info.value)


# ---------------------------------------------------------------- the teacher ranks NaN as the selectors do

def _teacher_with_scores(config, scores):
    teacher = Teacher(config, num_examples=len(scores))
    state = teacher.init(jax.random.key(0))
    state, _, _, _ = teacher.plan_epoch(state, 0, 4)
    return teacher, teacher.update(state, jnp.arange(len(scores), dtype=jnp.int32), jnp.asarray(scores))


SCORES = np.array([0.3, np.nan, 2.0, -np.inf, 1.0, np.inf, 0.7, np.nan, 1.5, 0.1], np.float32)


@pytest.mark.parametrize("regime", ["finetune", "every_epoch"])
def test_teacher_hard_selection_matches_the_hard_selector_with_nan(regime):
    """Catches the teacher and `selection.hard` ordering NaN differently (argsort last, lax.top_k first)."""
    config = TeacherConfig(regime=regime, selector="hard", ratio_schedule="fixed", ratio=0.7)
    teacher, state = _teacher_with_scores(config, SCORES)
    state, idx_N, _, n = teacher.plan_epoch(state, 1, 4)
    assert n == 7
    want = selection.hard(jax.random.key(0), jnp.asarray(SCORES), 7).tolist()
    # +inf, then 2.0 1.5 1.0 0.7 0.3 0.1; -inf and both NaNs are left out.
    assert sorted(idx_N[:n].tolist()) == sorted(want) == [0, 2, 4, 5, 6, 8, 9]


def test_teacher_soft_selection_lifts_unseen_examples_when_a_nan_is_present():
    """Catches the unseen-example lift lost in the teacher's soft ranking when a NaN score is present."""
    n_seen = 40
    scores = np.concatenate([np.full(n_seen, 5.0), [np.nan]]).astype(np.float32)
    teacher = Teacher(TeacherConfig(regime="every_epoch", selector="soft", ratio_schedule="fixed", ratio=0.1),
                      num_examples=n_seen + 4)   # examples 41..43 are never seen (+inf)
    state = teacher.init(jax.random.key(0))
    state, _, _, _ = teacher.plan_epoch(state, 0, 8)
    state = teacher.update(state, jnp.arange(n_seen + 1, dtype=jnp.int32), jnp.asarray(scores))
    for epoch in range(1, 8):
        state, idx_N, _, n = teacher.plan_epoch(state, epoch, 8)
        assert n == 4
        picked = set(idx_N[:n].tolist())
        assert {41, 42, 43} <= picked and 40 not in picked, (epoch, picked)


def test_infobatch_prunes_below_the_finite_mean_when_a_nan_is_present():
    """Catches one NaN score making the mean NaN, so no example is ever pruned (every comparison is false)."""
    scores = np.concatenate([np.linspace(0.0, 1.0, 99), [np.nan]]).astype(np.float32)
    teacher = Teacher(TeacherConfig(regime="infobatch", infobatch_prune_ratio=0.5, infobatch_anneal=0.0),
                      num_examples=100)
    state = teacher.init(jax.random.key(0))
    state, _, _, _ = teacher.plan_epoch(state, 0, 4)
    state = teacher.update(state, jnp.arange(100, dtype=jnp.int32), jnp.asarray(scores))
    state, _, w_N, n = teacher.plan_epoch(state, 1, 4)
    kept = np.asarray(state.selected_N)
    assert 100 - 50 * 0.5 - 15 < n < 100 - 50 * 0.5 + 15   # ~half of the 49 below-mean + NaN are pruned
    assert kept[50:99].all()                                  # above the finite mean: never pruned
    np.testing.assert_allclose(np.asarray(w_N)[:49][kept[:49]], 2.0)   # kept below-mean: weight 1/(1 − q)
