"""Input checks at the public boundary.

Every public entry point (model, gradients, kernels, CLI) checks its inputs here,
before anything is traced, so a bad shape is reported as a one-line `ValueError`
naming the argument, the shape received and the shape expected, never as an XLA
error from deep inside a jitted function.
"""

from __future__ import annotations

import jax
import numpy as np


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_array(name: str, x, *, rank: int | tuple[int, ...], last_dim: int | None = None,
                finite: bool = True, nonempty: bool = True) -> None:
    """Raise `ValueError` unless `x` is an array of the given rank (or ranks) and width.

    `finite` checks values only when `x` is concrete (outside a trace), since a
    traced value has none to check.
    """
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    shape = getattr(x, "shape", None)
    if shape is None:
        raise ValueError(f"{name}: expected an array, got {type(x).__name__}")
    expected = " or ".join(f"rank {r}" for r in ranks)
    if last_dim is not None:
        expected += f" with last axis {last_dim}"
    if len(shape) not in ranks:
        raise ValueError(f"{name}: got shape {tuple(shape)}, expected {expected}")
    if last_dim is not None and shape[-1] != last_dim:
        raise ValueError(f"{name}: got shape {tuple(shape)}, expected {expected}")
    if nonempty and any(s == 0 for s in shape):
        raise ValueError(f"{name}: got an empty array of shape {tuple(shape)}, expected {expected} and no zero-size axis")
    if finite and _is_concrete(x) and not bool(np.all(np.isfinite(np.asarray(x)))):
        raise ValueError(f"{name}: contains NaN or Inf values (shape {tuple(shape)})")


def check_same_leading(name_a: str, a, name_b: str, b, axes: int = 1) -> None:
    """Raise unless `a` and `b` agree on their first `axes` axes (batch, length...)."""
    if tuple(a.shape[:axes]) != tuple(b.shape[:axes]):
        raise ValueError(
            f"{name_b}: got shape {tuple(b.shape)}, expected leading axes {tuple(a.shape[:axes])} to match {name_a}")
