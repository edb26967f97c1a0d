"""One block of the kernel by Jacobian contraction or by NTK-vector products
(`attent_jax.learner.ntk`, `Implementation`), per example or, for an f that couples
the batch, on whole batches. ``g`` is f on the internal layout (`ntk_inputs._Apply`).
"""

from __future__ import annotations

import string

import jax
import jax.numpy as jnp
from jax import lax

from attent_jax.learner.ntk_layout import _PREC, _layout_subscripts, _trace_size


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
