"""The device mesh of a training run: one "data" axis over every device, and the shardings of the state.

Data parallelism by default (params and optimizer state replicated, the batch
split over "data"); with FSDP, big params and their Adam moments are split
along one axis too. Multi-host runs initialize `jax.distributed` when the usual
cluster environment variables announce several processes.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


# Environment variables that say "this process is one of several": only then is
# jax.distributed.initialize() called (it auto-detects the rest from them).
_CLUSTER_ENV = {"JAX_COORDINATOR_ADDRESS": None, "SLURM_NTASKS": int, "OMPI_COMM_WORLD_SIZE": int,
                "MEGASCALE_NUM_SLICES": int, "TPU_WORKER_HOSTNAMES": lambda v: len(v.split(","))}
_distributed_done = False


def initialize_distributed() -> bool:
    """Call `jax.distributed.initialize()` when cluster variables announce several processes.

    Must run before JAX touches a device. Returns whether it initialized.
    A single-process run (no such variable, or a count of 1) is left alone.
    """
    global _distributed_done
    if _distributed_done:
        return True
    for name, count in _CLUSTER_ENV.items():
        value = os.environ.get(name)
        if value and (count is None or count(value) > 1):
            jax.distributed.initialize()
            _distributed_done = True
            return True
    return False


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
    replicated = NamedSharding(mesh, P())

    def param_sharding(x):
        if not fsdp or not getattr(x, "shape", ()):
            return replicated
        return NamedSharding(mesh, fsdp_spec(x.shape, mesh.size, fsdp_min_size))

    out = {k: jax.tree.map(lambda _: replicated, v) for k, v in abstract_state.items()}
    out["params"] = jax.tree.map(param_sharding, abstract_state["params"])
    out["opt"] = jax.tree.map(param_sharding, abstract_state["opt"])
    return out
