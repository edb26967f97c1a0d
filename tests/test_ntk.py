"""Tests for attent_jax.learner.ntk: every implementation against the Jacobian-contraction reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attent_jax.learner import ntk as ntk_module
from attent_jax.learner import ntk_analytic
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
    _bad(r"vmap_axes: got 1, expected 0 or None", factory=dict(vmap_axes=1))
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


# ---------------------------------------------------------------- neural-tangents' call forms
# Every kernel below is compared with `_full_reference`: whole-batch Jacobians
# from jax.jacobian, contracted by a plain matrix product, independent of ntk.py.

def _full_reference(f, params, x1, x2, kw1=None, kw2=None):
    """Per output leaf, the untraced kernel in "unzipped" layout (*out1, *out2), as NumPy."""
    kw1, kw2 = kw1 or {}, kw2 or {}

    def flat(x, kw):
        out = jax.eval_shape(lambda: f(params, x, **kw))
        # jitted: eager, each primitive would compile on its own.
        jac = jax.jit(jax.jacobian(lambda p, x: f(p, x, **kw)))(params, x)
        return out, jax.tree.map(lambda o, j: np.concatenate(
            [np.asarray(leaf).reshape(o.size, -1) for leaf in jax.tree.leaves(j)], axis=1), out, jac)

    (o1, j1), (o2, j2) = flat(x1, kw1), flat(x2, kw2)
    return jax.tree.map(lambda a, b, s1, s2: (a @ b.T).reshape(s1.shape + s2.shape), j1, j2, o1, o2)


def _zip(full):
    """(*out1, *out2) -> NT's (out1[0], out2[0], out1[1], out2[1], …)."""
    r = full.ndim // 2
    return np.transpose(full, [k for a in range(r) for k in (a, a + r)])


def _coupled(params, x):
    """An f that couples the examples of its batch (batch-mean subtraction)."""
    h = _mlp(params, x)
    return h - h.mean(axis=0, keepdims=True)


_MLP_PARAMS = {"layers": [{"w": _normal(0, (4, 5)), "b": _normal(1, (5,))}, _normal(2, (5, 2))]}


def _mlp_inputs():
    return _normal(3, (3, 2, 4)), _normal(4, (2, 2, 4))


@pytest.mark.parametrize("impl", ["jacobian", "ntvp"])
def test_vmap_axes_none_is_exact_for_batch_coupled_f(x64, impl):
    """Catches vmap_axes=None read as 0: per-example Jacobians of a batch-coupled f
    (measured here: ~0.5-1x relative error) instead of the whole batch's."""
    params, (x1, x2) = _MLP_PARAMS, _mlp_inputs()
    want = _zip(_full_reference(_coupled, params, x1, x2))
    got = empirical_ntk_fn(_coupled, (), vmap_axes=None, implementation=impl)(x1, x2, params)
    assert got.shape == want.shape == (3, 2, 2, 2, 2, 2)
    assert _rel(got, want) <= 1e-10
    # The per-example kernel (vmap_axes=0) is far off for this f: the check above can fail.
    assert _rel(empirical_ntk_fn(_coupled, (), vmap_axes=0, implementation=impl)(x1, x2, params), want) > 0.1
    # No batch axis: the batch may be diagonal (or traced), as in neural-tangents.
    same = _full_reference(_coupled, params, x1, x1)
    diag = empirical_ntk_fn(_coupled, (-1,), (0,), None, impl)(x1, None, params)
    np.testing.assert_allclose(diag, np.einsum("aijakj->aik", same) / 2, rtol=1e-10, atol=1e-12)


def test_vmap_axes_none_refuses_batch_size():
    """Catches blocks of a coupled batch: each block's f would see another batch."""
    with pytest.raises(ValueError, match=r"batch_size: got 2 with vmap_axes=None"):
        empirical_ntk_fn(_coupled, vmap_axes=None, batch_size=2)
    # A triple that batches nothing is NT's "no vmap" too.
    with pytest.raises(ValueError, match=r"batch_size: got 2 with vmap_axes=None"):
        empirical_ntk_fn(_coupled, vmap_axes=(None, 0, {}), batch_size=2)


@pytest.mark.parametrize("impl", [0, 1, 2, 3, "AUTO", "JACOBIAN_CONTRACTION", "ntk_vector_products",
                                  "Structured_Derivatives", Implementation.NTVP])
def test_neural_tangents_implementation_values(x64, impl):
    """Catches NT's NtkImplementation ints / names being refused or mapped to a wrong kernel."""
    params, (x1, x2) = _MLP_PARAMS, _mlp_inputs()
    want = _zip(_full_reference(_mlp, params, x1, x2))
    got = empirical_ntk_fn(_mlp, (), implementation=impl)(x1, x2, params)
    assert _rel(got, want) <= 1e-10


def test_structured_derivatives_uses_analytic_only_for_the_learner(x64):
    """Catches STRUCTURED_DERIVATIVES (3) sending a non-learner f to the analytic form."""
    cfg = CONFIGS["paper"]
    params, x1, x2, full = _reference("paper")
    doubled = lambda p, x: 2 * _FNS["paper"](p, x)
    for f, factor in ((_FNS["paper"], 1), (doubled, 4)):
        got = empirical_ntk_fn(f, implementation=3, learner_config=cfg)(x1, x2, params)
        assert _rel(got, factor * _mean_over_outputs(full)) <= 1e-10


def test_bad_implementation_values():
    for bad in (4, -1, True, 1.0, "fast", None):
        with pytest.raises(ValueError, match=r"^implementation: got"):
            empirical_ntk_fn(_mlp, implementation=bad)


def test_analytic_takes_only_an_f_it_knows_to_be_the_learner(x64):
    """Catches "analytic" ignoring f: handed 2 x the learner it returned the learner's
    kernel, 4x too small. Accepted: None, learner_fn(cfg), functional(model)'s f."""
    cfg = CONFIGS["paper"]
    params, x1, x2, full = _reference("paper")
    doubled = lambda p, x: 2 * _FNS["paper"](p, x)
    other = LearnerConfig(d_in=3, d_qk=5)
    other_f, _ = functional(nnx.eval_shape(lambda: AttentionLearner(other, rngs=nnx.Rngs(0))))
    for bad in (doubled, learner_fn(other), other_f, jax.jit(_FNS["paper"])):
        with pytest.raises(ValueError, match=r"^f: got .*cannot establish to be the learner"):
            empirical_ntk_fn(bad, implementation="analytic", learner_config=cfg)
    # The kernel "analytic" would owe the doubled f: 4 x the learner's.
    four = empirical_ntk_fn(doubled, learner_config=cfg)(x1, x2, params)
    assert _rel(four, 4 * _mean_over_outputs(full)) <= 1e-10
    module_f, _ = functional(nnx.eval_shape(lambda: AttentionLearner(cfg, rngs=nnx.Rngs(0))))
    for f in (None, learner_fn(cfg), module_f):    # module_f: the README's call
        got = empirical_ntk_fn(f, trace_axes=(-1,), implementation="analytic", learner_config=cfg)(x1, x2, params)
        assert _rel(got, _mean_over_outputs(full)) <= 1e-10


def _noisy(params, x, rng=None, mask=None, train=True):
    """kwargs as NT passes them: an rng (a scale shared by the batch, so per-example
    f equals whole-batch f), a per-example mask, and a Python flag."""
    h = _mlp(params, x)                                     # (N, 2, 2)
    if rng is not None:
        h = h * jax.random.normal(rng, h.shape[1:])
    if mask is not None:
        h = h * mask[..., None]
    return h if train else -jnp.tanh(h)


@pytest.mark.parametrize("impl", ["jacobian", "ntvp"])
def test_kwargs_reach_f_as_neural_tangents_splits_them(x64, impl):
    """Catches kwargs refused, dropped or mis-split: rng -> key, fold_in(key, 1) for
    x1 != x2; a pair (m1, m2) -> m1 for x1, m2 for x2; a flag -> both."""
    params, (x1, x2) = _MLP_PARAMS, _mlp_inputs()
    key = jax.random.key(3)
    m1, m2 = _normal(5, (3, 2)), _normal(6, (2, 2))
    want = _zip(_full_reference(_noisy, params, x1, x2, dict(rng=key, mask=m1, train=False),
                                dict(rng=jax.random.fold_in(key, 1), mask=m2, train=False)))
    ntk = empirical_ntk_fn(_noisy, (), vmap_axes=(0, 0, {"mask": 0}), implementation=impl)
    got = ntk(x1, x2, params, rng=key, mask=(m1, m2), train=False)
    assert _rel(got, want) <= 1e-10
    if impl == "ntvp":
        return   # the split below is the implementation-independent part of ntk_fn
    # x2 = None: one key and x1's mask for both sides, so K(x1, x1) is a Gram matrix.
    same = _zip(_full_reference(_noisy, params, x1, x1, dict(rng=key, mask=m1), dict(rng=key, mask=m1)))
    assert _rel(ntk(x1, None, params, rng=key, mask=(m1, m2)), same) <= 1e-10


def _tree_out(params, x):
    h = _mlp(params, x)                                     # (N, 2, 2)
    return {"sum": h.sum(axis=1), "parts": (h, jnp.tanh(h[:, 0]))}


@pytest.mark.parametrize("impl,batch_size", [("jacobian", None), ("ntvp", 2), ("jacobian", 2)])
def test_pytree_outputs_give_one_kernel_per_leaf(x64, impl, batch_size):
    """Catches pytree outputs refused or mixed up: NT returns one kernel per output
    leaf, in the output's pytree (chunked too, including mirrored blocks)."""
    params, (x1, _) = _MLP_PARAMS, _mlp_inputs()
    x1 = np.concatenate([x1, _normal(8, (2, 2, 4))])       # 5 examples: blocks of 2 overlap
    want = jax.tree.map(_zip, _full_reference(_tree_out, params, x1, x1))
    got = empirical_ntk_fn(_tree_out, (), implementation=impl, batch_size=batch_size)(x1, None, params)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.shape == w.shape
        assert _rel(g, w) <= 1e-10


def test_vmap_axes_forms(x64):
    """Catches NT's vmap_axes forms refused or misread: an int batch axis other
    than 0 (kernel batch pair at that axis's place), a triple with an unbatched
    (shared) input leaf, and a pytree matching x and the output."""
    w = _normal(9, (4, 2))
    # Batch on axis 1 of x (4, N) and of the output (2, N): kernel (2, 2, N1, N2).
    f_t = lambda p, x: jnp.tanh(p.T @ x)
    x1, x2 = _normal(10, (4, 3)), _normal(11, (4, 2))
    got = empirical_ntk_fn(f_t, (), vmap_axes=1)(x1, x2, w)
    assert got.shape == (2, 2, 3, 2)
    assert _rel(got, _zip(_full_reference(f_t, w, x1, x2))) <= 1e-10
    traced = empirical_ntk_fn(f_t, (0,), vmap_axes=1, implementation=2)(x1, x2, w)
    assert _rel(traced, np.einsum("oaob->ab", _full_reference(f_t, w, x1, x2)) / 2) <= 1e-10
    # A shared leaf (in axis None), different for x1 and x2.
    f_s = lambda p, x: jnp.tanh((x[0] + x[1]) @ p)
    y1, y2 = (_normal(12, (3, 4)), _normal(13, (4,))), (_normal(14, (2, 4)), _normal(15, (4,)))
    got = empirical_ntk_fn(f_s, (), vmap_axes=((0, None), 0, {}))(y1, y2, w)
    assert _rel(got, _zip(_full_reference(f_s, w, y1, y2))) <= 1e-10
    # NT's plain pytree: in_axes = out_axes = {"a": 0}.
    f_d = lambda p, x: {"a": jnp.tanh(x["a"] @ p)}
    z1, z2 = {"a": x1.T}, {"a": x2.T}
    got = empirical_ntk_fn(f_d, (), vmap_axes={"a": 0})(z1, z2, w)
    assert _rel(got["a"], _zip(_full_reference(f_d, w, z1, z2)["a"])) <= 1e-10


def test_vmap_axes_forms_refused():
    """Catches forms we cannot honour being read as something else."""
    f = lambda p, x: jnp.tanh(x @ p)
    x, w = np.ones((3, 4)), np.ones((4, 2))
    for form, match in ((1.5, r"vmap_axes: got 1.5"), ("0", r"vmap_axes: got '0'"),
                        ((0, 0, "x"), r"kwargs_axes 'x' is neither")):
        with pytest.raises(ValueError, match=match):
            empirical_ntk_fn(f, vmap_axes=form)
    for form, kw, match in (((0, None, {}), {}, r"out axis None"),
                            (((0, 0), 0, {}), {}, r"do not match its structure"),
                            ((0, 0, {"mask": 0}), {}, r"kwargs_axes for \['mask'\]"),
                            (2, {}, r"axis 2 does not exist in x1")):
        with pytest.raises(ValueError, match=match):
            empirical_ntk_fn(f, vmap_axes=form)(x, None, w, **kw)
    with pytest.raises(ValueError, match=r"trace_axes: got \(1,\), which includes the batch axis 1"):
        empirical_ntk_fn(lambda p, x: jnp.tanh(p.T @ x), (1,), vmap_axes=1)(x.T, None, w)
    with pytest.raises(ValueError, match=r"vmap_axes: got 1, expected 0 or None with learner_config"):
        empirical_ntk_fn(None, vmap_axes=1, learner_config=CONFIGS["paper"])
    with pytest.raises(ValueError, match=r"kwargs: got \['mask'\], expected none"):
        empirical_ntk_fn(None, implementation="analytic", learner_config=CONFIGS["paper"])(
            np.ones((2, 3, 3)), None, _params(CONFIGS["paper"]), mask=np.ones(2))


def test_analytic_tiled_branch_matches_jacobian(x64, monkeypatch):
    """Catches a wrong row tiling of large analytic kernels (N1·N2·n² ≥ 2¹⁶: lax.map
    over x1 in tiles of _ANALYTIC_ROWS, here with a remainder row)."""
    cfg = CONFIGS["paper"]
    params = _params(cfg)
    x1, x2 = _inputs(cfg, 41, 8, seed=5), _inputs(cfg, 25, 8, seed=6)
    assert 41 * 25 * 8 * 8 >= ntk_analytic._ANALYTIC_TILE_MIN
    rows, dense = [], ntk_analytic._analytic_dense
    # Patched where `_analytic_block` looks it up: its own module's globals.
    monkeypatch.setattr(ntk_analytic, "_analytic_dense",
                        lambda c, p1, *rest: rows.append(p1["s"].shape[0]) or dense(c, p1, *rest))
    ntk_module._whole.clear_cache()     # trace anew, so that the recorder sees the branch taken
    got = empirical_ntk_fn(None, implementation="analytic", learner_config=cfg)(x1, x2, params)
    assert rows and set(rows) == {1}     # only one-row tiles, never the 41 rows at once
    want = np.einsum("aicbjc->abij", _full_reference(_FNS["paper"], params, x1, x2))
    assert got.shape == want.shape == (41, 25, 8, 8)
    assert _rel(got, want) <= 1e-10
