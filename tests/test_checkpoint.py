"""Checkpoints: round trip onto target shardings, keep-N, damaged ones skipped with a warning, other failures
stop without touching a file, a same-step save of a new state replaces it safely."""

import errno
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import orbax.checkpoint as ocp

from attent_jax.training.checkpoint import (Checkpointer, CheckpointMismatchError, CheckpointRestoreError, CheckpointWarning,
                                   abstract_like, fingerprint)


def _state(k: float):
    return {"w": jnp.arange(12.0).reshape(3, 4) * k, "key": jax.random.PRNGKey(int(k)),
            "count": jnp.int32(k), "flags": jnp.array([True, False]), "nested": [jnp.ones(5) * k]}


@pytest.fixture
def saved(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "ckpt"), keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, _state(step), {"epoch": step})
    ckpt.wait()
    yield ckpt, tmp_path
    ckpt.close()


def test_round_trip_keeps_newest_and_restores_onto_shardings(saved):
    ckpt, _ = saved
    assert ckpt.all_steps() == [2, 3]  # keep=2
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    target = abstract_like(_state(0), jax.tree.map(lambda _: NamedSharding(mesh, P()), _state(0)))
    state, meta = ckpt.restore_latest(target)
    assert meta == {"epoch": 3}
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(_state(3))):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.sharding == NamedSharding(mesh, P())


def _corrupt(step_dir: str, how: str) -> None:
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)]
    assert files, "expected array data files to corrupt"
    for f in files:
        if how == "flip":
            raw = bytearray(open(f, "rb").read())
            raw[len(raw) // 2] ^= 0xFF
            open(f, "wb").write(bytes(raw))
        else:
            open(f, "wb").close()  # truncated to nothing


# A failed restore can leave a tensorstore callback on Orbax's closed event loop: harmless noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_latest_is_skipped_with_warning(saved, how):
    ckpt, tmp_path = saved
    _corrupt(str(tmp_path / "ckpt" / "3"), how)
    fresh = Checkpointer(str(tmp_path / "ckpt"), keep=2)
    with pytest.warns(CheckpointWarning, match="checkpoint 3"):
        state, meta = fresh.restore_latest(abstract_like(_state(0)))
    assert meta == {"epoch": 2}
    np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(_state(2)["w"]))
    assert fresh.all_steps() == [2]  # moved aside, so step 3 can be written again
    assert os.listdir(tmp_path / "corrupt_checkpoints")
    fresh.save(3, _state(3), {"epoch": 3})
    fresh.close()


def test_half_written_checkpoint_is_ignored(saved):
    ckpt, tmp_path = saved
    # What a save killed mid-write leaves: Orbax's temporary folder, never renamed to "4".
    os.makedirs(tmp_path / "ckpt" / "4.orbax-checkpoint-tmp-123" / "state")
    with pytest.warns(CheckpointWarning, match="never finished"):
        fresh = Checkpointer(str(tmp_path / "ckpt"), keep=2)
    _, meta = fresh.restore_latest(abstract_like(_state(0)))
    assert meta == {"epoch": 3}
    assert not (tmp_path / "ckpt" / "4.orbax-checkpoint-tmp-123").exists()
    fresh.close()


def test_empty_directory_restores_none(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "none"), keep=1)
    assert ckpt.restore_latest(abstract_like(_state(0))) is None
    ckpt.close()


def test_fingerprint_sees_any_single_element_change():
    x = jnp.linspace(-1.0, 1.0, 101)
    base = fingerprint([x])
    for i in (0, 50, 100):
        assert fingerprint([x.at[i].add(1e-7)]) != base
    assert fingerprint([x[::-1]]) != base  # a permutation too
    assert fingerprint([x]) == base


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        Checkpointer(str(tmp_path), keep=0)


def _listing(folder) -> dict:
    """Every file under `folder` with its size and modification time: what 'nothing was touched' compares."""
    out = {}
    for d, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(d, name)
            out[os.path.relpath(path, folder)] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
    return out


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), MemoryError("out of memory"),
                                   ValueError("UNAVAILABLE: transient network error")])
def test_a_failure_that_is_not_damage_stops_and_moves_nothing(saved, monkeypatch, error):
    """Catches any restore exception being treated as damage (every checkpoint moved aside, a retrain from 0)."""
    ckpt, tmp_path = saved
    before = _listing(tmp_path)

    def failing(*args, **kwargs):
        raise error
    monkeypatch.setattr(ocp.CheckpointManager, "restore", failing)
    with pytest.raises(CheckpointRestoreError, match=f"checkpoint 3 .*{type(error).__name__}") as info:
        ckpt.restore_latest(abstract_like(_state(0)))
    assert len(str(info.value).splitlines()) == 1
    assert _listing(tmp_path) == before and not (tmp_path / "corrupt_checkpoints").exists()
    monkeypatch.undo()  # the cause is gone: the same checkpoints restore
    _, meta = Checkpointer(str(tmp_path / "ckpt"), keep=2).restore_latest(abstract_like(_state(0)))
    assert meta == {"epoch": 3}


@pytest.mark.parametrize("change,named", [
    (lambda s: dict(s, w=jnp.zeros((3, 5))), "'w' is stored as float32[3, 4], this state has float32[3, 5]"),
    # Orbax would cast silently, and the fingerprint would then call the checkpoint damaged.
    (lambda s: dict(s, w=jnp.zeros((3, 4), jnp.int32)), "'w' is stored as float32[3, 4], this state has int32"),
    (lambda s: dict(s, extra=jnp.zeros(2)), "'extra' of this state is not stored"),
    (lambda s: {k: v for k, v in s.items() if k != "count"}, "'count' is stored but not in this state"),
])
def test_a_changed_state_layout_is_an_error_not_damage(saved, change, named):
    """Catches a state whose leaves changed after a code edit being set aside as corrupt (and a retrain)."""
    ckpt, tmp_path = saved
    before = _listing(tmp_path)
    with pytest.raises(CheckpointMismatchError, match="checkpoint 3 .*another layout") as info:
        ckpt.restore_latest(abstract_like(change(_state(0))))
    assert named in str(info.value) and len(str(info.value).splitlines()) == 1
    assert _listing(tmp_path) == before and not (tmp_path / "corrupt_checkpoints").exists()


def test_a_same_step_save_of_a_new_state_replaces_it(saved):
    """Catches a save being skipped because its step exists (an epoch without steps lost its checkpoint)."""
    ckpt, tmp_path = saved
    ckpt.save(3, _state(7), {"epoch": 4})
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3]
    state, meta = ckpt.restore_latest(abstract_like(_state(0)))
    assert meta == {"epoch": 4}
    np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(_state(7)["w"]))
    assert not os.path.exists(ckpt.directory + ".replacing")
    before = _listing(tmp_path)
    ckpt.save(3, _state(7), {"epoch": 4, "wall_time": 9.0})   # the same state again: left as it is
    ckpt.wait()
    assert _listing(tmp_path) == before


def test_a_replacement_cut_short_between_its_moves_is_finished_next_time(saved, monkeypatch):
    """Catches a kill during a replacement losing the checkpoint (old copy moved out, new one not yet in)."""
    ckpt, tmp_path = saved
    real_rename, target = os.rename, os.path.join(ckpt.directory, "3")

    def rename(src, dst):
        if os.fspath(dst) == target:   # the old copy is out, the new one not yet in: as if killed here
            raise KeyboardInterrupt
        real_rename(src, dst)
    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(3, _state(7), {"epoch": 4})
    monkeypatch.undo()
    assert not (tmp_path / "ckpt" / "3").exists()
    fresh = Checkpointer(str(tmp_path / "ckpt"), keep=2)
    _, meta = fresh.restore_latest(abstract_like(_state(0)))
    assert meta == {"epoch": 4} and not os.path.exists(fresh.directory + ".replacing")
    fresh.close()
