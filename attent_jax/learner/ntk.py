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
  mean pooling; derivation in `attent_jax.learner.ntk_analytic`). NT's
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
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from attent_jax.learner.model import LearnerConfig, learner_fn
from attent_jax.learner.ntk_analytic import _analytic_block, _analytic_features
from attent_jax.learner.ntk_blocks import _jacobian_block, _jacobian_exact, _ntvp_block, _ntvp_exact
from attent_jax.learner.ntk_forms import _is_learner, _learner_layout, _split_kwargs, _vmap_form
from attent_jax.learner.ntk_inputs import _validate
from attent_jax.learner.ntk_layout import _axes_tuple, _finish, _swap_pairs


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
      importance-weighted feature Gram matrices (see `ntk_analytic._analytic_dense`).
      Time O(N·H·n·m·(d + d' + o·(d' + d_kv))) for features plus
      O(N1·N2·n²·(d + H·(d' + d_kv) + H·O²·(d' + d_kv))) for the kernel,
      instead of the O(N1·N2·n²·O²·H·d·d') of contracting Jacobians; memory
      O(N·n·H·O·(d' + d_kv)) for the features.
    """

    JACOBIAN = "jacobian"
    NTVP = "ntvp"
    ANALYTIC = "analytic"


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


# ---------------------------------------------------------------- implementation

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
