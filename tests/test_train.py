"""The training loop: 1 vs 8 devices, bitwise resume after SIGKILL, damaged checkpoints, device-count change, NaN stop.

Runs use the teach task at its quick size (64 sequences) with the every_epoch
regime, so the loop exercises a full epoch, Soft selections (random draws), a
scoring pass before each later selection, mid-epoch checkpoints and epoch ends.
Runs on 8 simulated CPU devices start a subprocess, since the device count is
fixed when JAX starts.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attent_jax.training import loop as train
from attent_jax.training.checkpoint import CheckpointWarning
from attent_jax.training.loop import NonFiniteLossError, Trainer, learning_rate
from attent_jax.training.config import TrainConfig
from attent_jax.training.scoring import make_score
from attent_jax.training.user_run import restore_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# every_epoch + soft at ratio 0.5: epoch 0 = 8 steps on all 64, epochs 1-3 = 4 steps on 32 each (20 steps);
# scoring passes before epochs 2 and 3; checkpoints at 5, 10, 15 (mid-epoch) and 8, 12, 16, 20 (epoch ends).
CONFIG = dict(task="teach", quick=True, epochs=4, batch_size=8, regime="every_epoch", selection="soft", ratio=0.5,
              checkpoint_every=5, log_every=1, progress_bar=False)

# Runs configs in a fresh process; with "kill_at", SIGKILLs itself at that step once checkpoint "wait_for" exists.
DRIVER = r"""
import json, os, signal, sys, time
import numpy as np, jax
from attent_jax.training.loop import Trainer
from attent_jax.training.config import TrainConfig

for run in json.loads(sys.argv[1]):
    def on_step(step, run=run):
        if step == run.get("kill_at"):
            ckpt = os.path.join(run["workdir"], "checkpoints", str(run["wait_for"]))
            deadline = time.time() + 120
            while not os.path.isdir(ckpt) and time.time() < deadline:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGKILL)
    trainer = Trainer(TrainConfig.from_flat(**run["config"]), run["workdir"])
    trainer.run(on_step=on_step)
    params = trainer.final_state["params"]
    specs = {jax.tree_util.keystr(k): list(v.sharding.spec) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    json.dump(specs, open(os.path.join(run["workdir"], "specs.json"), "w"))
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(params))
    np.savez(os.path.join(run["workdir"], "params.npz"), **{jax.tree_util.keystr(k): v for k, v in leaves})
print("devices", jax.device_count())
"""


def _drive(runs, devices=1, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(runs)], env=env, capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _params(trainer_or_path):
    if isinstance(trainer_or_path, str):
        with np.load(trainer_or_path) as f:
            return dict(f)
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(trainer_or_path.final_state["params"]))
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def _train_losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [(r["step"], r["train_loss"]) for r in map(json.loads, f) if r["event"] == "train"]


def _rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 1-device run of CONFIG: its folder, final params, result."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    trainer = Trainer(TrainConfig.from_flat(**CONFIG), workdir)
    result = trainer.run()
    return {"workdir": workdir, "params": _params(trainer), "result": result}


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    """CONFIG run through on 8 devices (one subprocess), replicated and FSDP: folders holding params.npz."""
    base = tmp_path_factory.mktemp("eight")
    runs = {"replicated": {"config": CONFIG, "workdir": str(base / "replicated")},
            # fsdp_min_size=1: w_q and w_k (1, 3, 8) get their last axis split over the 8 devices.
            "fsdp": {"config": dict(CONFIG, fsdp=True, fsdp_min_size=1), "workdir": str(base / "fsdp")}}
    proc = _drive(list(runs.values()), devices=8)
    assert "devices 8" in proc.stdout
    return {name: run["workdir"] for name, run in runs.items()}


def test_reference_run_trains_selects_and_decays_lr(reference):
    result, workdir = reference["result"], reference["workdir"]
    assert result["step"] == 20 and result["examples_seen"] == 160
    assert result["time_scoring"] > 0  # every_epoch asked for scoring passes
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["epoch"] for r in evals] == [0, 1, 2, 3]
    assert [r["fraction_selected"] for r in evals] == [1.0, 0.5, 0.5, 0.5]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] * 1.5
    lrs = [r["lr"] for r in records if r["event"] == "train"]
    # Warm-up then cosine over the 20 planned steps: peak early, nearly 0 at the last step.
    assert max(lrs) > 0.9 * CONFIG.get("learning_rate", 1e-3) and lrs[-1] < 0.02 * max(lrs)
    assert os.path.isfile(os.path.join(workdir, "config.json"))
    assert json.load(open(os.path.join(workdir, "results.json")))["step"] == 20


@pytest.mark.parametrize("layout", ["replicated", "fsdp"])
def test_eight_devices_match_one_device(reference, eight_devices, layout):
    other = _params(os.path.join(eight_devices[layout], "params.npz"))
    specs = json.load(open(os.path.join(eight_devices[layout], "specs.json")))
    expected = [None, None, "data"] if layout == "fsdp" else []
    assert specs["['w_q']"] == specs["['w_k']"] == expected and specs["['w_v']"] == []
    assert other.keys() == reference["params"].keys()
    for key, value in reference["params"].items():
        assert _rel_err(other[key], value) <= 1e-5, key
    ours, theirs = _train_losses(reference["workdir"]), _train_losses(eight_devices[layout])
    assert [s for s, _ in ours] == [s for s, _ in theirs]
    np.testing.assert_allclose([l for _, l in theirs], [l for _, l in ours], rtol=1e-5)


def test_resume_after_sigkill_is_bitwise(reference, tmp_path):
    workdir = str(tmp_path / "killed")
    proc = _drive([{"config": CONFIG, "workdir": workdir, "kill_at": 11, "wait_for": 10}],
                  check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert steps[-1] == 10  # mid-epoch 1 (steps 9-12)
    trainer = Trainer(TrainConfig.from_flat(**CONFIG), workdir)
    result = trainer.run()
    assert result["step"] == 20
    resumed = _params(trainer)
    for key, value in reference["params"].items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
    assert _train_losses(workdir) == _train_losses(reference["workdir"])


# A failed restore can leave a tensorstore callback on Orbax's closed event loop: harmless noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_latest_checkpoint_is_skipped(reference, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(reference["workdir"], workdir)
    latest = os.path.join(workdir, "checkpoints", "20")
    data_files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(latest, "state")) for f in fs
                  if os.sep + "d" + os.sep in os.path.join(d, f)]
    assert data_files
    for path in data_files:
        with open(path, "r+b") as f:
            f.truncate(max(os.path.getsize(path) // 2, 1))
    trainer = Trainer(TrainConfig.from_flat(**CONFIG), workdir)
    with pytest.warns(CheckpointWarning, match="checkpoint 20"):
        result = trainer.run()  # falls back to 16 (end of epoch 2) and trains epoch 3 again
    assert result["step"] == 20
    for key, value in _params(trainer).items():
        np.testing.assert_array_equal(value, reference["params"][key], err_msg=key)


def test_restore_onto_other_device_count(reference, eight_devices, tmp_path):
    workdir = str(tmp_path / "from8")
    shutil.copytree(eight_devices["replicated"], workdir)
    for step in ("16", "20"):  # leave checkpoint 15, saved on 8 devices mid-epoch 3
        shutil.rmtree(os.path.join(workdir, "checkpoints", step))
    trainer = Trainer(TrainConfig.from_flat(**CONFIG), workdir)  # this process has 1 device
    assert trainer.mesh.size == 1
    result = trainer.run()
    assert result["step"] == 20
    for key, value in _params(trainer).items():
        assert _rel_err(value, reference["params"][key]) <= 1e-5, key


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    """Catches a NaN step saved as a checkpoint (a resume would restart from it), the last good checkpoint
    lost or overwritten, and a NaN found only at a later flush (log_every=50: the checkpoint's flush must see it).

    Two steps train on clean data (checkpoints 1 and 2), then the run resumes on data that is all NaN: its
    first step (3) is bad whatever the epoch's order, so checkpoint 2 is the last good one."""
    class Stop(Exception):
        pass

    def stop(step):
        if step == 2:
            raise Stop

    workdir = str(tmp_path / "nan")
    config = TrainConfig.from_flat(**dict(CONFIG, checkpoint_every=1, log_every=50))
    with pytest.raises(Stop):
        Trainer(config, workdir).run(on_step=stop)
    good = jax.device_get(restore_params(workdir))
    real = train.load_dataset

    def poisoned(config):
        ds = real(config)
        ds.x_train[:] = np.nan
        return ds

    monkeypatch.setattr(train, "load_dataset", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"at step 3, .* the last good checkpoint is step 2 in "):
        Trainer(config, workdir).run()
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert steps[-1] == 2
    params = jax.device_get(restore_params(workdir))
    for leaf, before in zip(jax.tree.leaves(params), jax.tree.leaves(good)):
        assert np.all(np.isfinite(leaf))
        np.testing.assert_array_equal(leaf, before)


def test_finished_run_started_again_keeps_its_results(reference, tmp_path):
    """Catches a finished run's results.json rewritten by a session that trained nothing: examples_per_s
    became null (no step was timed) and wall_time grew. A finished folder without results.json (killed
    before writing it) gets one."""
    workdir = str(tmp_path / "again")
    shutil.copytree(reference["workdir"], workdir)
    path = os.path.join(workdir, "results.json")
    with open(path, "rb") as f:
        saved = f.read()
    result = Trainer(TrainConfig.from_flat(**CONFIG), workdir).run()
    with open(path, "rb") as f:
        assert f.read() == saved
    assert result == json.loads(saved)
    assert result["examples_per_s"] == reference["result"]["examples_per_s"] is not None
    os.remove(path)
    result = Trainer(TrainConfig.from_flat(**CONFIG), workdir).run()
    assert result["step"] == 20 and json.load(open(path)) == json.loads(json.dumps(result))


def test_learning_rate_warmup_cosine_and_epoch_mode():
    cfg = TrainConfig.from_flat(learning_rate=1.0, warmup_ratio=0.1, min_lr_ratio=0.1)
    clock = lambda s: {"stage_step": s, "epoch": 0, "pos": 0, "steps_in_epoch": 1}
    lrs = [float(learning_rate(cfg.optim, clock(s), 100, 1)) for s in range(100)]
    assert abs(lrs[0] - 0.05) < 1e-6 and abs(max(lrs) - 1.0) < 0.01  # step 0 at its midpoint: 0.5/10 and np.argmax(lrs) in (9, 10)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and abs(lrs[-1] - 0.1) < 1e-3
    by_epoch = TrainConfig.from_flat(learning_rate=1.0, warmup_ratio=0.0, lr_schedule_by="epochs")
    # Epochs mode: a 2-step epoch spans as much of the schedule as a 50-step one (progress by epoch share).
    short = float(learning_rate(by_epoch.optim, {"stage_step": 3, "epoch": 1, "pos": 1, "steps_in_epoch": 2}, 999, 2))
    long = float(learning_rate(by_epoch.optim, {"stage_step": 87, "epoch": 1, "pos": 37, "steps_in_epoch": 50}, 999, 2))
    assert abs(short - long) < 1e-6 and abs(short - 0.5 * (1 + np.cos(np.pi * 0.875))) < 1e-6


def test_discrepancy_scores_are_the_root_of_the_summed_squared_error():
    import jax.numpy as jnp
    from attent_jax.training.stages import example_scores

    err = jnp.array([[[1.0, 2.0], [2.0, 0.0]], [[0.0, 0.0], [3.0, 4.0]]])      # (B, n, o)
    loss_B = jnp.mean(jnp.square(err).reshape(2, -1), axis=1)                   # the loop's regression loss
    batch = {"y": jnp.zeros_like(err)}
    np.testing.assert_allclose(example_scores("discrepancy", loss_B, batch), [3.0, 5.0], rtol=1e-6)
    np.testing.assert_allclose(example_scores("loss", loss_B, batch), loss_B)


def test_a_run_can_rank_by_discrepancy(tmp_path):
    cfg = TrainConfig.from_flat(**dict(CONFIG, epochs=2, checkpoint_every=1000, score="discrepancy"))
    trainer = Trainer(cfg, str(tmp_path / "run"))
    trainer.run()
    scores = np.asarray(jax.device_get(trainer.final_state["teacher"][-1].scores_N))
    assert np.all(np.isfinite(scores)) and np.all(scores >= 0)


@pytest.mark.parametrize("rescore", ["all", "unselected"])
def test_scoring_pass_rescores_what_the_teacher_names(tmp_path, rescore):
    cfg = TrainConfig.from_flat(**dict(CONFIG, epochs=2, checkpoint_every=1000, rescore=rescore))
    trainer = Trainer(cfg, str(tmp_path / "run"))
    trainer.run()
    state = jax.tree.map(jnp.copy, trainer.final_state)       # the scoring pass donates its input
    before = jax.device_get(state["teacher"][-1])
    stage = trainer.stages[-1]
    data = {k: trainer._put(v) for k, v in stage.train.items()}
    after = jax.device_get(make_score(trainer, len(trainer.stages) - 1)(state, data)["teacher"][-1])
    loss_N, _ = train.per_example_fn(stage.kind, trainer._apply)(trainer.final_state["params"], stage.train)
    changed_N = np.ones(64, bool) if rescore == "all" else ~before.selected_N
    assert changed_N.sum() == (64 if rescore == "all" else 32)   # every_epoch at ratio 0.5 selects 32 of 64
    np.testing.assert_allclose(after.scores_N[changed_N], np.asarray(loss_N)[changed_N], rtol=1e-5)
    np.testing.assert_array_equal(after.scores_N[~changed_N], before.scores_N[~changed_N])


def test_resume_may_change_display_fields_but_not_the_numbers(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    cfg = TrainConfig.from_flat(**dict(CONFIG, epochs=2))
    (workdir / train.CONFIG_FILE).write_text(cfg.to_json())
    Trainer(TrainConfig.from_flat(**dict(CONFIG, epochs=2, progress_bar=True, log_every=7, checkpoint_every=3)), str(workdir))
    with pytest.raises(ValueError, match="learning_rate: got 0.5, but workdir"):
        Trainer(TrainConfig.from_flat(**dict(CONFIG, epochs=2, learning_rate=0.5)), str(workdir))


def test_checkpoint_epochs_saves_every_kth_epoch_end_and_the_last(tmp_path):
    """Catches checkpoint_epochs ignored (a save at every epoch end), the last epoch left unsaved (a finished
    run would resume into its last epoch), and a checkpoint_every step that ends an epoch lost (the mid-epoch
    save skips an epoch's last step because the epoch end stands in for it)."""
    # every_epoch at ratio 0.5 (CONFIG): epoch ends at steps 8, 12, 16, 20; checkpoint_every 12 is epoch 1's end.
    config = dict(CONFIG, epochs=4, checkpoint_epochs=3, checkpoint_every=12, keep_checkpoints=10)
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(TrainConfig.from_flat(**config), workdir)
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert steps == [12, 16, 20]   # step 12 (checkpoint_every), epoch 3's end (16), the last epoch's (20)
    assert TrainConfig.from_flat(task="mnist1d", quick=True).resolve().run.checkpoint_epochs == 10
    assert TrainConfig.from_flat(task="teach", quick=True).resolve().run.checkpoint_epochs == 1


def test_log_records_end_at_each_log_every_step_though_fetched_late(tmp_path):
    """The loop fetches a log_every-th step's metrics `LOG_LAG` steps later (so the device keeps busy), yet its
    record must end at that step and average exactly that period's losses. Catches the record labelled with
    the step it was fetched at, a period cut at the fetch, steps lost or counted twice at epoch ends and
    mid-epoch checkpoints (a run that logs every step gives the per-step truth), a lagged fetch that never
    happens (NaN checks would wait for the epoch's end), and an epoch's last step not waited for."""
    assert train.LOG_LAG == 3   # the steps below assume it
    # Batch 4: epochs of 16, 8, 8, 8 steps, ending at 16, 24, 32, 40; checkpoints every 7 steps.
    fields = dict(CONFIG, batch_size=4, checkpoint_every=7)
    truth = tmp_path / "every_step"
    train.train_and_evaluate(TrainConfig.from_flat(**dict(fields, log_every=1)), str(truth))
    last_logged = {}

    def on_step(step):
        with open(tmp_path / "run" / "metrics.jsonl") as f:
            steps = [r["step"] for r in map(json.loads, f) if r["event"] == "train"]
        last_logged[step] = steps[-1] if steps else None

    train.train_and_evaluate(TrainConfig.from_flat(**dict(fields, log_every=5)), str(tmp_path / "run"),
                             on_step=on_step)
    # Step 10's record is fetched at step 13, not at 10 and not only at the epoch's end (16); each epoch's
    # last step has its own record written before on_step sees it.
    assert [last_logged[s] for s in (10, 12, 13)] == [7, 7, 10]
    assert all(last_logged[s] == s for s in (16, 24, 32, 40))
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        records = [r for r in map(json.loads, f) if r["event"] == "train"]
    # Multiples of 5, epoch ends and mid-epoch checkpoints (multiples of 7), each once.
    assert [r["step"] for r in records] == [5, 7, 10, 14, 15, 16, 20, 21, 24, 25, 28, 30, 32, 35, 40]
    assert [r["examples_seen"] for r in records] == [4 * r["step"] for r in records]
    per_step = dict(_train_losses(str(truth)))
    start = 0
    for r in records:
        np.testing.assert_allclose(r["train_loss"], np.mean([per_step[s] for s in range(start + 1, r["step"] + 1)]),
                                   rtol=1e-6)
        start = r["step"]
