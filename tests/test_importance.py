"""The closed-form importance-adaptive gradient equals autodiff, and has the paper's properties (§4.1).

Test data is made with NumPy and every JAX reference is jitted: on CPU each eager
op is its own compilation, and compilation is what this file's time goes on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attent_jax.learner.importance import (ImportanceGrad, grads_from_importance, importance_grad, loss_grad,
                                   unit_importance_grad)
from attent_jax.learner.model import LearnerConfig, init_params, learner_fn

B, N, M = 2, 5, 4

# Together: self / causal / cross, element- and sequence-level, H = 1..3, with and
# without W_O, and the three logit scales.
CONFIGS = {
    "self": LearnerConfig(d_in=3, d_qk=4),
    "self_pool_multihead": LearnerConfig(d_in=3, d_qk=2, num_heads=3, d_out=2, scale="sqrt", pool="mean"),
    "causal_multihead": LearnerConfig(d_in=3, d_qk=4, num_heads=2, d_out=2, causal=True),
    "cross": LearnerConfig(d_in=3, d_qk=4, cross=True, d_kv=2, d_out=2),
    "cross_pool_multihead": LearnerConfig(d_in=3, d_qk=4, num_heads=2, cross=True, d_kv=2, pool="mean"),
    "out_proj": LearnerConfig(d_in=3, d_qk=4, num_heads=2, d_out=2, out_proj=True, scale=0.7),
    "out_proj_causal_pool": LearnerConfig(d_in=3, d_qk=4, num_heads=2, d_out=3, out_proj=True,
                                          causal=True, pool="mean"),
    "out_proj_cross": LearnerConfig(d_in=3, d_qk=4, num_heads=2, cross=True, d_kv=5, out_proj=True),
}


@pytest.fixture
def x64():
    before = bool(jax.config.jax_enable_x64)
    with jax.enable_x64(True):
        yield
    assert bool(jax.config.jax_enable_x64) == before


def _setup(cfg, seed=0):
    """Params, inputs and a cotangent from NumPy, so no JAX op is compiled just to make test data."""
    rng = np.random.default_rng(seed)
    dtype = jnp.result_type(float)  # float64 under x64, else float32
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    params = {k: jnp.asarray(rng.normal(size=v.shape) / np.sqrt(v.shape[-2]), dtype) for k, v in shapes.items()}
    s = jnp.asarray(rng.normal(size=(B, N, cfg.d_in)), dtype)
    x = (s, jnp.asarray(rng.normal(size=(B, M, cfg.kv_dim)), dtype)) if cfg.cross else s
    out = jax.eval_shape(learner_fn(cfg), params, x)
    cot = jnp.asarray(rng.normal(size=out.shape), dtype)
    return params, x, cot


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _autodiff(cfg, params, x, cot):
    """(f(params, x), the VJP of f at cot) by reverse-mode autodiff through model.learner_fn."""
    def f(p, x, cot):
        out, vjp = jax.vjp(lambda q: learner_fn(cfg)(q, x), p)
        return out, vjp(cot)[0]
    return jax.jit(f)(params, x, cot)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_autodiff_float64(x64, name):
    cfg = CONFIGS[name]
    params, x, cot = _setup(cfg)
    assert params["w_q"].dtype == jnp.float64
    ig = importance_grad(cfg, params, x, cot)
    out, ref = _autodiff(cfg, params, x, cot)
    assert set(ig.grads) == set(ref)
    for key in ref:
        assert ig.grads[key].shape == ref[key].shape
        assert _rel(ig.grads[key], ref[key]) <= 1e-10, key
    np.testing.assert_allclose(ig.output, out, rtol=1e-12)
    # The gradient really is Σ_b Fᵀ Γ of the returned pieces (NumPy, independent of the library).
    for key in ref:
        rebuilt = np.einsum("bed,bhew->hdw", ig.features[key], ig.importance[key])
        assert _rel(rebuilt[0] if key == "w_o" else rebuilt, ref[key]) <= 1e-10, key


def test_grads_from_importance_rebuilds_grads(x64):
    """Catches a wrong public `grads_from_importance` (heads mixed or summed, F and Γ contracted over the
    wrong axis, w_o's head axis kept): it is checked against autodiff and against explicit NumPy sums,
    never against `importance_grad`'s own ``grads`` (built by the same helper)."""
    cfg = CONFIGS["out_proj_cross"]
    params, x, cot = _setup(cfg)
    ig = importance_grad(cfg, params, x, cot)
    _, ref = _autodiff(cfg, params, x, cot)
    rebuilt = grads_from_importance(ig.features, ig.importance)
    assert set(rebuilt) == set(ref)
    for key in ref:
        assert rebuilt[key].shape == ref[key].shape
        assert _rel(rebuilt[key], ref[key]) <= 1e-10, key
    # Any importances, not only the gradient's: ∂L/∂W[h]_dw = Σ_b Σ_e F[b, e, d] Γ[b, h, e, w], by loops.
    rng = np.random.default_rng(7)
    feats = {"w_q": rng.normal(size=(2, 3, 4)), "w_o": rng.normal(size=(2, 3, 5))}
    gammas = {"w_q": rng.normal(size=(2, 3, 3, 2)), "w_o": rng.normal(size=(2, 1, 3, 2))}
    out = grads_from_importance({k: jnp.asarray(v) for k, v in feats.items()},
                                {k: jnp.asarray(v) for k, v in gammas.items()})
    for key in feats:
        f, g = feats[key], gammas[key]
        expect = np.zeros((g.shape[1], f.shape[2], g.shape[3]))
        for b, h, e in np.ndindex(g.shape[0], g.shape[1], g.shape[2]):
            expect[h] += np.outer(f[b, e], g[b, h, e])
        expect = expect[0] if key == "w_o" else expect   # w_o has no head axis
        assert out[key].shape == expect.shape, key
        np.testing.assert_allclose(out[key], expect, rtol=1e-12, atol=1e-14)


def test_importance_and_feature_shapes(x64):
    for name in ("self_pool_multihead", "out_proj_cross"):
        cfg = CONFIGS[name]
        ig = importance_grad(cfg, *_setup(cfg))
        assert isinstance(ig, ImportanceGrad)
        h, m = cfg.num_heads, (M if cfg.cross else N)
        assert ig.importance["w_q"].shape == (B, h, N, cfg.d_qk)
        assert ig.importance["w_k"].shape == (B, h, m, cfg.d_qk)
        assert ig.importance["w_v"].shape == (B, h, m, cfg.d_out)
        assert ig.features["w_q"].shape == (B, N, cfg.d_in)
        assert ig.features["w_k"].shape == ig.features["w_v"].shape == (B, m, cfg.kv_dim)
        if cfg.out_proj:
            assert ig.importance["w_o"].shape == (B, 1, N, cfg.d_out)
            assert ig.features["w_o"].shape == (B, N, h * cfg.d_out)
        else:
            assert "w_o" not in ig.importance


@pytest.mark.parametrize("name", ["out_proj_causal_pool"])
def test_loss_grad_matches_autodiff_mse(x64, name):
    cfg = CONFIGS[name]
    params, x, y = _setup(cfg, seed=3)
    loss = lambda p: 0.5 * jnp.sum((learner_fn(cfg)(p, x) - y) ** 2)
    value, ref = jax.jit(jax.value_and_grad(loss))(params)
    ig = loss_grad(cfg, params, x, y)
    for key in ref:
        assert _rel(ig.grads[key], ref[key]) <= 1e-10, key
    np.testing.assert_allclose(0.5 * np.sum((np.asarray(ig.output) - np.asarray(y)) ** 2), value, rtol=1e-12)


def test_matches_autodiff_float32():
    with jax.enable_x64(False):
        cfg = CONFIGS["causal_multihead"]
        params, x, cot = _setup(cfg, seed=1)
        assert params["w_q"].dtype == jnp.float32
        ig = importance_grad(cfg, params, x, cot)
        _, ref = _autodiff(cfg, params, x, cot)
        for key in ref:
            assert ig.grads[key].dtype == jnp.float32
            assert _rel(ig.grads[key], ref[key]) <= 1e-4, key


def test_causal_mask_in_importances(x64):
    cfg = CONFIGS["causal_multihead"]
    params, s, cot = _setup(cfg)
    ig = importance_grad(cfg, params, s, cot)
    # Element 0 attends only to itself, so v_0 − f_0 = 0 and Γ_Q[0] = 0 exactly.
    assert float(np.abs(ig.importance["w_q"][:, :, 0]).max()) == 0.0
    assert float(np.abs(ig.importance["w_q"][:, :, 1:]).max()) > 1e-3
    # The last key/value is seen only by the last query: Γ_V[n-1] = a_{n-1,n-1} g_{n-1}, with
    # the last row unmasked, so a plain softmax in NumPy gives a_{n-1,n-1}.
    s_np, o = np.asarray(s), cfg.d_out
    for h in range(cfg.num_heads):
        logits = cfg.c * np.einsum("bk,bmk->bm", s_np[:, -1] @ np.asarray(params["w_q"][h]),
                                   s_np @ np.asarray(params["w_k"][h]))
        a_last = np.exp(logits[:, -1]) / np.exp(logits).sum(-1)
        g_last = np.asarray(cot)[:, -1, h * o:(h + 1) * o]
        np.testing.assert_allclose(ig.importance["w_v"][:, h, -1], a_last[:, None] * g_last, rtol=1e-12)


@pytest.mark.parametrize("name", ["self", "self_pool_multihead", "out_proj"])
def test_importances_equivariant_under_permuting_elements(x64, name):
    cfg = CONFIGS[name]
    params, s, cot = _setup(cfg)
    perm = np.array([3, 0, 4, 1, 2])
    s_p = jnp.asarray(np.asarray(s)[:, perm])
    cot_p = cot if cfg.pool == "mean" else jnp.asarray(np.asarray(cot)[:, perm])
    ig, ig_p = importance_grad(cfg, params, s, cot), importance_grad(cfg, params, s_p, cot_p)
    for key, gamma in ig.importance.items():
        np.testing.assert_allclose(ig_p.importance[key], np.asarray(gamma)[:, :, perm], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(ig_p.features[key], np.asarray(ig.features[key])[:, perm], rtol=1e-12)
        np.testing.assert_allclose(ig_p.grads[key], ig.grads[key], rtol=1e-10, atol=1e-13)
    # Not vacuous: the importances differ from element to element.
    assert _rel(ig.importance["w_q"][:, :, 1], ig.importance["w_q"][:, :, 0]) > 1e-3


def test_gradient_of_mean_loss_independent_of_sequence_length(x64):
    # Repeating every element k times leaves each f_i unchanged and the gradient of
    # the mean per-element loss unchanged (§4.1: lengths average out).
    cfg, k = CONFIGS["out_proj"], 3
    params, s, cot = _setup(cfg)
    s_rep, cot_rep = np.repeat(np.asarray(s), k, axis=1), np.repeat(np.asarray(cot), k, axis=1)
    ig = importance_grad(cfg, params, s, cot / N)
    ig_rep = importance_grad(cfg, params, jnp.asarray(s_rep), jnp.asarray(cot_rep / (k * N)))
    for key in ig.grads:
        assert _rel(ig_rep.grads[key], ig.grads[key]) <= 1e-10, key
    # A different sequence of the same length changes it, so the check above can fail.
    s_rep[:, 0] = 0.0
    ig_other = importance_grad(cfg, params, jnp.asarray(s_rep), jnp.asarray(cot_rep / (k * N)))
    assert _rel(ig_other.grads["w_q"], ig.grads["w_q"]) > 1e-3


def test_unit_importances_give_linear_model_batch_gradient(x64):
    cfg = CONFIGS["out_proj_cross"]
    params, x, cot = _setup(cfg)
    ig = importance_grad(cfg, params, x, cot)
    unit = unit_importance_grad(ig)
    for key, feat in ig.features.items():
        # Linear model f(s) = s W with ∂ℓ/∂f = 1 for every element and output: Σ_b Σ_e s_eᵀ 1.
        width = ig.importance[key].shape[-1]
        expect = np.einsum("bed,bew->dw", feat, np.ones(feat.shape[:2] + (width,)))
        if key != "w_o":
            expect = np.broadcast_to(expect, (cfg.num_heads,) + expect.shape)
        assert unit[key].shape == params[key].shape
        np.testing.assert_allclose(unit[key], expect, rtol=1e-12)
    assert _rel(unit["w_q"], ig.grads["w_q"]) > 1e-3


def test_bad_inputs_raise_value_error():
    cfg = CONFIGS["self"]
    params, s, cot = _setup(cfg)
    cot_np = np.asarray(cot)
    with pytest.raises(ValueError, match=r"cotangent: got shape \(2, 5, 2\)"):
        importance_grad(cfg, params, s, np.ones((B, N, 2)))
    with pytest.raises(ValueError, match=r"cotangent: got shape \(2, 1\)"):
        importance_grad(cfg, params, s, np.ones((B, 1)))
    with pytest.raises(ValueError, match=r"cotangent: got shape \(2, 5, 1\)"):
        importance_grad(LearnerConfig(d_in=3, d_qk=4, pool="mean"), params, s, cot)
    with pytest.raises(ValueError, match=r"^s: got shape \(2, 5, 4\)"):
        importance_grad(cfg, params, np.ones((B, N, 4)), cot)
    with pytest.raises(ValueError, match="t: got shape"):
        importance_grad(cfg, params, (s, s), cot)
    with pytest.raises(ValueError, match="t: got None"):
        importance_grad(CONFIGS["cross"], params, s, cot)
    with pytest.raises(ValueError, match=r"params\['w_q'\]: got shape \(1, 4, 4\)"):
        importance_grad(cfg, dict(params, w_q=np.ones((1, 4, 4))), s, cot)
    with pytest.raises(ValueError, match="params: got keys"):
        importance_grad(cfg, {"w_q": params["w_q"]}, s, cot)
    cot_nan = cot_np.copy()
    cot_nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="cotangent: contains NaN"):
        importance_grad(cfg, params, s, cot_nan)
    with pytest.raises(ValueError, match="config: got dict"):
        importance_grad({}, params, s, cot)
    with pytest.raises(ValueError, match="loss: got 'xent'"):
        loss_grad(cfg, params, s, cot, loss="xent")
    with pytest.raises(ValueError, match=r"y: got shape \(2, 5\)"):
        loss_grad(cfg, params, s, cot_np[..., 0])
    with pytest.raises(ValueError, match="features: got keys"):
        grads_from_importance({"w_q": s}, {"w_k": np.ones((B, 1, N, 4))})
    with pytest.raises(ValueError, match=r"importance\['w_q'\]: got shape \(2, 1, 3, 4\)"):
        grads_from_importance({"w_q": s}, {"w_q": np.ones((B, 1, 3, 4))})
    with pytest.raises(ValueError, match="result: got dict"):
        unit_importance_grad({})
