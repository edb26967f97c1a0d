"""Reading neural-tangents' call forms (`attent_jax.learner.ntk`): whether an ``f`` is
the learner of a config, the ``vmap_axes`` forms, and the split of
``**apply_fn_kwargs`` (``rng`` keys included) between x1 and x2.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attent_jax.learner.model import AttentionLearner, LearnerConfig, functional, learner_fn

# Every closure made by one factory shares its code object, so `_is_learner` can recognise the learner by it.
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
