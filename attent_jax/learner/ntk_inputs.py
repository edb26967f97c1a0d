"""The kernel's inputs checked before any tracing (`attent_jax.learner.ntk`): x1, x2,
params and kwargs against ``vmap_axes`` and ``learner_config``, and `_Apply`, ``f``
on the internal layout (batch on axis 0) that the compiled pieces call.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from attent_jax.learner.model import LearnerConfig, check_inputs, learner_fn
from attent_jax.learner.ntk_forms import _is_axis
from attent_jax.learner.ntk_layout import _modes
from attent_jax.learner.validate import check_array


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
