"""Two processes on 127.0.0.1 (4 CPU devices each, gloo collectives) train like one process with 8 devices.

- The scratch, finetune and infobatch regimes of the quick `teach` task (and
  scratch with ``data_placement="host"``, each process reading its own rows) give
  the same per-epoch losses and final params (relative error <= 1e-5: gloo
  and the in-process CPU collectives sum in different orders) on 2 processes
  as on 1, and the two processes end with identical params.
- SIGKILL of process 1 mid-epoch (after its checkpoint at step 9), then a
  restart of both, ends bitwise equal to the uninterrupted 2-process run. In
  the restart process 1 lists no checkpoint at all (a stale view of the
  folder): both processes must still resume from process 0's step 9.
- The Checkpointer alone: a save of a step already on disk (kept, then
  replaced) while process 1's listing is stale, then a restore.
- Two processes with 4 and 2 devices stop with a one-line error naming both.

All processes of a group start at once, each with its own log file (gloo is
chatty on stderr); a group that outlives its time bound is killed by pid and
the test fails with the logs' tails. The three groups (2 processes, 1
process, the killed pair) run side by side; the restart follows the kill.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME_BOUND_S = 240

# teach quick: 64 sequences, batch 8 (8 steps on all data).
# scratch, interval 1: epochs of 64, 32, 51 examples = 8 + 4 + 6 steps, with a scoring pass before epoch 2;
#   checkpoints every 3 steps: 3, 6, 8 (epoch end), 9 (mid epoch 1), 12, 15, 18.
# finetune: hard selection of the top 70% (45) after an all-data epoch: 8 + 5 + 5 steps.
# infobatch: an all-data epoch, then one pruned on device (its size is fetched from the device).
# log_every 4 (more than loop.LOG_LAG): every process fetches its metrics late at the same steps.
BASE = dict(task="teach", quick=True, batch_size=8, checkpoint_every=3, log_every=4, progress_bar=False)
REGIMES = {"scratch": dict(BASE, epochs=3, regime="scratch", interval=1),
           "finetune": dict(BASE, epochs=3, regime="finetune", selection="hard", ratio="fixed"),
           "infobatch": dict(BASE, epochs=2, regime="infobatch"),
           # Host placement: each process reads only its 4 devices' rows of every batch and scoring chunk.
           "scratch_host": dict(BASE, epochs=3, regime="scratch", interval=1, data_placement="host")}
KILL_AT, KILL_AFTER_CHECKPOINT = 11, 9

# argv: runs (JSON list of {config, workdir, kill_at?, wait_for?, stale_listing?}), then this process's id,
# the process count and the coordinator ("" = one process). Each run writes params_<id>.npz and
# first_step_<id>.json (the first step this process trained: one past the checkpoint it resumed from).
DRIVER = r"""
import json, os, signal, sys, time
import numpy as np, jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from attent_jax.training.checkpoint import Checkpointer
from attent_jax.training.config import TrainConfig
from attent_jax.training.loop import Trainer

runs, pid, count, coordinator = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for run in runs:
    if run.get("stale_listing") and pid == 1:
        Checkpointer.all_steps = lambda self: []   # this process sees an empty checkpoint folder
    first = []
    def on_step(step, run=run):
        first.append(step)
        if pid == 1 and step == run.get("kill_at"):
            ckpt = os.path.join(run["workdir"], "checkpoints", str(run["wait_for"]))
            deadline = time.time() + 120
            while not os.path.isdir(ckpt) and time.time() < deadline:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGKILL)
    multi = dict(coordinator=coordinator, num_processes=count, process_id=pid) if coordinator else {}
    trainer = Trainer(TrainConfig.from_flat(**run["config"], **multi), run["workdir"])
    trainer.run(on_step=on_step)
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(trainer.final_state["params"]))
    np.savez(os.path.join(run["workdir"], f"params_{pid}.npz"), **{jax.tree_util.keystr(k): v for k, v in leaves})
    with open(os.path.join(run["workdir"], f"first_step_{pid}.json"), "w") as f:
        json.dump(first[0] if first else None, f)
print("processes", jax.process_count(), "devices", jax.device_count(), flush=True)
"""

# Checkpointer alone on 2 processes: a step saved, then saved again (the same state: kept; another: replaced)
# while process 1 lists no checkpoint; every process must follow process 0's decision, or the save that one
# process enters and the other skips waits forever. Then restore_latest gives the replacing state everywhere.
CKPT_DRIVER = r"""
import sys
import numpy as np, jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from jax.sharding import NamedSharding, PartitionSpec as P
from attent_jax.training import mesh as mesh_lib
from attent_jax.training.checkpoint import Checkpointer, abstract_like

directory, pid, count, coordinator = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
mesh_lib.initialize_distributed(coordinator, count, pid)
sharding = NamedSharding(mesh_lib.make_mesh(), P())
first = {"w": jax.device_put(np.arange(8, dtype=np.float32), sharding)}
second = {"w": jax.device_put(np.arange(8, dtype=np.float32) * 2, sharding)}
ckpt = Checkpointer(directory, keep=3)
ckpt.save(1, first, {"saved": "first"})
ckpt.wait()
if pid == 1:
    Checkpointer.all_steps = lambda self: []   # this process's listing is stale from here on
ckpt.save(1, first, {"saved": "again"})     # on disk with this state: kept
ckpt.save(1, second, {"saved": "second"})   # on disk with another state: replaced
state, meta = ckpt.restore_latest(abstract_like(first))
ckpt.close()
assert meta["saved"] == "second" and np.array_equal(np.asarray(state["w"].addressable_data(0)), np.arange(8) * 2)
print("checkpoint decisions agreed", flush=True)
"""

# Joining only: each process names its local device count, so that a mismatch is seen.
JOIN_DRIVER = r"""
import sys
from attent_jax.training import mesh
try:
    mesh.initialize_distributed(sys.argv[4], int(sys.argv[3]), int(sys.argv[2]))
except ValueError as err:
    print("ValueError:", err, flush=True)
    sys.exit(3)
"""

_CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "MEGASCALE_NUM_SLICES",
                 "TPU_WORKER_HOSTNAMES")


_ports_given: set = set()


def _free_port() -> int:
    # A port closed here may be handed out again at once: never give two groups (running side by side) one.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


class Group:
    """`count` driver processes of one run (a coordinator on a fresh port if count > 1), logging to files."""

    def __init__(self, name, runs, count, devices, logdir, driver=DRIVER):
        """`runs`: the driver's first argument (made JSON unless a str); `devices`: per process, or one count."""
        env = {k: v for k, v in os.environ.items() if k not in _CLUSTER_VARS}
        env.update(PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
        devices = [devices] * count if isinstance(devices, int) else devices
        coordinator = f"127.0.0.1:{_free_port()}" if count > 1 else ""
        self.name, self.logs, self.procs = name, [], []
        for pid in range(count):
            log = open(os.path.join(logdir, f"{name}_{pid}.log"), "w")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-c", driver, runs if isinstance(runs, str) else json.dumps(runs), str(pid),
                 str(count), coordinator],
                env=dict(env, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices[pid]}"),
                stdout=log, stderr=subprocess.STDOUT))

    def wait(self, deadline, pids=None):
        """Return codes of processes `pids` (default all), failing the test if they outlive `deadline`."""
        codes = []
        for pid in range(len(self.procs)) if pids is None else pids:
            try:
                codes.append(self.procs[pid].wait(timeout=max(deadline - time.time(), 0.1)))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"{self.name}: process {pid} still running after {TIME_BOUND_S} s\n{self.tails()}")
        return codes

    def tails(self):
        out = []
        for log in self.logs:
            log.flush()
            with open(log.name) as f:
                lines = [line for line in f if "[Gloo]" not in line]
            out.append(f"--- {os.path.basename(log.name)}\n" + "".join(lines[-25:]))
        return "\n".join(out)

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    def close(self):
        self.kill()
        for log in self.logs:
            log.close()


def _params(workdir, pid=0):
    with np.load(os.path.join(workdir, f"params_{pid}.npz")) as f:
        return dict(f)


def _epochs(workdir):
    """(train_loss, eval_loss) of each epoch, from process 0's metrics log."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [(r["train_loss"], r["eval_loss"]) for r in map(json.loads, f) if r["event"] == "eval"]


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("multiprocess")
    logdir = str(base)
    folders = {(n, regime): str(base / f"{n}_{regime}") for n in ("two", "one") for regime in REGIMES}
    killed = str(base / "killed")
    groups = []
    start = time.time()
    deadline = start + TIME_BOUND_S
    try:
        two = Group("two", [{"config": c, "workdir": folders["two", r]} for r, c in REGIMES.items()], 2, 4, logdir)
        one = Group("one", [{"config": c, "workdir": folders["one", r]} for r, c in REGIMES.items()], 1, 8, logdir)
        kill = Group("kill", [{"config": REGIMES["scratch"], "workdir": killed, "kill_at": KILL_AT,
                               "wait_for": KILL_AFTER_CHECKPOINT}], 2, 4, logdir)
        groups += [two, one, kill]
        ckpt = Group("ckpt", str(base / "ckpt"), 2, 4, logdir, driver=CKPT_DRIVER)
        join = Group("join", "", 2, [4, 2], logdir, driver=JOIN_DRIVER)
        groups += [ckpt, join]
        # Process 1 kills itself; process 0 then waits in a collective (or fails in it): kill it too.
        (code_1,) = kill.wait(deadline, pids=[1])
        assert code_1 == -signal.SIGKILL, kill.tails()
        kill.kill()
        steps_on_disk = sorted(int(s) for s in os.listdir(os.path.join(killed, "checkpoints")) if s.isdigit())
        resume = Group("resume", [{"config": REGIMES["scratch"], "workdir": killed, "stale_listing": True}],
                       2, 4, logdir)
        groups.append(resume)
        join_codes = join.wait(deadline)
        join_out = [open(log.name).read() for log in join.logs]
        for group in (two, one, resume, ckpt):
            codes = group.wait(deadline)
            assert codes == [0] * len(codes), group.tails()
        assert "processes 2 devices 8" in open(two.logs[0].name).read()
        assert "processes 1 devices 8" in open(one.logs[0].name).read()
        ckpt_out = [open(log.name).read() for log in ckpt.logs]
    finally:
        for group in groups:
            group.close()
    return {"folders": folders, "killed": killed, "steps_on_disk": steps_on_disk, "join": (join_codes, join_out),
            "ckpt": ckpt_out, "wall": time.time() - start}


@pytest.mark.parametrize("regime", list(REGIMES))
def test_two_processes_match_one_process_of_eight_devices(runs, regime):
    """Catches a multi-process run that trains on other batches, selects other examples, or sums its
    gradients over one process's devices only (each would move params and losses far beyond 1e-5)."""
    two, one = runs["folders"]["two", regime], runs["folders"]["one", regime]
    epochs_two, epochs_one = _epochs(two), _epochs(one)
    assert len(epochs_two) == len(epochs_one) == REGIMES[regime]["epochs"]
    loss_err = _rel_err(epochs_two, epochs_one)
    params_two, params_one = _params(two), _params(one)
    assert params_two.keys() == params_one.keys()
    param_err = max(_rel_err(params_two[k], params_one[k]) for k in params_one)
    print(f"{regime}: per-epoch loss rel. err {loss_err:.2e}, final params rel. err {param_err:.2e}, "
          f"fixture wall {runs['wall']:.0f} s")
    assert loss_err <= 1e-5 and param_err <= 1e-5
    # The two processes hold one replicated state: any difference means they computed different steps.
    params_p1 = _params(two, pid=1)
    assert all(np.array_equal(params_two[k], params_p1[k]) for k in params_two)


def test_sigkill_of_one_process_then_restart_is_bitwise_equal(runs):
    """Catches a resume that restores a step other than process 0's on some process (here process 1
    sees no checkpoint: deciding from its own listing it would start afresh, and the two would hang or
    diverge), and any state a restart does not restore (params, Adam moments, teacher, data order, RNG)."""
    killed = runs["killed"]
    # The newest checkpoint when process 1 died is 9 (mid epoch 1): the restart resumes there.
    assert max(runs["steps_on_disk"]) == KILL_AFTER_CHECKPOINT, runs["steps_on_disk"]
    for pid in (0, 1):
        with open(os.path.join(killed, f"first_step_{pid}.json")) as f:
            assert json.load(f) == KILL_AFTER_CHECKPOINT + 1
    resumed, uninterrupted = _params(killed), _params(runs["folders"]["two", "scratch"])
    assert resumed.keys() == uninterrupted.keys()
    for k in uninterrupted:
        assert np.array_equal(resumed[k], uninterrupted[k]), k
        assert np.array_equal(_params(killed, pid=1)[k], uninterrupted[k]), k
    assert _epochs(killed) == _epochs(runs["folders"]["two", "scratch"])


def test_checkpoint_save_and_restore_follow_process_0(runs):
    """Catches a save decided from each process's own listing: process 1, seeing no step 1, would enter
    a save that process 0 skips (or the replacement process 0 enters), and both would wait forever."""
    for out in runs["ckpt"]:
        assert "checkpoint decisions agreed" in out, out[-2000:]


def test_processes_with_different_device_counts_stop_with_the_counts(runs):
    """Catches a run that starts with 4 devices on one process and 2 on the other (its mesh and batch
    split assume equal shares; it would fail later, or hang, far from the cause)."""
    codes, outputs = runs["join"]
    assert codes == [3, 3], outputs
    for out in outputs:
        assert "ValueError: local devices: got process 0: 4, process 1: 2" in out, out[-2000:]
