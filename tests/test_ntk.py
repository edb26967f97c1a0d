"""Tests for attent_jax.learner.ntk: every implementation against the Jacobian-contraction reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attent_jax.learner.model import AttentionLearner, LearnerConfig, functional, init_params, learner_fn
from attent_jax.learner.ntk import Implementation, empirical_ntk_fn

CONFIGS = {
    "paper": LearnerConfig(d_in=3, d_qk=4),
    "causal": LearnerConfig(d_in=3, d_qk=2, d_out=2, num_heads=2, causal=True, scale="sqrt"),
    "cross": LearnerConfig(d_in=3, d_qk=4, d_out=2, num_heads=2, cross=True, d_kv=5, out_proj=True, scale=0.7),
    "pooled": LearnerConfig(d_in=3, d_qk=4, d_out=2, num_heads=3, pool="mean", out_proj=True),
}
_FNS = {name: learner_fn(cfg) for name, cfg in CONFIGS.items()}   # one f each: compilations are shared


# Inputs and weights come from NumPy: eager jax.random compiles a program per
# shape, which would dominate this file's run time.
def _normal(seed, shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def _params(cfg, seed=0):
    """Weights like init_params (std 1/√fan_in), drawn with NumPy."""
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    return {name: _normal(seed + i, a.shape, 1 / np.sqrt(a.shape[-2])).astype(a.dtype)
            for i, (name, a) in enumerate(shapes.items())}


def _inputs(cfg, batch, n, seed, m=None):
    s = _normal(seed, (batch, n, cfg.d_in))
    if cfg.cross:
        return s, _normal(seed + 100, (batch, m or n + 1, cfg.kv_dim))
    return s


def _rel(a, b):
    """Max-norm relative error, in NumPy (eager jnp ops would compile per shape)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


_REFS = {}


def _reference(name):
    """float64 inputs and the full (untraced) Jacobian-contraction kernel, computed once."""
    if name not in _REFS:
        cfg = CONFIGS[name]
        params = _params(cfg)
        # x2 has another batch size and, for cross-attention, another key length.
        x1, x2 = _inputs(cfg, 3, 4, seed=1), _inputs(cfg, 2, 4, seed=2, m=6)
        full = empirical_ntk_fn(_FNS[name], trace_axes=())(x1, x2, params)
        assert full.dtype == jnp.float64
        _REFS[name] = (params, x1, x2, full)
    return _REFS[name]


def _mean_over_outputs(full):
    """neural-tangents' trace of the last output axis: sum over its diagonal / its size."""
    return np.einsum("...cc->...", np.asarray(full)) / full.shape[-1]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_analytic_matches_jacobian_float64(x64, name):
    params, x1, x2, full = _reference(name)
    got = empirical_ntk_fn(_FNS[name], implementation="analytic", learner_config=CONFIGS[name])(x1, x2, params)
    want = _mean_over_outputs(full)
    assert got.shape == want.shape == ((3, 2) if name == "pooled" else (3, 2, 4, 4))
    assert _rel(got, want) <= 1e-10


def test_ntvp_matches_jacobian_float64(x64):
    params, x1, x2, full = _reference("cross")
    got = empirical_ntk_fn(_FNS["cross"], trace_axes=(), implementation=Implementation.NTVP)(x1, x2, params)
    assert got.shape == full.shape == (3, 2, 4, 4, 2, 2)
    assert _rel(got, full) <= 1e-10


def test_paper_formula_single_element(x64):
    # One element per sequence: A = 1, f = v, so every importance vanishes and
    # K(s, s') = (AS)·(A'S') = s·s' (MATH.md's formula with c_i = u_i = 0).
    cfg = CONFIGS["paper"]
    s1, s2 = _normal(3, (4, 1, 3)), _normal(4, (2, 1, 3))
    got = empirical_ntk_fn(None, implementation="analytic", learner_config=cfg)(s1, s2, _params(cfg))
    np.testing.assert_allclose(got[:, :, 0, 0], s1[:, 0] @ s2[:, 0].T, rtol=1e-12)


# (Element pair with output pair is test_chunked_equals_unchunked's case; element
# pair with output trace is the default everywhere.)
@pytest.mark.parametrize("trace_axes,diagonal_axes,sub,shape", [
    ((1,), (2,), "abiicc->abc", (3, 2, 4)),              # element trace, output diagonal
    ((-1,), (-2,), "abiicc->abi", (3, 2, 4)),            # element diagonal, output trace
])
def test_trace_and_diagonal_axes(x64, trace_axes, diagonal_axes, sub, shape):
    params, x1, x2, full = _reference("causal")           # output (N, n=4, H·o=4)
    # neural-tangents' rules on the full kernel: a traced pair is summed over its
    # diagonal and divided by its size; a diagonal pair keeps equal indices, once.
    size = np.prod([full.shape[2 * (a % 3)] for a in trace_axes]) if trace_axes else 1
    want = np.einsum(sub, np.asarray(full)) / size
    got = empirical_ntk_fn(None, trace_axes, diagonal_axes, 0, "analytic", learner_config=CONFIGS["causal"])(
        x1, x2, params)
    assert got.shape == want.shape == shape
    assert _rel(got, want) <= 1e-10


def test_float32_agreement_and_psd():
    cfg = LearnerConfig(d_in=4, d_qk=6, num_heads=2)
    # float32 explicitly, so the test means the same with x64 enabled globally.
    params = {name: a.astype(np.float32) for name, a in _params(cfg).items()}
    f, x = learner_fn(cfg), _inputs(cfg, 5, 6, seed=1).astype(np.float32)
    kernels = {impl.value: empirical_ntk_fn(f, implementation=impl, learner_config=cfg)(x, None, params)
               for impl in Implementation}
    assert kernels["jacobian"].dtype == jnp.float32
    for impl in ("ntvp", "analytic"):
        assert _rel(kernels[impl], kernels["jacobian"]) <= 1e-4, impl
    # As a Gram matrix over (sequence, element) pairs K(x, x) is symmetric PSD.
    # (N, N, n, n, O=2 traced) -> (N·n, N·n)
    gram = np.asarray(kernels["analytic"], np.float64).transpose(0, 2, 1, 3).reshape(30, 30)
    np.testing.assert_allclose(gram, gram.T, rtol=1e-5, atol=1e-6)
    eigs = np.linalg.eigvalsh((gram + gram.T) / 2)
    assert eigs.min() >= -1e-4 * eigs.max()


def test_chunked_equals_unchunked(x64):
    params, x1, x2, full = _reference("causal")
    chunked = empirical_ntk_fn(None, trace_axes=(), implementation="analytic", learner_config=CONFIGS["causal"],
                               batch_size=2)
    # 3 and 2 examples in blocks of 2: the last row block overlaps its neighbour.
    assert _rel(chunked(x1, x2, params), full) <= 1e-10
    # x2 = None means x1; chunked, it computes the upper blocks and mirrors them.
    sym, plain = chunked(x1, None, params), chunked(x1, x1, params)
    assert _rel(sym, plain) <= 1e-10
    np.testing.assert_allclose(sym, np.transpose(sym, (1, 0, 3, 2, 5, 4)), rtol=1e-10, atol=1e-12)


def test_nnx_params_work_in_every_implementation(x64):
    # The plain dict of `functional(AttentionLearner)` is what the kernels take.
    # (nnx.eval_shape: the dict's structure without running the initialisers,
    # whose random draws would cost seconds of compilation; values from NumPy.)
    cfg = CONFIGS["pooled"]
    _, abstract = functional(nnx.eval_shape(lambda: AttentionLearner(cfg, rngs=nnx.Rngs(0))))
    params = {name: _normal(7 + i, a.shape, 0.5) for i, (name, a) in enumerate(sorted(abstract.items()))}
    _, x1, x2, _ = _reference("pooled")
    full = empirical_ntk_fn(_FNS["pooled"], trace_axes=())(x1, x2, params)
    got = empirical_ntk_fn(None, implementation="analytic", learner_config=cfg)(x1, x2, params)
    assert _rel(got, _mean_over_outputs(full)) <= 1e-10


def _mlp(params, x):
    h = jnp.tanh(x @ params["layers"][0]["w"] + params["layers"][0]["b"])
    return h @ params["layers"][1]


def test_generic_mlp_ntvp_matches_jacobian(x64):
    params = {"layers": [{"w": _normal(0, (4, 5)), "b": _normal(1, (5,))}, _normal(2, (5, 2))]}
    x1, x2 = _normal(3, (3, 2, 4)), _normal(4, (2, 2, 4))
    full = empirical_ntk_fn(_mlp, ())(x1, x2, params)
    got = empirical_ntk_fn(_mlp, (), implementation="ntvp", batch_size=2)(x1, x2, params)
    assert got.shape == full.shape == (3, 2, 2, 2, 2, 2)
    assert _rel(got, full) <= 1e-10
    traced = empirical_ntk_fn(_mlp)(x1, x2, params)     # default trace_axes=(-1,): a mean, not a sum
    np.testing.assert_allclose(traced, _mean_over_outputs(full), rtol=1e-12)


def _bad(match, **overrides):
    cfg = CONFIGS["paper"]
    args = dict(x1=np.ones((2, 3, 3)), x2=None, params=_params(cfg))
    factory = dict(f=learner_fn(cfg), learner_config=cfg)
    factory.update(overrides.pop("factory", {}))
    args.update(overrides)
    with pytest.raises(ValueError, match=match):
        empirical_ntk_fn(**factory)(**args)


def test_bad_inputs():
    _bad(r"x1: .*shape \(2, 3\).*rank 3", x1=np.ones((2, 3)))
    _bad(r"x2: .*shape \(2, 3, 4\).*last axis 3", x2=np.ones((2, 3, 4)))
    _bad(r"x1: s: got an empty array of shape \(0, 3, 3\)", x1=np.ones((0, 3, 3)))
    _bad(r"x1: s: contains NaN", x1=np.full((2, 3, 3), np.nan))
    _bad(r"t: got None", factory=dict(learner_config=CONFIGS["cross"], f=None),
         params=_params(CONFIGS["cross"]))
    _bad(r"implementation: got 'fast'", factory=dict(implementation="fast"))
    _bad(r"learner_config: got None", factory=dict(implementation="analytic", learner_config=None))
    _bad(r"vmap_axes: got 1", factory=dict(vmap_axes=1))
    _bad(r"trace_axes: .*batch axis 0", factory=dict(trace_axes=(0,)))
    _bad(r"trace_axes: got axis 3 .*\(2, 3, 1\)", factory=dict(trace_axes=(3,)))
    _bad(r"trace_axes: got 'x'", factory=dict(trace_axes="x"))
    _bad(r"diagonal_axes: .*also in trace_axes", factory=dict(diagonal_axes=(-1,)))
    _bad(r"batch_size: got 0", factory=dict(batch_size=0))
    _bad(r"params: got .*w_q.*expected", params={"w_q": np.ones((1, 3, 5))})
    # Element axes of different lengths may be kept as pairs but not traced.
    _bad(r"trace_axes: axis 1 has size 3 for x1 but 4 for x2", x2=np.ones((2, 4, 3)),
         factory=dict(trace_axes=(1,)))
    # Generic f: x1 and x2 must agree on rank, feature size and batch per leaf.
    f = lambda p, x: x[0] @ p + x[1]
    mk = lambda **kw: empirical_ntk_fn(f, **kw)
    p = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"x2: got shape \(2, 4\) for leaf 0, expected rank 2 and feature size \(last axis\) 3"):
        mk()((np.ones((2, 3)), np.ones((2, 2))), (np.ones((2, 4)), np.ones((2, 2))), p)
    with pytest.raises(ValueError, match=r"x1: got leaves with batch sizes \[2, 1\]"):
        mk()((np.ones((2, 3)), np.ones((1, 2))), None, p)
