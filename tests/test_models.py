"""Tests for attent_jax.models (encoder, decoder, layers, make_model): shapes, causality, per-example losses, decoding."""

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attent_jax.learner.model import AttentionLearner, LearnerConfig
from attent_jax.models import make_model, model_names
from attent_jax.models.decoder import (CausalDecoder, DecoderConfig, greedy_decode, lm_accuracy, lm_all_correct,
                                       lm_losses)
from attent_jax.models.mae import MaskedAutoencoder
from attent_jax.models.encoder import EncoderClassifier, EncoderConfig, classification_correct, classification_losses

# One tiny width for every model here: parameter shapes repeat across tests, so JAX's
# per-shape compilations of initializers and ops are shared and the file stays fast.
TINY = dict(width=8, num_heads=2, mlp_ratio=2)
SMALL_DEC = DecoderConfig(vocab_size=11, context=8, depth=2, **TINY)


@nnx.jit
def _forward(model, x):
    # One compilation per model/input shape; eager calls would compile every op separately.
    return model(x)


@pytest.mark.parametrize("input_shape,spatial_dims,pool", [
    ((40,), 1, "cls"), ((40, 2), 1, "mean"), ((8, 12, 3), 2, "cls")])
def test_encoder_shapes(input_shape, spatial_dims, pool):
    cfg = EncoderConfig(input_shape=input_shape, spatial_dims=spatial_dims, patch_size=4, depth=1,
                        num_classes=7, pool=pool, **TINY)
    model = EncoderClassifier(cfg, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (3,) + input_shape)
    logits = _forward(model, x)
    assert logits.shape == (3, 7)
    assert bool(jnp.all(jnp.isfinite(logits)))
    # Each example is processed alone: the rest of its batch (or shard) cannot change its logits.
    other = _forward(model, x.at[1:].multiply(-2.0))
    np.testing.assert_allclose(other[0], logits[0], rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(other[1:] - logits[1:]).max()) > 1e-4


def test_encoder_default_is_mnist1d_sized():
    # Shapes only (nnx.eval_shape): building the default-width model for real costs compile time.
    model = nnx.eval_shape(lambda: make_model("encoder", None, nnx.Rngs(0)))
    assert model.config.input_shape == (40,) and model.config.num_classes == 10
    assert model.config.num_patches == 10 and model.patch_embed.kernel.shape == (4, 64)


def test_encoder_2d_patches_are_square_blocks():
    # With one channel and P = 2, the 2-D patchify must group each 2×2 block, not rows of the image.
    cfg = EncoderConfig(input_shape=(4, 4), spatial_dims=2, patch_size=2, depth=1, **TINY)
    model = nnx.eval_shape(lambda: EncoderClassifier(cfg, rngs=nnx.Rngs(0)))  # patchify needs no weights
    x = jnp.arange(16.0).reshape(1, 4, 4)
    patches = model.patchify(x)
    assert patches.shape == (1, 4, 4)
    np.testing.assert_array_equal(patches[0, 0], [0, 1, 4, 5])
    np.testing.assert_array_equal(patches[0, 3], [10, 11, 14, 15])


def test_encoder_rejects_bad_inputs_and_configs():
    model = nnx.eval_shape(lambda: make_model("encoder", EncoderConfig(depth=1, **TINY), nnx.Rngs(0)))
    with pytest.raises(ValueError, match="x: got shape"):
        model(jnp.zeros((2, 41)))
    with pytest.raises(ValueError, match="patch_size"):
        EncoderConfig(input_shape=(40,), patch_size=3)
    with pytest.raises(ValueError, match="num_heads"):
        EncoderConfig(width=64, num_heads=5)
    with pytest.raises(ValueError, match="pool"):
        EncoderConfig(pool="max")


@pytest.fixture(scope="module")
def decoder():
    return CausalDecoder(SMALL_DEC, rngs=nnx.Rngs(0))


def test_decoder_shapes_and_checks(decoder):
    tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, 11)
    assert _forward(decoder, tokens).shape == (2, 8, 11)
    assert decoder.head is None  # tied: logits = h Eᵀ
    with pytest.raises(ValueError, match="context"):
        decoder(jnp.zeros((1, 9), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        decoder(jnp.zeros((1, 4)))


def test_untied_decoder_has_its_own_head():
    model = CausalDecoder(dataclasses.replace(SMALL_DEC, tie_embeddings=False), rngs=nnx.Rngs(0))
    assert model.head.kernel.shape == (8, 11)
    assert _forward(model, jnp.zeros((2, 8), jnp.int32)).shape == (2, 8, 11)


def test_decoder_is_causal(decoder):
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 11)
    k = 5
    changed = tokens.at[:, k].set((tokens[:, k] + 1) % 11)
    before, after = _forward(decoder, tokens), _forward(decoder, changed)
    np.testing.assert_array_equal(before[:, :k], after[:, :k])
    # ...and the change does reach position k and later, so the test could fail.
    assert float(jnp.abs(before[:, k:] - after[:, k:]).max()) > 1e-4


def test_make_model_registry():
    with pytest.raises(ValueError, match="'nope'"):
        make_model("nope", None, nnx.Rngs(0))
    with pytest.raises(ValueError, match="DecoderConfig"):
        make_model("decoder", EncoderConfig(), nnx.Rngs(0))
    # Each name builds its own class from its own config (a swapped table entry would break this).
    configs = {"attention": LearnerConfig(d_in=4, d_qk=8), "decoder": None, "encoder": None,
               "mae": None}   # None: the default
    built = {name: nnx.eval_shape(lambda name=name: make_model(name, configs[name], nnx.Rngs(0)))
             for name in model_names()}
    assert {name: type(m) for name, m in built.items()} == {
        "attention": AttentionLearner, "decoder": CausalDecoder, "encoder": EncoderClassifier,
        "mae": MaskedAutoencoder}
    assert isinstance(built["attention"].config, LearnerConfig)


def test_classification_losses_match_manual():
    logits = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 1, 2], np.int32)
    losses = classification_losses(logits, labels)
    assert losses.shape == (5,)
    manual = -np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))[np.arange(5), labels]
    np.testing.assert_allclose(losses, manual, rtol=1e-5)
    np.testing.assert_array_equal(classification_correct(logits, labels), np.argmax(logits, -1) == labels)
    with pytest.raises(ValueError, match="labels_B"):
        classification_losses(logits, labels[:3])


def test_lm_losses_match_manual_and_respect_mask():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 4, 6)).astype(np.float32)
    targets = rng.integers(0, 6, (3, 4)).astype(np.int32)
    mask = np.array([[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]], np.float32)
    losses = lm_losses(logits, targets, mask)
    assert losses.shape == (3,)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(losses[0], ce[0].mean(), rtol=1e-5)
    np.testing.assert_allclose(losses[1], (ce[1, 1] + ce[1, 3]) / 2, rtol=1e-5)
    assert float(losses[2]) == 0.0
    # Logits at masked-out positions must not matter.
    noisy = logits.copy()
    noisy[1, 0] += 5.0
    noisy[1, 2] -= 3.0
    np.testing.assert_allclose(lm_losses(noisy, targets, mask), losses, rtol=1e-6)
    np.testing.assert_allclose(lm_losses(logits, targets), ce.mean(1), rtol=1e-5)
    with pytest.raises(ValueError, match="mask_BxT"):
        lm_losses(logits, targets, mask[:, :3])


def test_lm_accuracy_helpers():
    targets = jnp.array([[1, 2, 0], [2, 2, 2]])
    logits = jax.nn.one_hot(jnp.array([[1, 2, 1], [2, 0, 2]]), 3)
    mask = jnp.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(lm_accuracy(logits, targets, mask), [1.0, 2 / 3])
    np.testing.assert_array_equal(lm_all_correct(logits, targets, mask), [True, False])
    np.testing.assert_array_equal(lm_all_correct(logits, targets), [False, False])


def test_greedy_decode_fills_after_prompt_consistently(decoder):
    model = decoder
    prompts = jax.random.randint(jax.random.key(2), (2, 8), 0, 11)
    lens = jnp.array([1, 6])
    out = np.asarray(greedy_decode(model, prompts, lens))
    assert out.shape == (2, 8) and out.dtype == np.asarray(prompts).dtype
    pred = np.asarray(jnp.argmax(_forward(model, jnp.asarray(out)), -1))
    for b, n in enumerate(np.asarray(lens)):
        np.testing.assert_array_equal(out[b, :n], np.asarray(prompts)[b, :n])
        # Causality: each generated token is the argmax given the final prefix before it.
        np.testing.assert_array_equal(out[b, n:], pred[b, n - 1:-1])
    with pytest.raises(ValueError, match="prompt_lens_B"):
        greedy_decode(model, prompts, lens[:1])


def test_grad_through_models_is_finite():
    model = make_model("encoder", EncoderConfig(depth=1, num_classes=7, **TINY), nnx.Rngs(0))
    x, y = jax.random.normal(jax.random.key(0), (3, 40)), jnp.array([0, 1, 6])
    grads = nnx.jit(nnx.grad(lambda m: classification_losses(m(x), y).mean()))(model)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)
