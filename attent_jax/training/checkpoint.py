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

Only *detected* damage sets a checkpoint aside: a fingerprint mismatch, or a
finished checkpoint whose files cannot be read or decoded (TensorStore's
DATA_LOSS / OUT_OF_RANGE / NOT_FOUND, undecodable JSON). Any other failure — an
`OSError`, running out of memory, a state whose leaves changed shape or dtype
since it was saved (a code edit) — says nothing about the checkpoint, so it
stops the caller (`CheckpointRestoreError`, or `CheckpointMismatchError` for a
changed state layout) and leaves every file as it was; once the cause is gone
the same call restores it.

A checkpoint folder is named by its step, and a later save of the same step
with a different state (an epoch without optimizer steps moves only the
clock) replaces it without a moment where neither copy is complete on disk.

Example:
    >>> import jax, jax.numpy as jnp, tempfile
    >>> ckpt = Checkpointer(tempfile.mkdtemp() + "/ckpt", keep=2)
    >>> ckpt.save(1, {"w": jnp.ones(3)}, {"epoch": 0})
    >>> state, meta = ckpt.restore_latest({"w": jax.ShapeDtypeStruct((3,), jnp.float32)})
    >>> int(state["w"].sum()), meta["epoch"]
    (3, 0)
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from attent_jax.training.integrity import _layout, _layout_difference, fingerprint  # noqa: F401


class CheckpointWarning(UserWarning):
    """A checkpoint could not be restored and was skipped."""


class CheckpointCorruptError(ValueError):
    """A finished checkpoint is damaged: its fingerprint does not match, or its files cannot be decoded."""


class CheckpointMismatchError(ValueError):
    """A checkpoint holds a state of another layout (leaves added, removed, reshaped or retyped)."""


class CheckpointRestoreError(RuntimeError):
    """A checkpoint could not be restored for a reason other than detected damage; nothing was changed."""


# TensorStore reports a short, undecodable or missing file of a finished checkpoint with these status codes;
# anything else (an OS error, memory) may pass, so it must not condemn the checkpoint.
_DAMAGE_STATUSES = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND")


# The outcome of one process's restore of a step, worst last: the worst any process met is what all act on.
_RESTORED, _DAMAGED, _MISMATCH, _FAILED = range(4)


def _agree(value: int) -> int:
    """Process 0's `value` on every process (unchanged in a one-process run): one decision from one view."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils
    with jax.transfer_guard("allow"):  # a sanctioned host->device->host copy of one int
        return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def _gather(value: int) -> list[int]:
    """Every process's `value`, by process index."""
    if jax.process_count() == 1:
        return [int(value)]
    from jax.experimental import multihost_utils
    with jax.transfer_guard("allow"):
        return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.int32(value))).reshape(-1)]


def _processes(outcomes: list[int], outcome: int) -> str:
    return "process " + ", ".join(str(i) for i, o in enumerate(outcomes) if o == outcome)


def _is_damage(err: BaseException) -> bool:
    if isinstance(err, (CheckpointCorruptError, json.JSONDecodeError)):
        return True
    return (isinstance(err, ValueError) and not isinstance(err, OSError)
            and str(err).lstrip().startswith(_DAMAGE_STATUSES))


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"


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
        self._staging = self.directory + ".replacing"
        self._finish_replacement()
        self._manager = self._new_manager()

    def _new_manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True, cleanup_tmp_directories=True,
                                               enable_async_checkpointing=self._async)
        return ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        """The steps this process sees on disk (its own view: in a multi-process run, only process 0's decides)."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        """Save `state` (pytree of arrays) and `meta` (JSON-able dict) as checkpoint `step`.

        A step already on disk is left as it is (the state at a step is a
        function of the run's config, so it would be the same). Every process
        of a multi-process run takes process 0's decision (save, keep or
        replace), whatever its own folder listing says.
        """
        meta = dict(meta, fingerprint=fingerprint(state))
        # A save is collective: a process whose listing is stale would skip one the others enter, and
        # they would wait for it forever. So the listing and the comparison that decide are process 0's.
        if _agree(int(step in self.all_steps())):
            self._manager.wait_until_finished()
            if not _agree(int(self._stored_fingerprint(step) == meta["fingerprint"])):
                self._replace(step, state, meta)
            return
        self._save_with(self._manager, step, state, meta)

    @staticmethod
    def _save_with(manager: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
        # Orbax copies the arrays to host itself: an explicit, sanctioned transfer.
        with jax.transfer_guard("allow"):
            manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)), force=True)

    def _stored_fingerprint(self, step: int):
        try:
            return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"].get(
                "fingerprint")
        except Exception as err:
            if _is_damage(err):
                return None  # a damaged copy is replaced like any other
            raise

    def _replace(self, step: int, state, meta: dict) -> None:
        """Swap checkpoint `step` for a new state: the new copy is complete before the old one leaves.

        The new copy is written (synchronously) into the sibling folder
        ``<directory>.replacing``, then the old folder is moved out and the new
        one in. A kill between the two moves leaves the finished new copy in the
        staging folder; the next `Checkpointer` moves it in (`_finish_replacement`).
        """
        main = jax.process_index() == 0
        if main and os.path.exists(self._staging):
            shutil.rmtree(self._staging)
        self._sync(f"attent_ckpt_stage_{step}")
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
        staging = ocp.CheckpointManager(self._staging, options=options)
        try:
            self._save_with(staging, step, state, meta)
            staging.wait_until_finished()
        finally:
            staging.close()
        if main:
            old = os.path.join(self.directory, str(step))
            os.rename(old, os.path.join(self._staging, f"replaced-{step}"))
            os.rename(os.path.join(self._staging, str(step)), old)
            shutil.rmtree(self._staging)
        self._sync(f"attent_ckpt_replace_{step}")
        self._manager.reload()

    def _finish_replacement(self) -> None:
        """Complete a replacement cut short between its two moves; drop any other staging leftovers."""
        if jax.process_index() == 0 and os.path.isdir(self._staging):
            for name in os.listdir(self._staging):
                target = os.path.join(self.directory, name)
                if name.isdigit() and not os.path.exists(target):
                    os.makedirs(self.directory, exist_ok=True)
                    os.rename(os.path.join(self._staging, name), target)
            shutil.rmtree(self._staging)
        self._sync("attent_ckpt_finish_replacement")

    @staticmethod
    def _sync(name: str) -> None:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(name)

    def wait(self) -> None:
        """Block until background writes are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def restore(self, step: int, abstract_state):
        """Restore checkpoint `step` onto the shapes, dtypes and shardings of `abstract_state`.

        Raises `CheckpointCorruptError` for detected damage (fingerprint
        mismatch, undecodable files), `CheckpointMismatchError` if the stored
        leaves differ from `abstract_state`'s (Orbax would silently cast a
        changed dtype), and passes any other error through.
        """
        try:
            stored = self._manager.item_metadata(step)["state"]
        except Exception as err:
            if _is_damage(err):
                raise CheckpointCorruptError(f"checkpoint {step}: its metadata cannot be read "
                                             f"({_first_line(err)})") from err
            raise
        if stored is not None:
            difference = _layout_difference(_layout(getattr(stored, "tree", stored)), _layout(abstract_state))
            if difference:
                raise CheckpointMismatchError(
                    f"checkpoint {step} in {self.directory} holds a state of another layout ({difference}): the "
                    f"code or config changed since it was saved; run the code that saved it, or use another "
                    f"run folder (nothing was moved)")
        try:
            with jax.transfer_guard("allow"):
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        except Exception as err:
            if _is_damage(err):
                raise CheckpointCorruptError(f"checkpoint {step}: cannot be read or decoded "
                                             f"({_first_line(err)})") from err
            raise
        state, meta = restored["state"], dict(restored["meta"])
        expected = meta.pop("fingerprint", None)
        got = fingerprint(state)
        if expected != got:
            raise CheckpointCorruptError(f"checkpoint {step}: fingerprint mismatch (stored {expected}, "
                                         f"restored {got})")
        return state, meta

    def restore_latest(self, abstract_state):
        """(state, meta) of the newest checkpoint that restores intact, or None if there is none.

        A checkpoint with detected damage (`CheckpointCorruptError`) is moved
        aside with a `CheckpointWarning` and the next older one is tried. A
        changed state layout raises `CheckpointMismatchError`; any other failure
        raises `CheckpointRestoreError`; both leave every file as it was.

        In a multi-process run process 0 names each step to try (from its
        listing), every process restores exactly that step, and the outcome
        that counts is the worst any process met: all of them resume from the
        same step, skip the same damaged one, or stop together.
        """
        self._manager.wait_until_finished()
        below = None
        while True:
            steps = [s for s in self.all_steps() if below is None or s < below]
            step = _agree(max(steps) if steps else -1)
            if step < 0:
                return None
            below = step
            try:
                result, outcome, error = self.restore(step, abstract_state), _RESTORED, None
            except CheckpointCorruptError as err:
                result, outcome, error = None, _DAMAGED, err
            except CheckpointMismatchError as err:
                result, outcome, error = None, _MISMATCH, err
            except Exception as err:
                result, outcome, error = None, _FAILED, err
            outcomes = _gather(outcome)
            worst = max(outcomes)
            if worst == _RESTORED:
                return result
            if worst == _DAMAGED:
                where = _processes(outcomes, _DAMAGED)
                moved = self._move_aside(step)
                detail = _first_line(error) if error is not None else f"found damaged by {where}"
                warnings.warn(f"checkpoint {step} in {self.directory} is damaged and was skipped "
                              f"(moved to {moved}): {detail}", CheckpointWarning, stacklevel=2)
                continue
            if outcome == worst and worst == _MISMATCH:
                raise error
            if worst == _MISMATCH:
                raise CheckpointMismatchError(
                    f"checkpoint {step} in {self.directory} holds a state of another layout for "
                    f"{_processes(outcomes, _MISMATCH)} (see its output); nothing was moved")
            detail = _first_line(error) if outcome == _FAILED else f"{_processes(outcomes, _FAILED)} failed, see its output"
            raise CheckpointRestoreError(
                f"checkpoint {step} in {self.directory} could not be restored ({detail}); nothing "
                f"was moved or changed: once the cause is fixed, running again resumes from it") from error

    def _move_aside(self, step: int) -> str:
        """Move a damaged step folder out of the manager's sight, so that step can be saved again."""
        source = os.path.join(self.directory, str(step))
        target = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints",
                              f"{step}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        if jax.process_index() == 0 and os.path.exists(source):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(source, target)
        self._sync(f"attent_ckpt_move_{step}")
        self._manager.reload()  # forget the moved step
        return target


def abstract_like(tree, shardings=None):
    """`jax.ShapeDtypeStruct`s of `tree` (arrays or structs), with `shardings` (same tree) if given."""
    if shardings is None:
        shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


