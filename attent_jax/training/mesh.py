"""The device mesh of a training run: one "data" axis over every device, and the shardings of the state.

Data parallelism by default (params and optimizer state replicated, the batch
split over "data"); with FSDP, big params and their Adam moments are split
along one axis too. A multi-process run joins `jax.distributed` with the
coordinator, process count and id given explicitly (``attent train
--coordinator HOST:PORT --num-processes N --process-id I``), or found by JAX in a
SLURM / Open MPI / TPU environment that announces several processes.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


# Environment variables of a cluster manager that say "this process is one of several": there
# jax.distributed.initialize() with no arguments finds the coordinator, the process count and this process's id.
_CLUSTER_ENV = {"SLURM_NTASKS": int, "OMPI_COMM_WORLD_SIZE": int,
                "MEGASCALE_NUM_SLICES": int, "TPU_WORKER_HOSTNAMES": lambda v: len(v.split(","))}
# JAX reads this one for the coordinator's address, but no process count or id from the environment, so alone
# it cannot start a run (JAX: "Number of processes must be defined"): it needs the flags as well.
_COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
# The CPU backend's cross-process collectives (already the default in JAX 0.10; set only where they are off).
_CPU_COLLECTIVES = "gloo"
# gloo's reduce-scatter returns wrong data for chunks of about 4 MiB and more, without an error.
_GLOO_PSUM_SCATTER_ISSUE = "https://github.com/jax-ml/jax/issues/40830"
_distributed_done = False


def check_coordinator(coordinator: str, num_processes: int, process_id: int) -> None:
    """The explicit multi-process settings: none of them, or all three and consistent (one-line ValueError).

    ``coordinator`` is HOST:PORT (an IPv6 host in brackets), ``num_processes``
    >= 1 and 0 <= ``process_id`` < ``num_processes``; the defaults ("", 0, -1)
    mean "not given".
    """
    given = {"coordinator": coordinator != "", "num_processes": num_processes != 0, "process_id": process_id != -1}
    if any(given.values()) and not all(given.values()):
        missing = next(name for name, ok in given.items() if not ok)
        present = ", ".join(name for name, ok in given.items() if ok)
        raise ValueError(f"{missing}: not given, expected coordinator, num_processes and process_id together "
                         f"(got only {present})")
    if not coordinator:
        return
    host, sep, port = coordinator.rpartition(":")
    if not sep or not host or host.strip("[]") == "" or not port.isdigit() or not 0 < int(port) < 65536 \
            or any(c.isspace() for c in coordinator):
        raise ValueError(f"coordinator: got {coordinator!r}, expected HOST:PORT (e.g. 10.0.0.1:1234, port 1..65535)")
    if num_processes < 1:
        raise ValueError(f"num_processes: got {num_processes!r}, expected an int >= 1")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id: got {process_id!r}, expected 0 <= process_id < num_processes={num_processes}")


def initialize_distributed(coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> bool:
    """Join a multi-process run: the explicit settings if given, else a cluster manager's environment.

    Must run before JAX touches a device. Returns whether this process is one
    of several. With ``coordinator`` (HOST:PORT), ``num_processes`` and
    ``process_id``, calls ``jax.distributed.initialize`` with them; without,
    only when SLURM / Open MPI / TPU variables announce several processes
    (JAX then detects all three). A single-process run is left alone. Then
    checks that every process sees as many devices as the others: the mesh
    and the batch split assume it, and a mismatch would surface later as a hang.
    """
    global _distributed_done
    check_coordinator(coordinator, num_processes, process_id)
    if _distributed_done:
        if coordinator and (jax.process_count(), jax.process_index()) != (num_processes, process_id):
            raise ValueError(f"process_id: got {process_id} of num_processes={num_processes}, but this Python "
                             f"process already joined as process {jax.process_index()} of {jax.process_count()}")
        return True
    if coordinator:
        kwargs = dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    elif any((v := os.environ.get(name)) and count(v) > 1 for name, count in _CLUSTER_ENV.items()):
        kwargs = {}
    elif os.environ.get(_COORDINATOR_ENV):
        raise ValueError(f"{_COORDINATOR_ENV}: got {os.environ[_COORDINATOR_ENV]!r}, but JAX reads no process "
                         f"count or id from the environment; pass --coordinator, --num-processes and --process-id "
                         f"(or unset it)")
    else:
        return False
    if kwargs.get("num_processes") == 1:
        return False  # one process: nothing to join, and no coordinator service to start
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES)
    jax.distributed.initialize(**kwargs)
    _distributed_done = True
    check_local_device_counts()
    return True


def local_device_counts() -> dict[int, int]:
    """{process index: its number of devices}, from the device list all processes exchanged when they joined."""
    counts: dict[int, int] = {}
    for device in jax.devices():
        counts[device.process_index] = counts.get(device.process_index, 0) + 1
    return counts


def check_local_device_counts(counts: dict[int, int] | None = None) -> None:
    """A one-line ValueError naming the counts unless every process has as many devices as the others."""
    counts = local_device_counts() if counts is None else counts
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"process {i}: {n}" for i, n in sorted(counts.items()))
        raise ValueError(f"local devices: got {listed}, expected the same count in every process "
                         f"(set the same devices, e.g. --xla_force_host_platform_device_count, everywhere)")


def check_fsdp_supported(fsdp: bool, mesh: Mesh) -> None:
    """Refuse FSDP on a CPU mesh spanning several processes: gloo's psum_scatter can silently return wrong data."""
    processes = {d.process_index for d in mesh.devices.flat}
    if fsdp and len(processes) > 1 and any(d.platform == "cpu" for d in mesh.devices.flat):
        raise ValueError(f"fsdp: got True on a CPU mesh of {len(processes)} processes, expected --no-fsdp there: "
                         f"gloo's psum_scatter returns wrong data for chunks of ~4 MiB and more "
                         f"(jax-ml/jax#40830, {_GLOO_PSUM_SCATTER_ISSUE})")


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def check_batch_divisible(batch_size: int, num_devices: int, name: str = "batch_size") -> None:
    if batch_size % num_devices:
        raise ValueError(f"{name}: got {batch_size}, expected a multiple of the device count {num_devices} "
                         f"(each device takes an equal share of the batch)")


def fsdp_spec(shape, num_devices: int, min_size: int) -> P:
    """Split the largest axis the device count divides; small or indivisible arrays stay whole."""
    if math.prod(shape) < min_size:
        return P()
    axes = sorted((n, i) for i, n in enumerate(shape) if n % num_devices == 0)
    if not axes:
        return P()
    spec = [None] * len(shape)
    spec[axes[-1][1]] = "data"
    return P(*spec)


def state_shardings(abstract_state: dict, mesh: Mesh, *, fsdp: bool, fsdp_min_size: int) -> dict:
    """The `NamedSharding` of every state leaf on `mesh`.

    - params, opt: P() — a full copy on every device (data parallelism); with
      fsdp, arrays of ≥ fsdp_min_size elements get P(None, "data", ...) on their
      largest axis divisible by the device count: each device holds one slice,
      and XLA gathers it when a step needs the whole array. Adam's moments have
      their parameter's shape, so they are split the same way.
    - teacher, order, rng, clock: P() — the score table and data order have one
      small entry per example; every device reads them to gather its batch.
    """
    check_fsdp_supported(fsdp, mesh)
    replicated = NamedSharding(mesh, P())

    def param_sharding(x):
        if not fsdp or not getattr(x, "shape", ()):
            return replicated
        return NamedSharding(mesh, fsdp_spec(x.shape, mesh.size, fsdp_min_size))

    out = {k: jax.tree.map(lambda _: replicated, v) for k, v in abstract_state.items()}
    out["params"] = jax.tree.map(param_sharding, abstract_state["params"])
    out["opt"] = jax.tree.map(param_sharding, abstract_state["opt"])
    return out
