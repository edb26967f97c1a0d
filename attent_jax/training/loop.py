"""Sharded training with AtteNT data selection: ``train_and_evaluate(config, workdir) -> dict``.

The loop of the paper's experiments (§5, Appendix C) around the greedy teacher of §4.3 / Algorithm 1
(`attent_jax.teaching.teacher`): each epoch the teacher plans which examples to train on (from its
per-example score table), every training step writes the per-example losses of its own forward pass back
into that table (so scores come for free), and a full scoring pass runs only when the teacher's schedule
asks for one (``teacher.needs_full_scoring``).

The mesh and the state's shardings are in `attent_jax.training.mesh`, the scoring pass in
`training.scoring`, evaluation in `training.evaluation`, host-side data in `training.host_data`,
the host-side clock, bookkeeping and logs in `training.run_log`.

Parallelism: one `Mesh` with a single "data" axis over all devices (of all hosts). The batch, the scoring
pass and the evaluation are split over "data"; params and optimizer state are replicated, or with ``fsdp``
their big arrays are split along their largest axis that the device count divides. Every jitted function
has explicit in/out shardings, the train step donates the state, and the loop runs under
``jax.transfer_guard("disallow")``: with ``data_placement="device"`` batches are gathered on device from
the device-resident dataset with the epoch's index array; with ``"host"`` a prefetch thread reads each
process's rows of the next blocks of ``host_block`` batches in the epoch's order (fetched once per epoch)
and copies them explicitly. Metrics leave the device only by an explicit ``jax.device_get`` every
``log_every`` steps (`LOG_LAG` steps late, so the device does not wait for the host's logging).

Static shapes: the batch size is fixed, so an epoch of ``n_active`` selected examples runs
⌊n_active / batch_size⌋ steps and its last partial batch is dropped (the dropped examples differ between
epochs: the order is reshuffled).

Resumption: the whole state (params, optimizer state, teacher state, the epoch's data order and RNG key) is
one pytree saved by `attent_jax.training.checkpoint`, with the host's step/epoch/position clock in the
checkpoint's meta (`run_log.Session`), every ``checkpoint_every`` steps and at epoch ends
(``checkpoint_epochs``). The train steps read the clock's entries as one int32 array, copied to the devices
once per epoch and advanced by each step on device. A run started again in the same folder resumes from
its newest intact checkpoint, and on the same device count ends with bitwise the same parameters as an
uninterrupted run; started again once finished, it trains nothing and returns its saved results.json.

Example:
    >>> from attent_jax.training.loop import train_and_evaluate
    >>> from attent_jax.training.config import TrainConfig
    >>> result = train_and_evaluate(TrainConfig(task="teach", quick=True, epochs=2, batch_size=16,
    ...                                         progress_bar=False), "/tmp/attent_doc_run")  # doctest: +SKIP
    >>> sorted(result)[:3]  # doctest: +SKIP
    ['epochs', 'eval_loss', 'examples_per_s']
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from attent_jax.models.lora import lora_builder
from attent_jax.training.checkpoint import Checkpointer
from attent_jax.training.config import TrainConfig
from attent_jax.training.evaluation import evaluate_stage, make_eval
from attent_jax.training.host_data import block_sharding, epoch_batches
from attent_jax.training.mesh import check_batch_divisible, initialize_distributed, make_mesh
from attent_jax.training.optim import learning_rate, make_optimizer
from attent_jax.training.run_log import NonFiniteLossError  # noqa: F401  (raised by train_and_evaluate; import it from here)
from attent_jax.training.run_log import MetricsLog, Session, warn_once, write_atomic
from attent_jax.training.scoring import make_score
from attent_jax.training.stage_state import StageLayouts
from attent_jax.training.stages import (Stage, build_stages, check_params_only, check_per_example, example_scores,
                                       load_dataset, model_builder, per_example_fn, stage_per_example)  # noqa: F401 (per_example_fn: importable from here, as before)
from attent_jax.training.workdir import (CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, RESULTS_FILE,  # noqa: F401
                                        check_run_folder, check_workdir, read_results)

# The clock entries a train step reads (it gets them from the host's clock as one int32 array).
STEP_CLOCK = ("pos", "stage_step", "epoch", "steps_in_epoch")
# Steps a log flush leaves queued on the device (when log_every exceeds it): see `run_log.Session.flush`.
LOG_LAG = 3


def _non_finite_scores(teacher_state):
    return jnp.sum(teacher_state.seen_N & ~jnp.isfinite(teacher_state.scores_N), dtype=jnp.int32)


# =========================================================================== the trainer

class Trainer:
    """One run: validated config, data, model, shardings and jitted functions; `run()` trains.

    Construction validates everything (config, devices, data, run folder, the
    shape of each stage's per-example losses) and writes nothing; `run()` writes
    the run folder and trains, resuming from the newest intact checkpoint there.

    ``stages`` and ``build`` (given together) replace the config's task and
    model: a user's stages (`stages.user_stage`) and ``build(rngs) -> module``;
    this is how `attent_jax.fit` runs a user's model, loss and data through this
    same loop. The config's data and model sections are then unused.
    """

    def __init__(self, config: TrainConfig, workdir: str, *, mesh: Mesh | None = None,
                 stages: list[Stage] | None = None, build: Callable[[nnx.Rngs], nnx.Module] | None = None):
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config: got {type(config).__name__}, expected a TrainConfig")
        self.config = config = config.resolve()
        run = config.run
        self.workdir = os.path.abspath(check_workdir(workdir))
        initialize_distributed(run.coordinator, run.num_processes, run.process_id)
        self.mesh = mesh if mesh is not None else make_mesh()
        n_dev = self.mesh.size
        check_batch_divisible(run.batch_size, n_dev)
        # Scoring/eval chunks: a multiple of the device count, so each device scores an equal share.
        self.eval_chunk = -(-run.eval_batch_size // n_dev) * n_dev
        # Host placement: datasets stay on the host and batches arrive as step arguments (training.host_data).
        self.host_data = run.data_placement == "host"
        check_run_folder(self.workdir, config)
        if (stages is None) != (build is None):
            raise ValueError("stages and build: got only one, expected both (a user's run) or neither (the task's)")
        if stages is None:
            self.dataset = ds = load_dataset(config.data)
            self.stages = build_stages(config, ds)
            build = model_builder(config.model, ds, self.stages)
        else:
            self.dataset, self.stages = None, list(stages)
        self.planned = [s.planned_steps(run.batch_size) for s in self.stages]
        build = lora_builder(build, config.model.lora_rank) if config.model.lora_rank else build
        abstract = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
        self.graphdef = nnx.split(abstract)[0]
        check_params_only(abstract)
        abstract_params = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
        for stage in self.stages:
            check_per_example(stage, self._apply, abstract_params, run.batch_size)
        self.tx = make_optimizer(config.optim)
        self.layouts = StageLayouts(build, abstract, self.stages, self.tx, run.seed, self.mesh, fsdp=run.fsdp,
                                    fsdp_min_size=run.fsdp_min_size)  # per stage: LoRA fine-tunes adapters only
        self.abstract_states, self.stage_shardings = self.layouts.abstract_states, self.layouts.shardings
        self.abstract_state, self.shardings = self.abstract_states[0], self.stage_shardings[0]
        self.replicated = NamedSharding(self.mesh, P())
        # Batch-like arrays: P("data") = split axis 0 (examples) over devices, other axes whole.
        self.batch_sharding = NamedSharding(self.mesh, P("data"))

    # ------------------------------------------------------------------ jitted functions

    def _apply(self, params, x):
        return nnx.merge(self.graphdef, params)(x)

    def _gather(self, arrays: dict, idx_B):
        """Rows `idx_B` of each device-resident array, split over "data" (each device gathers its share)."""
        idx_B = jax.lax.with_sharding_constraint(idx_B, self.batch_sharding)
        return {k: jax.lax.with_sharding_constraint(v[idx_B], self.batch_sharding) for k, v in arrays.items()}

    def _data_shardings(self, arrays: dict) -> dict:
        # P(): the dataset is replicated, so any device can gather any example without communication.
        return {k: self.replicated for k in arrays}

    def _make_train_step(self, si: int):
        stage, config = self.stages[si], self.config
        B = config.run.batch_size
        per_example = stage_per_example(stage, self._apply)
        planned, epochs = sum(self.planned[si]), stage.epochs
        part = self.layouts.partitions[si]

        def train(state, batch, idx_B, clock):
            teacher_state = state["teacher"][si]
            w_B = teacher_state.weights_N[idx_B]

            # Only the trainable part is differentiated and updated; the frozen part passes through untouched.
            trainable, frozen = part.split(state["params"])

            def loss_fn(trainable):
                loss_B, acc_B = per_example(part.combine(trainable, frozen), batch)
                return jnp.mean(w_B * loss_B), (loss_B, acc_B)

            (_, (loss_B, acc_B)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
            lr = learning_rate(config.optim, clock, planned, epochs)
            updates, opt = self.tx.update(grads, state["opt"], trainable)
            params = part.combine(optax.apply_updates(trainable, jax.tree.map(lambda u: -lr * u, updates)), frozen)
            teachers = list(state["teacher"])
            # The step's own per-example losses refresh the score table: scores for free.
            teachers[si] = stage.teacher.update(teacher_state, idx_B,
                                                example_scores(config.selection.score, loss_B, batch))
            loss = jnp.mean(loss_B)
            finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(params))
            # One array per step, in run_log.STEP_METRICS' order: a flush fetches one array a step, not four.
            metrics = jnp.stack([loss, jnp.mean(acc_B), lr, finite]).astype(jnp.float32)
            return dict(state, params=params, opt=opt, teacher=teachers), metrics

        def next_clock(clock_4):
            # Advanced on device as the host's `Session.step_done` advances its own (pos and stage_step;
            # epoch and steps_in_epoch hold within an epoch): no per-step host->device copy.
            return clock_4 + jnp.array([1, 1, 0, 0], clock_4.dtype)

        # P(): the metrics have a copy on every device, so any process can fetch them.
        metric_sh = self.replicated
        sh = self.stage_shardings[si]
        if self.host_data:
            # A block of host_block batches and their example ids arrives assembled from every process's rows,
            # each batch split over "data"; this step trains on the block's batch at its position
            # (host_data.epoch_batches).
            K = config.run.host_block

            def host_step(state, block, clock_4):
                clock = dict(zip(STEP_CLOCK, clock_4))
                batch = {k: jax.lax.with_sharding_constraint(
                    jax.lax.dynamic_index_in_dim(v, clock["pos"] % K, keepdims=False), self.batch_sharding)
                    for k, v in block.items()}
                return *train(state, batch, batch.pop("idx"), clock), next_clock(clock_4)
            return jax.jit(host_step, in_shardings=(sh, block_sharding(self.batch_sharding), self.replicated),
                           out_shardings=(sh, metric_sh, self.replicated), donate_argnums=(0, 2))

        def step(state, data, clock_4):
            # The host's clock (the only one): where in the epoch and the schedule this step is.
            clock = dict(zip(STEP_CLOCK, clock_4))
            idx_B = jax.lax.dynamic_slice(state["order"][si], (clock["pos"] * B,), (B,))
            return *train(state, self._gather(data, idx_B), idx_B, clock), next_clock(clock_4)

        return jax.jit(step, in_shardings=(sh, self._data_shardings(stage.train), self.replicated),
                       out_shardings=(sh, metric_sh, self.replicated), donate_argnums=(0, 2))

    # ------------------------------------------------------------------ state helpers

    def _put(self, value: np.ndarray, sharding=None):
        """An explicit host→device copy (allowed under the transfer guard) of an array every process holds."""
        value = np.asarray(value)
        sharding = self.replicated if sharding is None else sharding
        # Each process copies to its own devices only (explicit device_puts), so this also works multi-host.
        shards = [jax.device_put(value[index], device)
                  for device, index in sharding.addressable_devices_indices_map(value.shape).items()]
        return jax.make_array_from_single_device_arrays(value.shape, sharding, shards)

    def init_state(self):
        """A fresh state, created directly in its shardings."""
        init = jax.jit(self.layouts.init, out_shardings=self.shardings)
        return init(jax.random.PRNGKey(self.config.run.seed))

    def restore(self, checkpointer: Checkpointer):
        """(state, meta) of the newest intact checkpoint (in any stage's layout), restored onto this mesh, or None."""
        return self.layouts.restore(checkpointer)

    # ------------------------------------------------------------------ the loop

    def run(self, on_step: Callable[[int], Any] | None = None) -> dict:
        """Train (resuming if possible), evaluate each epoch; returns the final metrics.

        ``on_step(step)`` is called after every optimizer step (and any
        checkpoint of that step), e.g. to stop a run early in a test.
        """
        config = self.config
        main = jax.process_index() == 0
        if main:
            os.makedirs(self.workdir, exist_ok=True)
            config_path = os.path.join(self.workdir, CONFIG_FILE)
            if not os.path.exists(config_path):
                write_atomic(config_path, config.to_json() + "\n")
        ckpt = Checkpointer(os.path.join(self.workdir, CHECKPOINT_DIR), keep=config.run.keep_checkpoints)
        log = MetricsLog(os.path.join(self.workdir, METRICS_FILE), enabled=main)
        try:
            return self._run(ckpt, log, on_step)
        finally:
            ckpt.close()
            log.close()

    def _run(self, ckpt: Checkpointer, log: "MetricsLog", on_step) -> dict:
        restored = self.restore(ckpt)
        state, meta = (self.init_state(), {}) if restored is None else restored
        run = Session(self.config.run, self.config.optim.learning_rate, [s.epochs for s in self.stages],
                      sum(sum(p) for p in self.planned), ckpt, log, meta, resumed=restored is not None)
        if self.host_data:  # the sources themselves: batches are read from them, on the host
            train_data, test_data = [s.train for s in self.stages], [s.test for s in self.stages]
        else:
            train_data = [{k: self._put(v) for k, v in s.train.items()} for s in self.stages]
            test_data = [{k: self._put(v) for k, v in s.test.items()} for s in self.stages]
        decode_data = [s.decode and (self._put(s.decode["prompts"]), self._put(s.decode["prompt_lens"]))
                       for s in self.stages]
        last_eval: dict = {}
        # Every step below runs on device: a hidden host<->device copy would be an error, not a slowdown.
        with jax.transfer_guard("disallow"):
            for si in range(run.clock["stage"], len(self.stages)):
                stage = self.stages[si]
                train_step, score, evaluate = self._make_train_step(si), make_score(self, si), make_eval(self, si)
                for epoch in range(run.clock["epoch"], stage.epochs):
                    run.bar.set_description(f"{stage.name} epoch {epoch + 1}/{stage.epochs}")
                    if not run.clock["planned"]:
                        state = self._plan_epoch(state, run, si, epoch, score, train_data[si])
                    state = self._train_epoch(state, run, si, train_step, train_data[si], on_step)
                    last_eval = evaluate_stage(self, state, si, evaluate, test_data[si], decode_data[si])
                    run.log_eval(stage, epoch, last_eval)
                    save = self._epoch_end_save(run, si, epoch)
                    state = self.layouts.advance(state, run.clock, self.tx, si, epoch, stage.epochs)
                    if save:
                        run.save(state)
        run.bar.close()
        ckpt.wait()
        self.final_state = state
        # A finished run's folder: this session timed nothing, so rewriting its results.json would null the run's
        # examples_per_s. Without one (killed before writing it) the final evaluation is redone and written.
        stored = None if last_eval else read_results(self.workdir)
        if stored is not None:
            return stored
        if not last_eval:
            si = len(self.stages) - 1
            last_eval = evaluate_stage(self, state, si, make_eval(self, si), test_data[si], decode_data[si])
        result = {"step": run.clock["step"], "epochs": sum(s.epochs for s in self.stages),
                  "examples_seen": run.examples_seen, "wall_time": run.wall(),
                  "time_scoring": run.totals["time_scoring"], "time_selecting": run.totals["time_selecting"],
                  "num_devices": self.mesh.size, "examples_per_s": run.throughput(), **last_eval}
        if jax.process_index() == 0:
            write_atomic(os.path.join(self.workdir, RESULTS_FILE), json.dumps(result, indent=2) + "\n")
        return result

    def _train_epoch(self, state, run: "Session", si: int, train_step, data, on_step):
        """The epoch's remaining steps: metrics fetched every log_every steps, checkpoints every checkpoint_every."""
        config, stage, clock = self.config.run, self.stages[si], run.clock
        # Host placement: a thread reads the epoch's batches in its order (fetched once, an explicit copy).
        prefetcher = epoch_batches(data, state["order"][si], self.config.run.batch_size, self.batch_sharding,
                                   clock["pos"], clock["steps_in_epoch"], config.prefetch,
                                   config.host_block) if self.host_data else None
        inputs = iter(prefetcher) if prefetcher is not None else itertools.repeat(data)
        run.start_window()
        first = True
        lag = LOG_LAG if config.log_every > LOG_LAG else 0
        # One host->device copy of the clock per epoch (or resumed session); each step returns the next one.
        # (A copy per step cost about as much host time as a small model's whole step.)
        clock_4 = self._put(np.array([clock[k] for k in STEP_CLOCK], np.int32))
        try:
            for pos, step_input in zip(range(clock["pos"], clock["steps_in_epoch"]), inputs):
                state, metrics, clock_4 = train_step(state, step_input, clock_4)
                run.step_done(metrics, compiled=not first)
                if first:
                    # The first step of a session compiles; the throughput counts the steps after it.
                    jax.block_until_ready(metrics)
                    run.start_timer()
                    first = False
                last_of_epoch = pos + 1 == clock["steps_in_epoch"]
                if last_of_epoch:
                    # Waits for the epoch's steps: on_step(last step) then marks when they are done (the
                    # experiments time epochs by on_step's clock).
                    run.flush(stage)
                elif clock["step"] % config.log_every == lag:
                    # The log_every-th step's metrics, fetched `lag` steps late (those keep the device busy); the
                    # same step on every process, so all of them stop at the same flush if a loss is NaN.
                    run.flush(stage, through=clock["step"] - lag)
                if clock["step"] % config.checkpoint_every == 0 and not last_of_epoch:
                    run.flush(stage)
                    run.save(state)
                if on_step is not None:
                    on_step(clock["step"])
        finally:
            if prefetcher is not None:
                prefetcher.close()
        run.flush(stage)
        run.stop_timer()
        return state

    def _epoch_end_save(self, run: "Session", si: int, epoch: int) -> bool:
        """Whether this epoch's end saves: every checkpoint_epochs-th, each stage's last, or checkpoint_every steps unsaved."""
        config = self.config.run
        # The mid-epoch save skips an epoch's last step (the epoch end saves it instead): never lose that one.
        missed = run.clock["step"] - (run.last_saved or 0) >= config.checkpoint_every
        return (epoch + 1) % config.checkpoint_epochs == 0 or epoch + 1 == self.stages[si].epochs or missed

    def _plan_epoch(self, state, run: "Session", si: int, epoch: int, score, data):
        """Score all examples (if the schedule asks), let the teacher plan the epoch, and set the clock."""
        stage, B = self.stages[si], self.config.run.batch_size
        if stage.teacher.needs_full_scoring(epoch, stage.epochs):
            t0 = time.perf_counter()
            state = jax.block_until_ready(score(state, data))
            run.totals["time_scoring"] += time.perf_counter() - t0
            # Every training loss in the table was checked finite at its flush, so a non-finite written
            # score comes from this pass: stop before ranking it, as a NaN training loss stops the run.
            non_finite = jax.jit(_non_finite_scores, out_shardings=self.replicated)(state["teacher"][si])
            run.check_scores(stage, epoch, int(jax.device_get(non_finite)))
        t0 = time.perf_counter()
        # The teacher places its per-epoch scalars on one device; spreading them over the mesh is a
        # tiny device-to-device copy, allowed here (host<->device transfers stay disallowed).
        with jax.transfer_guard_device_to_device("allow"):
            teacher_state, order_N, _, n_active = stage.teacher.plan_epoch(state["teacher"][si], epoch, stage.epochs)
            teachers, orders = list(state["teacher"]), list(state["order"])
            teachers[si] = jax.device_put(teacher_state, self.shardings["teacher"][si])
            orders[si] = jax.device_put(order_N, self.shardings["order"][si])
        state = jax.block_until_ready(dict(state, teacher=teachers, order=orders))
        run.totals["time_selecting"] += time.perf_counter() - t0
        run.n_active, steps = int(n_active), int(n_active) // B
        if steps == 0:
            warn_once(f"stage {stage.name!r} epoch {epoch}: {n_active} selected examples are fewer than "
                       f"batch_size={B}; the epoch trains no step (partial batches are dropped)")
        run.clock.update(planned=1, pos=0, steps_in_epoch=steps)
        return state


def train_and_evaluate(config: TrainConfig, workdir: str, *, on_step: Callable[[int], Any] | None = None) -> dict:
    """Train `config` in `workdir` (resuming from its newest intact checkpoint); returns the final metrics.

    The final metrics: step, epochs, examples_seen, wall_time, time_scoring and time_selecting (host seconds
    of the scoring passes and the teacher's planning, summed over sessions: each session's first call also
    compiles those kernels, so they are not pure steady-state costs; `experiments/timing.py` subtracts
    compile time), num_devices, examples_per_s (steady-state training throughput, without each epoch's
    first, compiling, step), eval_loss, eval_accuracy (classification/lm) and exact_match (arith). A
    finished run's folder trains nothing and returns its saved results. Raises `ValueError` for bad input
    (before writing anything) and `NonFiniteLossError` if the loss becomes NaN/Inf.
    """
    return Trainer(config, workdir).run(on_step=on_step)
