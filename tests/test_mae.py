"""MAE pre-training (attent_jax/models/mae.py) and its stage kind "mae" (training/stages.py, config)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attent_jax.models.encoder import EncoderConfig
from attent_jax.models.mae import (MAEConfig, MaskedAutoencoder, classifier_from_mae, mask_indices,
                                   reconstruction_losses)
from attent_jax.training.config import TrainConfig

CFG = MAEConfig(encoder=EncoderConfig(input_shape=(40,), patch_size=4, width=16, depth=1, num_heads=2, pool="mean"),
                decoder_width=8, decoder_heads=2)


def _model(cfg=CFG):
    return MaskedAutoencoder(cfg, rngs=nnx.Rngs(0))


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, params, x, ids):
    return nnx.merge(graphdef, params)((x, ids))


def _call(model, x, ids):
    """The model's (pred, target), jitted once per model shape: eager op-by-op dispatch is slow here."""
    return _apply(*nnx.split(model), x, ids)


def test_mask_reproducible_per_example_and_of_the_right_count():
    ids = jnp.array([0, 1, 2, 7, 7], jnp.int32)
    masked, visible = mask_indices(ids, 10, 8, mask_seed=3)
    assert masked.shape == (5, 8) and visible.shape == (5, 2)
    # Every example's masked and visible positions partition the patches (catches a duplicate or lost patch).
    for m, v in zip(np.asarray(masked), np.asarray(visible)):
        assert sorted(m.tolist() + v.tolist()) == list(range(10))
    # Same id, same mask, whatever its place in the batch (catches a mask drawn per batch position or per call).
    again, _ = mask_indices(jnp.array([7, 2, 0], jnp.int32), 10, 8, mask_seed=3)
    np.testing.assert_array_equal(again, np.asarray(masked)[[3, 2, 0]])
    np.testing.assert_array_equal(masked[3], masked[4])
    # Different ids and different seeds draw different masks (catches a key that ignores the id or the seed).
    assert len({tuple(m) for m in np.asarray(mask_indices(jnp.arange(20, dtype=jnp.int32), 10, 8)[0])}) > 5
    assert not np.array_equal(mask_indices(ids, 10, 8, mask_seed=4)[0], masked)


def test_score_reproducible_and_shaped_per_example():
    model = _model()
    x = jax.random.normal(jax.random.key(0), (4, 40))
    ids = jnp.arange(4, dtype=jnp.int32)
    loss_a = reconstruction_losses(*_call(model, x, ids))
    loss_b = reconstruction_losses(*_call(model, x[::-1], ids[::-1]))
    assert loss_a.shape == (4,)
    np.testing.assert_allclose(loss_a, loss_b[::-1], rtol=1e-6)   # an example's score does not depend on its batch


def test_encoder_never_sees_masked_patches_and_loss_reads_only_them():
    model = _model()
    x = jax.random.normal(jax.random.key(1), (2, 40))
    ids = jnp.array([5, 9], jnp.int32)
    masked, visible = (np.asarray(a) for a in mask_indices(ids, 10, CFG.num_masked, CFG.mask_seed))
    pred, target = _call(model, x, ids)
    # The targets are exactly the masked patches, in sorted position order (catches visible patches scored).
    patches = np.asarray(x).reshape(2, 10, 4)
    np.testing.assert_array_equal(target, patches[np.arange(2)[:, None], masked])
    # Changing a masked patch changes its target but not the prediction: nothing of it leaks into the encoder.
    x_m = np.asarray(x).copy()
    x_m[0, masked[0, 0] * 4:(masked[0, 0] + 1) * 4] += 5.0
    pred_m, target_m = _call(model, jnp.asarray(x_m), ids)
    np.testing.assert_allclose(pred_m, pred, atol=1e-6)
    assert not np.allclose(target_m, target)
    # Changing a visible patch changes the prediction (the encoder reads it) but no target.
    x_v = np.asarray(x).copy()
    x_v[0, visible[0, 0] * 4:(visible[0, 0] + 1) * 4] += 5.0
    pred_v, target_v = _call(model, jnp.asarray(x_v), ids)
    np.testing.assert_array_equal(target_v, target)
    assert not np.allclose(pred_v[0], pred[0])


def test_norm_pix_loss_normalizes_each_target_patch():
    model = _model(MAEConfig(encoder=CFG.encoder, decoder_width=8, decoder_heads=2, norm_pix_loss=True))
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(2), (2, 40))
    _, target = _call(model, x, jnp.arange(2, dtype=jnp.int32))
    np.testing.assert_allclose(np.asarray(target).mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(target).std(-1), 1.0, atol=1e-3)


def test_classifier_from_mae_keeps_the_trunk():
    model = _model()
    # Move the trunk away from any fresh init, so a copy that silently failed would differ.
    model.encoder.pos_embed[...] = model.encoder.pos_embed[...] + 1.0
    clf = classifier_from_mae(model, 10, rngs=nnx.Rngs(5))
    np.testing.assert_array_equal(clf.pos_embed[...], model.encoder.pos_embed[...])
    np.testing.assert_array_equal(clf.blocks[0].att.qkv.kernel[...], model.encoder.blocks[0].att.qkv.kernel[...])
    assert clf(jnp.zeros((3, 40))).shape == (3, 10)


@pytest.mark.parametrize("ratio", [0.0, 1.0, 0.02, 0.98, float("nan")])
def test_bad_mask_ratio_is_a_one_line_error(ratio):
    with pytest.raises(ValueError, match="mask_ratio") as err:
        MAEConfig(encoder=CFG.encoder, decoder_width=8, mask_ratio=ratio)
    assert "\n" not in str(err.value)


def test_config_checks_objective():
    with pytest.raises(ValueError, match="objective: got 'mae' for task 'teach'"):
        TrainConfig.from_flat(task="teach", objective="mae")
    with pytest.raises(ValueError, match="objective: got 'nope'"):
        TrainConfig.from_flat(objective="nope")
    with pytest.raises(ValueError, match=r"mask_ratio: got 1\.5"):
        TrainConfig.from_flat(objective="mae", mask_ratio=1.5)


def test_mae_stage_trains_through_the_loop(tmp_path):
    from attent_jax.training.loop import Trainer

    cfg = TrainConfig.from_flat(task="mnist1d", quick=True, num_train=128, num_test=64, objective="mae",
                                patch_size=2, width=16, depth=1, num_heads=2, decoder_width=8, epochs=2,
                                batch_size=16, progress_bar=False, selection="soft")
    trainer = Trainer(cfg, str(tmp_path / "run"))
    stage = trainer.stages[0]
    assert stage.kind == "mae" and not stage.has_accuracy
    np.testing.assert_array_equal(stage.train["id"], np.arange(128))
    assert stage.test["id"].min() == 128        # held-out ids never share a training example's mask key
    assert isinstance(trainer.abstract_state["params"]["decoder_embed"], dict)
    result = trainer.run()
    assert np.isfinite(result["eval_loss"]) and "eval_accuracy" not in result
    # The score table holds each trained example's reconstruction loss (the teacher ranks these).
    scores = np.asarray(jax.device_get(trainer.final_state["teacher"][0].scores_N))
    assert np.isfinite(scores[np.asarray(jax.device_get(trainer.final_state["teacher"][0].seen_N))]).all()


@pytest.mark.parametrize("args,message", [(["--mask-ratio", "1.0"], "mask_ratio: got 1.0"),
                                          (["--patch-size", "3"], "patch_size: got 3, expected a divisor")])
def test_cli_bad_mae_values_exit_2_in_one_line(args, message, tmp_path, capsys, monkeypatch):
    # Catches a traceback (or a silent clamp) instead of the one-line error, a run started regardless, and
    # the error coming only after the data was generated (the encoder's own check, at model build).
    from attent_jax.cli import main as cli
    from attent_jax.tasks import datasets

    def no_data(*a, **k):
        raise AssertionError("data generated before the config was checked")
    monkeypatch.setattr(datasets, "make_mnist1d", no_data)
    code = cli.main(["train", "--task", "mnist1d", "--objective", "mae", "--num-train", "64", "--num-test", "32",
                     "--epochs", "1", "--workdir", str(tmp_path / "run")] + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "checkpoints").exists()
