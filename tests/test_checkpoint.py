"""Checkpoints: round trip onto target shardings, keep-N, damaged ones skipped with a warning."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from attent_jax.training.checkpoint import Checkpointer, CheckpointWarning, abstract_like, fingerprint


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
