"""The mesh helpers: batch divisibility, FSDP's choice of axis, multi-host initialization only in a cluster.

The sharded runs themselves (1 vs 8 devices, FSDP layouts) are tested end to end in test_train.py.
"""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from attent_jax.training import mesh


def test_batch_size_must_divide_over_devices():
    with pytest.raises(ValueError, match=r"batch_size: got 12.*device count 8"):
        mesh.check_batch_divisible(12, 8)
    mesh.check_batch_divisible(16, 8)


def test_fsdp_shards_largest_divisible_axis():
    assert mesh.fsdp_spec((64, 256), 8, 1024) == P(None, "data")
    assert mesh.fsdp_spec((64, 30), 8, 1024) == P("data", None)
    assert mesh.fsdp_spec((7, 9), 8, 1) == P()      # nothing divisible: replicated
    assert mesh.fsdp_spec((8, 8), 8, 1024) == P()   # too small to bother


def test_distributed_init_only_with_cluster_env(monkeypatch):
    for name in mesh._CLUSTER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task job is not multi-process
    called = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: called.append(1))
    monkeypatch.setattr(mesh, "_distributed_done", False)
    assert mesh.initialize_distributed() is False and not called
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert mesh.initialize_distributed() is True and called == [1]
