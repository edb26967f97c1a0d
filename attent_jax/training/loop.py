"""Sharded training with AtteNT data selection: ``train_and_evaluate(config, workdir) -> dict``.

The loop of the paper's experiments (§5, Appendix C) around the greedy teacher
of §4.3 / Algorithm 1 (`attent_jax.teaching.teacher`): each epoch the teacher plans which
examples to train on (from its per-example score table), every training step
writes the per-example losses of its own forward pass back into that table (so
scores come for free), and a full scoring pass runs only when the teacher's
schedule asks for one (``teacher.needs_full_scoring``).

Sections: tasks and stages · state · the trainer (jitted functions, the loop).
The mesh and the state's shardings are in `attent_jax.training.mesh`, the host-side
bookkeeping and logs in `attent_jax.training.run_log`.

Parallelism: one `Mesh` with a single "data" axis over all devices (of all
hosts). The batch, the scoring pass and the evaluation are split over "data";
params and optimizer state are replicated, or with ``fsdp`` their big arrays
are split along their largest axis that the device count divides. Every jitted
function has explicit in/out shardings, the train step donates the state, and
the per-step loop runs under ``jax.transfer_guard("disallow")``: batches are
gathered on device from the device-resident dataset with the epoch's index
array, and metrics leave the device only by an explicit ``jax.device_get``
every ``log_every`` steps. (The teacher's once-per-epoch planning may also
copy its small per-epoch scalars between devices.)

Static shapes: the batch size is fixed, so an epoch of ``n_active`` selected
examples runs ⌊n_active / batch_size⌋ steps and its last partial batch is
dropped (the dropped examples differ between epochs: the order is reshuffled).

Resumption: the whole state — params, optimizer state, teacher state (score
table, selection, schedule position), the epoch's data order and RNG key — is one
pytree saved by `attent_jax.training.checkpoint`, with the step/epoch/position
clock in the checkpoint's meta. The clock lives on the host only (`run_log.Session`);
each train step receives the entries it reads as one small int32 array
every ``checkpoint_every`` steps and at each epoch end. A run started again in
the same folder resumes from its newest intact checkpoint, and on the same
device count ends with bitwise the same parameters as an uninterrupted run.

Example:
    >>> from attent_jax.training.loop import train_and_evaluate
    >>> from attent_jax.training.config import TrainConfig
    >>> result = train_and_evaluate(TrainConfig(task="teach", quick=True, epochs=2, batch_size=16,
    ...                                         progress_bar=False), "/tmp/attent_doc_run")  # doctest: +SKIP
    >>> sorted(result)[:3]  # doctest: +SKIP
    ['epochs', 'eval_loss', 'examples_per_s']
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, traverse_util
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from attent_jax.models.decoder import greedy_decode
from attent_jax.models.lora import lora_builder, lora_paths
from attent_jax.tasks import generators as tasks_lib
from attent_jax.training.checkpoint import (Checkpointer, CheckpointMismatchError, CheckpointRestoreError,
                                            abstract_like)
from attent_jax.training.config import TrainConfig
from attent_jax.training.mesh import check_batch_divisible, initialize_distributed, make_mesh, state_shardings
from attent_jax.training.optim import learning_rate, make_optimizer, stage_partitions
from attent_jax.training.run_log import NonFiniteLossError  # noqa: F401  (raised by train_and_evaluate; import it from here)
from attent_jax.training.run_log import MetricsLog, Session, warn_once, write_atomic
from attent_jax.training.stages import (Stage, build_stages, check_per_example, example_scores, load_dataset,
                                       model_builder, per_example_fn, stage_per_example)  # noqa: F401 (per_example_fn: importable from here, as before)
from attent_jax.training.workdir import (CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, RESULTS_FILE,  # noqa: F401
                                        check_run_folder, check_workdir)

# The clock entries a train step reads (it gets them from the host's clock as one int32 array).
STEP_CLOCK = ("pos", "stage_step", "epoch", "steps_in_epoch")



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
        if config.model.lora_rank:
            build = lora_builder(build, config.model.lora_rank)
        abstract = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
        self.graphdef = nnx.split(abstract)[0]
        # The state pytree carries the module's Params only: anything else would silently reset every step.
        other = [jax.tree_util.keystr(path) for path, _ in
                 jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(nnx.state(abstract, nnx.Not(nnx.Param))))]
        if other:
            raise ValueError(f"model: holds non-Param state {other[0]} ({type(abstract).__name__}), expected a "
                             "module whose state is nnx.Param only (no batch statistics, no stored RNG keys)")
        abstract_params = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
        for stage in self.stages:
            check_per_example(stage, self._apply, abstract_params, run.batch_size)
        self.tx = make_optimizer(config.optim)
        # What each stage trains (LoRA: the fine-tuning stage's adapters only); the optimizer state holds that part.
        self.partitions = stage_partitions(traverse_util.flatten_dict(abstract_params), lora_paths(abstract),
                                           len(self.stages))

        def init(key, si=0):
            k_model, k_teacher, k_rng = jax.random.split(key, 3)
            params = nnx.to_pure_dict(nnx.state(build(nnx.Rngs(params=k_model)), nnx.Param))
            return {
                "params": params,
                "opt": self.tx.init(self.partitions[si].split(params)[0]),
                "teacher": [s.teacher.init(jax.random.fold_in(k_teacher, i)) for i, s in enumerate(self.stages)],
                "order": [jnp.zeros((s.num_train,), jnp.int32) for s in self.stages],
                "rng": k_rng,
            }

        self._init = init
        # The state's layout per stage: its optimizer state covers that stage's trainable part only.
        self.abstract_states, self.stage_shardings = [], []
        for si, part in enumerate(self.partitions):
            if si and part == self.partitions[si - 1]:
                self.abstract_states.append(self.abstract_states[-1])
                self.stage_shardings.append(self.stage_shardings[-1])
                continue
            self.abstract_states.append(jax.eval_shape(lambda k, si=si: init(k, si), jax.random.PRNGKey(run.seed)))
            self.stage_shardings.append(state_shardings(self.abstract_states[-1], self.mesh, fsdp=run.fsdp,
                                                        fsdp_min_size=run.fsdp_min_size))
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
        part = self.partitions[si]

        def step(state, data, clock_4):
            # The host's clock (the only one): where in the epoch and the schedule this step is.
            clock = dict(zip(STEP_CLOCK, clock_4))
            idx_B = jax.lax.dynamic_slice(state["order"][si], (clock["pos"] * B,), (B,))
            batch = self._gather(data, idx_B)
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
            metrics = {"loss": loss, "accuracy": jnp.mean(acc_B), "lr": lr,
                       "finite": jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(params))}
            return dict(state, params=params, opt=opt, teacher=teachers), metrics

        data_sh = self._data_shardings(stage.train)
        # P(): metrics are scalars with a copy on every device, so any process can fetch them.
        metric_sh = {k: self.replicated for k in ("loss", "accuracy", "lr", "finite")}
        sh = self.stage_shardings[si]
        return jax.jit(step, in_shardings=(sh, data_sh, self.replicated), out_shardings=(sh, metric_sh),
                       donate_argnums=0)

    def _chunked(self, n: int):
        """Example ids (C, chunk) covering 0..n-1 (wrapping around to fill the last chunk) and their validity."""
        c = -(-n // self.eval_chunk)
        flat = jnp.arange(c * self.eval_chunk, dtype=jnp.int32)
        return (flat % n).reshape(c, self.eval_chunk), (flat < n).reshape(c, self.eval_chunk)

    def _make_score(self, si: int):
        """A full scoring pass: every training example's score, no gradients, written into the score table."""
        stage, config = self.stages[si], self.config
        per_example = stage_per_example(stage, self._apply)
        n = stage.num_train

        chunk = self.eval_chunk
        n_pad = -(-n // chunk) * chunk

        def score(state, data):
            # The teacher names the examples to score (all, or only the unselected ones): their count is
            # traced, so a loop over fixed-size chunks with a traced trip count never recompiles.
            order_N, count = stage.teacher.scoring_order(state["teacher"][si])
            order_P = order_N[jnp.arange(n_pad, dtype=jnp.int32) % n]   # padded by wrapping around

            def body(c, teacher_state):
                pos = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
                idx = jax.lax.dynamic_slice(order_P, (c * chunk,), (chunk,))
                batch = self._gather(data, idx)
                scores = example_scores(config.selection.score, per_example(state["params"], batch)[0], batch)
                return stage.teacher.update(teacher_state, idx, scores, valid_B=pos < count)

            teachers = list(state["teacher"])
            teachers[si] = jax.lax.fori_loop(0, (count + chunk - 1) // chunk, body, teachers[si])
            return dict(state, teacher=teachers)

        return jax.jit(score, in_shardings=(self.stage_shardings[si], self._data_shardings(stage.train)),
                       out_shardings=self.stage_shardings[si], donate_argnums=0)

    def _make_eval(self, si: int):
        stage = self.stages[si]
        per_example = stage_per_example(stage, self._apply)
        n = len(stage.test["x"])

        def evaluate(params, data):
            ids, valid = self._chunked(n)

            def chunk(args):
                idx, ok = args
                loss_B, acc_B = per_example(params, self._gather(data, idx))
                ok = ok.astype(loss_B.dtype)
                return jnp.sum(loss_B * ok), jnp.sum(acc_B * ok)

            loss, acc = jax.lax.map(chunk, (ids, valid))
            return {"loss": jnp.sum(loss) / n, "accuracy": jnp.sum(acc) / n}

        return jax.jit(evaluate, in_shardings=(self.shardings["params"], self._data_shardings(stage.test)),
                       out_shardings={"loss": self.replicated, "accuracy": self.replicated})

    def _exact_match(self, params, decode: dict, prompts, prompt_lens) -> float:
        tokens = greedy_decode(nnx.merge(self.graphdef, params), prompts, prompt_lens)
        hits = tasks_lib.answers_match(jax.device_get(tokens), decode["prompt_lens"], decode["answers"],
                                       decode["vocab"])
        return float(np.mean(hits))

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
        init = jax.jit(self._init, out_shardings=self.shardings)
        return init(jax.random.PRNGKey(self.config.run.seed))

    def restore(self, checkpointer: Checkpointer):
        """(state, meta) of the newest intact checkpoint, restored onto this mesh, or None.

        Stages whose optimizer states differ (LoRA: the pre-training stage's covers the base, the
        fine-tuning stage's the adapters) save different layouts: the latest stage's is tried first, then
        the earlier ones; a wrong layout fails before anything is read or moved (Orbax compares the
        tree structures), and the last layout's failure is the one raised.
        """
        layouts = [si for si in range(len(self.stages))
                   if si == 0 or self.abstract_states[si] is not self.abstract_states[si - 1]][::-1]
        for k, si in enumerate(layouts):
            try:
                return checkpointer.restore_latest(abstract_like(self.abstract_states[si], self.stage_shardings[si]))
            except (CheckpointMismatchError, CheckpointRestoreError):
                if k + 1 == len(layouts):
                    raise

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
                      sum(sum(p) for p in self.planned), ckpt, log,
                      meta, resumed=restored is not None)
        train_data = [{k: self._put(v) for k, v in s.train.items()} for s in self.stages]
        test_data = [{k: self._put(v) for k, v in s.test.items()} for s in self.stages]
        decode_data = [s.decode and (self._put(s.decode["prompts"]), self._put(s.decode["prompt_lens"]))
                       for s in self.stages]
        last_eval: dict = {}
        # Every step below runs on device: a hidden host<->device copy would be an error, not a slowdown.
        with jax.transfer_guard("disallow"):
            for si in range(run.clock["stage"], len(self.stages)):
                stage = self.stages[si]
                train_step, score, evaluate = self._make_train_step(si), self._make_score(si), self._make_eval(si)
                for epoch in range(run.clock["epoch"], stage.epochs):
                    run.bar.set_description(f"{stage.name} epoch {epoch + 1}/{stage.epochs}")
                    if not run.clock["planned"]:
                        state = self._plan_epoch(state, run, si, epoch, score, train_data[si])
                    state = self._train_epoch(state, run, si, train_step, train_data[si], on_step)
                    last_eval = self._evaluate(state, si, evaluate, test_data[si], decode_data[si])
                    run.log_eval(stage, epoch, last_eval)
                    state = self._advance(state, run, si, epoch)
                    run.save(state)
        run.bar.close()
        if not last_eval:  # the folder held a finished run: report its final evaluation again
            si = len(self.stages) - 1
            last_eval = self._evaluate(state, si, self._make_eval(si), test_data[si], decode_data[si])
        ckpt.wait()
        result = {"step": run.clock["step"], "epochs": sum(s.epochs for s in self.stages),
                  "examples_seen": run.examples_seen, "wall_time": run.wall(),
                  "time_scoring": run.totals["time_scoring"], "time_selecting": run.totals["time_selecting"],
                  "num_devices": self.mesh.size, "examples_per_s": run.throughput(), **last_eval}
        if jax.process_index() == 0:
            write_atomic(os.path.join(self.workdir, RESULTS_FILE), json.dumps(result, indent=2) + "\n")
        self.final_state = state
        return result

    def _train_epoch(self, state, run: "Session", si: int, train_step, data, on_step):
        """The epoch's remaining steps: metrics fetched every log_every steps, checkpoints every checkpoint_every."""
        config, stage, clock = self.config.run, self.stages[si], run.clock
        run.start_window()
        first = True
        for pos in range(clock["pos"], clock["steps_in_epoch"]):
            clock_4 = self._put(np.array([clock[k] for k in STEP_CLOCK], np.int32))
            state, metrics = train_step(state, data, clock_4)
            run.step_done(metrics, compiled=not first)
            if first:
                # The first step of a session compiles; the throughput counts the steps after it.
                jax.block_until_ready(metrics)
                run.start_timer()
                first = False
            last_of_epoch = pos + 1 == clock["steps_in_epoch"]
            if clock["step"] % config.log_every == 0 or last_of_epoch:
                run.flush(stage)
            if clock["step"] % config.checkpoint_every == 0 and not last_of_epoch:
                run.flush(stage)
                run.save(state)
            if on_step is not None:
                on_step(clock["step"])
        run.flush(stage)
        run.stop_timer()
        return state

    def _advance(self, state, run: "Session", si: int, epoch: int):
        """Move the clock to the start of the next epoch (or stage), so that a resumed run begins by planning it."""
        clock = run.clock
        if epoch + 1 == self.stages[si].epochs and si + 1 < len(self.stages):
            # Fine-tuning starts a fresh optimizer (new data, new schedule), over what that stage trains.
            part = self.partitions[si + 1]
            reinit = jax.jit(lambda params: self.tx.init(part.split(params)[0]), in_shardings=(self.shardings["params"],),
                             out_shardings=self.stage_shardings[si + 1]["opt"])
            state = dict(state, opt=reinit(state["params"]))
            clock.update(stage=si + 1, epoch=0, stage_step=0)
        else:
            clock.update(epoch=epoch + 1)
        clock.update(pos=0, planned=0, steps_in_epoch=0)
        return state

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

    def _evaluate(self, state, si: int, evaluate, test, decode_dev) -> dict:
        stage = self.stages[si]
        out = {k: float(v) for k, v in jax.device_get(evaluate(state["params"], test)).items()}
        result = {"eval_loss": out["loss"]}
        if stage.has_accuracy:
            result["eval_accuracy"] = out["accuracy"]
        if stage.decode is not None:
            result["exact_match"] = self._exact_match(state["params"], stage.decode, *decode_dev)
        return result


def train_and_evaluate(config: TrainConfig, workdir: str, *, on_step: Callable[[int], Any] | None = None) -> dict:
    """Train `config` in `workdir` (resuming from its newest intact checkpoint); returns the final metrics.

    The final metrics: step, epochs, examples_seen, wall_time, time_scoring,
    time_selecting, num_devices, examples_per_s (steady-state training
    throughput), eval_loss, eval_accuracy (classification/lm) and exact_match
    (arith). Raises `ValueError` for bad input (before writing anything) and
    `NonFiniteLossError` if the loss becomes NaN/Inf.
    """
    return Trainer(config, workdir).run(on_step=on_step)


def restore_params(workdir: str):
    """The params of the newest intact checkpoint in a run folder (on the current devices)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"workdir: got {workdir!r}, expected a run folder holding {CONFIG_FILE}")
    with open(path) as f:
        trainer = Trainer(TrainConfig.from_dict(json.load(f)), workdir)
    ckpt = Checkpointer(os.path.join(trainer.workdir, CHECKPOINT_DIR), keep=trainer.config.run.keep_checkpoints)
    try:
        restored = trainer.restore(ckpt)
    finally:
        ckpt.close()
    if restored is None:
        raise ValueError(f"workdir: {workdir!r} holds no intact checkpoint")
    return restored[0]["params"]
