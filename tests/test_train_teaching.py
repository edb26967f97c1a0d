"""The teacher inside real training runs: loss weights, the score table, finetune's subset, resume.

Every run trains through `attent_jax.training.loop.Trainer` (what `attent train` runs),
on the teach task at its quick size (64 sequences of 4 elements, d = 3, the
single-head learner with d' = 8), batch 8, except the class-weight test (mnist1d,
which has labels). `Recorder` keeps host copies of the
state before and after each train step, and the tests check them against
numbers computed here by hand (NumPy forward passes, a hand-written Adam
moment), never with the loop's own loss or update code.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attent_jax.training import loop as train
from attent_jax.training.loop import Trainer
from attent_jax.training.config import TrainConfig
from attent_experiments.common import compile_cache

B = 8
BASE = dict(task="teach", quick=True, batch_size=B, log_every=1, checkpoint_every=1000, progress_bar=False)


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    # Each Trainer session jits its own step, scoring and evaluation; runs of one config share the
    # programs, so the persistent cache turns the resumed sessions' compilations into loads.
    with compile_cache(str(tmp_path_factory.mktemp("jax_cache"))):
        yield


class Recorder(Trainer):
    """A Trainer whose train step also records host copies of the state before and after it, and its metrics.

    `jax.device_get` is an explicit transfer, allowed under the loop's transfer guard.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = []

    def _make_train_step(self, si):
        step = super()._make_train_step(si)

        def recorded(state, data, clock_4):
            before = jax.device_get(state)   # before the call: the step donates its input
            clock = dict(zip(train.STEP_CLOCK, np.asarray(jax.device_get(clock_4)).tolist()))
            state, metrics, next_clock_4 = step(state, data, clock_4)
            self.steps.append({"stage": si, "before": before, "clock": clock, "after": jax.device_get(state),
                               "metrics": jax.device_get(metrics)})
            return state, metrics, next_clock_4

        return recorded


def _recorded_run(tmp_path, **overrides):
    trainer = Recorder(TrainConfig.from_flat(**dict(BASE, **overrides)), str(tmp_path / "run"))
    trainer.run()
    return trainer


def _batch_ids(rec):
    """The example ids a recorded step trained on: its slice of the epoch's order."""
    pos = int(rec["clock"]["pos"])
    return np.asarray(rec["before"]["order"][rec["stage"]][pos * B:(pos + 1) * B])


def _np_losses(params, x, y):
    """Per-example mean squared error of f(S) = softmax(S W_Q (S W_K)ᵀ) S W_V, in float64 NumPy (c = 1)."""
    wq, wk, wv = (np.asarray(params[k][0], np.float64) for k in ("w_q", "w_k", "w_v"))
    x = np.asarray(x, np.float64)
    logits = (x @ wq) @ np.swapaxes(x @ wk, 1, 2)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    err = a @ (x @ wv) - np.asarray(y, np.float64)
    return np.mean(err.reshape(len(x), -1) ** 2, axis=1)


def _jnp_weighted_loss(params, x, y, w):
    """The batch loss the step should minimise, mean_b w_b ℓ_b, written out again in jnp (for jax.grad)."""
    wq, wk, wv = params["w_q"][0], params["w_k"][0], params["w_v"][0]
    a = jax.nn.softmax((x @ wq) @ jnp.swapaxes(x @ wk, 1, 2), axis=-1)
    err = a @ (x @ wv) - y
    return jnp.mean(w * jnp.mean(err.reshape(len(x), -1) ** 2, axis=1))


_weighted_grad = jax.jit(jax.grad(_jnp_weighted_loss))


def _rel(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------- 1. loss weights reach the step

def test_infobatch_weights_reach_the_gradient_and_update_of_each_step(tmp_path):
    """Catches: the train step dropping the teacher's per-example weights (w_B = 1, or weights×0), reading
    them by position instead of by example id, or applying an update other than Adam on that gradient.

    Infobatch with prune ratio 0.5: kept below-mean examples carry weight 2 in epochs 1-2. The step's
    gradient is read back from Adam's first moment, μ' = b1 μ + (1 − b1) g, and compared with jax.grad of
    the weighted loss written out here.
    """
    trainer = _recorded_run(tmp_path, epochs=3, regime="infobatch", infobatch_prune_ratio=0.5,
                            infobatch_anneal=0.25)
    cfg, train_data = trainer.config.optim, trainer.stages[0].train
    weighted_steps = 0
    for rec in trainer.steps:
        before, after = rec["before"], rec["after"]
        ids = _batch_ids(rec)
        w_B = np.asarray(before["teacher"][0].weights_N)[ids]
        with jax.enable_x64(True):
            p64 = {k: jnp.asarray(v, jnp.float64) for k, v in before["params"].items()}
            x, y = (jnp.asarray(train_data[k][ids], jnp.float64) for k in ("x", "y"))
            g = jax.device_get(_weighted_grad(p64, x, y, jnp.asarray(w_B, jnp.float64)))
            g_unit = jax.device_get(_weighted_grad(p64, x, y, jnp.ones(B, jnp.float64)))
        adam_before, adam_after = before["opt"][0], after["opt"][0]
        t = int(adam_after.count)
        assert t == int(adam_before.count) + 1
        for k in g:
            g_step = (adam_after.mu[k] - cfg.b1 * adam_before.mu[k]) / (1.0 - cfg.b1)
            assert _rel(g_step, g[k]) < 1e-4, (k, w_B)
            if not np.all(w_B == 1.0):
                # Not vacuous: the unweighted gradient is far from the step's.
                assert _rel(g_unit[k], g[k]) > 1e-2, k
            # The AdamW update itself, by hand: θ' = θ − lr (m̂ / (√v̂ + ε) + λ θ).
            mu = cfg.b1 * adam_before.mu[k] + (1 - cfg.b1) * g[k]
            nu = cfg.b2 * adam_before.nu[k] + (1 - cfg.b2) * g[k] ** 2
            u = (mu / (1 - cfg.b1 ** t)) / (np.sqrt(nu / (1 - cfg.b2 ** t)) + cfg.eps)
            step = -float(rec["metrics"]["lr"]) * (u + cfg.weight_decay * before["params"][k])
            assert _rel(after["params"][k] - before["params"][k], step) < 1e-3, k
        weighted_steps += int(not np.all(w_B == 1.0))
    assert weighted_steps >= 4   # epochs 1 and 2 pruned and up-weighted


def test_class_weight_selection_reaches_a_real_run(tmp_path, monkeypatch):
    """Catches: the class_weight baseline's class weights (1 / class frequency) not reaching the run's
    selection (labels not handed to the teacher, or its log-weights dropped from the plan: a uniform draw).

    mnist1d, 100 training examples, 75 of them relabelled class 0: a class-balanced draw of 25 takes
    mostly the ~25 minority examples (each class's examples weigh 1 / its count); a uniform draw would
    take ≈ 19.5 ± 1.8 of class 0.
    """
    real = train.load_dataset

    def skewed(config):
        ds = real(config)
        ds.y_train[:75] = 0
        ds.labels_train[:75] = 0   # the same array in mnist1d; kept explicit
        return ds

    monkeypatch.setattr(train, "load_dataset", skewed)
    trainer = _recorded_run(tmp_path, task="mnist1d", num_train=100, num_test=20, epochs=2, batch_size=25,
                            regime="finetune", selection="class_weight", ratio=0.25)
    first = next(r for r in trainer.steps if int(r["clock"]["epoch"]) == 1)
    selected_N = np.asarray(first["before"]["teacher"][0].selected_N)
    labels = np.asarray(trainer.dataset.labels_train)
    assert selected_N.sum() == 25 and np.sum(labels == 0) >= 75
    assert np.sum(labels[selected_N] == 0) < 12
    # The epoch trains on exactly that subset.
    assert set(np.asarray(first["before"]["order"][0])[:25].tolist()) == set(np.flatnonzero(selected_N).tolist())


# ---------------------------------------------------------------------------- 4. the score table

def test_each_step_reads_the_host_clock_advanced_on_device(tmp_path):
    """Catches the device-carried clock drifting from the host's: not advancing (every step the same
    batch and learning rate), advancing epoch or steps_in_epoch, or not restarting at an epoch's start
    (copied once per epoch). Scratch, 3 epochs of different sizes: pos runs 0..S-1 in each epoch,
    stage_step counts every step, steps_in_epoch is the epoch's own step count."""
    trainer = _recorded_run(tmp_path, epochs=3, selection="soft", regime="scratch", ratio_start=0.5)
    clocks = [tuple(int(r["clock"][k]) for k in train.STEP_CLOCK) for r in trainer.steps]
    expected, step = [], 0
    for epoch in range(3):
        steps = sum(int(r["clock"]["epoch"]) == epoch for r in trainer.steps)
        assert steps >= 2
        expected += [(pos, step + pos, epoch, steps) for pos in range(steps)]
        step += steps
    assert clocks == expected


def test_steps_refresh_the_score_table_and_finetune_keeps_epoch_0s_top_losses(tmp_path):
    """Catches: a train step not writing its batch's per-example losses into the teacher's score table
    (or writing weighted / batch-mean / post-update losses, or into the wrong rows), and finetune's
    subset not being the top round(r·N) of the losses recorded while training epoch 0.

    Finetune, hard, r = 0.5, 3 epochs: epoch 0 on all 64 (each example once), epochs 1-2 on 32.
    """
    # A high learning rate, no warm-up: epoch 0 moves the params enough that its recorded losses rank
    # differently from the losses at its end (the last check), so the two cannot be confused.
    trainer = _recorded_run(tmp_path, epochs=3, regime="finetune", selection="hard", ratio=0.5,
                            learning_rate=0.03, warmup_ratio=0.0)
    train_data = trainer.stages[0].train
    recorded_N = np.full(64, np.nan)
    for rec in trainer.steps:
        before, after = rec["before"]["teacher"][0], rec["after"]["teacher"][0]
        ids = _batch_ids(rec)
        losses = _np_losses(rec["before"]["params"], train_data["x"][ids], train_data["y"][ids])
        np.testing.assert_allclose(after.scores_N[ids], losses, rtol=1e-4)
        np.testing.assert_allclose(float(rec["metrics"]["loss"]), losses.mean(), rtol=1e-4)
        rest = np.setdiff1d(np.arange(64), ids)
        np.testing.assert_array_equal(after.scores_N[rest], before.scores_N[rest])
        assert after.seen_N[ids].all()
        if int(rec["clock"]["epoch"]) == 0:
            recorded_N[ids] = losses
    assert not np.isnan(recorded_N).any()   # epoch 0 trained every example
    top = set(np.argsort(-recorded_N)[:32].tolist())
    for epoch in (1, 2):
        recs = [r for r in trainer.steps if int(r["clock"]["epoch"]) == epoch]
        assert len(recs) == 4
        trained = set(np.concatenate([_batch_ids(r) for r in recs]).tolist())
        assert trained == top, epoch
    # Not vacuous: the top half by the final epoch-0 params is another set.
    last0 = [r for r in trainer.steps if int(r["clock"]["epoch"]) == 0][-1]["after"]["params"]
    assert set(np.argsort(-_np_losses(last0, train_data["x"], train_data["y"]))[:32].tolist()) != top


# ---------------------------------------------------------------------------- 2. bitwise resume

class _Stop(Exception):
    pass


# Regimes that carry teacher state from one epoch to the next (every_epoch re-scores and rebuilds it).
RESUME = {
    # full, select, reuse, select (scored): 8 + 3·4 = 20 steps.
    "scratch": dict(epochs=4, regime="scratch", selection="soft", ratio=0.5, interval=2),
    # full, select, reuse, reuse: 20 steps.
    "finetune": dict(epochs=4, regime="finetune", selection="hard", ratio=0.5),
    # full, infobatch, infobatch, full (weights 2 on kept below-mean examples).
    "infobatch": dict(epochs=4, regime="infobatch", infobatch_prune_ratio=0.5, infobatch_anneal=0.25),
}


def _params(trainer):
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(jax.device_get(trainer.final_state["params"]))}


def _train_losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [(r["step"], r["train_loss"]) for r in map(json.loads, f) if r["event"] == "train"]


def _newest_checkpoint(workdir):
    return max(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


@pytest.mark.parametrize("regime", list(RESUME))
def test_resume_is_bitwise_in_regimes_that_carry_teacher_state(tmp_path, regime):
    """Catches: the teacher state (score table, selection, weights) lost, re-initialised or mixed up on
    resume, which every_epoch's full re-scoring would hide.

    The run is stopped twice: after step 9, so it resumes from the end of epoch 0 (checkpoint 8) and plans
    epoch 1 from the restored score table; then after step 11, so it resumes mid-epoch 1 (checkpoint 10)
    with the restored weights and selection, which the next epochs reuse (scratch, finetune) or prune
    from (infobatch). Final params, every logged training loss and the final evaluation must be bitwise
    those of an uninterrupted run.
    """
    config = TrainConfig.from_flat(**dict(BASE, checkpoint_every=5, **RESUME[regime]))
    reference = Trainer(config, str(tmp_path / "reference"))
    expected = reference.run()

    workdir = str(tmp_path / "stopped")
    for stop_at, resumes_from in ((9, 8), (11, 10)):
        def on_step(step, stop_at=stop_at):
            if step == stop_at:
                raise _Stop
        with pytest.raises(_Stop):
            Trainer(config, workdir).run(on_step=on_step)
        assert _newest_checkpoint(workdir) == resumes_from
    resumed = Trainer(config, workdir)
    result = resumed.run()

    assert result["step"] == expected["step"] and result["eval_loss"] == expected["eval_loss"]
    ours, theirs = _params(resumed), _params(reference)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)
    assert _train_losses(workdir) == _train_losses(reference.workdir)
    final_teacher = jax.device_get(resumed.final_state["teacher"][0])
    reference_teacher = jax.device_get(reference.final_state["teacher"][0])
    for name in ("scores_N", "selected_N", "weights_N"):
        np.testing.assert_array_equal(getattr(final_teacher, name), getattr(reference_teacher, name), err_msg=name)
