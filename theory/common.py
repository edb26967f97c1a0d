"""Helpers shared by the theory scripts: random learners and inputs, kernel matrices.

Randomness here is numpy's (seeded), not `jax.random`: every eager JAX op
compiles once per shape, and the scripts run dozens of shapes, so drawing
inputs on the host keeps `attent verify --quick` within its time budget.
Parameters have exactly the shapes and init scale of `model.init_params`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from attent_jax.learner.model import LearnerConfig, init_params


def random_params(lc: LearnerConfig, rng: np.random.Generator) -> dict:
    """Gaussian weights shaped like `init_params(lc, key)`, std `init_std` or 1/√fan_in (as the model)."""
    shapes = jax.eval_shape(lambda: init_params(lc, jax.random.key(0)))
    params = {}
    for name, sd in shapes.items():
        std = lc.init_std if lc.init_std is not None else 1.0 / math.sqrt(sd.shape[-2])
        params[name] = jnp.asarray(std * rng.standard_normal(sd.shape), dtype=jnp.result_type(float))
    return params


def random_x(lc: LearnerConfig, rng: np.random.Generator, batch: int, seq_len: int, kv_len: int | None = None):
    """Standard-normal input: s (batch, n, d), or the pair (s, t) for cross-attention."""
    s = jnp.asarray(rng.standard_normal((batch, seq_len, lc.d_in)), dtype=jnp.result_type(float))
    if not lc.cross:
        return s
    t = rng.standard_normal((batch, kv_len or seq_len, lc.kv_dim))
    return s, jnp.asarray(t, dtype=jnp.result_type(float))


def output_shape(f, params, x) -> tuple:
    return tuple(jax.eval_shape(f, params, x).shape)


def kernel_matrix(k) -> np.ndarray:
    """An ntk_fn result (N1, N2[, n1, n2[, o1, o2]]) as the Gram matrix over (example, element, output).

    neural-tangents layout puts the pairs side by side; the matrix interleaves
    them as rows (N1, n1, o1) and columns (N2, n2, o2).
    """
    k = np.asarray(k, dtype=np.float64)
    pairs = k.ndim // 2
    rows = [2 * i for i in range(pairs)]
    cols = [2 * i + 1 for i in range(pairs)]
    mat = np.transpose(k, rows + cols)
    return mat.reshape(int(np.prod(mat.shape[:pairs])), -1)


def flat_jacobian(f, params, x) -> jax.Array:
    """J (outputs × parameters): the reference Jacobian, independent of `attent_jax.learner.ntk`."""
    jac = jax.jacrev(lambda p: f(p, x).reshape(-1))(params)
    return jnp.concatenate([j.reshape(j.shape[0], -1) for j in jax.tree.leaves(jac)], axis=1)
