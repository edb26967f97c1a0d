"""The scoring pass's forward function at a chosen precision (``SelectionConfig.score_dtype``).

A scoring pass (`attent_jax.training.scoring`) is a forward pass over the examples the
teacher asks to re-score; its losses only *rank* examples, so it need not be as
precise as the training step. The paper trains with mixed precision; here the
training step stays in the parameters' dtype, and only the scoring pass may run
in bfloat16 (``score_dtype="bfloat16"``): its parameters and floating inputs are
cast down, the model runs at that precision, and its outputs are cast back to
float32 before the loss, so the loss, its log-softmax and the score table stay
float32 (a bfloat16 loss would have 8 mantissa bits and tie many examples).
Integer inputs (token ids, labels) are never cast.

On accelerators with bfloat16 matrix units this roughly halves the pass's cost;
on CPU XLA emulates much of bfloat16 arithmetic and it may be slower
(`experiments/bench_training.py` and `experiments/bench_device.py` measure it).
``"float32"`` (the default, the paper's full-precision rescoring) returns the
forward function unchanged.

Example:
    >>> import jax.numpy as jnp
    >>> apply = lambda params, x: x @ params["w"]
    >>> f = scoring_apply(apply, "bfloat16")
    >>> f({"w": jnp.ones((3, 2))}, jnp.full((1, 3), 1.001)).dtype
    dtype('float32')
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from attent_jax.training.config import SCORE_DTYPES


def _cast_floating(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def scoring_apply(apply: Callable, score_dtype: str) -> Callable:
    """``apply(params, x)`` computed at `score_dtype`, its floating outputs returned as float32.

    `score_dtype` is one of `SCORE_DTYPES`; ``"float32"`` returns `apply` itself
    (the parameters' own dtype, float64 included, is kept).
    """
    if score_dtype not in SCORE_DTYPES:
        raise ValueError(f"score_dtype: got {score_dtype!r}, expected one of {SCORE_DTYPES}")
    if score_dtype == "float32":
        return apply
    dtype = jnp.dtype(score_dtype)

    def low_precision(params, x):
        out = apply(_cast_floating(params, dtype), _cast_floating(x, dtype))
        return _cast_floating(out, jnp.float32)

    return low_precision
