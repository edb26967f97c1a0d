"""The mesh helpers: batch divisibility, FSDP's choice of axis, joining a multi-process run.

The sharded runs themselves (1 vs 8 devices, FSDP layouts) are tested end to end in test_train.py; real
runs of 2 processes in test_multiprocess.py.
"""

import types

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from attent_jax.cli.main import main
from attent_jax.training import mesh
from attent_jax.training.config import RunConfig, TrainConfig
from attent_jax.training.workdir import CONFIG_FILE, check_run_folder


def test_batch_size_must_divide_over_devices():
    with pytest.raises(ValueError, match=r"batch_size: got 12.*device count 8"):
        mesh.check_batch_divisible(12, 8)
    mesh.check_batch_divisible(16, 8)


def test_fsdp_shards_largest_divisible_axis():
    assert mesh.fsdp_spec((64, 256), 8, 1024) == P(None, "data")
    assert mesh.fsdp_spec((64, 30), 8, 1024) == P("data", None)
    assert mesh.fsdp_spec((7, 9), 8, 1) == P()      # nothing divisible: replicated
    assert mesh.fsdp_spec((8, 8), 8, 1024) == P()   # too small to bother


def _no_cluster_env(monkeypatch):
    for name in (*mesh._CLUSTER_ENV, mesh._COORDINATOR_ENV):
        monkeypatch.delenv(name, raising=False)


def test_distributed_init_only_with_cluster_env(monkeypatch):
    _no_cluster_env(monkeypatch)
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task job is not multi-process
    called = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: called.append(1))
    monkeypatch.setattr(mesh, "_distributed_done", False)
    assert mesh.initialize_distributed() is False and not called
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert mesh.initialize_distributed() is True and called == [1]


@pytest.mark.parametrize("fields, match", [
    (dict(coordinator="127.0.0.1"), r"coordinator: got '127.0.0.1', expected HOST:PORT"),
    (dict(coordinator=":1234"), r"coordinator: got ':1234', expected HOST:PORT"),
    (dict(coordinator="host:99999"), r"coordinator: got 'host:99999', expected HOST:PORT"),
    (dict(coordinator="host:12a"), r"coordinator: got 'host:12a'"),
    (dict(num_processes=-2), r"num_processes: got -2, expected an int >= 1"),
    (dict(process_id=2), r"process_id: got 2, expected 0 <= process_id < num_processes=2"),
    (dict(process_id=-3), r"process_id: got -3"),
    (dict(process_id=-1), r"process_id: not given, expected coordinator, num_processes and process_id together"),
    (dict(coordinator=""), r"coordinator: not given"),
])
def test_multiprocess_settings_are_checked_at_the_boundary(fields, match):
    """Catches a bad coordinator, count or id reaching jax.distributed (a hang, or an error deep in JAX)."""
    good = dict(coordinator="127.0.0.1:1234", num_processes=2, process_id=1)
    RunConfig(**good)
    RunConfig(coordinator="[::1]:1234", num_processes=1, process_id=0)  # IPv6 in brackets
    with pytest.raises(ValueError, match=match):
        RunConfig(**dict(good, **fields))


def test_cli_bad_coordinator_is_exit_2(tmp_path, capsys):
    """Catches a flag that is not wired to the RunConfig field, or an error that escapes as a traceback."""
    code = main(["train", "--workdir", str(tmp_path / "run"), "--coordinator", "localhost", "--num-processes", "2",
                 "--process-id", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "coordinator: got 'localhost'" in err
    assert not (tmp_path / "run").exists()


def test_explicit_settings_reach_jax_distributed(monkeypatch):
    """Catches the settings not passed on (JAX reads no process count or id from the environment)."""
    _no_cluster_env(monkeypatch)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(mesh, "_distributed_done", False)
    assert mesh.initialize_distributed("127.0.0.1:1234", 1, 0) is False and not calls  # one process: no join
    assert mesh.initialize_distributed("127.0.0.1:1234", 2, 1) is True
    assert calls == [dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1)]
    # This Python process is (really) one process: a second run asking for process 1 of 2 does not fit.
    with pytest.raises(ValueError, match=r"process_id: got 1 of num_processes=2, but this Python process"):
        mesh.initialize_distributed("127.0.0.1:1234", 2, 1)


def test_coordinator_address_alone_is_a_clear_error(monkeypatch):
    """Catches today's bug: JAX_COORDINATOR_ADDRESS alone called jax.distributed.initialize(), which
    fails deep in JAX with "Number of processes must be defined"."""
    _no_cluster_env(monkeypatch)
    monkeypatch.setenv(mesh._COORDINATOR_ENV, "10.0.0.1:1234")
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: pytest.fail("initialize was called"))
    monkeypatch.setattr(mesh, "_distributed_done", False)
    with pytest.raises(ValueError, match=r"JAX_COORDINATOR_ADDRESS: got '10.0.0.1:1234'.*--num-processes"):
        mesh.initialize_distributed()


def test_unequal_local_device_counts_are_named():
    """Catches processes of unequal device counts going on (the real 4-vs-2 run: test_multiprocess.py)."""
    mesh.check_local_device_counts({0: 4, 1: 4})
    with pytest.raises(ValueError, match=r"local devices: got process 0: 4, process 1: 2, expected the same count"):
        mesh.check_local_device_counts({0: 4, 1: 2})
    assert mesh.local_device_counts() == {0: jax.device_count()}


def _fake_mesh(processes, platform="cpu"):
    devices = [types.SimpleNamespace(process_index=p, platform=platform) for p in processes]
    return types.SimpleNamespace(devices=np.array(devices, dtype=object))


def test_fsdp_refused_on_multiprocess_cpu_only():
    """Catches FSDP let through where gloo's psum_scatter silently corrupts big shards (jax-ml/jax#40830),
    and a refusal that also hits the cases that work (one process, GPU/TPU, no fsdp)."""
    with pytest.raises(ValueError, match=r"fsdp: got True on a CPU mesh of 2 processes.*jax-ml/jax#40830"):
        mesh.check_fsdp_supported(True, _fake_mesh([0, 0, 1, 1]))
    mesh.check_fsdp_supported(False, _fake_mesh([0, 0, 1, 1]))
    mesh.check_fsdp_supported(True, _fake_mesh([0, 0, 0, 0]))
    mesh.check_fsdp_supported(True, _fake_mesh([0, 0, 1, 1], platform="gpu"))
    with pytest.raises(ValueError, match=r"jax-ml/jax#40830"):  # the loop's shardings ask first
        mesh.state_shardings({"params": {}, "opt": {}}, _fake_mesh([0, 1]), fsdp=True, fsdp_min_size=1)


def test_resume_may_change_how_processes_meet(tmp_path):
    """Catches a resume refused because the coordinator, count or id changed (they change no number)."""
    saved = TrainConfig.from_flat(task="teach", quick=True).resolve()
    (tmp_path / CONFIG_FILE).write_text(saved.to_json())
    check_run_folder(str(tmp_path), saved.replace(coordinator="127.0.0.1:1", num_processes=2, process_id=1))
    with pytest.raises(ValueError, match=r"seed: got 1"):  # a field that does change the numbers still counts
        check_run_folder(str(tmp_path), saved.replace(seed=1))
