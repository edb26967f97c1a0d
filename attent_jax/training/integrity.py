"""What makes a restored checkpoint trustworthy: a fingerprint of every leaf, and the state's layout.

`Checkpointer` stores `fingerprint(state)` in each checkpoint's meta and
compares it after a restore (a mismatch is detected damage); it compares the
stored layout (leaf paths, shapes, dtypes) with the wanted one before restoring,
because Orbax quietly converts a changed dtype, which the fingerprint would then
misreport as damage.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _path_name(path) -> str:
    # Orbax stores a dataclass's fields as dict keys: compare paths by their names, whatever the node type.
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _layout(tree) -> dict:
    """{leaf path: (shape, dtype name)} of arrays, ShapeDtypeStructs or Orbax ArrayMetadata."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            out[_path_name(path)] = None  # a typed key is stored as its raw data: any shape and dtype fit
        else:
            out[_path_name(path)] = (tuple(getattr(leaf, "shape", ())), None if dtype is None else np.dtype(dtype).name)
    return out


def _layout_difference(stored: dict, wanted: dict) -> str | None:
    """The first difference between a stored and a wanted layout, in words, or None."""
    for name in sorted(set(stored) | set(wanted)):
        if name not in wanted:
            return f"leaf {name!r} is stored but not in this state"
        if name not in stored:
            return f"leaf {name!r} of this state is not stored"
        if wanted[name] is not None and stored[name] != wanted[name]:
            (s_shape, s_dtype), (w_shape, w_dtype) = stored[name], wanted[name]
            return f"leaf {name!r} is stored as {s_dtype}{list(s_shape)}, this state has {w_dtype}{list(w_shape)}"
    return None


def _leaf_fingerprint(x):
    """Σ_i bits(x_i)·(2i+1) mod 2³²: an odd weight per position, so changing any one element changes it."""
    x = jnp.asarray(x)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    if x.dtype.itemsize in (4, 8):  # a 64-bit value becomes its two 32-bit halves
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    else:
        width = {2: jnp.uint16, 1: jnp.uint8}[x.dtype.itemsize]
        bits = jax.lax.bitcast_convert_type(x, width).reshape(-1).astype(jnp.uint32)
    weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    return jnp.sum(bits * weights, dtype=jnp.uint32)


@jax.jit
def _fingerprints(tree):
    return [_leaf_fingerprint(x) for x in jax.tree.leaves(tree)]


def fingerprint(tree) -> list[int]:
    """One uint32 per leaf of `tree` (see the module docstring); computed on device, fetched explicitly."""
    return [int(v) for v in jax.device_get(_fingerprints(tree))]
