"""Host data placement (`training.host_data`): same training as device placement, resume, reading, prefetch errors.

Runs use the teach task at its quick size (64 sequences) with every_epoch soft
selection, so the host loop exercises training steps, scoring passes (host
loop over chunks) and evaluation; 8-device runs start a subprocess.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import attent_jax as aj
from attent_jax.training import host_data
from attent_jax.training.config import TrainConfig
from attent_jax.training.loop import Trainer
from attent_jax.training.workdir import SAMPLE_ROWS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = dict(task="teach", quick=True, epochs=4, batch_size=8, regime="every_epoch", selection="soft", ratio=0.5,
              checkpoint_every=5, log_every=1, progress_bar=False)


def _run(workdir, on_step=None, **fields):
    trainer = Trainer(TrainConfig.from_flat(**{**CONFIG, **fields}), str(workdir))
    result = trainer.run(on_step=on_step)
    return result, jax.device_get(trainer.final_state)


def _losses(workdir):
    """(step, train_loss) of every train record and (epoch, eval_loss) of every eval record."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = list(map(json.loads, f))
    train = [(r["step"], r["train_loss"]) for r in records if r["event"] == "train"]
    evals = [(r["epoch"], r["eval_loss"]) for r in records if r["event"] == "eval"]
    assert train and evals   # an empty list would make every comparison of them vacuous
    return train + evals


def _assert_close(a, b, rtol):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype.kind == "f":
            finite = np.isfinite(x)
            np.testing.assert_array_equal(finite, np.isfinite(y), err_msg=jax.tree_util.keystr(path))
            np.testing.assert_allclose(x[finite], y[finite], rtol=rtol, atol=1e-7, err_msg=jax.tree_util.keystr(path))
        else:
            np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def test_host_placement_trains_as_device_placement(tmp_path):
    """Same losses, params, scores and order as device placement, to float32 rounding (one device).

    Not bitwise by design of XLA, not of ours: a loss whose input is a jit
    argument compiles differently from one whose input is a gather, and some
    per-example losses differ in their last bit (scoring.py). Catches a host
    batch that is not the teacher's batch (wrong order, wrong process rows), a
    scoring pass that writes the wrong ids, or a host eval that drops a chunk:
    each of those moves losses far beyond rounding.
    """
    r_dev, s_dev = _run(tmp_path / "device")
    r_host, s_host = _run(tmp_path / "host", data_placement="host")
    np.testing.assert_allclose(_losses(tmp_path / "host"), _losses(tmp_path / "device"), rtol=1e-5)
    _assert_close(s_host, s_dev, rtol=1e-5)
    assert r_host["step"] == r_dev["step"] == 20
    assert r_host["eval_loss"] == pytest.approx(r_dev["eval_loss"], rel=1e-6)


DRIVER = r"""
import json, sys, numpy as np, jax
from attent_jax.training.loop import Trainer
from attent_jax.training.config import TrainConfig
out = {}
for placement, workdir in json.loads(sys.argv[1]):
    trainer = Trainer(TrainConfig.from_flat(**json.loads(sys.argv[2]), data_placement=placement), workdir)
    result = trainer.run()
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(trainer.final_state["params"]))
    np.savez(workdir + "/params.npz", **{jax.tree_util.keystr(k): v for k, v in leaves})
print("devices", jax.device_count())
"""


def test_host_placement_on_eight_devices_matches_device_placement(tmp_path):
    """8 CPU devices: each device's share of a host batch is assembled from the process's rows, and the run
    ends as device placement does (float32 rounding). Catches rows mapped to the wrong device slice."""
    runs = [[p, str(tmp_path / p)] for p in ("device", "host")]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(runs), json.dumps(CONFIG)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "devices 8" in proc.stdout, proc.stderr[-3000:]
    np.testing.assert_allclose(_losses(tmp_path / "host"), _losses(tmp_path / "device"), rtol=1e-5)
    with np.load(tmp_path / "device" / "params.npz") as d, np.load(tmp_path / "host" / "params.npz") as h:
        for k in d:
            np.testing.assert_allclose(h[k], d[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_host_placement_resume_is_bitwise(tmp_path):
    """Stopped mid-epoch (step 6, after the checkpoint at 5) and started again: bitwise the uninterrupted run.

    Catches a resumed epoch that re-reads its batches from position 0, or a
    prefetch thread whose batches outlive the interruption.
    """
    _, whole = _run(tmp_path / "whole", data_placement="host")
    _assert_resume_is_bitwise(tmp_path / "cut", whole, stop_at=6, data_placement="host")


def _assert_resume_is_bitwise(workdir, whole, stop_at: int, **fields):
    """Run `fields` in `workdir` stopped after step `stop_at`, then again (resuming): bitwise the `whole` state."""
    class Stop(Exception):
        pass

    def stop(step):
        if step == stop_at:
            raise Stop

    with pytest.raises(Stop):
        _run(workdir, on_step=stop, **fields)
    _, resumed = _run(workdir, **fields)
    for x, y in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(whole)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("host_block", [8, 3])
def test_host_blocks_past_the_first_and_resume_inside_one(tmp_path, host_block):
    """Batch 4: epoch 0 has 16 steps, so its later positions come from later blocks (the step picks batch
    ``pos % host_block``), and a resume after the checkpoint at step 11 starts inside a block.

    Catches the step indexing the block by the epoch position itself (clamped to the block's last batch: the
    wrong batches train, far beyond rounding against device placement), blocks misaligned on resume, and
    host_block not reaching the step (a block of 3 read as 8).
    """
    fields = dict(batch_size=4, epochs=2, checkpoint_every=11, host_block=host_block)
    _, device = _run(tmp_path / "device", **fields)
    _, whole = _run(tmp_path / "whole", data_placement="host", **fields)
    np.testing.assert_allclose(_losses(tmp_path / "whole"), _losses(tmp_path / "device"), rtol=1e-5)
    _assert_close(whole, device, rtol=1e-5)
    _assert_resume_is_bitwise(tmp_path / "cut", whole, stop_at=12, data_placement="host", **fields)


# ------------------------------------------------------------------ reading, sources, prefetch


class _Sharding:
    """The part of a sharding `local_rows` reads: this process's devices and the batch slice each holds."""

    def __init__(self, slices):
        self.slices = slices

    def addressable_devices_indices_map(self, shape):
        return {f"device{i}": (slice(a, b),) for i, (a, b) in enumerate(self.slices)}


def test_a_process_reads_only_its_devices_rows():
    """A process holding devices with batch slices [16, 24) and [24, 32) of 64 reads exactly those ids, in order.

    Catches reading the whole batch in every process, or rows in an order that
    does not match the device slices `make_array_from_process_local_data` fills.
    """
    rows = host_data.local_rows(_Sharding([(24, 32), (16, 24)]), 64)
    np.testing.assert_array_equal(rows, np.arange(16, 32))

    class Recording(host_data.RecordSource):
        read_ids = []

        def read(self, idx):
            self.read_ids.extend(idx.tolist())
            return super().read(idx)

    data = {"x": np.arange(100, dtype=np.float32)[:, None]}
    source = Recording([{"x": row} for row in data["x"]])
    order = np.random.default_rng(0).permutation(100)[:64]
    local = host_data.read_rows(source, order[rows])
    assert source.read_ids == order[16:32].tolist()
    np.testing.assert_array_equal(local["x"][:, 0], order[16:32])


def test_epoch_batches_hand_each_position_its_batch_in_a_block_and_read_only_those_positions():
    """Positions 3..12 of an epoch travel in blocks of 8 batches; the step takes batch ``pos % 8``.

    Catches a block misaligned with the positions (the step would train on another batch), a resumed epoch's
    first block read from position 0 (the rows before `start` read in vain), and the last block padded with
    rows read from the source (a record source may decode each row at a cost).
    """
    from attent_jax.training.mesh import make_mesh

    # Positions 3..12 span blocks 0 (positions 0-7) and 1 (8-15).
    B, order = 4, np.random.default_rng(1).permutation(100).astype(np.int32)

    class Recording(host_data.RecordSource):
        read_ids = []

        def read(self, idx):
            self.read_ids.extend(idx.tolist())
            return super().read(idx)

    source = Recording([{"x": np.array([float(i)], np.float32)} for i in range(100)])
    sharding = jax.sharding.NamedSharding(make_mesh(), jax.sharding.PartitionSpec("data"))
    batches = host_data.epoch_batches(source, order, B, sharding, start=3, stop=13, depth=2, block=8)
    with jax.transfer_guard("allow"):
        blocks = [jax.device_get(block) for block in batches]
    assert len(blocks) == 10
    for pos, block in zip(range(3, 13), blocks):
        np.testing.assert_array_equal(block["idx"][pos % 8], order[pos * B:(pos + 1) * B])
        np.testing.assert_array_equal(block["x"][pos % 8, :, 0], order[pos * B:(pos + 1) * B])
    assert Recording.read_ids == order[3 * B:13 * B].tolist()
    assert list(host_data.epoch_batches(source, order, B, sharding, start=5, stop=5, depth=2, block=8)) == []


def test_npy_folder_is_memory_mapped_and_reads_rows(tmp_path):
    """save_npy_dir + open_npy_dir: memory maps (nothing loaded), rows read in the requested order."""
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    host_data.save_npy_dir(str(tmp_path / "d"), {"x": x, "y": np.arange(50, dtype=np.int32)})
    arrays = host_data.open_npy_dir(str(tmp_path / "d"))
    assert all(isinstance(v, np.memmap) for v in arrays.values()) and sorted(arrays) == ["x", "y"]
    rows = host_data.read_rows(arrays, np.array([7, 3, 49]))
    np.testing.assert_array_equal(rows["x"], x[[7, 3, 49]])
    np.testing.assert_array_equal(rows["y"], [7, 3, 49])
    with pytest.raises(ValueError, match="holds no .npy file"):
        host_data.open_npy_dir(str(tmp_path))


def test_prefetcher_raises_the_source_error_and_stops():
    """An error while reading item 2 is raised by the consumer after items 0 and 1; the thread ends."""
    def make(i):
        if i == 2:
            raise OSError("disk gone")
        return i

    prefetcher = host_data.Prefetcher(make, 5, depth=2)
    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetcher:
            got.append(item)
    assert got == [0, 1]
    prefetcher._thread.join(timeout=5)
    assert not prefetcher._thread.is_alive()


class Linear(nnx.Module):
    def __init__(self, rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (4, 1)) * 0.1)

    def __call__(self, x):
        return x @ self.w[...]


def _mse(out, batch):
    return jnp.mean((out - batch["y"]) ** 2, axis=-1)


def _fit_data(n=64):
    x = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    return {"x": x, "y": (x @ np.arange(1.0, 5.0, dtype=np.float32))[:, None]}


def _fit_config(**fields):
    base = dict(epochs=2, batch_size=16, selection="hard", regime="every_epoch", ratio=0.5, progress_bar=False,
                log_every=1, checkpoint_every=2, eval_batch_size=16, data_placement="host")
    return aj.TrainConfig.from_flat(**{**base, **fields})


class FailingSource:
    """A random-access source whose record `bad` raises (a disk error, say) once `after` records were read."""

    def __init__(self, data, bad=None, after=0):
        self.data, self.bad, self.after, self.reads = data, bad, after, 0

    def __len__(self):
        return len(self.data["x"])

    def __getitem__(self, i):
        self.reads += 1
        if i == self.bad and self.reads > self.after:
            raise OSError(f"cannot read record {i}")
        return {k: v[i] for k, v in self.data.items()}


def test_fit_host_reads_a_record_source_lazily_and_a_read_error_stops_the_run(tmp_path):
    """fit with host placement: a record source trains as the same data in a dict, read only as batches need
    it; a record that fails to read stops the run with that error, and its checkpoints stay on disk.

    Catches a source stacked up front (the reads count), a prefetch thread that swallows the error (the run
    would hang or finish), and a failure path that cleans the run folder.
    """
    data = _fit_data()
    dict_model, rec_model = Linear(nnx.Rngs(0)), Linear(nnx.Rngs(0))
    aj.fit(dict_model, _mse, data, _fit_config(), workdir=str(tmp_path / "dict"))
    records = FailingSource(data)
    aj.fit(rec_model, _mse, records, _fit_config(epochs=1), workdir=str(tmp_path / "records"))
    # Record 0 once for its keys and shapes, a bounded sample for the run's fingerprint (workdir.SAMPLE_ROWS of
    # these 64 rows), 64 for the epoch's 4 steps, 64 for its evaluation: nothing else up front.
    sample = min(SAMPLE_ROWS, len(data["x"]))
    assert records.reads == 1 + sample + 64 + 64
    aj.fit(rec_model := Linear(nnx.Rngs(0)), _mse, FailingSource(data), _fit_config(),
           workdir=str(tmp_path / "records2"))
    np.testing.assert_array_equal(rec_model.w[...], dict_model.w[...])

    # Fails after epoch 0's steps (checkpoint at step 2), while evaluating.
    with pytest.raises(OSError, match="cannot read record 5"):
        aj.fit(Linear(nnx.Rngs(0)), _mse, FailingSource(data, bad=5, after=1 + sample + 64), _fit_config(),
               workdir=str(tmp_path / "bad"))
    assert os.listdir(tmp_path / "bad" / "checkpoints"), "checkpoints were deleted"


def test_fit_host_trains_from_a_memory_mapped_folder(tmp_path):
    """fit with host placement on open_npy_dir's memory maps: bitwise the run on the same arrays in memory."""
    data = _fit_data()
    host_data.save_npy_dir(str(tmp_path / "data"), data)
    mem, mapped = Linear(nnx.Rngs(0)), Linear(nnx.Rngs(0))
    aj.fit(mem, _mse, data, _fit_config(), workdir=str(tmp_path / "mem"))
    aj.fit(mapped, _mse, host_data.open_npy_dir(str(tmp_path / "data")), _fit_config(), workdir=str(tmp_path / "map"))
    np.testing.assert_array_equal(mapped.w[...], mem.w[...])


def test_fit_host_takes_a_grain_map_dataset(tmp_path):
    """A grain.MapDataset (Grain's random-access protocol) is a source as it is."""
    grain = pytest.importorskip("grain")
    data = _fit_data()
    records = [{k: v[i] for k, v in data.items()} for i in range(len(data["x"]))]
    ds = grain.MapDataset.source(records)
    model, ref = Linear(nnx.Rngs(0)), Linear(nnx.Rngs(0))
    aj.fit(model, _mse, ds, _fit_config(), workdir=str(tmp_path / "grain"))
    aj.fit(ref, _mse, data, _fit_config(), workdir=str(tmp_path / "ref"))
    np.testing.assert_array_equal(model.w[...], ref.w[...])


@pytest.mark.parametrize("field,value,message", [("data_placement", "gpu", "data_placement: got 'gpu'"),
                                                 ("prefetch", 0, "prefetch: got 0")])
def test_bad_placement_values_are_one_line_errors(field, value, message):
    with pytest.raises(ValueError, match=message) as err:
        TrainConfig.from_flat(**{field: value})
    assert "\n" not in str(err.value)
