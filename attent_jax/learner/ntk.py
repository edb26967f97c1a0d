"""The empirical (attention) neural tangent kernel (paper §4.2, eqs. 13–15; Appendix A.4).

    K_θ(x, x')_{α β} = ⟨ ∂f_α(x)/∂θ , ∂f_β(x')/∂θ ⟩      (sum over every parameter)

for α, β indexing the outputs of ``f(params, x)`` (element × output channel for
the attention learner). The API follows neural-tangents' ``empirical_ntk_fn`` so
its users feel at home:

- ``empirical_ntk_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation, batch_size,
  learner_config) -> ntk_fn(x1, x2=None, params)``; ``x2=None`` means ``x1``.
- ``f(params, x)``: any function with pytree ``params``; ``x`` may be a pytree
  (e.g. the pair ``(s, t)`` of cross-attention) whose leaves all carry the batch
  on axis 0, and ``f`` returns one array with the batch on axis 0. ``f`` must
  treat examples independently (the NTK of one example pair must not depend on
  the rest of the batch): every implementation and the chunking rely on it.
- Axes are numbered on ``f``'s output *including* the batch axis 0, as in
  neural-tangents; negative numbers count from the end. The batch axis can be
  neither traced nor diagonal here.
- ``trace_axes``: each traced output axis a contributes Σ_a K[(…, a), (…, a)],
  and the result is divided by the product of the traced sizes — i.e. the
  *mean* over the traced diagonal, not the sum. So with the default
  ``trace_axes=(-1,)`` a learner with o outputs gives (1/o)·Σ_a K_{ia, ja}, and
  for o = 1 exactly the kernel of MATH.md.
- ``diagonal_axes``: keep only entries with equal indices on that axis (one axis
  in the result instead of a pair).
- Layout: ``(N1, N2, *per remaining output axis in order: (size1, size2) for a
  kept pair, (size,) for a diagonal axis, nothing for a traced axis)``. For an
  output (N, n, o) and ``trace_axes=(-1,)``: (N1, N2, n, n); with
  ``trace_axes=()``: (N1, N2, n, n, o, o).
- ``implementation``: "jacobian" (reference), "ntvp" (low memory) or "analytic"
  (the closed form for the learner of `attent_jax.learner.model`, MATH.md's
  K_ij = (AS)_i·(A'S')_j + c²(s_i·s'_j)(c_i·c'_j) + c²(u_i·u'_j)(q_i·q'_j)
  generalised to o outputs, H heads, causal masks, cross-attention, W_O and
  mean pooling; derivation in `_analytic_features` / `_analytic_dense`). Costs
  in `Implementation`. All agree to rounding (tests: float64 ≤ 1e-10 relative).
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
import math
import string
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from attent_jax.learner.model import LearnerConfig, attention_weights, check_inputs, learner_fn
from attent_jax.learner.validate import check_array

# Every contraction of ours runs at full float32 precision: on accelerators the
# default may be TF32, which would break the implementations' agreement.
_PREC = lax.Precision.HIGHEST


class Implementation(str, enum.Enum):
    """How the kernel is computed. Costs for N1×N2 examples with O outputs each
    (O = the size of one example's output), P parameters, C_f the cost of one
    example's forward pass; with traced axes O² shrinks accordingly.

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


def empirical_ntk_fn(f: Callable | None, trace_axes=(-1,), diagonal_axes=(), vmap_axes=0,
                     implementation="jacobian", batch_size: int | None = None,
                     learner_config: LearnerConfig | None = None):
    """Build ``ntk_fn(x1, x2=None, params) -> K`` for the empirical NTK of ``f`` (paper eq. 13).

    Args:
      f: ``f(params, x) -> (N, *out)``; may be None for ``"analytic"``, which
        then uses `attent_jax.learner.model.learner_fn(learner_config)`.
      trace_axes: output axes (batch axis 0 excluded, negatives allowed) to trace
        over; the trace is divided by the product of their sizes (a mean).
      diagonal_axes: output axes on which to keep only the diagonal.
      vmap_axes: where neural-tangents takes the batch axis of inputs and outputs;
        here it is always axis 0 of every leaf of x and of the output, so only
        0 (or None, read as 0) is accepted. Kept in neural-tangents' position so
        positional calls carry over.
      implementation: "jacobian" | "ntvp" | "analytic" (or an `Implementation`).
      batch_size: compute the kernel in blocks of at most ``batch_size`` × ``batch_size``
        examples, written into the preallocated output, so that memory beyond
        the output is bounded by a block's; None = one block.
      learner_config: the `LearnerConfig` of the attention learner; required by
        "analytic", and used by every implementation to validate inputs.

    Returns ``ntk_fn(x1, x2=None, params)`` with the layout described in the module docstring.

    Example:
        >>> f = lambda p, x: jnp.tanh(x @ p["w"])          # (N, 3) -> (N, 2)
        >>> ntk = empirical_ntk_fn(f, trace_axes=(), implementation="ntvp")
        >>> ntk(jnp.ones((4, 3)), None, {"w": jnp.ones((3, 2))}).shape
        (4, 4, 2, 2)
    """
    try:
        impl = Implementation(implementation)
    except ValueError:
        raise ValueError(f"implementation: got {implementation!r}, expected one of "
                         f"{[i.value for i in Implementation]}") from None
    if vmap_axes not in (0, None):
        raise ValueError(f"vmap_axes: got {vmap_axes!r}, expected 0 (the batch is axis 0 of every input "
                         "leaf and of the output)")
    trace_axes = _axes_tuple("trace_axes", trace_axes)
    diagonal_axes = _axes_tuple("diagonal_axes", diagonal_axes)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size: got {batch_size!r}, expected a positive integer or None")
    if learner_config is not None and not isinstance(learner_config, LearnerConfig):
        raise ValueError(f"learner_config: got {type(learner_config).__name__}, expected a LearnerConfig or None")
    if impl is Implementation.ANALYTIC and learner_config is None:
        raise ValueError("learner_config: got None, expected a LearnerConfig for implementation='analytic'")
    if f is None:
        if learner_config is None:
            raise ValueError("f: got None, expected a function f(params, x) (or a learner_config)")
        f = learner_fn(learner_config)
    if not callable(f):
        raise ValueError(f"f: got {type(f).__name__}, expected a callable f(params, x)")

    kind = impl.value
    # The analytic kernel never calls f: leaving it out of the static arguments
    # lets every factory with the same config share compilations.
    f_static = None if impl is Implementation.ANALYTIC else f

    def ntk_fn(x1, x2=None, params=None):
        same = x2 is None
        n1, n2, out1, out2 = _validate(f, learner_config, x1, x2, params)
        static = dict(kind=kind, f=f_static, cfg=learner_config,
                      modes=_modes(out1, out2, trace_axes, diagonal_axes))
        bs = batch_size or max(n1, n2)
        if n1 <= bs and n2 <= bs:
            return _whole(x1, None if same else x2, params, **static)
        p1 = _prepare(params, x1, kind=kind, cfg=learner_config)
        p2 = None if same else _prepare(params, x2, kind=kind, cfg=learner_config)
        return _chunked(p1, p2, params, static, n1, n2, bs)

    return ntk_fn


# ---------------------------------------------------------------- compiled pieces
# Module-level jits with the implementation, f, config and axis modes static:
# compilations are shared by every ntk_fn with the same arguments and shapes.
# `x2 = None` (same) passes x1 once, so work on it (Jacobians, features) is traced once.

_STATIC = ("kind", "f", "cfg", "modes")


def _prepare_impl(params, x, *, kind, cfg):
    """Per-example data the pair kernel reads: analytic features, or x itself."""
    return _analytic_features(cfg, params, x) if kind == Implementation.ANALYTIC.value else x


def _pair(p1, p2, params, *, kind, f, cfg, modes):
    p2 = p1 if p2 is None else p2
    if kind == Implementation.ANALYTIC.value:
        return _analytic_block(cfg, p1, p2, params, modes)
    base = _jacobian_block if kind == Implementation.JACOBIAN.value else _ntvp_block
    # f's own matmuls too: the reference must not run at reduced (TF32) precision.
    with jax.default_matmul_precision("highest"):
        return base(f, p1, p2, params, modes)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _whole(x1, x2, params, *, kind, f, cfg, modes):
    p1 = _prepare_impl(params, x1, kind=kind, cfg=cfg)
    p2 = None if x2 is None else _prepare_impl(params, x2, kind=kind, cfg=cfg)
    return _pair(p1, p2, params, kind=kind, f=f, cfg=cfg, modes=modes)


_prepare = jax.jit(_prepare_impl, static_argnames=("kind", "cfg"))
_block = jax.jit(_pair, static_argnames=_STATIC)


# ---------------------------------------------------------------- axes and layout

def _axes_tuple(name: str, axes) -> tuple[int, ...]:
    if isinstance(axes, int) and not isinstance(axes, bool):
        axes = (axes,)
    if not isinstance(axes, (tuple, list)) or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ValueError(f"{name}: got {axes!r}, expected a tuple of ints (output axes)")
    return tuple(axes)


def _modes(out1, out2, trace_axes, diagonal_axes) -> tuple[str, ...]:
    """PAIR / TRACE / DIAG for each non-batch output axis, checking the axis numbers."""
    rank = len(out1)
    canon = {}
    for name, axes in (("trace_axes", trace_axes), ("diagonal_axes", diagonal_axes)):
        seen = []
        for a in axes:
            if not -rank <= a < rank:
                raise ValueError(f"{name}: got axis {a} for an output of shape {tuple(out1)}, "
                                 f"expected axes in [{-rank + 1}, {rank - 1}] (batch axis 0 excluded)")
            a %= rank
            if a == 0:
                raise ValueError(f"{name}: got {tuple(axes)}, which includes the batch axis 0 of output shape "
                                 f"{tuple(out1)}; expected non-batch axes only")
            if a in seen:
                raise ValueError(f"{name}: got {tuple(axes)}, expected distinct axes")
            seen.append(a)
        canon[name] = seen
    both = set(canon["trace_axes"]) & set(canon["diagonal_axes"])
    if both:
        raise ValueError(f"diagonal_axes: got axes {sorted(both)} also in trace_axes, expected disjoint axes")
    modes = []
    for a in range(1, rank):
        mode = TRACE if a in canon["trace_axes"] else DIAG if a in canon["diagonal_axes"] else PAIR
        if mode != PAIR and out1[a] != out2[a]:
            name = "trace_axes" if mode == TRACE else "diagonal_axes"
            raise ValueError(f"{name}: axis {a} has size {out1[a]} for x1 but {out2[a]} for x2 "
                             f"(outputs {tuple(out1)} and {tuple(out2)}), expected equal sizes")
        modes.append(mode)
    return tuple(modes)


def _layout_subscripts(modes):
    """einsum letters for the output axes of x1, of x2 and of the kernel (batch letters excluded)."""
    letters = iter(string.ascii_letters[2:])   # 'a', 'b' are the batch axes
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

def _validate(f, cfg, x1, x2, params):
    """Check inputs before any tracing; return batch sizes and output shapes (batch included)."""
    if params is None:
        raise ValueError("params: got None, expected the parameter pytree of f")
    leaves = jax.tree.leaves(params)
    if not leaves or not all(hasattr(p, "shape") for p in leaves):
        raise ValueError(f"params: got {type(params).__name__} with leaves "
                         f"{[type(p).__name__ for p in leaves]}, expected a non-empty pytree of arrays")
    for name, x in (("x1", x1), ("x2", x2)):
        if x is None:
            continue
        if cfg is not None:
            s, t = x if isinstance(x, tuple) and len(x) == 2 else (x, None)
            try:
                check_inputs(cfg, s, t)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        xl = jax.tree.leaves(x)
        if not xl:
            raise ValueError(f"{name}: got {type(x).__name__} without arrays, expected an array or pytree of arrays")
        for i, leaf in enumerate(xl):
            label = name + (f"[leaf {i}]" if len(xl) > 1 else "")
            if getattr(leaf, "ndim", 0) < 1:
                raise ValueError(f"{label}: got shape {tuple(getattr(leaf, 'shape', ()))}, "
                                 f"expected an array with the batch on axis 0 (rank >= 1)")
            check_array(label, leaf, rank=leaf.ndim, nonempty=True, finite=True)
        batches = {leaf.shape[0] for leaf in xl}
        if len(batches) != 1:
            raise ValueError(f"{name}: got leaves with batch sizes {[leaf.shape[0] for leaf in xl]}, "
                             f"expected one batch size on axis 0 of every leaf")
    if x2 is not None:
        if jax.tree.structure(x1) != jax.tree.structure(x2):
            raise ValueError(f"x2: got structure {jax.tree.structure(x2)}, expected {jax.tree.structure(x1)} as x1")
        for i, (a, b) in enumerate(zip(jax.tree.leaves(x1), jax.tree.leaves(x2))):
            if a.ndim != b.ndim or (a.ndim > 1 and a.shape[-1] != b.shape[-1]):
                raise ValueError(f"x2: got shape {tuple(b.shape)} for leaf {i}, expected rank {a.ndim} and "
                                 f"feature size (last axis) {a.shape[-1]} as x1 {tuple(a.shape)}")
    if cfg is not None:
        _check_learner_params(cfg, params)
    out1 = _out_shape(f, params, x1, "x1")
    out2 = out1 if x2 is None else _out_shape(f, params, x2, "x2")
    if cfg is not None:
        want = _out_shape(learner_fn(cfg), params, x1, "x1")
        if want != out1:
            raise ValueError(f"f: returned shape {out1} for x1, expected {want} as the learner of learner_config")
    return out1[0], out2[0], out1, out2


def _out_shape(f, params, x, name):
    out = jax.eval_shape(f, params, x)
    n = jax.tree.leaves(x)[0].shape[0]
    if not hasattr(out, "shape") or len(out.shape) < 1 or out.shape[0] != n:
        got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise ValueError(f"f: returned {got} for {name}, expected one array with batch axis 0 of size {n}")
    return tuple(out.shape)


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
def _slice(tree, start, size):
    return jax.tree.map(lambda a: lax.dynamic_slice_in_dim(a, start, size, axis=0), tree)


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
    """Fill the (N1, N2, …) kernel block by block. With x2 = None (p2 None) only
    blocks on or above the diagonal are computed; the others are their
    pair-swapped transposes. Memory: the output, plus one block and its work."""
    same = p2 is None
    b1, b2 = min(bs, n1), min(bs, n2)
    starts1, starts2 = _starts(n1, b1), _starts(n2, b2)
    out = None
    for a, i in enumerate(starts1):
        rows = _slice(p1, i, b1)
        for b, j in enumerate(starts2):
            if same and b < a:
                continue
            blk = _block(rows, None if same and a == b else _slice(p1 if same else p2, j, b2), params, **static)
            if out is None:
                out = jnp.zeros((n1, n2) + blk.shape[2:], blk.dtype)
            out = _write(out, blk, i, j)
            if same and a != b:
                out = _write_swapped(out, blk, i, j, modes=static["modes"])
    return out


# ---------------------------------------------------------------- jacobian and ntvp

def _one(f, params, xi):
    """f on a single example (no batch axis in or out)."""
    return f(params, jax.tree.map(lambda a: a[None], xi))[0]


def _jacobian_block(f, x1, x2, params, modes):
    jac = jax.vmap(lambda xi: jax.jacrev(lambda p: _one(f, p, xi))(params))
    j1 = jac(x1)
    j2 = j1 if x2 is x1 else jac(x2)
    sub1, sub2, out = _layout_subscripts(modes)
    kernel = 0.0
    for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2)):
        params_sub = string.ascii_uppercase[:a.ndim - 1 - len(modes)]
        kernel = kernel + jnp.einsum(f"a{sub1}{params_sub},b{sub2}{params_sub}->ab{out}", a, b, precision=_PREC)
    shape = jax.eval_shape(lambda: _one(f, params, jax.tree.map(lambda a: a[0], x1))).shape
    return kernel / _trace_size(shape, modes)


def _ntvp_block(f, x1, x2, params, modes):
    _, jvp1 = jax.linearize(lambda p: f(p, x1), params)
    sub1, sub2, out = _layout_subscripts(modes)

    def row(x2i):   # K(x1, x2i), traced and diagonalised at once: (N1, *kernel axes)
        out2, vjp2 = jax.vjp(lambda p: _one(f, p, x2i), params)
        basis = jnp.eye(out2.size, dtype=out2.dtype).reshape((out2.size,) + out2.shape)
        cols = jax.vmap(lambda e: jvp1(vjp2(e)[0]))(basis)             # (|out2|, N1, *out1)
        return jnp.einsum(f"{sub2}a{sub1}->a{out}", cols.reshape(out2.shape + cols.shape[1:]))

    kernel = jnp.moveaxis(lax.map(row, x2), 0, 1)                        # (N1, N2, …)
    out_shape = jax.eval_shape(lambda: _one(f, params, jax.tree.map(lambda a: a[0], x2))).shape
    return kernel / _trace_size(out_shape, modes)


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
