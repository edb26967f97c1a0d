"""`attent_jax.fit` and `attent train --model package.module:factory`: a user's model, loss and data in the loop.

Tiny sizes: a linear model on 64-128 examples, 2-3 epochs.
"""

import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import attent_jax as aj
from attent_jax.cli import main as cli


class Linear(nnx.Module):
    def __init__(self, rngs, d_in=4, d_out=1):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (d_in, d_out)) * 0.1)

    def __call__(self, x):
        return x @ self.w[...]


def mse(out, batch):
    return jnp.mean((out - batch["y"]) ** 2, axis=-1)


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return {"x": x, "y": (x @ np.arange(1.0, 5.0, dtype=np.float32))[:, None]}


def _config(**fields):
    base = dict(epochs=2, batch_size=16, selection="hard", regime="every_epoch", ratio=0.5,
                progress_bar=False, log_every=1)
    return aj.TrainConfig.from_flat(**{**base, **fields})


class ListSource:
    """A random-access source: __len__ and __getitem__(i) -> dict of arrays."""

    def __init__(self, data, bad_index=None, bad_shape=None):
        self.data, self.bad_index, self.bad_shape = data, bad_index, bad_shape

    def __len__(self):
        return len(self.data["x"])

    def __getitem__(self, i):
        if i >= len(self):
            raise IndexError(i)
        item = {k: v[i] for k, v in self.data.items()}
        if i == self.bad_index:
            item["x"] = np.zeros(self.bad_shape, np.float32)
        return item


# ------------------------------------------------------------------ bad input: one line, before anything is written

@pytest.mark.parametrize("loss, source, eval_source, message", [
    # a loss that averages over the batch: the teacher would have nothing to rank
    (lambda out, b: jnp.mean(mse(out, b)), _data(), None, "per_example_loss: returned shape (), expected (16,)"),
    # arrays of different lengths: examples would be mispaired
    (mse, {"x": _data()["x"], "y": _data()["y"][:10]}, None, "expected arrays of one length"),
    # one element of a sequence source with another shape
    (mse, ListSource(_data(), bad_index=5, bad_shape=(3,)), None, "train_source[5]['x']: got float32 (3,), expected float32 (4,)"),
    # held-out examples shaped unlike the training ones
    (mse, _data(), {"x": np.zeros((8, 3), np.float32), "y": np.zeros((8, 1), np.float32)}, "eval_source['x']: got examples of shape (3,), expected (4,)"),
    # more batch than examples: no step could run
    (mse, _data(n=8), None, "batch_size: got 16, expected at most the 8 examples"),
    # no model input
    (mse, {"y": _data()["y"]}, None, "expected an 'x'"),
])
def test_bad_input_is_one_line_error_before_writing(tmp_path, loss, source, eval_source, message):
    """Catches a check that is missing, multi-line, or runs after the run folder was written."""
    workdir = tmp_path / "run"
    with pytest.raises(ValueError) as err:
        aj.fit(Linear(nnx.Rngs(0)), loss, source, _config(), eval_source=eval_source, workdir=str(workdir))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not workdir.exists()


def test_eval_fn_must_be_per_example(tmp_path):
    """Catches an eval_fn returning a batch mean (it would be averaged again, silently wrong)."""
    with pytest.raises(ValueError, match=r"eval_fn: returned shape \(\), expected \(16,\)"):
        aj.fit(Linear(nnx.Rngs(0)), mse, _data(), _config(), eval_fn=lambda out, b: jnp.mean(out),
               workdir=str(tmp_path / "run"))


def test_model_with_non_param_state_is_refused(tmp_path):
    """Catches a model whose batch statistics would silently reset every step (only Params are carried)."""
    class WithStats(Linear):
        def __init__(self, rngs):
            super().__init__(rngs)
            self.count = nnx.BatchStat(jnp.zeros(()))

    with pytest.raises(ValueError, match="non-Param state"):
        aj.fit(WithStats(nnx.Rngs(0)), mse, _data(), _config(), workdir=str(tmp_path / "run"))


# ------------------------------------------------------------------ it trains, selects and resumes

def test_sequence_source_equals_dict_source(tmp_path):
    """A __getitem__ source and the same dict of arrays train identically (catches mis-stacked examples)."""
    data = _data()
    a, b = Linear(nnx.Rngs(0)), Linear(nnx.Rngs(0))
    ra = aj.fit(a, mse, data, _config(), workdir=str(tmp_path / "a"))
    rb = aj.fit(b, mse, ListSource(data), _config(), workdir=str(tmp_path / "b"))
    assert ra["eval_loss"] == rb["eval_loss"]
    np.testing.assert_array_equal(a.w[...], b.w[...])


def test_teacher_selects_by_the_users_loss(tmp_path):
    """Hard selection trains on the examples the user's loss ranks highest.

    Half the examples get targets 10x larger; with a learning rate too small to
    change the model, epoch 2's training loss is the selected half's. Catches a
    teacher fed something other than the user's per-example losses (random
    selection, the control, stays near the all-data mean).
    """
    data = _data(n=64)
    data["y"][::2] *= 10.0
    losses = {}
    for selection in ("hard", "random"):
        workdir = tmp_path / selection
        model = Linear(nnx.Rngs(0))
        all_mean = float(jnp.mean(mse(model(data["x"]), data)))
        result = aj.fit(model, mse, data, _config(selection=selection, learning_rate=1e-9), workdir=str(workdir))
        assert result["examples_seen"] == 64 + 32  # epoch 1: all data; epoch 2: half
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        second = [r["train_loss"] for r in records if r["event"] == "train" and r["epoch"] == 1]
        losses[selection] = float(np.mean(second)) / all_mean
    assert losses["hard"] > 1.5            # the hard half: ~2x the mean (100x-target examples dominate)
    assert 0.3 < losses["random"] < 1.5    # the control: a random half, near the mean


def test_resume_after_interruption_is_bitwise(tmp_path):
    """Stopped mid-run and started again in the same folder, fit ends where an uninterrupted run does.

    Catches a resume that restarts from scratch (different optimizer/teacher state) or ignores the checkpoint.
    """
    data, config = _data(n=128), _config(epochs=3, checkpoint_every=2)
    whole = Linear(nnx.Rngs(0))
    r_whole = aj.fit(whole, mse, data, config, workdir=str(tmp_path / "whole"))

    class Stop(Exception):
        pass

    def stop(step):
        if step == 5:
            raise Stop

    with pytest.raises(Stop):
        aj.fit(Linear(nnx.Rngs(0)), mse, data, config, workdir=str(tmp_path / "cut"), on_step=stop)
    resumed = Linear(nnx.Rngs(0))
    r_resumed = aj.fit(resumed, mse, data, config, workdir=str(tmp_path / "cut"))
    assert r_resumed["step"] == r_whole["step"] and r_resumed["examples_seen"] == r_whole["examples_seen"]
    np.testing.assert_array_equal(resumed.w[...], whole.w[...])
    assert not np.array_equal(resumed.w[...], Linear(nnx.Rngs(0)).w[...])  # and it did train


# ------------------------------------------------------------------ a run folder holds one run's data, model and loss

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished fit of `_data()` (its folder holds fingerprint.json) and the trained weights."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    model = Linear(nnx.Rngs(0))
    result = aj.fit(model, mse, _data(), _config(), workdir=str(workdir))
    return {"workdir": workdir, "w": np.asarray(model.w[...]), "result": result}


def _snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def mae(out, batch):
    return jnp.mean(jnp.abs(out - batch["y"]), axis=-1)


def _other_values():
    data = _data(seed=1)
    data["y"] = -10 * data["y"]
    return data


@pytest.mark.parametrize("model, loss, source, eval_source, message", [
    # the reviewer's case: same shapes and config, other values (A's checkpoint came back as B's model)
    (Linear, mse, _other_values(), None, "train_source['sampled_rows_sha256']: got '"),
    (Linear, mse, ListSource(_other_values()), None, "train_source['sampled_rows_sha256']: got '"),
    (Linear, mse, _data(n=80), None, "train_source['length']: got 80, "),
    (lambda rngs: Linear(rngs, d_out=2), mse, _data(), None, "model[\"['w']\"]: got 'float32[4, 2]', "),
    (Linear, mae, _data(), None, "per_example_loss: got '"),
    (Linear, mse, _data(), _data(seed=2), "eval_source: got {"),
])
def test_other_run_in_the_folder_is_refused_untouched(finished, tmp_path, model, loss, source, eval_source, message):
    """Catches a folder of another run (data, model shape, loss, eval data) that fit resumes: it restored that
    run's final checkpoint, trained nothing and returned its parameters as this run's model; and a refusal that
    comes after the folder was written to."""
    workdir = tmp_path / "run"
    shutil.copytree(finished["workdir"], workdir)
    before = _snapshot(workdir)
    with pytest.raises(ValueError) as err:
        aj.fit(model(nnx.Rngs(0)), loss, source, _config(), eval_source=eval_source, workdir=str(workdir))
    assert message in str(err.value) and str(workdir) in str(err.value) and "\n" not in str(err.value)
    assert _snapshot(workdir) == before


def test_same_data_resumes_and_an_old_folder_is_left_as_it_was(finished, tmp_path):
    """The same examples (here as a record source) resume the finished run: its weights, its fingerprint.json
    unchanged. Catches a fingerprint stricter than the data (e.g. of the model's values, which a resume
    replaces), and one added to a folder written before fingerprints (it would record data this session
    cannot know the checkpoints were trained on)."""
    workdir = tmp_path / "run"
    shutil.copytree(finished["workdir"], workdir)
    saved = (workdir / "fingerprint.json").read_bytes()
    model = Linear(nnx.Rngs(7))
    result = aj.fit(model, mse, ListSource(_data()), _config(), workdir=str(workdir))
    assert result["step"] == finished["result"]["step"]
    np.testing.assert_array_equal(model.w[...], finished["w"])
    assert (workdir / "fingerprint.json").read_bytes() == saved
    (workdir / "fingerprint.json").unlink()
    aj.fit(Linear(nnx.Rngs(0)), mse, _data(), _config(), workdir=str(workdir))
    assert not (workdir / "fingerprint.json").exists()


# ------------------------------------------------------------------ attent train --model package.module:factory

FACTORY_MODULE = '''
from flax import nnx

class Attn(nnx.Module):
    def __init__(self, spec):
        d_in, d_out = spec["input_shape"][-1], spec["output_shape"][-1]
        self.lin = nnx.Linear(d_in, d_out, rngs=spec["rngs"])
    def __call__(self, x):
        return self.lin(x)

def make(spec):
    assert spec["task"] == "teach" and spec["kind"] == "regression"
    return Attn(spec)

def not_a_module(spec):
    return 3
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "h11_user_models.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "h11_user_models"
    sys.modules.pop("h11_user_models", None)


def test_cli_model_factory_trains(tmp_path, factory_module, capsys):
    """A factory by import path trains the teach task (catches a --model that is ignored or rejected)."""
    workdir = tmp_path / "run"
    code = cli.main(["train", "--task", "teach", "--quick", "--epochs", "2", "--batch-size", "16",
                     "--model", f"{factory_module}:make", "--no-progress-bar", "--workdir", str(workdir)])
    assert code == 0
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["model"] == f"{factory_module}:make"
    params = aj.restore_params(str(workdir))
    assert set(params) == {"lin"}  # the user's module was trained, not the task's attention learner


@pytest.mark.parametrize("path, message", [
    ("no_such_pkg_h11.models:make", "module 'no_such_pkg_h11.models' does not import"),
    ("{mod}:missing", "to define a callable 'missing'"),
    ("{mod}:not_a_module", "returned int, expected an nnx.Module"),
    ("not a path", "or an import path package.module:factory"),
])
def test_cli_bad_model_path_exits_2(tmp_path, factory_module, capsys, path, message):
    """Catches a bad --model that crashes with a traceback, or runs something else, instead of exit 2."""
    workdir = tmp_path / "run"
    code = cli.main(["train", "--task", "teach", "--quick", "--epochs", "1", "--model",
                     path.format(mod=factory_module), "--workdir", str(workdir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err
    assert not workdir.exists()


def test_losses_that_share_a_name_have_different_identities():
    """Catches a fingerprint that names a loss only by module.qualname: every lambda is ``<lambda>`` and every
    functools.partial ``functools.partial``, so fit would resume a run of another such loss."""
    import functools

    from attent_jax.training.workdir import loss_identity

    def scaled(out, batch, scale):
        return scale * mse(out, batch)

    first, second = (lambda out, b: mse(out, b)), (lambda out, b: 2.0 * mse(out, b))
    assert loss_identity(first) != loss_identity(second)
    assert loss_identity(functools.partial(scaled, scale=1.0)) != loss_identity(functools.partial(scaled, scale=2.0))
    assert loss_identity(functools.partial(scaled, scale=1.0)) == loss_identity(functools.partial(scaled, scale=1.0))
    assert loss_identity(mse) == f"{mse.__module__}.mse"   # a named function keeps its plain name
    # The same loss in another process: nothing that depends on memory addresses (a closure over a function,
    # a nested lambda's code object) enters its identity.
    script = ("from attent_jax.training.workdir import loss_identity\n"
              "def make(f):\n    return lambda out, b: (lambda v: v)(f(out, b))\n"
              "def base(out, b):\n    return out\n"
              "print(loss_identity(make(base)))\n")
    runs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(runs) == 1 and "#" in runs.pop()
