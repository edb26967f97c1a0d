"""Orbax checkpoints of a training run: save often, resume from the newest good one.

A checkpoint is one Orbax step folder holding two items:

- ``state``: the whole training state as a pytree of arrays (params, optimizer
  state, the teacher's score table and selection, the epoch's data order, RNG
  key, step counters), saved with `ocp.args.StandardSave` and restored with
  `ocp.args.StandardRestore` onto *target shardings for the current mesh*, so a
  run saved on 8 devices resumes on 1 (or the other way round).
- ``meta``: a small JSON dict (the caller's bookkeeping: wall time, examples
  seen, ...) plus a fingerprint of every state leaf.

Why a fingerprint: Orbax writes each step into a temporary folder and renames
it when complete, so a save cut short by SIGKILL never looks finished (such a
folder is reported with a `CheckpointWarning` and removed). But a
finished checkpoint can still be damaged later (a truncated or overwritten
file); some damage makes the restore fail, some silently yields other numbers.
Each leaf's fingerprint, a position-weighted wrap-around sum of its bits, is
computed on device when saving and checked after restoring; a change to any
single element always changes it (several changes cancel out only by a 2⁻³²
coincidence). `restore_latest` walks from the newest step down, moves a damaged
one aside (into ``<directory>/../corrupt_checkpoints``) with a warning and uses
the previous good one.

Example:
    >>> import jax, jax.numpy as jnp, tempfile
    >>> ckpt = Checkpointer(tempfile.mkdtemp() + "/ckpt", keep=2)
    >>> ckpt.save(1, {"w": jnp.ones(3)}, {"epoch": 0})
    >>> state, meta = ckpt.restore_latest({"w": jax.ShapeDtypeStruct((3,), jnp.float32)})
    >>> int(state["w"].sum()), meta["epoch"]
    (3, 0)
"""

from __future__ import annotations

import os
import shutil
import time
import warnings

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


class CheckpointWarning(UserWarning):
    """A checkpoint could not be restored and was skipped."""


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


class Checkpointer:
    """Save and restore (state, meta) pairs in `directory`, keeping the newest `keep`.

    Args:
        directory: the folder of step sub-folders (created on first save).
        keep: how many checkpoints to keep (older ones are deleted by Orbax).
        async_save: write in a background thread. `save` returns once the
            arrays are copied to host memory, so the caller may donate or
            overwrite its device buffers right after.
    """

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep: got {keep!r}, expected a positive int")
        self.directory = os.path.abspath(directory)
        self._keep = keep
        self._async = async_save
        if os.path.isdir(self.directory):
            for name in sorted(os.listdir(self.directory)):
                if ".orbax-checkpoint-tmp" in name:  # Orbax's folder of a save that never finished
                    warnings.warn(f"checkpoint {name} in {self.directory} was never finished (a save cut short) "
                                  f"and is removed", CheckpointWarning, stacklevel=2)
        self._manager = self._new_manager()

    def _new_manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True, cleanup_tmp_directories=True,
                                               enable_async_checkpointing=self._async)
        return ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        """Save `state` (pytree of arrays) and `meta` (JSON-able dict) as checkpoint `step`.

        A step already on disk is left as it is (the state at a step is a
        function of the run's config, so it would be the same).
        """
        if step in self._manager.all_steps():
            return
        meta = dict(meta, fingerprint=fingerprint(state))
        # Orbax copies the arrays to host itself: an explicit, sanctioned transfer.
        with jax.transfer_guard("allow"):
            self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                             meta=ocp.args.JsonSave(meta)), force=True)

    def wait(self) -> None:
        """Block until background writes are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def restore(self, step: int, abstract_state):
        """Restore checkpoint `step` onto the shapes, dtypes and shardings of `abstract_state`.

        Raises on any failure, including a fingerprint mismatch.
        """
        with jax.transfer_guard("allow"):
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        state, meta = restored["state"], dict(restored["meta"])
        expected = meta.pop("fingerprint", None)
        got = fingerprint(state)
        if expected != got:
            raise ValueError(f"checkpoint {step}: fingerprint mismatch (stored {expected}, restored {got})")
        return state, meta

    def restore_latest(self, abstract_state):
        """(state, meta) of the newest checkpoint that restores intact, or None if there is none.

        A damaged checkpoint is moved aside with a `CheckpointWarning` and the
        next older one is tried.
        """
        self._manager.wait_until_finished()
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                return self.restore(step, abstract_state)
            except Exception as err:  # any failure means: this checkpoint is not usable
                moved = self._move_aside(step)
                warnings.warn(f"checkpoint {step} in {self.directory} is damaged and was skipped "
                              f"(moved to {moved}): {type(err).__name__}: {str(err).splitlines()[0][:200]}",
                              CheckpointWarning, stacklevel=2)
        return None

    def _move_aside(self, step: int) -> str:
        """Move a damaged step folder out of the manager's sight, so that step can be saved again."""
        source = os.path.join(self.directory, str(step))
        target = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints",
                              f"{step}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        if jax.process_index() == 0 and os.path.exists(source):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(source, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"attent_ckpt_move_{step}")
        self._manager.reload()  # forget the moved step
        return target


def abstract_like(tree, shardings=None):
    """`jax.ShapeDtypeStruct`s of `tree` (arrays or structs), with `shardings` (same tree) if given."""
    if shardings is None:
        shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


