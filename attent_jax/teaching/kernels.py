"""The teacher's device state and its jitted kernels: plan an epoch, plan an InfoBatch epoch, update scores.

Pure functions of a `TeacherState` pytree; `attent_jax.teaching.teacher.Teacher`
calls them with its static configuration.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from attent_jax.teaching import selection


@struct.dataclass
class TeacherState:
    """The teacher's device state: a pytree of arrays (checkpoint with Orbax, shard along N).

    scores_N: float32 latest loss of each example; +inf until first seen.
    seen_N: bool, whether the example's score has been written.
    selected_N: bool, the current selected subset (held across a scratch cycle).
    weights_N: float32 per-example loss weights of the latest planned epoch.
    epoch: int32 scalar, the number of the next epoch to plan (schedule position).
    key: uint32 raw PRNG key data (`jax.random.key_data`), the run's base key;
        stored raw so any checkpointer saves it as a plain array.
    key_impl: the PRNG implementation's name (static, not an array), to re-wrap `key`.
    """
    scores_N: jax.Array
    seen_N: jax.Array
    selected_N: jax.Array
    weights_N: jax.Array
    epoch: jax.Array
    key: jax.Array
    key_impl: str = struct.field(pytree_node=False, default="threefry2x32")


def _epoch_keys(state: TeacherState, epoch):
    key = jax.random.wrap_key_data(state.key, impl=state.key_impl)
    return jax.random.split(jax.random.fold_in(key, epoch))


def _active_first(key, active_N):
    """A random permutation of 0..N-1 with the active examples first, each group shuffled."""
    perm_N = jax.random.permutation(key, active_N.shape[0]).astype(jnp.int32)
    return perm_N[jnp.argsort(jnp.logical_not(active_N[perm_N]).astype(jnp.int32), stable=True)]


_MODES = {"full": 0, "reuse": 1, "select": 2}


@functools.partial(jax.jit, static_argnames=("selector", "temperature", "normalize"))
def _plan(state: TeacherState, epoch, mode, n, log_weights_N, *, selector, temperature, normalize):
    """One kernel for full, reuse and select epochs (`mode`, traced), so a run compiles it once.

    Select ranks all examples by the selector's priority with a full argsort and
    keeps the first `n` (traced, so a changing ratio never recompiles); the
    public selectors take top_k of the same priority. Full and reuse epochs
    compute the ranking too and discard it: an O(N log N) sort per epoch.
    """
    k_sel, k_shuf = _epoch_keys(state, epoch)
    pri_N = selection.priority(selector, k_sel, state.scores_N, temperature=temperature,
                               normalize=normalize, log_weights_N=log_weights_N)
    order_N = selection.ranking(pri_N)   # NaN last, as in every selector
    rank_N = jnp.zeros_like(order_N).at[order_N].set(jnp.arange(order_N.shape[0], dtype=order_N.dtype))
    selected_N = jnp.where(mode == _MODES["select"], rank_N < n, state.selected_N)
    active_N = selected_N | (mode == _MODES["full"])
    new = state.replace(selected_N=selected_N, weights_N=jnp.ones_like(state.weights_N), epoch=epoch + 1)
    return new, _active_first(k_shuf, active_N)


@functools.partial(jax.jit, static_argnames=("prune_ratio",))
def _plan_infobatch(state: TeacherState, epoch, *, prune_ratio):
    k_prune, k_shuf = _epoch_keys(state, epoch)
    seen_N, scores_N = state.seen_N, state.scores_N
    # The ranking rule of `selection`: the mean is over finite scores, +inf ranks above it (never pruned),
    # −inf and NaN below it (prunable, the lowest priority), so one NaN does not make every comparison false.
    counted_N = seen_N & jnp.isfinite(scores_N)
    mean = jnp.sum(jnp.where(counted_N, scores_N, 0.0)) / jnp.maximum(jnp.sum(counted_N), 1)
    below_N = seen_N & ((scores_N < mean) | jnp.isnan(scores_N))
    pruned_N = below_N & (jax.random.uniform(k_prune, below_N.shape) < prune_ratio)
    keep_N = jnp.logical_not(pruned_N)
    weights_N = jnp.where(below_N & keep_N, 1.0 / (1.0 - prune_ratio), 1.0).astype(state.weights_N.dtype)
    new = state.replace(selected_N=keep_N, weights_N=weights_N, epoch=epoch + 1)
    return new, _active_first(k_shuf, keep_N), jnp.sum(keep_N, dtype=jnp.int32)


@jax.jit
def _update(state: TeacherState, idx_B, losses_B, valid_B):
    n = state.scores_N.shape[0]
    idx_B = idx_B.astype(jnp.int32)
    if valid_B is not None:
        idx_B = jnp.where(valid_B, idx_B, n)   # out of range: dropped by the scatter
    return state.replace(
        scores_N=state.scores_N.at[idx_B].set(losses_B.astype(state.scores_N.dtype), mode="drop"),
        seen_N=state.seen_N.at[idx_B].set(True, mode="drop"))


def _device_int(x: int):
    # Explicit transfer: an implicit one (a Python int as a jit argument) fails under transfer_guard.
    return jax.device_put(np.int32(x))
