"""The empirical (attention) neural tangent kernel (paper §4.2, eqs. 13–15; Appendix A.4).

    K_θ(x, x')_{α β} = ⟨ ∂f_α(x)/∂θ , ∂f_β(x')/∂θ ⟩      (sum over every parameter)

for α, β indexing the outputs of ``f(params, x)`` (element × output channel for
the attention learner). The API follows neural-tangents' ``empirical_ntk_fn``
(NT below) so that NT code runs unchanged but for the import:

- ``empirical_ntk_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation, batch_size,
  learner_config) -> ntk_fn(x1, x2=None, params, **apply_fn_kwargs)``; ``x2=None`` means ``x1``.
- ``f(params, x, **kwargs)``: any function with pytree ``params`` and pytree ``x``
  (e.g. the pair ``(s, t)`` of cross-attention). It may return one array or a
  pytree of arrays; a pytree gives one kernel per output leaf, in the same
  pytree (no cross-leaf terms), as NT does.
- ``**apply_fn_kwargs`` reach ``f`` split as NT splits them: ``rng`` becomes one
  key for x1 and another for x2 (the same key when x2 is None or equals x1), a
  pair ``(v1, v2)`` gives v1 to x1 and v2 to x2, anything else goes to both.
  Non-array values (Python flags) are passed as compile-time constants.
- ``vmap_axes`` certifies which axes ``f`` treats independently, in NT's forms:
  an int (batch axis of every leaf of x and of the output), a pytree matching x
  (then also used for the output, as in NT), a triple
  ``(in_axes, out_axes, kwargs_axes)`` (``kwargs_axes`` an int or a dict from
  kwarg name to axis / pytree of axes; absent kwargs are shared by every
  example), or None. Default 0 here (NT's default is None: pass None to be NT's
  exact). With an axis, each example's Jacobian is taken on its own (f sees a
  batch of one), which is wrong for an f that couples the examples of a batch
  (batch-mean subtraction, batch norm). ``None`` (or a triple whose in_axes and
  kwargs_axes are all None) means "f may couple the batch": the Jacobian of the
  whole output f(params, x) is taken at once, exactly, at N times the cost of
  the per-example one, and ``batch_size`` is refused (blocks would change the
  batch f sees). Forms we cannot honour raise a `ValueError` naming them.
- Axes are numbered on each output leaf of ``f`` *including* its batch axis (the
  vmap out axis), as in NT; negative numbers count from the end. The batch axis
  can be neither traced nor diagonal; with ``vmap_axes=None`` there is no batch
  axis and every axis may be.
- ``trace_axes``: each traced output axis a contributes Σ_a K[(…, a), (…, a)],
  and the result is divided by the product of the traced sizes — i.e. the
  *mean* over the traced diagonal, not the sum. So with the default
  ``trace_axes=(-1,)`` a learner with o outputs gives (1/o)·Σ_a K_{ia, ja}, and
  for o = 1 exactly the kernel of MATH.md.
- ``diagonal_axes``: keep only entries with equal indices on that axis (one axis
  in the result instead of a pair).
- Layout, per output leaf, NT's: for each output axis in order, (size1, size2)
  for a kept pair, (size,) for a diagonal axis, nothing for a traced axis; the
  batch axis is a kept pair. For an output (N, n, o) and ``trace_axes=(-1,)``:
  (N1, N2, n, n); with ``trace_axes=()``: (N1, N2, n, n, o, o); with the batch
  on output axis 1 of (o, N): (o, o, N1, N2).
- ``implementation``: "jacobian" (reference), "ntvp" (low memory) or "analytic"
  (the closed form for the learner of `attent_jax.learner.model`, MATH.md's
  K_ij = (AS)_i·(A'S')_j + c²(s_i·s'_j)(c_i·c'_j) + c²(u_i·u'_j)(q_i·q'_j)
  generalised to o outputs, H heads, causal masks, cross-attention, W_O and
  mean pooling; derivation in `_analytic_features` / `_analytic_dense`). NT's
  `NtkImplementation` values are accepted too, as ints or names (any case):
  AUTO (0) and JACOBIAN_CONTRACTION (1) -> "jacobian", NTK_VECTOR_PRODUCTS (2)
  -> "ntvp", STRUCTURED_DERIVATIVES (3) -> "analytic" where f is the learner of
  ``learner_config``, else "jacobian" (the same kernel, computed plainly).
  Costs in `Implementation`. All agree to rounding (tests: float64 ≤ 1e-10 relative).
- "analytic" never calls ``f``: it computes the kernel of the learner of
  ``learner_config``. So it takes only an ``f`` it can establish to be that
  learner — None, ``learner_fn(learner_config)``, or the ``f`` of
  ``functional(model)`` for an `AttentionLearner` of that config — and raises
  a `ValueError` naming any other ``f`` (use "jacobian" for it).
- ``batch_size``: the kernel is filled in blocks of batch_size × batch_size
  examples (the last block overlaps its neighbour when N is no multiple), so
  memory beyond the output is one block's work; with ``x2=None`` only blocks on
  or above the diagonal are computed.
- Inputs are checked before tracing; bad ones raise a one-line `ValueError`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from attent_jax.learner.model import LearnerConfig, init_params, learner_fn
    >>> from attent_jax.learner.ntk import empirical_ntk_fn
    >>> cfg = LearnerConfig(d_in=4, d_qk=8)
    >>> params = init_params(cfg, jax.random.key(0))
    >>> s = jax.random.normal(jax.random.key(1), (3, 5, 4))
    >>> ntk = empirical_ntk_fn(learner_fn(cfg), implementation="analytic", learner_config=cfg)
    >>> ntk(s, None, params).shape
    (3, 3, 5, 5)
"""

from __future__ import annotations

import enum
import functools
import inspect
import math
import string
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from attent_jax.learner.model import AttentionLearner, LearnerConfig, attention_weights, check_inputs, functional, learner_fn
from attent_jax.learner.validate import check_array

# Every contraction of ours runs at full float32 precision: on accelerators the
# default may be TF32, which would break the implementations' agreement.
_PREC = lax.Precision.HIGHEST


class Implementation(str, enum.Enum):
    """How the kernel is computed. Costs for N1×N2 examples with O outputs each
    (O = the size of one example's output), P parameters, C_f the cost of one
    example's forward pass; with traced axes O² shrinks accordingly. With
    ``vmap_axes=None`` the "example" is the whole batch (O = N·O, C_f = N·C_f).

    - ``JACOBIAN`` (reference, default): per-example Jacobians with `jax.jacrev`
      (vmapped over examples), contracted over parameters.
      Time O((N1 + N2)·O·C_f + N1·N2·O²·P); memory O((N1 + N2)·O·P) for the
      Jacobians (per block of ``batch_size`` examples when chunked).
    - ``NTVP``: NTK-vector products, ``jvp(f(x1), vjp(f(x2))(e))`` for every
      basis cotangent e of one x2 example, one x2 example at a time.
      Time O(N2·O·(C_f + N1·C_f)); memory O(O·P + N1·O²) besides the output:
      never more than one example's Jacobian (the O cotangents' vjps).
    - ``ANALYTIC``: the closed form of the single-layer learner of
      `attent_jax.learner.model` (needs ``learner_config``), a sum of Hadamard products of
      importance-weighted feature Gram matrices (see `_analytic_dense`).
      Time O(N·H·n·m·(d + d' + o·(d' + d_kv))) for features plus
      O(N1·N2·n²·(d + H·(d' + d_kv) + H·O²·(d' + d_kv))) for the kernel,
      instead of the O(N1·N2·n²·O²·H·d·d') of contracting Jacobians; memory
      O(N·n·H·O·(d' + d_kv)) for the features.
    """

    JACOBIAN = "jacobian"
    NTVP = "ntvp"
    ANALYTIC = "analytic"


PAIR, TRACE, DIAG = "pair", "trace", "diag"

# neural-tangents' NtkImplementation, by value and by name. None stands for
# STRUCTURED_DERIVATIVES, resolved once f and learner_config are known.
_NT_CODES = {0: "auto", 1: "jacobian_contraction", 2: "ntk_vector_products", 3: "structured_derivatives"}
_NT_NAMES = {"auto": Implementation.JACOBIAN, "jacobian_contraction": Implementation.JACOBIAN,
             "ntk_vector_products": Implementation.NTVP, "structured_derivatives": None}


def empirical_ntk_fn(f: Callable | None, trace_axes=(-1,), diagonal_axes=(), vmap_axes=0,
                     implementation="jacobian", batch_size: int | None = None,
                     learner_config: LearnerConfig | None = None):
    """Build ``ntk_fn(x1, x2=None, params, **kwargs) -> K`` for the empirical NTK of ``f`` (paper eq. 13).

    Args:
      f: ``f(params, x, **kwargs) -> array or pytree of arrays``; may be None
        when ``learner_config`` is given (then `attent_jax.learner.model.learner_fn(learner_config)`).
        "analytic" takes only an f established to be that learner (module docstring).
      trace_axes: output axes (batch axis excluded, negatives allowed) to trace
        over; the trace is divided by the product of their sizes (a mean).
      diagonal_axes: output axes on which to keep only the diagonal.
      vmap_axes: NT's forms (module docstring): int, pytree matching x, triple
        ``(in_axes, out_axes, kwargs_axes)``, or None for an f that may couple
        the examples of a batch (exact whole-batch Jacobians, no batch_size).
        With ``learner_config`` only 0 or None (the learner's layout).
      implementation: "jacobian" | "ntvp" | "analytic", an `Implementation`, or
        NT's `NtkImplementation` as an int 0-3 or a name (any case).
      batch_size: compute the kernel in blocks of at most ``batch_size`` × ``batch_size``
        examples, written into the preallocated output, so that memory beyond
        the output is bounded by a block's; None = one block.
      learner_config: the `LearnerConfig` of the attention learner; required by
        "analytic", and used by every implementation to validate inputs.

    Returns ``ntk_fn(x1, x2=None, params, **kwargs)`` with the layout described in
    the module docstring (a pytree of kernels for a pytree output).

    Example:
        >>> f = lambda p, x: jnp.tanh(x @ p["w"])          # (N, 3) -> (N, 2)
        >>> ntk = empirical_ntk_fn(f, trace_axes=(), implementation="ntvp")
        >>> ntk(jnp.ones((4, 3)), None, {"w": jnp.ones((3, 2))}).shape
        (4, 4, 2, 2)
    """
    impl = _parse_implementation(implementation)
    form = _vmap_form(vmap_axes)
    trace_axes = _axes_tuple("trace_axes", trace_axes)
    diagonal_axes = _axes_tuple("diagonal_axes", diagonal_axes)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size: got {batch_size!r}, expected a positive integer or None")
    if learner_config is not None and not isinstance(learner_config, LearnerConfig):
        raise ValueError(f"learner_config: got {type(learner_config).__name__}, expected a LearnerConfig or None")
    if f is not None and not callable(f):
        raise ValueError(f"f: got {type(f).__name__}, expected a callable f(params, x)")
    if impl is None:   # STRUCTURED_DERIVATIVES: our structured form where it is valid
        impl = (Implementation.ANALYTIC if learner_config is not None and _is_learner(f, learner_config)
                else Implementation.JACOBIAN)
    analytic = impl is Implementation.ANALYTIC
    if analytic and learner_config is None:
        raise ValueError("learner_config: got None, expected a LearnerConfig for implementation='analytic'")
    if learner_config is not None and form is not None and not _learner_layout(form):
        raise ValueError(f"vmap_axes: got {vmap_axes!r}, expected 0 or None with learner_config (the learner's "
                         "batch is axis 0 of s, t and of its output)")
    if analytic and not _is_learner(f, learner_config):
        raise ValueError(f"f: got {getattr(f, '__qualname__', type(f).__name__)!r}, which implementation='analytic' "
                         "cannot establish to be the learner of learner_config (it computes that learner's kernel, "
                         "never calling f); pass f=None, learner_fn(learner_config) or functional(model)[0] of an "
                         "AttentionLearner(learner_config), or use implementation='jacobian' for this f")
    if f is None:
        if learner_config is None:
            raise ValueError("f: got None, expected a function f(params, x) (or a learner_config)")
        f = learner_fn(learner_config)
    if analytic:
        # The learner treats examples independently, so its exact kernel is the per-example one.
        form = (0, 0, {})
    elif form is None and batch_size is not None:
        raise ValueError(f"batch_size: got {batch_size} with vmap_axes=None, expected None: f may couple the "
                         "examples of a batch, so blocks of the batch would change its outputs")

    kind = impl.value
    # The analytic kernel never calls f: leaving it out of the static arguments
    # lets every factory with the same config share compilations.
    f_apply = learner_fn(learner_config) if analytic else f

    def ntk_fn(x1, x2=None, params=None, **kwargs):
        same = x2 is None
        if analytic and kwargs:
            raise ValueError(f"kwargs: got {sorted(kwargs)}, expected none for implementation='analytic' "
                             "(the learner takes none)")
        kw1, kw2 = _split_kwargs(kwargs, x1, x2)
        side1, side2, g, modes = _validate(f_apply, learner_config, form, trace_axes, diagonal_axes,
                                           x1, x2, params, kw1, kw2)
        n1, n2 = side1.n, (side1 if same else side2).n
        static = dict(kind=kind, g=None if analytic else g, cfg=learner_config, modes=modes)
        data1 = x1 if analytic else (side1.d, side1.b)
        data2 = None if same else x2 if analytic else (side2.d, side2.b)
        if n1 is None and batch_size is not None:
            raise ValueError(f"batch_size: got {batch_size} with vmap_axes={vmap_axes!r}, which batches no input "
                             "leaf, expected None (f sees the whole batch)")
        bs = batch_size or max(n1 or 0, n2 or 0)
        if n1 is None or (n1 <= bs and n2 <= bs):
            kernels = _whole(data1, data2, params, **static)
        else:
            p1 = _prepare(params, data1, kind=kind, g=static["g"], cfg=learner_config)
            p2 = None if same else _prepare(params, data2, kind=kind, g=static["g"], cfg=learner_config)
            kernels = _chunked(p1, p2, params, static, n1, n2, bs)
        return _finish(kernels, modes, side1.out_axes, side1.out_def)

    return ntk_fn


# ---------------------------------------------------------------- implementation, f and vmap_axes

def _parse_implementation(implementation):
    """An `Implementation`, or None for NT's STRUCTURED_DERIVATIVES."""
    if isinstance(implementation, Implementation):
        return implementation
    name = None
    if isinstance(implementation, int) and not isinstance(implementation, bool):
        name = _NT_CODES.get(int(implementation))
    elif isinstance(implementation, str):
        low = implementation.lower()
        if low in {i.value for i in Implementation}:
            return Implementation(low)
        name = low if low in _NT_NAMES else None
    if name is None:
        raise ValueError(f"implementation: got {implementation!r}, expected one of "
                         f"{[i.value for i in Implementation]}, an NtkImplementation int 0-3 or one of "
                         f"{[n.upper() for n in _NT_NAMES]}")
    return _NT_NAMES[name]


_LEARNER_FN_CODE = learner_fn(LearnerConfig(d_in=1, d_qk=1)).__code__
_FUNCTIONAL_CODE = next(c for c in functional.__code__.co_consts if inspect.iscode(c) and c.co_name == "f")


@functools.lru_cache(maxsize=None)
def _learner_graphdef(cfg: LearnerConfig):
    return nnx.split(nnx.eval_shape(lambda: AttentionLearner(cfg, rngs=nnx.Rngs(0))))[0]


def _is_learner(f, cfg: LearnerConfig) -> bool:
    """Whether f is known to compute the learner of cfg: the closures of
    `learner_fn(cfg)` and of `functional(AttentionLearner(cfg))`, recognised by
    their code and captured config / graph. Anything else (even 2·learner) is not."""
    if f is None:
        return True
    code = getattr(f, "__code__", None)
    if code is not _LEARNER_FN_CODE and code is not _FUNCTIONAL_CODE:
        return False
    cells = dict(zip(code.co_freevars, (c.cell_contents for c in f.__closure__ or ())))
    if code is _LEARNER_FN_CODE:
        return cells.get("config") == cfg
    return cells.get("graphdef") == _learner_graphdef(cfg)


def _is_axis(a) -> bool:
    return isinstance(a, int) and not isinstance(a, bool)


def _axis_leaves(tree):
    return jax.tree.leaves(tree, is_leaf=lambda a: a is None)


def _vmap_form(vmap_axes):
    """NT's vmap_axes -> None (no vmap: exact) or (in_axes, out_axes, kwargs_axes)."""
    if vmap_axes is None:
        return None
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        in_axes, out_axes, kw_axes = vmap_axes
    else:
        in_axes, out_axes, kw_axes = vmap_axes, vmap_axes, {}
    kw_trees = [kw_axes] if _is_axis(kw_axes) else list(kw_axes.values()) if isinstance(kw_axes, dict) else None
    if kw_trees is None:
        raise ValueError(f"vmap_axes: got {vmap_axes!r}, whose kwargs_axes {kw_axes!r} is neither an int nor a dict")
    for tree in [in_axes, out_axes] + kw_trees:
        if not all(a is None or _is_axis(a) for a in _axis_leaves(tree)):
            raise ValueError(f"vmap_axes: got {vmap_axes!r}, expected an int, None, a pytree of ints / None, "
                             "or a triple (in_axes, out_axes, kwargs_axes)")
    if all(a is None for a in _axis_leaves((in_axes, kw_trees))):
        return None   # NT vmaps nothing then: f sees whole batches
    return in_axes, out_axes, kw_axes


def _learner_layout(form) -> bool:
    in_axes, out_axes, _ = form
    return all(a == 0 for a in _axis_leaves((in_axes, out_axes)))


def _split_kwargs(kwargs, x1, x2):
    """NT's split of **apply_fn_kwargs into those of x1 and of x2."""
    kw1, kw2 = {}, {}
    for k, v in kwargs.items():
        if x2 is not None and k == "rng" and v is not None:
            kw1[k], kw2[k] = _read_keys(v, x1, x2)
        elif isinstance(v, tuple) and len(v) == 2:
            kw1[k], kw2[k] = v
        else:
            kw1[k] = kw2[k] = v
    return kw1, kw2


def _read_keys(key, x1, x2):
    """NT's rng keys for x1 and x2: equal iff x1 equals x2 (so that K(x, x) is a Gram matrix)."""
    same = _equal_values(x1, x2)
    if isinstance(key, tuple) and len(key) == 2:
        k1, k2 = key
        if same:
            return k1, k1
        return k1, (jax.random.fold_in(k2, 1) if _equal_values(k1, k2) else k2)
    return key, (key if same else jax.random.fold_in(key, 1))


def _equal_values(a, b) -> bool:
    """NT's x1_is_x2: same structure and shapes, values within 1e-12 (keys: equal data)."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if u is v:
            continue
        u, v = (np.asarray(jax.random.key_data(w) if _is_key(w) else w) for w in (u, v))
        if u.shape != v.shape:
            return False
        if np.issubdtype(u.dtype, np.inexact) or np.issubdtype(v.dtype, np.inexact):
            if not np.all(np.abs(u - v) < 1e-12):
                return False
        elif not np.array_equal(u, v):
            return False
    return True


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


class _Apply:
    """``f`` on the internal layout: batched input leaves arrive with the batch
    on axis 0 and go back to their own axis; outputs leave as a tuple of leaves
    with the batch on axis 0. Hashable on its parts, so that jit shares
    compilations between factories of the same f and layout.

    ``plan`` has one entry per leaf of x then of the kwargs (sorted by name):
    ("d", axis) batched, ("b", None) shared by every example, ("s", value) a
    compile-time constant (a Python value f may branch on).
    """

    def __init__(self, f, x_def, kw_keys, kw_def, plan, out_axes):
        self.f, self.x_def, self.kw_keys, self.kw_def, self.plan, self.out_axes = (
            f, x_def, kw_keys, kw_def, plan, out_axes)
        self.d_axes = tuple(a for k, a in plan if k == "d")
        self.exact = not self.d_axes
        self._key = (f, x_def, kw_keys, kw_def, plan, out_axes)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Apply) and self._key == other._key

    def __call__(self, params, d, b):
        d, b = iter(d), iter(b)
        leaves = [jnp.moveaxis(next(d), 0, v) if k == "d" else next(b) if k == "b" else v for k, v in self.plan]
        nx = self.x_def.num_leaves
        x = jax.tree.unflatten(self.x_def, leaves[:nx])
        values = jax.tree.unflatten(self.kw_def, leaves[nx:])
        outs = jax.tree.leaves(self.f(params, x, **dict(zip(self.kw_keys, values))))
        if self.out_axes is None:
            return tuple(outs)
        return tuple(jnp.moveaxis(o, a, 0) for o, a in zip(outs, self.out_axes))


# ---------------------------------------------------------------- compiled pieces
# Module-level jits with the implementation, f (as `_Apply`), config and axis
# modes static: compilations are shared by every ntk_fn with the same arguments
# and shapes. `x2 = None` (same) passes x1 once, so work on it (Jacobians,
# features) is traced once. Generic data is (batched leaves, shared leaves);
# prepared, {"d": batched leaves with the batch on axis 0, "b": shared leaves}.
# Kernels travel as a tuple, one per output leaf.

_STATIC = ("kind", "g", "cfg", "modes")


def _prepare_impl(params, data, *, kind, g, cfg):
    """Per-example data the pair kernel reads: analytic features, or the batched leaves."""
    if kind == Implementation.ANALYTIC.value:
        return {"d": _analytic_features(cfg, params, data), "b": ()}
    d, b = data
    return {"d": tuple(jnp.moveaxis(leaf, a, 0) for leaf, a in zip(d, g.d_axes)), "b": b}


def _pair(p1, p2, params, *, kind, g, cfg, modes):
    p2 = p1 if p2 is None else p2
    if kind == Implementation.ANALYTIC.value:
        return (_analytic_block(cfg, p1["d"], p2["d"], params, modes[0]),)
    if g.exact:
        base = _jacobian_exact if kind == Implementation.JACOBIAN.value else _ntvp_exact
    else:
        base = _jacobian_block if kind == Implementation.JACOBIAN.value else _ntvp_block
    # f's own matmuls too: the reference must not run at reduced (TF32) precision.
    with jax.default_matmul_precision("highest"):
        return base(g, p1, p2, params, modes)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _whole(x1, x2, params, *, kind, g, cfg, modes):
    p1 = _prepare_impl(params, x1, kind=kind, g=g, cfg=cfg)
    p2 = None if x2 is None else _prepare_impl(params, x2, kind=kind, g=g, cfg=cfg)
    return _pair(p1, p2, params, kind=kind, g=g, cfg=cfg, modes=modes)


_prepare = jax.jit(_prepare_impl, static_argnames=("kind", "g", "cfg"))
_block = jax.jit(_pair, static_argnames=_STATIC)


def _finish(kernels, modes, out_axes, out_def):
    """NT's layout: each leaf's batch pair moved to the place of its output axis; the output's pytree."""
    done = []
    for k, m, a in zip(kernels, modes, out_axes or (None,) * len(kernels)):
        if a:
            pos = sum({PAIR: 2, DIAG: 1, TRACE: 0}[mode] for mode in m[:a])
            k = jnp.moveaxis(k, (0, 1), (pos, pos + 1))
        done.append(k)
    return jax.tree.unflatten(out_def, done)


# ---------------------------------------------------------------- axes and layout

def _axes_tuple(name: str, axes) -> tuple[int, ...]:
    if isinstance(axes, int) and not isinstance(axes, bool):
        axes = (axes,)
    if not isinstance(axes, (tuple, list)) or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ValueError(f"{name}: got {axes!r}, expected a tuple of ints (output axes)")
    return tuple(axes)


def _modes(out1, out2, trace_axes, diagonal_axes, batch_axis) -> tuple[str, ...]:
    """PAIR / TRACE / DIAG for each output axis but the batch axis (None: every axis), checking the axis numbers."""
    rank = len(out1)
    canon = {}
    for name, axes in (("trace_axes", trace_axes), ("diagonal_axes", diagonal_axes)):
        seen = []
        for a in axes:
            if not -rank <= a < rank:
                raise ValueError(f"{name}: got axis {a} for an output of shape {tuple(out1)}, "
                                 f"expected axes in [{-rank}, {rank - 1}]"
                                 + ("" if batch_axis is None else f" other than the batch axis {batch_axis}"))
            a %= rank
            if a == batch_axis:
                raise ValueError(f"{name}: got {tuple(axes)}, which includes the batch axis {batch_axis} of output "
                                 f"shape {tuple(out1)}; expected non-batch axes only")
            if a in seen:
                raise ValueError(f"{name}: got {tuple(axes)}, expected distinct axes")
            seen.append(a)
        canon[name] = seen
    both = set(canon["trace_axes"]) & set(canon["diagonal_axes"])
    if both:
        raise ValueError(f"diagonal_axes: got axes {sorted(both)} also in trace_axes, expected disjoint axes")
    modes = []
    for a in range(rank):
        if a == batch_axis:
            continue
        mode = TRACE if a in canon["trace_axes"] else DIAG if a in canon["diagonal_axes"] else PAIR
        if mode != PAIR and out1[a] != out2[a]:
            name = "trace_axes" if mode == TRACE else "diagonal_axes"
            raise ValueError(f"{name}: axis {a} has size {out1[a]} for x1 but {out2[a]} for x2 "
                             f"(outputs {tuple(out1)} and {tuple(out2)}), expected equal sizes")
        modes.append(mode)
    return tuple(modes)


def _layout_subscripts(modes):
    """einsum letters for the output axes of x1, of x2 and of the kernel (batch letters excluded)."""
    letters = iter(string.ascii_lowercase[2:])   # 'a', 'b' are the batch axes; upper case, the parameters'
    sub1, sub2, out = "", "", ""
    for mode in modes:
        l1 = next(letters)
        l2 = l1 if mode != PAIR else next(letters)
        sub1, sub2 = sub1 + l1, sub2 + l2
        out += {PAIR: l1 + l2, DIAG: l1, TRACE: ""}[mode]
    return sub1, sub2, out


def _trace_size(shape, modes) -> int:
    return math.prod(s for s, m in zip(shape, modes) if m == TRACE)


def _swap_pairs(block, modes):
    """K(x2, x1) from K(x1, x2): swap the two axes of every pair (batch first)."""
    perm, pos = [1, 0], 2
    for mode in modes:
        if mode == PAIR:
            perm += [pos + 1, pos]
            pos += 2
        elif mode == DIAG:
            perm.append(pos)
            pos += 1
    return jnp.transpose(block, perm)


# ---------------------------------------------------------------- validation

class _Side(NamedTuple):
    """One of x1, x2 after checking: its leaves, how f takes each, its batch size and outputs."""
    x_leaves: list
    x_def: object
    kw_keys: tuple
    kw_def: object
    plan: tuple
    d: tuple
    b: tuple
    n: int | None           # None: no batched leaf, f sees the whole batch
    out: list | None = None
    out_def: object = None
    out_axes: tuple | None = None


def _validate(f, cfg, form, trace_axes, diagonal_axes, x1, x2, params, kw1, kw2):
    """Check inputs before any tracing; return both sides, the `_Apply` and each output leaf's modes."""
    if params is None:
        raise ValueError("params: got None, expected the parameter pytree of f")
    leaves = jax.tree.leaves(params)
    if not leaves or not all(hasattr(p, "shape") for p in leaves):
        raise ValueError(f"params: got {type(params).__name__} with leaves "
                         f"{[type(p).__name__ for p in leaves]}, expected a non-empty pytree of arrays")
    side1 = _inputs("x1", x1, kw1, form, cfg)
    side2 = side1
    if x2 is not None:
        side2 = _inputs("x2", x2, kw2, form, cfg)
        if side2.x_def != side1.x_def:
            raise ValueError(f"x2: got structure {side2.x_def}, expected {side1.x_def} as x1")
        axes = [a for _, a in side1.plan[:len(side1.x_leaves)]]
        for i, (a, b, ax) in enumerate(zip(side1.x_leaves, side2.x_leaves, axes)):
            # The last axis is a feature axis unless it is the batch axis.
            feature = a.ndim > 1 and ax != a.ndim - 1
            if a.ndim != b.ndim or (feature and a.shape[-1] != b.shape[-1]):
                raise ValueError(f"x2: got shape {tuple(b.shape)} for leaf {i}, expected rank {a.ndim} and "
                                 f"feature size (last axis) {a.shape[-1]} as x1 {tuple(a.shape)}")
        if (side2.kw_def, [p for p in side2.plan if p[0] == "s"]) != (side1.kw_def, [p for p in side1.plan if p[0] == "s"]):
            raise ValueError(f"kwargs: got structure {side2.kw_def} for x2 but {side1.kw_def} for x1 (or other "
                             "non-array values), expected the same")
        if (side1.n is None) != (side2.n is None):
            raise ValueError("vmap_axes: batches x1 but not x2, expected the same leaves batched")
    if cfg is not None:
        _check_learner_params(cfg, params)
    side1 = _outputs("x1", side1, f, params, x1, kw1, form)
    side2 = side1 if x2 is None else _outputs("x2", side2, f, params, x2, kw2, form)
    if side2.out_def != side1.out_def:
        raise ValueError(f"f: returned structure {side2.out_def} for x2, expected {side1.out_def} as for x1")
    if cfg is not None:
        want = _outputs("x1", side1, learner_fn(cfg), params, x1, {}, form).out
        got = [tuple(o.shape) for o in side1.out]
        if [tuple(o.shape) for o in want] != got:
            raise ValueError(f"f: returned shape {got[0] if len(got) == 1 else got} for x1, expected "
                             f"{tuple(want[0].shape)} as the learner of learner_config")
    modes = tuple(_modes(o1.shape, o2.shape, trace_axes, diagonal_axes, None if side1.out_axes is None else a)
                  for o1, o2, a in zip(side1.out, side2.out, side1.out_axes or (None,) * len(side1.out)))
    g = _Apply(f, side1.x_def, side1.kw_keys, side1.kw_def, side1.plan, side1.out_axes)
    return side1, side2, g, modes


def _leaf_axes(leaves, treedef, axes, label, form):
    """Each leaf's batch axis (non-negative) or None, from an int / None or a pytree of them matching the leaves'."""
    if axes is None or _is_axis(axes):
        per = [axes] * len(leaves)
    else:
        per, axes_def = jax.tree.flatten(axes, is_leaf=lambda a: a is None)
        if axes_def != treedef:
            raise ValueError(f"vmap_axes: got {form!r}, whose axes {axes!r} for {label} do not match its "
                             f"structure {treedef}, expected an int, None or that structure")
    out = []
    for i, (leaf, a) in enumerate(zip(leaves, per)):
        if a is None or not hasattr(leaf, "shape"):
            out.append(a)
            continue
        nd = len(leaf.shape)
        if not -nd <= a < nd:
            raise ValueError(f"vmap_axes: got {form!r}, whose axis {a} does not exist in {label} (leaf {i}) of "
                             f"shape {tuple(leaf.shape)}, expected an axis in [{-nd}, {nd - 1}]")
        out.append(a % nd)
    return out


def _inputs(name, x, kw, form, cfg) -> _Side:
    if cfg is not None:
        s, t = x if isinstance(x, tuple) and len(x) == 2 else (x, None)
        try:
            check_inputs(cfg, s, t)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    x_leaves, x_def = jax.tree.flatten(x)
    if not x_leaves:
        raise ValueError(f"{name}: got {type(x).__name__} without arrays, expected an array or pytree of arrays")
    in_axes, _, kw_axes = (None, None, {}) if form is None else form
    axes = _leaf_axes(x_leaves, x_def, in_axes, name, form)
    kw_keys = tuple(sorted(kw))
    kw_leaves, kw_def = jax.tree.flatten(tuple(kw[k] for k in kw_keys))
    if isinstance(kw_axes, dict) and set(kw_axes) - set(kw_keys):
        raise ValueError(f"vmap_axes: got kwargs_axes for {sorted(set(kw_axes) - set(kw_keys))}, which are not "
                         f"among the kwargs {list(kw_keys)} passed to ntk_fn")
    for k in kw_keys:
        k_leaves, k_def = jax.tree.flatten(kw[k])
        k_axes = kw_axes if _is_axis(kw_axes) else kw_axes.get(k)
        axes += _leaf_axes(k_leaves, k_def, k_axes, f"kwargs[{k!r}]", form)
    plan, d, b, sizes = [], [], [], []
    for i, (leaf, a) in enumerate(zip(x_leaves + kw_leaves, axes)):
        is_x = i < len(x_leaves)
        label = (name + (f"[leaf {i}]" if len(x_leaves) > 1 else "")) if is_x else f"{name} kwargs (leaf {i - len(x_leaves)})"
        if not hasattr(leaf, "shape"):
            if is_x:
                raise ValueError(f"{label}: got {type(leaf).__name__}, expected an array")
            try:
                hash(leaf)
            except TypeError:
                raise ValueError(f"{label}: got an unhashable {type(leaf).__name__}, expected an array or a "
                                 "hashable constant") from None
            # An int kwargs_axes batches the array kwargs only; a constant has no axis.
            if a is not None and not _is_axis(kw_axes):
                raise ValueError(f"vmap_axes: got axis {a} for {label}, a {type(leaf).__name__} without axes")
            plan.append(("s", leaf))
            continue
        if is_x:
            check_array(label, leaf, rank=leaf.ndim, nonempty=True,
                        finite=jnp.issubdtype(leaf.dtype, jnp.inexact))
        if a is None:
            plan.append(("b", None))
            b.append(leaf)
        else:
            plan.append(("d", a))
            d.append(leaf)
            sizes.append(leaf.shape[a])
    if len(set(sizes)) > 1:
        raise ValueError(f"{name}: got leaves with batch sizes {sizes}, expected one batch size on the vmap axes "
                         "of every batched leaf")
    return _Side(x_leaves, x_def, kw_keys, kw_def, tuple(plan), tuple(d), tuple(b), sizes[0] if sizes else None)


def _outputs(name, side: _Side, f, params, x, kw, form) -> _Side:
    out = jax.eval_shape(lambda p: f(p, x, **kw), params)
    out_leaves, out_def = jax.tree.flatten(out)
    if not out_leaves or not all(hasattr(o, "shape") for o in out_leaves):
        raise ValueError(f"f: returned {type(out).__name__} for {name}, expected an array or a pytree of arrays")
    if side.n is None:
        return side._replace(out=out_leaves, out_def=out_def, out_axes=None)
    out_axes = _leaf_axes(out_leaves, out_def, form[1], f"the output of f for {name}", form)
    for o, a in zip(out_leaves, out_axes):
        if a is None:
            raise ValueError(f"vmap_axes: got {form!r}, whose out axis None (an unbatched output) is not "
                             "supported, expected each output leaf's batch axis")
        if o.shape[a] != side.n:
            raise ValueError(f"f: returned shape {tuple(o.shape)} for {name}, expected batch axis {a} of size "
                             f"{side.n} (the vmap out axis)")
    return side._replace(out=out_leaves, out_def=out_def, out_axes=tuple(out_axes))


def _check_learner_params(cfg: LearnerConfig, params):
    h, d, kv, k, o = cfg.num_heads, cfg.d_in, cfg.kv_dim, cfg.d_qk, cfg.d_out
    want = {"w_q": (h, d, k), "w_k": (h, kv, k), "w_v": (h, kv, o)}
    if cfg.out_proj:
        want["w_o"] = (h * o, o)
    got = {name: tuple(getattr(v, "shape", ())) for name, v in params.items()} if isinstance(params, dict) else None
    if got is None or got.keys() != want.keys() or any(got[n] != want[n] for n in want):
        raise ValueError(f"params: got {got if got is not None else type(params).__name__}, "
                         f"expected a dict of shapes {want} for learner_config")


# ---------------------------------------------------------------- chunking

@functools.partial(jax.jit, static_argnames="size")
def _slice(p, start, size):
    return {"d": jax.tree.map(lambda a: lax.dynamic_slice_in_dim(a, start, size, axis=0), p["d"]), "b": p["b"]}


def _starts(n, bs):
    """Block starts; the last block ends at n (overlapping its neighbour), so every
    block has the same shape and compiles once, whatever n mod bs."""
    return sorted({min(i, n - bs) for i in range(0, n, bs)})


# The output is donated so that each update happens in place: it exists once.
@functools.partial(jax.jit, donate_argnums=0)
def _write(out, block, i, j):
    return lax.dynamic_update_slice(out, block, (i, j) + (0,) * (out.ndim - 2))


@functools.partial(jax.jit, static_argnames="modes", donate_argnums=0)
def _write_swapped(out, block, i, j, *, modes):
    return lax.dynamic_update_slice(out, _swap_pairs(block, modes), (j, i) + (0,) * (out.ndim - 2))


def _chunked(p1, p2, params, static, n1, n2, bs):
    """Fill the (N1, N2, …) kernels block by block. With x2 = None (p2 None) only
    blocks on or above the diagonal are computed; the others are their
    pair-swapped transposes. Memory: the outputs, plus one block and its work."""
    same = p2 is None
    b1, b2 = min(bs, n1), min(bs, n2)
    starts1, starts2 = _starts(n1, b1), _starts(n2, b2)
    outs = None
    for a, i in enumerate(starts1):
        rows = _slice(p1, i, b1)
        for c, j in enumerate(starts2):
            if same and c < a:
                continue
            blocks = _block(rows, None if same and a == c else _slice(p1 if same else p2, j, b2), params, **static)
            if outs is None:
                outs = [jnp.zeros((n1, n2) + blk.shape[2:], blk.dtype) for blk in blocks]
            outs = [_write(out, blk, i, j) for out, blk in zip(outs, blocks)]
            if same and a != c:
                outs = [_write_swapped(out, blk, i, j, modes=m) for out, blk, m in zip(outs, blocks, static["modes"])]
    return tuple(outs)


# ---------------------------------------------------------------- jacobian and ntvp

def _one(g, params, di, b):
    """g on a single example (no batch axis in or out): a tuple of output leaves."""
    return tuple(o[0] for o in g(params, jax.tree.map(lambda a: a[None], di), b))


def _contract(j1, j2, modes, lead):
    """Σ over parameters of one output leaf's J1 ⊗ J2, in the layout of `modes`
    (``lead``: the per-example batch letters, or none for whole-batch Jacobians)."""
    sub1, sub2, out = _layout_subscripts(modes)
    l1, l2 = (lead[0], lead[1]) if lead else ("", "")
    kernel = 0.0
    for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2)):
        params_sub = string.ascii_uppercase[:a.ndim - len(l1) - len(modes)]
        kernel = kernel + jnp.einsum(f"{l1}{sub1}{params_sub},{l2}{sub2}{params_sub}->{lead}{out}", a, b,
                                     precision=_PREC)
    shape = jax.tree.leaves(j1)[0].shape[len(l1):len(l1) + len(modes)]
    return kernel / _trace_size(shape, modes)


def _jacobian_block(g, p1, p2, params, modes):
    def jac(p):
        return jax.vmap(lambda di: jax.jacrev(lambda q: _one(g, q, di, p["b"]))(params))(p["d"])
    j1 = jac(p1)
    j2 = j1 if p2 is p1 else jac(p2)
    return tuple(_contract(a, b, m, "ab") for a, b, m in zip(j1, j2, modes))


def _jacobian_exact(g, p1, p2, params, modes):
    """Whole-batch Jacobians: exact for an f that couples the examples of a batch."""
    def jac(p):
        return jax.jacrev(lambda q: g(q, (), p["b"]))(params)
    j1 = jac(p1)
    j2 = j1 if p2 is p1 else jac(p2)
    return tuple(_contract(a, b, m, "") for a, b, m in zip(j1, j2, modes))


def _ntvp_leaf(jvp1, vjp2, outs2, i, modes, lead, mapped):
    """Output leaf i's kernel from K·e for every basis cotangent e of that leaf of f(x2)."""
    o2 = outs2[i]
    sub1, sub2, out = _layout_subscripts(modes)

    def col(idx):
        e = jnp.zeros(o2.size, o2.dtype).at[idx].set(1).reshape(o2.shape)
        cot = tuple(e if k == i else jnp.zeros(o.shape, o.dtype) for k, o in enumerate(outs2))
        return jvp1(vjp2(cot)[0])[i]

    idx = jnp.arange(o2.size)
    # A whole batch's basis is long: mapped in slices, so that memory stays a slice of vjps.
    cols = lax.map(col, idx, batch_size=min(o2.size, 64)) if mapped else jax.vmap(col)(idx)
    kernel = jnp.einsum(f"{sub2}{lead}{sub1}->{lead}{out}", cols.reshape(o2.shape + cols.shape[1:]))
    return kernel / _trace_size(o2.shape, modes)


def _ntvp_block(g, p1, p2, params, modes):
    _, jvp1 = jax.linearize(lambda q: g(q, p1["d"], p1["b"]), params)

    def row(d2i):   # K(x1, x2i) per output leaf, traced and diagonalised at once: (N1, *kernel axes)
        outs2, vjp2 = jax.vjp(lambda q: _one(g, q, d2i, p2["b"]), params)
        return tuple(_ntvp_leaf(jvp1, vjp2, outs2, i, m, "a", False) for i, m in enumerate(modes))

    return tuple(jnp.moveaxis(k, 0, 1) for k in lax.map(row, p2["d"]))   # (N1, N2, …)


def _ntvp_exact(g, p1, p2, params, modes):
    """NTK-vector products on whole batches: exact for an f that couples the examples of a batch."""
    _, jvp1 = jax.linearize(lambda q: g(q, (), p1["b"]), params)
    outs2, vjp2 = jax.vjp(lambda q: g(q, (), p2["b"]), params)
    return tuple(_ntvp_leaf(jvp1, vjp2, outs2, i, m, "", True) for i, m in enumerate(modes))


# ---------------------------------------------------------------- analytic (attention learner)

def _mixing(cfg: LearnerConfig, params):
    """M (H, o, O): how head h's output channel a enters final output c (W_O, or the concatenation)."""
    h, o = cfg.num_heads, cfg.d_out
    if cfg.out_proj:
        return params["w_o"].reshape(h, o, cfg.output_dim)
    return jnp.eye(h * o, dtype=params["w_v"].dtype).reshape(h, o, h * o)


def _analytic_features(cfg: LearnerConfig, params, x):
    """Per-example, per-head features whose inner products make up the kernel.

    Derivation (one head, one example; s_i rows of S, t_j rows of T, T = S for
    self-attention; q_i = s_i W_Q, k_j = t_j W_K, v_j = t_j W_V ∈ ℝ^o,
    a_ij = softmax_j(c q_i·k_j + M_ij), f_i = Σ_j a_ij v_j). The softmax
    Jacobian gives ∂f_ia/∂logit_ij = a_ij (v_ja − f_ia) =: e_ija, and
    ∂logit_ij/∂W_Q = c s_iᵀ k_j, ∂logit_ij/∂W_K = c t_jᵀ q_i, so

        ∂f_ia/∂W_V[p, b] = δ_ab (A T)_ip
        ∂f_ia/∂W_Q = c s_iᵀ C_ia,   C_ia = Σ_j e_ija k_j      ∈ ℝ^{d'}
        ∂f_ia/∂W_K = c U_iaᵀ q_i,   U_ia = Σ_j e_ija t_j      ∈ ℝ^{d_kv}

    (MATH.md's c_i and u_i for o = 1). Head h's channel a reaches final output c
    through M_hac (W_O, or 1 where c = h·o + a); mixing gives C̃_ic = Σ_a M_hac C_ia.
    Returns arrays with the c factor folded into C̃ and Ũ.
    """
    s, t = x if isinstance(x, tuple) else (x, None)
    mix_hxoxO = _mixing(cfg, params)

    def one_example(s_nxd, t_mxd):
        t_mxd = s_nxd if t_mxd is None else t_mxd

        def one_head(w_q, w_k, w_v, mix_oxO):
            a_nxm = attention_weights(w_q, w_k, s_nxd, t_mxd, c=cfg.c, causal=cfg.causal)
            q_nxk, k_mxk, v_mxo = s_nxd @ w_q, t_mxd @ w_k, t_mxd @ w_v
            f_nxo = a_nxm @ v_mxo
            # C_ia = Σ_j a_ij v_ja k_j − f_ia (A K)_i, and likewise for U: no (n, m, o) tensor.
            c_nxoxk = (jnp.einsum("ij,ja,je->iae", a_nxm, v_mxo, k_mxk, precision=_PREC)
                       - f_nxo[:, :, None] * (a_nxm @ k_mxk)[:, None, :])
            at_nxp = a_nxm @ t_mxd
            u_nxoxp = (jnp.einsum("ij,ja,jp->iap", a_nxm, v_mxo, t_mxd, precision=_PREC)
                       - f_nxo[:, :, None] * at_nxp[:, None, :])
            ct_nxOxk = cfg.c * jnp.einsum("iae,aC->iCe", c_nxoxk, mix_oxO, precision=_PREC)
            ut_nxOxp = cfg.c * jnp.einsum("iap,aC->iCp", u_nxoxp, mix_oxO, precision=_PREC)
            return q_nxk, at_nxp, ct_nxOxk, ut_nxOxp, f_nxo

        q, at, ct, ut, fo = jax.vmap(one_head)(params["w_q"], params["w_k"], params["w_v"], mix_hxoxO)
        f_nxHo = jnp.transpose(fo, (1, 0, 2)).reshape(s_nxd.shape[0], -1)
        return {"s": s_nxd, "q": q, "at": at, "ct": ct, "ut": ut, "f": f_nxHo}

    with jax.default_matmul_precision("highest"):
        if t is None:
            return jax.vmap(lambda s1: one_example(s1, None))(s)
        return jax.vmap(one_example)(s, t)


# x1 examples per step of the analytic kernel's loop: small tiles keep the Gram
# matrices of one step in cache; measured ~2x faster on CPU than one big einsum
# at N = 256, n = 16. Kernels with fewer entries than _ANALYTIC_TILE_MIN are
# computed in one piece (cheaper to compile, no speed to gain).
_ANALYTIC_ROWS = 2
_ANALYTIC_TILE_MIN = 1 << 16


def _analytic_block(cfg: LearnerConfig, p1, p2, params, modes):
    """`_analytic_dense`, row tile by row tile for large kernels (same numbers, less memory traffic)."""
    (n1, len1), (n2, len2) = p1["s"].shape[:2], p2["s"].shape[:2]
    if n1 * n2 * len1 * len2 < _ANALYTIC_TILE_MIN:
        return _analytic_dense(cfg, p1, p2, params, modes)

    def rows(r):
        return _analytic_dense(cfg, jax.tree.map(lambda a: a[None], r), p2, params, modes)[0]
    return lax.map(rows, p1, batch_size=_ANALYTIC_ROWS)


def _analytic_dense(cfg: LearnerConfig, p1, p2, params, modes):
    """The kernel from features: a sum over parameter blocks of (element Gram) ∘ (output Gram).

    For x1 element i, output c and x2 element j, output k (all heads h):

        K = Σ_h (A_hT_h)_i·(A'_hT'_h)_j · G_h[c, k]          (W_V; G_h = M_hᵀ M_h)
          + (s_i·s'_j) · Σ_h C̃_hic·C̃'_hjk                   (W_Q)
          + Σ_h (q_hi·q'_hj) · (Ũ_hic·Ũ'_hjk)                 (W_K)
          + (F_i·F'_j) · δ_ck                                  (W_O, F = concatenated heads)

    which for o = H = 1 and c = 1 is MATH.md's
    K_ij = (AS)_i·(A'S')_j + c²(s_i·s'_j)(c_i·c'_j) + c²(u_i·u'_j)(q_i·q'_j).
    Each Gram costs N1·N2·n² times a feature width, never d·d'. Pooled
    learners average the element kernel over i and j (pooling is linear).
    """
    pooled = cfg.pool == "mean"
    elem_mode, out_mode = (PAIR, modes[0]) if pooled else modes
    ei, ej = "i", ("j" if elem_mode == PAIR else "i")
    e_out = ei + ej if elem_mode == PAIR else "i"
    oc, ok = "c", ("k" if out_mode == PAIR else "c")
    o_out = {PAIR: "ck", DIAG: "c", TRACE: ""}[out_mode]
    n_out = len(o_out)

    def elem(a, b):      # element Gram: (N1, N2, i[, j])
        return jnp.einsum(f"a{ei}x,b{ej}x->ab{e_out}", a, b, precision=_PREC)

    def outer(a, b):     # output-channel Gram: (N1, N2, i[, j], [c[, k]])
        return jnp.einsum(f"a{ei}{oc}x,b{ej}{ok}x->ab{e_out}{o_out}", a, b, precision=_PREC)

    def times(e, o):
        return e.reshape(e.shape + (1,) * n_out) * o

    def out_identity(m):  # output-channel factor of a term that is m ⊗ 1 over (i, j)
        return {PAIR: m, DIAG: jnp.diagonal(m), TRACE: jnp.trace(m)}[out_mode]

    mix = _mixing(cfg, params)
    gram_hxOxO = jnp.einsum("haC,haK->hCK", mix, mix, precision=_PREC)
    # W_Q: the element factor s_i·s'_j is the same for every head, so heads and
    # widths contract in one einsum.
    kernel = times(elem(p1["s"], p2["s"]),
                   jnp.einsum(f"ah{ei}{oc}x,bh{ej}{ok}x->ab{e_out}{o_out}", p1["ct"], p2["ct"], precision=_PREC))
    for h in range(cfg.num_heads):
        kernel = kernel + times(elem(p1["at"][:, h], p2["at"][:, h]), out_identity(gram_hxOxO[h]))
        kernel = kernel + times(elem(p1["q"][:, h], p2["q"][:, h]), outer(p1["ut"][:, h], p2["ut"][:, h]))
    if cfg.out_proj:
        eye = jnp.eye(cfg.output_dim, dtype=kernel.dtype)
        kernel = kernel + times(elem(p1["f"], p2["f"]), out_identity(eye))

    n = p1["s"].shape[1]
    if pooled:
        kernel = kernel.mean(axis=(2, 3))
    elif elem_mode == TRACE:
        kernel = kernel.sum(axis=2) / n
    return kernel / (cfg.output_dim if out_mode == TRACE else 1)
