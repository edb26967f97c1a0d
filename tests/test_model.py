"""The learner: shapes, variants, the NNX and pure views agree, bad input is named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attent_jax.learner.model import AttentionLearner, LearnerConfig, check_inputs, functional, learner_fn


def _x(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def test_paper_form_matches_hand_computation():
    cfg = LearnerConfig(d_in=3, d_qk=5, d_out=2)
    model = AttentionLearner(cfg, rngs=nnx.Rngs(1))
    f, p = functional(model)
    s = np.asarray(_x((1, 4, 3)))[0]
    wq, wk, wv = (np.asarray(p[k][0]) for k in ("w_q", "w_k", "w_v"))
    logits = s @ wq @ (s @ wk).T  # c = 1: the paper's eq. 2 exactly
    a = np.exp(logits - logits.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(f(p, s[None]))[0], a @ s @ wv, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(), dict(num_heads=3), dict(num_heads=2, out_proj=True), dict(pool="mean"),
                                dict(causal=True), dict(scale="sqrt")])
def test_module_functional_and_pure_views_agree(kw):
    cfg = LearnerConfig(d_in=4, d_qk=6, d_out=2, **kw)
    model = AttentionLearner(cfg, rngs=nnx.Rngs(0))
    f, p = functional(model)
    x = _x((3, 5, 4))
    out = model(x)
    expected = (3, cfg.output_dim) if cfg.pool == "mean" else (3, 5, cfg.output_dim)
    assert out.shape == expected
    np.testing.assert_allclose(f(p, x), out, rtol=1e-6)
    np.testing.assert_allclose(learner_fn(cfg)(p, x), out, rtol=1e-6)


def test_causal_mask_hides_the_future():
    cfg = LearnerConfig(d_in=4, d_qk=4, causal=True)
    f = learner_fn(cfg)
    p = AttentionLearner(cfg, rngs=nnx.Rngs(0)).params()
    x = _x((2, 6, 4))
    changed = x.at[:, 4:].set(3.0)
    np.testing.assert_allclose(f(p, x)[:, :4], f(p, changed)[:, :4], rtol=1e-6)
    assert not np.allclose(f(p, x)[:, 4:], f(p, changed)[:, 4:])


def test_cross_attention_reads_keys_and_values_from_t():
    cfg = LearnerConfig(d_in=4, d_qk=4, cross=True, d_kv=3)
    model = AttentionLearner(cfg, rngs=nnx.Rngs(0))
    f, p = functional(model)
    s, t = _x((2, 5, 4)), _x((2, 7, 3), seed=1)
    assert f(p, (s, t)).shape == (2, 5, 1)
    # one key/value element, so attention is trivially 1: f_i = t_0 W_V for every query
    one = t[:, :1]
    np.testing.assert_allclose(f(p, (s, one)), jnp.broadcast_to((one @ p["w_v"][0]), (2, 5, 1)), rtol=1e-6)


def _np_softmax(logits):
    a = np.exp(logits - logits.max(-1, keepdims=True))
    return a / a.sum(-1, keepdims=True)


@pytest.mark.parametrize("heads", [1, 2])
def test_sqrt_scale_is_one_over_root_d_qk_by_hand(heads):
    """Catches a wrong logit scale for scale="sqrt" (e.g. 1/d', 1/√d, √d', or c = 1): the model, the
    importance gradient and the kernel all read `config.c`, so only an independent computation can.

    d = 3, d' = 5, o = 2 all differ, so a scale built from the wrong size shows.
    """
    d_qk = 5
    cfg = LearnerConfig(d_in=3, d_qk=d_qk, d_out=2, num_heads=heads, scale="sqrt")
    model = AttentionLearner(cfg, rngs=nnx.Rngs(2))
    p = {k: np.asarray(v, np.float64) for k, v in model.params().items()}
    s = np.asarray(_x((2, 4, 3), seed=3), np.float64)
    out = []
    for h in range(heads):
        logits = (s @ p["w_q"][h]) @ np.swapaxes(s @ p["w_k"][h], 1, 2) / np.sqrt(d_qk)
        out.append(_np_softmax(logits) @ (s @ p["w_v"][h]))
    expected = np.concatenate(out, axis=-1)   # heads side by side
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(s, jnp.float32))), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(learner_fn(cfg)(model.params(), jnp.asarray(s, jnp.float32))),
                               expected, rtol=1e-5, atol=1e-6)
    # Not vacuous: the unscaled learner (c = 1) differs from it well beyond the tolerance.
    logits = (s @ p["w_q"][0]) @ np.swapaxes(s @ p["w_k"][0], 1, 2)
    assert np.max(np.abs(_np_softmax(logits) @ (s @ p["w_v"][0]) - expected[..., :2])) > 1e-2


@pytest.mark.parametrize("kw", [dict(), dict(num_heads=2, out_proj=True, scale="sqrt", pool="mean"),
                                dict(causal=True, scale=0.7)])
def test_gradient_of_the_pure_view_matches_finite_differences(kw):
    """Catches a wrong gradient through the learner (a stray stop_gradient, a custom VJP off by a factor
    or a transpose): jax.grad of ⟨f(θ, S), G⟩ against central differences, in float64.
    """
    with jax.enable_x64(True):
        cfg = LearnerConfig(d_in=3, d_qk=4, d_out=2, **kw)
        f, p = functional(AttentionLearner(cfg, rngs=nnx.Rngs(0)))
        rng = np.random.default_rng(0)
        s = jnp.asarray(rng.normal(size=(2, 3, 3)))
        cot = jnp.asarray(rng.normal(size=jax.eval_shape(f, p, s).shape))
        loss = jax.jit(lambda q: jnp.sum(f(q, s) * cot))
        grads = jax.grad(loss)(p)
        assert set(grads) == set(p) and all(grads[k].dtype == jnp.float64 for k in grads)
        # Central differences along random directions, one parameter at a time: ⟨∇_W L, V⟩ for each W.
        eps = 1e-6
        for name, value in p.items():
            for _ in range(2):
                v = rng.normal(size=value.shape)
                fd = (float(loss(dict(p, **{name: value + eps * v}))) -
                      float(loss(dict(p, **{name: value - eps * v})))) / (2 * eps)
                ad = float(np.sum(np.asarray(grads[name]) * v))
                assert abs(ad - fd) <= 1e-6 * max(abs(fd), 1e-3), (name, ad, fd)


@pytest.mark.parametrize("field,value", [("d_in", 0), ("scale", "huge"), ("scale", -1.0), ("pool", "max"), ("num_heads", 1.5)])
def test_bad_config_names_the_value(field, value):
    kw = dict(d_in=4, d_qk=4)
    kw[field] = value
    with pytest.raises(ValueError, match=field):
        LearnerConfig(**kw)


@pytest.mark.parametrize("s,t,match", [
    (np.ones((5, 4)), None, r"s: got shape \(5, 4\), expected rank 3"),
    (np.ones((2, 5, 3)), None, r"last axis 4"),
    (np.ones((0, 5, 4)), None, "empty"),
    (np.full((1, 2, 4), np.nan), None, "NaN"),
])
def test_bad_inputs_name_the_argument(s, t, match):
    with pytest.raises(ValueError, match=match):
        check_inputs(LearnerConfig(d_in=4, d_qk=4), s, t)


def test_cross_attention_needs_matching_batches():
    cfg = LearnerConfig(d_in=4, d_qk=4, cross=True)
    with pytest.raises(ValueError, match="t: got shape"):
        check_inputs(cfg, np.ones((2, 3, 4)), np.ones((3, 3, 4)))


@pytest.mark.parametrize("call", ["module", "pure"])
def test_learner_call_rejects_bad_shapes_with_a_named_error(call):
    cfg = LearnerConfig(d_in=4, d_qk=4)
    model = AttentionLearner(cfg, rngs=nnx.Rngs(0))
    f = model if call == "module" else (lambda x: learner_fn(cfg)(model.params(), x))
    with pytest.raises(ValueError, match=r"s: got shape \(2, 5, 3\)"):
        f(np.ones((2, 5, 3), np.float32))
