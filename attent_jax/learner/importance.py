"""The importance-adaptive gradient of the single-layer attention learner (paper §4.1, eqs. 9–12, App. A.3).

Every parameter gradient of the learner is a batch gradient over element
features, each feature row weighted by an element-specific *importance* row:

    ∂L/∂W = Σ_b Σ_elements  F[b, e]ᵀ ⊗ Γ[b, e]   =  Σ_b F_bᵀ Γ_b

with F the features the weight multiplies in the forward pass (S for W_Q; T,
which is S for self-attention, for W_K and W_V; the concatenated head outputs
for W_O) and Γ an (elements × width) matrix computed in closed form from Q, K,
V, A and the output cotangent. Setting every importance to 1 leaves Fᵀ1, the
gradient of a linear model without activation on the batch of features
(`unit_importance_grad`).

Derivation (one sequence, one head; rows are row vectors). Let
Q = S W_Q (n×d'), K = T W_K (m×d'), V = T W_V (m×o), Z = c Q Kᵀ + M,
A = softmax_row(Z), F = A V (rows f_i), and g_i = ∂L/∂f_i (the cotangent G).

- W_V: F = A T W_V, so ∂L/∂W_V = Tᵀ Aᵀ G, i.e. Γ_V = Aᵀ G,
  Γ_V[j] = Σ_i a_ij g_i  (element j's importance is the attention it receives,
  weighted by the cotangents of the elements that attend to it).
- Softmax: ∂L/∂a_ij = g_i·v_j, and for a row-softmax
  ∂L/∂z_ij = a_ij (∂L/∂a_ij − Σ_l a_il ∂L/∂a_il) = a_ij g_i·(v_j − f_i) =: P_ij,
  because Σ_l a_il v_l = f_i.
- W_Q: ∂L/∂Q = c P K, so ∂L/∂W_Q = Sᵀ (c P K), i.e.
  Γ_Q[i] = c Σ_j a_ij (g_i·(v_j − f_i)) k_j.
- W_K: ∂L/∂K = c Pᵀ Q, so ∂L/∂W_K = Tᵀ (c Pᵀ Q), i.e.
  Γ_K[j] = c Σ_i a_ij (g_i·(v_j − f_i)) q_i.

The signs come out as written: raising z_ij moves f_i towards v_j. The causal
mask needs no extra term: a masked a_ij is exactly 0, so P_ij = 0 and masked
pairs drop out of every sum (element 0 of a causal learner attends only to
itself, v_0 = f_0, so Γ_Q[0] = 0). Cross-attention only changes which features
multiply Γ_K and Γ_V (T, with m rows, instead of S); the formulas are the same.
With o = 1 these are the per-element Jacobians of MATH.md multiplied by g_i.

Variants:
- Sequence-level output (pool="mean"), f = (1/n) Σ_i f_i: g_i = g/n for every i.
- Multi-head: heads are independent maps whose outputs are concatenated, so
  head h gets the slice h·o:(h+1)·o of the concatenated cotangent.
- Output projection y = concat · W_O: the concatenated cotangent is G W_Oᵀ and
  ∂L/∂W_O = concatᵀ G, i.e. features = concatenated head outputs (n × H·o) and
  importance = G itself (n × o), with a singleton head axis since W_O has none.
- Batches: the loss is a sum of per-sequence terms (each a sum over elements
  for element-level outputs), so every gradient is the sum over the batch of
  the per-sequence Fᵀ Γ. For a *mean* loss, scale the cotangent.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from attent_jax.learner.model import LearnerConfig, init_params, learner_fn
    >>> from attent_jax.learner.importance import importance_grad, grads_from_importance
    >>> cfg = LearnerConfig(d_in=3, d_qk=4)
    >>> params = init_params(cfg, jax.random.key(0))
    >>> s = jax.random.normal(jax.random.key(1), (2, 5, 3))
    >>> ig = importance_grad(cfg, params, s, jnp.ones((2, 5, 1)))
    >>> ig.importance["w_q"].shape, ig.features["w_q"].shape
    ((2, 1, 5, 4), (2, 5, 3))
    >>> ref = jax.grad(lambda p: learner_fn(cfg)(p, s).sum())(params)
    >>> bool(jnp.allclose(ig.grads["w_q"], ref["w_q"], atol=1e-5))
    True
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from attent_jax.learner.model import LearnerConfig, attention_weights, check_inputs
from attent_jax.learner.validate import check_array

LOSSES = ("mse",)
# Weights without a head axis: their importance carries a singleton head axis
# (so every importance is (B, H, elements, width)) that the gradient drops.
_HEADLESS = ("w_o",)


class ImportanceGrad(NamedTuple):
    """The closed-form gradient and the per-element pieces it is built from.

    grads:      dict like params; ∂L/∂W summed over the batch (equals `jax.grad`).
    importance: name -> Γ of shape (B, H, elements, width); H = 1 for "w_o".
    features:   name -> F of shape (B, elements, d); ∂L/∂W[h] = Σ_b F_bᵀ Γ_bh.
    output:     f(params, x), the learner's output the cotangent belongs to.
    """
    grads: dict
    importance: dict
    features: dict
    output: jax.Array


def _split_x(x):
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"x: got a sequence of length {len(x)}, expected an array s or a pair (s, t)")
        return x[0], x[1]
    return x, None


def _check_params(config: LearnerConfig, params) -> None:
    if not isinstance(params, dict):
        raise ValueError(f"params: got {type(params).__name__}, expected a dict from model.init_params")
    h, d, kv, k, o = config.num_heads, config.d_in, config.kv_dim, config.d_qk, config.d_out
    expected = {"w_q": (h, d, k), "w_k": (h, kv, k), "w_v": (h, kv, o)}
    if config.out_proj:
        expected["w_o"] = (h * o, o)
    if set(params) != set(expected):
        raise ValueError(f"params: got keys {sorted(params)}, expected {sorted(expected)} for this config")
    for name, shape in expected.items():
        got = tuple(getattr(params[name], "shape", ()))
        if got != shape:
            raise ValueError(f"params[{name!r}]: got shape {got}, expected {shape}")


def _output_shape(config: LearnerConfig, s) -> tuple:
    b, n = s.shape[0], s.shape[1]
    return (b, config.output_dim) if config.pool == "mean" else (b, n, config.output_dim)


def _check_like_output(name: str, config: LearnerConfig, s, value) -> None:
    expected = _output_shape(config, s)
    check_array(name, value, rank=len(expected))
    if tuple(value.shape) != expected:
        raise ValueError(f"{name}: got shape {tuple(value.shape)}, expected {expected} (the shape of f(params, x))")


def _validate(config: LearnerConfig, params, x):
    if not isinstance(config, LearnerConfig):
        raise ValueError(f"config: got {type(config).__name__}, expected a LearnerConfig")
    s, t = _split_x(x)
    check_inputs(config, s, t)
    _check_params(config, params)
    return s, t


def _forward(config: LearnerConfig, params, s_Bxnxd, t_Bxmxd):
    """Everything the backward pass reuses: per-head q, k, v, A, head outputs, learner output."""
    t_Bxmxd = s_Bxnxd if t_Bxmxd is None else t_Bxmxd
    b, n, _ = s_Bxnxd.shape
    heads = config.num_heads
    q_BxHxnxk = jnp.einsum("bnd,hdk->bhnk", s_Bxnxd, params["w_q"])
    k_BxHxmxk = jnp.einsum("bmd,hdk->bhmk", t_Bxmxd, params["w_k"])
    v_BxHxmxo = jnp.einsum("bmd,hdo->bhmo", t_Bxmxd, params["w_v"])
    # The model's own attention_weights, so the mask convention has one source.
    per_head = jax.vmap(functools.partial(attention_weights, c=config.c, causal=config.causal),
                        in_axes=(0, 0, None, None))
    a_BxHxnxm = jax.vmap(per_head, in_axes=(None, None, 0, 0))(params["w_q"], params["w_k"], s_Bxnxd, t_Bxmxd)
    f_BxHxnxo = jnp.einsum("bhnm,bhmo->bhno", a_BxHxnxm, v_BxHxmxo)
    concat_BxnxHo = jnp.transpose(f_BxHxnxo, (0, 2, 1, 3)).reshape(b, n, heads * config.d_out)
    out_Bxnxp = concat_BxnxHo @ params["w_o"] if config.out_proj else concat_BxnxHo
    out = out_Bxnxp.mean(axis=1) if config.pool == "mean" else out_Bxnxp
    return dict(s=s_Bxnxd, t=t_Bxmxd, q=q_BxHxnxk, k=k_BxHxmxk, v=v_BxHxmxo, a=a_BxHxnxm,
                f=f_BxHxnxo, concat=concat_BxnxHo, out=out)


def _backward(config: LearnerConfig, params, fw, cotangent) -> ImportanceGrad:
    """Γ for every weight from the forward pieces and ∂L/∂f (derivation in the module docstring)."""
    b, n, _ = fw["s"].shape
    heads, o = config.num_heads, config.d_out
    # Pooled output: f = mean_i f_i, so each element's cotangent is g/n.
    g_Bxnxp = (jnp.broadcast_to(cotangent[:, None, :], (b, n, cotangent.shape[-1])) / n
               if config.pool == "mean" else cotangent)
    importance, features = {}, {}
    if config.out_proj:
        importance["w_o"] = g_Bxnxp[:, None]
        features["w_o"] = fw["concat"]
        g_Bxnxp = g_Bxnxp @ params["w_o"].T
    g_BxHxnxo = jnp.transpose(g_Bxnxp.reshape(b, n, heads, o), (0, 2, 1, 3))

    a, q, k, v, f = fw["a"], fw["q"], fw["k"], fw["v"], fw["f"]
    importance["w_v"] = jnp.einsum("bhnm,bhno->bhmo", a, g_BxHxnxo)
    # P_ij = a_ij g_i·(v_j − f_i); masked pairs have a_ij = 0 exactly, so P_ij = 0.
    gv_BxHxnxm = jnp.einsum("bhno,bhmo->bhnm", g_BxHxnxo, v)
    gf_BxHxnx1 = jnp.sum(g_BxHxnxo * f, axis=-1, keepdims=True)
    p_BxHxnxm = a * (gv_BxHxnxm - gf_BxHxnx1)
    importance["w_q"] = config.c * jnp.einsum("bhnm,bhmk->bhnk", p_BxHxnxm, k)
    importance["w_k"] = config.c * jnp.einsum("bhnm,bhnk->bhmk", p_BxHxnxm, q)
    features["w_q"] = fw["s"]
    features["w_k"] = fw["t"]
    features["w_v"] = fw["t"]
    grads = _grads_from_importance(features, importance)
    order = [name for name in ("w_q", "w_k", "w_v", "w_o") if name in importance]
    return ImportanceGrad(grads={name: grads[name] for name in order},
                          importance={name: importance[name] for name in order},
                          features={name: features[name] for name in order},
                          output=fw["out"])


def _grads_from_importance(features, importance) -> dict:
    grads = {}
    for name, gamma_BxHxexw in importance.items():
        grad_Hxdxw = jnp.einsum("bed,bhew->hdw", features[name], gamma_BxHxexw)
        grads[name] = grad_Hxdxw[0] if name in _HEADLESS else grad_Hxdxw
    return grads


@functools.partial(jax.jit, static_argnums=0)
def _importance_grad(config, params, s, t, cotangent):
    return _backward(config, params, _forward(config, params, s, t), cotangent)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _loss_grad(config, params, s, t, y, loss):
    fw = _forward(config, params, s, t)
    # loss == "mse": L = Σ ½‖f − y‖², so ∂L/∂f = f − y.
    return _backward(config, params, fw, fw["out"] - y)


_grads_from_importance_jit = jax.jit(_grads_from_importance)


def importance_grad(config: LearnerConfig, params: dict, x, cotangent) -> ImportanceGrad:
    """Closed-form ∂L/∂θ with its per-element importances (paper §4.1, eqs. 9–12, App. A.3).

    Args:
      config: the learner's `LearnerConfig` (self/causal/cross, pool, heads, out_proj).
      params: dict from `model.init_params` (or `functional(model)[1]`).
      x: s of shape (B, n, d_in), or the pair (s, t) with t (B, m, d_kv) for cross-attention.
      cotangent: ∂L/∂f, the shape of f(params, x): (B, n, output_dim), or (B, output_dim)
        when pool == "mean". The loss is taken as a sum over the batch, so the
        gradients are summed over it (scale the cotangent for a mean).

    Returns:
      `ImportanceGrad` with ``grads`` equal to ``jax.vjp(learner_fn(config), ...)``
      applied to the cotangent, ``importance`` Γ (B, H, elements, width) and
      ``features`` F (B, elements, d) with ∂L/∂W[h] = Σ_b F_bᵀ Γ_bh. Elements are
      the n queries for "w_q" and "w_o", the m keys/values for "w_k" and "w_v".

    Example:
      >>> from attent_jax.learner.model import init_params
      >>> cfg = LearnerConfig(d_in=3, d_qk=4, causal=True, pool="mean")
      >>> params = init_params(cfg, jax.random.key(0))
      >>> ig = importance_grad(cfg, params, jnp.ones((2, 5, 3)), jnp.ones((2, 1)))
      >>> ig.grads["w_k"].shape
      (1, 3, 4)
    """
    s, t = _validate(config, params, x)
    _check_like_output("cotangent", config, s, cotangent)
    return _importance_grad(config, params, s, t, cotangent)


def loss_grad(config: LearnerConfig, params: dict, x, y, loss: str = "mse") -> ImportanceGrad:
    """`importance_grad` for L = Σ ½‖f(x) − y‖² (sum over batch and elements), i.e. cotangent f − y.

    ``y`` has the shape of f(params, x). The loss value is
    ``0.5 * ((result.output - y) ** 2).sum()``.

    Example:
      >>> from attent_jax.learner.model import init_params
      >>> cfg = LearnerConfig(d_in=3, d_qk=4)
      >>> params = init_params(cfg, jax.random.key(0))
      >>> loss_grad(cfg, params, jnp.ones((2, 5, 3)), jnp.zeros((2, 5, 1))).grads["w_v"].shape
      (1, 3, 1)
    """
    if loss not in LOSSES:
        raise ValueError(f"loss: got {loss!r}, expected one of {LOSSES}")
    s, t = _validate(config, params, x)
    _check_like_output("y", config, s, y)
    return _loss_grad(config, params, s, t, y, loss)


def grads_from_importance(features: dict, importance: dict) -> dict:
    """Rebuild ∂L/∂W[h] = Σ_b F_bᵀ Γ_bh from features and importances (any importances).

    ``features[name]`` is (B, elements, d) and ``importance[name]`` is
    (B, H, elements, width); the result is (H, d, width), or (d, width) for the
    headless "w_o" (whose importance has H = 1). With the importances of
    `importance_grad` this is its ``grads``; with importances set to 1 it is the
    linear-model batch gradient Fᵀ1 (see `unit_importance_grad`).

    Example:
      >>> g = grads_from_importance({"w_q": jnp.ones((2, 5, 3))}, {"w_q": jnp.ones((2, 1, 5, 4))})
      >>> g["w_q"].shape, float(g["w_q"][0, 0, 0])
      ((1, 3, 4), 10.0)
    """
    if not isinstance(features, dict) or not isinstance(importance, dict) or set(features) != set(importance):
        got = sorted(features) if isinstance(features, dict) else type(features).__name__
        want = sorted(importance) if isinstance(importance, dict) else type(importance).__name__
        raise ValueError(f"features: got keys {got}, expected dicts with the same keys as importance ({want})")
    for name in importance:
        check_array(f"features[{name!r}]", features[name], rank=3)
        check_array(f"importance[{name!r}]", importance[name], rank=4)
        fs, gs = tuple(features[name].shape), tuple(importance[name].shape)
        if (gs[0], gs[2]) != (fs[0], fs[1]):
            raise ValueError(f"importance[{name!r}]: got shape {gs}, expected (B, H, elements, width) with "
                             f"B, elements = {fs[:2]} from features[{name!r}]")
        if name in _HEADLESS and gs[1] != 1:
            raise ValueError(f"importance[{name!r}]: got shape {gs}, expected a head axis of size 1 (no heads)")
    return _grads_from_importance_jit(features, importance)


def unit_importance_grad(result: ImportanceGrad) -> dict:
    """The gradient with every importance set to 1: Σ_b F_bᵀ 1, a linear model's batch gradient.

    Paper §4.1: with unit importances the importance-adaptive gradient reduces to
    the gradient of a linear model without activation, f(s) = s W, on the same
    batch of element features (each with loss gradient 1 in every output).

    Example:
      >>> from attent_jax.learner.model import init_params
      >>> cfg = LearnerConfig(d_in=3, d_qk=4)
      >>> ig = importance_grad(cfg, init_params(cfg, jax.random.key(0)), jnp.ones((2, 5, 3)), jnp.ones((2, 5, 1)))
      >>> float(unit_importance_grad(ig)["w_q"][0, 0, 0])
      10.0
    """
    if not isinstance(result, ImportanceGrad):
        raise ValueError(f"result: got {type(result).__name__}, expected an ImportanceGrad from importance_grad")
    return _unit_importance_grad(result.features, result.importance)


@jax.jit
def _unit_importance_grad(features, importance):
    return _grads_from_importance(features, {name: jnp.ones_like(g) for name, g in importance.items()})
