"""The scoring pass at a chosen precision (attent_jax.training.score_precision, SelectionConfig.score_dtype)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attent_jax.models import make_model
from attent_jax.models.encoder import EncoderConfig, classification_losses
from attent_jax.training import score_precision as scoring
from attent_jax.training.config import SelectionConfig, TrainConfig
from attent_jax.training.loop import Trainer
from attent_jax.training.scoring import make_score


def _encoder():
    model = make_model("encoder", EncoderConfig(input_shape=(40,), width=32, depth=1, num_heads=2), nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    return (lambda p, x: nnx.merge(graphdef, p)(x)), nnx.to_pure_dict(params)


def test_bfloat16_scores_are_close_to_float32_but_not_equal():
    """Catches a bf16 option that does nothing (scores equal), that casts the losses themselves to bf16
    (float32 out but 8-bit-mantissa values: most scores tied), or that breaks them (far off)."""
    apply, params = _encoder()
    x = jax.random.normal(jax.random.key(1), (64, 40))
    y = jnp.arange(64, dtype=jnp.int32) % 10
    ref = classification_losses(scoring.scoring_apply(apply, "float32")(params, x), y)
    low_logits = scoring.scoring_apply(apply, "bfloat16")(params, x)
    low = classification_losses(low_logits, y)
    assert low_logits.dtype == jnp.float32 and low.dtype == jnp.float32
    assert not np.array_equal(np.asarray(ref), np.asarray(low))
    np.testing.assert_allclose(low, ref, atol=0.05 * float(jnp.max(jnp.abs(ref))))
    # The ranking the teacher reads barely moves, and the scores are not collapsed onto bf16's grid.
    assert np.corrcoef(np.asarray(ref), np.asarray(low))[0, 1] > 0.99
    assert len(np.unique(np.asarray(low))) > len(np.unique(np.asarray(low.astype(jnp.bfloat16))))


def test_float32_is_the_forward_itself_and_integers_are_never_cast():
    apply, _ = _encoder()
    assert scoring.scoring_apply(apply, "float32") is apply
    seen = {}

    def spy(params, x):
        seen.update(params=params["w"].dtype, tokens=x["tokens"].dtype, signal=x["signal"].dtype)
        return x["signal"] @ params["w"]

    out = scoring.scoring_apply(spy, "bfloat16")({"w": jnp.ones((3, 2))},
                                                 {"tokens": jnp.ones((1, 3), jnp.int32), "signal": jnp.ones((1, 3))})
    assert seen == {"params": jnp.bfloat16, "tokens": jnp.int32, "signal": jnp.bfloat16}
    assert out.dtype == jnp.float32


@pytest.mark.parametrize("bad", ["float16", "bf16", ""])
def test_bad_score_dtype_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match=f"score_dtype: got {bad!r}, expected one of") as err:
        SelectionConfig(score_dtype=bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="score_dtype: got"):
        scoring.scoring_apply(lambda p, x: x, bad)


def test_trainer_scoring_pass_runs_at_the_configured_precision(tmp_path):
    """Catches the Trainer ignoring score_dtype (bf16 pass equal to the f32 one) or applying it wrongly
    (its table far from the f32 pass's): the same state scored by both passes."""
    tables = {}
    for dtype in ("float32", "bfloat16"):
        cfg = TrainConfig.from_flat(task="mnist1d", quick=True, num_train=96, num_test=32, epochs=1, batch_size=32,
                                    eval_batch_size=64, progress_bar=False, score_dtype=dtype)
        trainer = Trainer(cfg, str(tmp_path / dtype))
        stage = trainer.stages[-1]
        data = {k: trainer._put(v) for k, v in stage.train.items()}
        state = make_score(trainer, len(trainer.stages) - 1)(trainer.init_state(), data)
        tables[dtype] = np.asarray(jax.device_get(state["teacher"][-1].scores_N))
    ref, low = tables["float32"], tables["bfloat16"]
    assert np.all(np.isfinite(ref)) and np.all(np.isfinite(low))
    assert not np.array_equal(ref, low)
    np.testing.assert_allclose(low, ref, atol=0.05 * np.max(np.abs(ref)))
