"""The framework's own cost: `attent train`'s all-data throughput against a minimal hand-written jitted loop.

Both train the same MNIST-1D `EncoderClassifier` (same init, same batch, the same
optax AdamW from `attent_jax.training.optim`, the same device-resident data) on
all data:

- ``attent``: the library's `Trainer` with ``selection="none"`` (what `attent
  train --selection none` runs): its step gathers the batch from the epoch's
  order, reads the teacher's weights, writes the step's losses into the score
  table, computes the learning-rate schedule and a finiteness check, and the
  loop fetches metrics (one array per step) every ``log_every`` steps under
  ``jax.transfer_guard("disallow")``. Throughput = the library's own
  steady-state ``examples_per_s`` (each epoch's first, compiling step excluded).
- ``hand``: a plain Python ``for`` loop over one jitted, donated step
  ``(params, opt, i, x, y, perm) -> (params, opt, i + 1, loss)`` that slices its
  batch from a per-epoch permutation on device and carries its step counter on
  device, with a constant learning rate; nothing leaves the device until the
  epoch ends. Throughput = examples of each epoch's steps after its first /
  their wall time.

- ``hand_ckpt``: the hand loop plus what a minimal loop needs to resume: an
  Orbax async save of its params and optimizer state (``StandardSave``) at
  every epoch end, as `attent train` saves by default. Orbax writes it in
  background threads while the next epoch trains; on a CPU-only host those
  take cores from the training steps, whoever calls Orbax.
- ``attent_final_ckpt``: the library's run with ``checkpoint_epochs`` past the
  run's length, so it checkpoints only after its last epoch (``attent train
  --checkpoint-epochs 1000000``).
- ``step``: the library's own jitted train step (the one ``attent`` runs, with
  its teacher table update, schedule and finiteness check), driven by the hand
  loop's bare ``for`` loop and timed as the hand loop is. ``ratio_step`` = step /
  hand shows whether the library's cost is in its step (device work); what
  ``ratio_final_ckpt`` adds to it is outside the step (the loop's host work),
  read off two medians without an interval of its own.

Two like-for-like ratios, each with the target ≥ 0.95: ``ratio`` = attent /
hand_ckpt (both checkpoint every epoch: the library's loop plus its
checkpoint wrapper, fingerprint and run log against Orbax alone) and
``ratio_final_ckpt`` = attent_final_ckpt / hand (neither checkpoints while
timed: the loop's own cost). ``ratio_vs_plain`` = attent / hand is reported
too: what the default per-epoch checkpoint costs against a loop that never
saves. Repetitions are interleaved (for each repetition, every size: attent,
attent without epoch-end checkpoints, hand, hand with checkpoints, the
library's step in a bare loop, the order turned by one each repetition), so a
drifting machine load favours none; each ratio is taken per repetition and its
median reported, with the median's distribution-free (sign-test) interval: a
verdict whose interval straddles the target is not resolved by this run.

Where the time goes: ``ratio_step`` measures the library's step without its
loop (while fixing the loop, short interleaved bursts also put the teacher's
table update and the finiteness check's parameter norm each at < 1% of it).
The loop's per-step host work was the clock copy (fixed: once per epoch), four
metric arrays fetched per step (fixed: one), and a metrics fetch of the newest
step every ``log_every`` steps, which can idle the device while the host logs
(fixed: fetched `LOG_LAG` steps late; one probe put the idling at a few per
cent of a 1.6-ms step, a later one, of the hand step with and without such a
fetch, at 0.6% with an interval reaching 3%). An Orbax save of this state
costs about 0.1 s of CPU, half of a 6400-example epoch's 0.2 s on two cores:
that is the ``hand_ckpt`` row's cost as much as the library's.

Outputs (``--out``, default experiments/results/bench_overhead): bench_overhead.json, .md, .png.

Run:
    python -m experiments.bench_overhead           # the quick and the default encoder, 5 repetitions
    python -m experiments.bench_overhead --quick   # smoke test (CI)
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time

import numpy as np

from . import common, stats, timing

NAME = "bench_overhead"


@dataclasses.dataclass(frozen=True)
class Config:
    num_train: int = 6400           # MNIST-1D training examples (3200 x 2 epochs timed 0.1-s windows: too noisy to read)
    num_test: int = 500             # test examples (the library evaluates each epoch; not timed)
    epochs: int = 3                 # epochs per measured run
    batch_size: int = 64            # global batch size
    widths: tuple = (32, 64)        # encoder widths, one size each (the quick and the default encoder)
    depths: tuple = (1, 2)          # encoder blocks per size
    heads: tuple = (2, 4)           # attention heads per size
    repeats: int = 9                # interleaved repetitions (per-repetition ratios spread by ±10% on 2 shared cores)
    log_every: int = 20             # the library's metrics fetch interval (attent train's default)
    target_ratio: float = 0.95      # PASS if each like-for-like ratio's median over repetitions is >= this

    def __post_init__(self):
        for name in ("num_train", "num_test", "epochs", "batch_size", "repeats", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected an int >= 1")
        if not self.widths or not len(self.widths) == len(self.depths) == len(self.heads):
            raise ValueError(f"widths/depths/heads: got {self.widths!r}/{self.depths!r}/{self.heads!r}, expected "
                             "non-empty tuples of one length (one encoder size each)")
        if any(w % h for w, h in zip(self.widths, self.heads)):
            raise ValueError(f"heads: got {self.heads!r}, expected divisors of the widths {self.widths!r}")
        if self.num_train // self.batch_size < 2:
            raise ValueError(f"num_train: got {self.num_train}, expected at least 2 batches of {self.batch_size}")
        if not 0.0 < self.target_ratio <= 2.0:
            raise ValueError(f"target_ratio: got {self.target_ratio!r}, expected a number in (0, 2]")


QUICK = Config(num_train=640, num_test=64, epochs=2, batch_size=32, widths=(16,), depths=(1,), heads=(2,),
               repeats=2)


def train_config(config: Config, k: int):
    """The all-data `TrainConfig` of size k (the same flags `attent train` takes)."""
    from attent_jax.training.config import TrainConfig

    return TrainConfig.from_flat(task="mnist1d", num_train=config.num_train, num_test=config.num_test,
                                 epochs=config.epochs, batch_size=config.batch_size, width=config.widths[k],
                                 depth=config.depths[k], num_heads=config.heads[k], selection="none",
                                 progress_bar=False, log_every=config.log_every, checkpoint_every=10**9, seed=0)


# =========================================================================== the hand-written loop

class HandLoop:
    """The minimal loop: the Trainer's model, init, optimizer and data, none of its machinery."""

    def __init__(self, trainer):
        import jax
        import jax.numpy as jnp
        import optax

        from attent_jax.models.encoder import classification_losses

        self.B, lr = trainer.config.run.batch_size, trainer.config.optim.learning_rate
        tx, apply = trainer.tx, trainer._apply
        params = jax.device_get(trainer.init_state()["params"])
        self.params = jax.device_put(params)
        self.opt = jax.jit(tx.init)(self.params)
        train = trainer.stages[0].train
        self.x, self.y = jax.device_put(train["x"]), jax.device_put(train["y"])
        self.n = len(train["x"])
        B = self.B

        def step(params, opt, i, x, y, perm):
            idx = jax.lax.dynamic_slice(perm, (i * B,), (B,))

            def loss_fn(p):
                return jnp.mean(classification_losses(apply(p, x[idx]), y[idx]))

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt = tx.update(grads, opt, params)
            params = optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates))
            return params, opt, i + 1, loss

        self.step = jax.jit(step, donate_argnums=(0, 1))
        self.key = jax.random.key(0)
        self.manager, self.saves = None, 0

    def save(self, directory: str) -> None:
        """An Orbax async save of (params, opt), as a minimal loop that can resume would make at an epoch end."""
        import orbax.checkpoint as ocp

        if self.manager is None or str(self.manager.directory) != directory:
            self.close()
            options = ocp.CheckpointManagerOptions(max_to_keep=3, create=True, enable_async_checkpointing=True)
            self.manager = ocp.CheckpointManager(directory, options=options)
            self.saves = 0
        self.saves += 1
        self.manager.save(self.saves, args=ocp.args.StandardSave({"params": self.params, "opt": self.opt}))

    def close(self) -> None:
        """Wait for the pending save (untimed, as the library waits for its last one) and close the manager."""
        if self.manager is not None:
            self.manager.wait_until_finished()
            self.manager.close()
            self.manager = None

    def run(self, epochs: int, checkpoint_dir: str | None = None) -> float:
        """Examples/s of `epochs` epochs (`total_rate`), saving after each if `checkpoint_dir` is given (untimed)."""
        save = None if checkpoint_dir is None else (lambda: self.save(checkpoint_dir))
        rate = total_rate(self.epoch, epochs, after=save)
        self.close()
        return rate

    def epoch(self) -> tuple[int, float]:
        """One epoch; returns (examples, seconds) of its steps after the first."""
        import jax
        import jax.numpy as jnp

        self.key, k = jax.random.split(self.key)
        perm = jax.random.permutation(k, self.n).astype(jnp.int32)
        i = jnp.zeros((), jnp.int32)
        steps = self.n // self.B
        p, o, i, loss = self.step(self.params, self.opt, i, self.x, self.y, perm)
        jax.block_until_ready(loss)
        t0 = time.perf_counter()
        for _ in range(steps - 1):
            p, o, i, loss = self.step(p, o, i, self.x, self.y, perm)
        jax.block_until_ready((p, loss))
        seconds = time.perf_counter() - t0
        self.params, self.opt = p, o
        return (steps - 1) * self.B, seconds


class StepLoop:
    """The library's own jitted train step in the hand loop's bare ``for`` loop: the step without the loop."""

    def __init__(self, trainer):
        import jax
        import jax.numpy as jnp

        from attent_jax.training.loop import STEP_CLOCK

        self.trainer, self.B = trainer, trainer.config.run.batch_size
        self.state = trainer.init_state()
        self.data = {k: trainer._put(v) for k, v in trainer.stages[0].train.items()}
        self.step = trainer._make_train_step(0)
        n = len(trainer.stages[0].train["x"])
        self.steps = n // self.B
        # The clock the loop hands its step at an epoch's start: position 0 of an epoch of `steps` steps.
        self.clock = np.array([{"steps_in_epoch": self.steps}.get(k, 0) for k in STEP_CLOCK], np.int32)
        # Each epoch a fresh order, as the hand loop draws (the state's initial order is all zeros: every
        # batch would gather example 0, from cache).
        self.permute = jax.jit(lambda key: jax.random.permutation(key, n).astype(jnp.int32),
                               out_shardings=trainer.shardings["order"][0])
        self.key = jax.random.key(0)

    def run(self, epochs: int) -> float:
        """Examples/s of `epochs` epochs, as `HandLoop.run` counts them."""
        return total_rate(self.epoch, epochs)

    def epoch(self) -> tuple[int, float]:
        """One epoch in a fresh order; returns (examples, seconds) of its steps after the first."""
        import jax

        self.key, key = jax.random.split(self.key)
        state, clock_4 = dict(self.state, order=[self.permute(key)]), self.trainer._put(self.clock)
        state, metrics, clock_4 = self.step(state, self.data, clock_4)
        jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        for _ in range(self.steps - 1):
            state, metrics, clock_4 = self.step(state, self.data, clock_4)
        jax.block_until_ready((state, metrics))
        self.state = state
        return (self.steps - 1) * self.B, time.perf_counter() - t0


def total_rate(epoch, epochs: int, after=None) -> float:
    """Examples/s of `epochs` calls of ``epoch() -> (examples, seconds)``, ``after()`` (untimed) after each.

    Total examples over total seconds, as the library's ``examples_per_s`` counts: a mean of per-epoch rates
    would exceed it whenever the epochs' speeds differ, and favour the loop measured so.
    """
    examples = seconds = 0.0
    for _ in range(epochs):
        n, t = epoch()
        examples, seconds = examples + n, seconds + t
        if after is not None:
            after()
    return examples / seconds


# =========================================================================== measurement

def _param_count(trainer) -> int:
    import jax
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(trainer.abstract_state["params"])))


def measure(config: Config, out_dir: str) -> list[dict]:
    """Interleaved repetitions of (attent, hand) per size; one row per size."""
    from attent_jax.training.loop import Trainer

    rows, hands, bare_steps = [], [], []
    for k in range(len(config.widths)):
        cfg = train_config(config, k)
        trainer = Trainer(cfg, os.path.join(out_dir, "runs", f"size{k}_probe"))
        hands.append(HandLoop(trainer))
        bare_steps.append(StepLoop(trainer))
        hands[-1].run(1)   # compiles (excluded: every timed epoch below starts after its first step)
        bare_steps[-1].run(1)
        rows.append({"width": config.widths[k], "depth": config.depths[k], "num_heads": config.heads[k],
                     "params": _param_count(trainer), "attent_examples_per_s": [], "hand_examples_per_s": [],
                     "attent_final_ckpt_examples_per_s": [], "hand_ckpt_examples_per_s": [], "step_examples_per_s": [], "ratio": [],
                     "ratio_final_ckpt": [], "ratio_vs_plain": [], "ratio_step": [], "load_average": [], "load_1m": [], "order": []})
    for rep in range(config.repeats):
        for k, row in enumerate(rows):
            load = list(os.getloadavg())
            workdir = os.path.join(out_dir, "runs", f"size{k}_rep{rep}")
            final_only = train_config(config, k).replace(checkpoint_epochs=10**6)
            runs = {"attent": lambda: Trainer(train_config(config, k), timing.fresh_dir(workdir)).run()["examples_per_s"],
                    "copying": lambda: Trainer(final_only, timing.fresh_dir(workdir)).run()["examples_per_s"],
                    "hand": lambda: hands[k].run(config.epochs),
                    "hand_ckpt": lambda: hands[k].run(config.epochs, timing.fresh_dir(workdir + "_hand_checkpoints")),
                    "step": lambda: bare_steps[k].run(config.epochs)}
            names = timing.turned(runs, rep)
            rates = {name: runs[name]() for name in names}
            attent, copying, hand, hand_ckpt = rates["attent"], rates["copying"], rates["hand"], rates["hand_ckpt"]
            row["step_examples_per_s"].append(rates["step"])
            row["ratio_step"].append(rates["step"] / hand)
            row["order"].append(names)
            row["attent_examples_per_s"].append(attent)
            row["attent_final_ckpt_examples_per_s"].append(copying)
            row["hand_examples_per_s"].append(hand)
            row["hand_ckpt_examples_per_s"].append(hand_ckpt)
            row["ratio"].append(attent / hand_ckpt)
            row["ratio_final_ckpt"].append(copying / hand)
            row["ratio_vs_plain"].append(attent / hand)
            row["load_average"].append(load)
            row["load_1m"].append(load[0])
            print(f"[{NAME}] size {k} (width {row['width']}, depth {row['depth']}) rep {rep}: ex/s attent {attent:.0f} "
                  f"/ hand with checkpoints {hand_ckpt:.0f} = {attent / hand_ckpt:.3f}; checkpoint only at the end "
                  f"{copying:.0f} / hand {hand:.0f} = {copying / hand:.3f}; the library's step in a bare loop "
                  f"{rates['step']:.0f} / hand = {rates['step'] / hand:.3f} (load {load[0]:.1f})", flush=True)
    for k, row in enumerate(rows):
        row.update(save_costs(config, k, hands[k], os.path.join(out_dir, "runs", f"size{k}_saves")))
        print(f"[{NAME}] size {k}: one save takes {row['library_save_cpu_s']:.3f} s CPU in the library, "
              f"{row['hand_save_cpu_s']:.3f} s in the hand loop", flush=True)
    for row in rows:
        for key in ("ratio", "ratio_final_ckpt", "ratio_vs_plain", "ratio_step"):
            row[f"median_{key}"] = float(np.median(row[key]))
            # Whether the median's distribution-free interval lies wholly above (True) or below (False) the
            # target; None if it straddles the target or is too wide to give at this many repetitions.
            interval = stats.median_interval(row[key])
            row[f"interval_{key}"] = list(interval) if interval else None
            row[f"resolved_{key}"] = (None if interval is None or interval[0] < config.target_ratio <= interval[1]
                                      else bool(interval[0] >= config.target_ratio))
        row["pass_final_ckpt"] = bool(row["median_ratio_final_ckpt"] >= config.target_ratio)
        row["pass"] = bool(row["median_ratio"] >= config.target_ratio)
    return rows


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)   # every thread of this process: Orbax writes in its own
    return usage.ru_utime + usage.ru_stime


def save_costs(config: Config, k: int, hand: HandLoop, directory: str, saves: int = 3) -> dict:
    """CPU seconds (all threads) of one checkpoint save, waited for: the library's state and the hand loop's.

    The median of `saves` saves each; the first save of each kind is made before, untimed (it compiles the
    library's fingerprint and opens files once).
    """
    from attent_jax.training.checkpoint import Checkpointer
    from attent_jax.training.loop import Trainer

    trainer = Trainer(train_config(config, k), os.path.join(directory, "probe"))
    state = trainer.init_state()
    ckpt = Checkpointer(timing.fresh_dir(os.path.join(directory, "library")), keep=3)
    hand_dir = timing.fresh_dir(os.path.join(directory, "hand"))
    library, hand_costs = [], []
    try:
        for i in range(saves + 1):
            start = _cpu_seconds()
            ckpt.save(i + 1, state, {"repetition": i})
            ckpt.wait()
            library.append(_cpu_seconds() - start)
            start = _cpu_seconds()
            hand.save(hand_dir)
            hand.manager.wait_until_finished()
            hand_costs.append(_cpu_seconds() - start)
    finally:
        ckpt.close()
        hand.close()
    return {"library_save_cpu_s": float(np.median(library[1:])), "hand_save_cpu_s": float(np.median(hand_costs[1:]))}


def run(config: Config, out_dir: str) -> dict:
    """Measure, write JSON / markdown / figure; returns the payload."""
    env = common.environment(seeds=[0])   # every run and the hand loop start from seed 0's init
    rows = measure(config, out_dir)
    payload = {"experiment": NAME, "config": dataclasses.asdict(config), "environment": env,
               "load_average_end": list(os.getloadavg()), "rows": rows,
               "all_pass": all(r["pass"] and r["pass_final_ckpt"] for r in rows)}
    paths = common.write_outputs(out_dir, NAME, payload, markdown(config, env, rows))
    figure = plot(config, rows, out_dir)
    for r in rows:
        print(f"[{NAME}] width {r['width']} depth {r['depth']} ({r['params']:,} params), medians of {config.repeats}: "
              f"attent / hand with checkpoints = {r['median_ratio']:.3f} ({stats.verdict(r['pass'])}), checkpoint "
              f"only at the end / hand = {r['median_ratio_final_ckpt']:.3f} ({stats.verdict(r['pass_final_ckpt'])}); "
              f"target >= {config.target_ratio}; attent / hand without checkpoints = {r['median_ratio_vs_plain']:.3f}; "
              f"the library's step in a bare loop / hand = {r['median_ratio_step']:.3f}")
    common.print_outputs(NAME, [paths["json"], paths["markdown"], figure])
    return payload


def markdown(config: Config, env: dict, rows: list[dict]) -> str:
    t = config.target_ratio
    headers = ["encoder (width × depth, heads)", "params", "attent train (ex/s)", "hand + Orbax ckpt (ex/s)",
               "ratio per repetition", "median [interval]", f"≥ {t}", "end-only ckpt (ex/s)", "hand loop (ex/s)",
               "ratio per repetition ", "median [interval] ", f"≥ {t} ", "attent / hand (median)",
               "library step, bare loop / hand (median)"]

    def median(r, key):
        interval = r[f"interval_{key}"]
        return f"{r[f'median_{key}']:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")

    def decided(ok, resolved):
        return stats.verdict(ok) + ("" if resolved is not None else " (not resolved)")

    table = [[f"{r['width']} × {r['depth']}, {r['num_heads']}", f"{r['params']:,}",
              stats.fmt_mean_std(r["attent_examples_per_s"], 0), stats.fmt_mean_std(r["hand_ckpt_examples_per_s"], 0),
              ", ".join(f"{x:.3f}" for x in r["ratio"]), median(r, "ratio"),
              decided(r["pass"], r["resolved_ratio"]),
              stats.fmt_mean_std(r["attent_final_ckpt_examples_per_s"], 0),
              stats.fmt_mean_std(r["hand_examples_per_s"], 0),
              ", ".join(f"{x:.3f}" for x in r["ratio_final_ckpt"]), median(r, "ratio_final_ckpt"),
              decided(r["pass_final_ckpt"], r["resolved_ratio_final_ckpt"]), median(r, "ratio_vs_plain"),
              median(r, "ratio_step")]
             for r in rows]
    coverage = next((r["interval_ratio"][2] for r in rows if r["interval_ratio"]), None)
    return "\n".join([
        "# Framework overhead: `attent train` (all data) vs a minimal hand-written jitted loop\n",
        f"MNIST-1D, {config.num_train} training examples, batch {config.batch_size}, {config.epochs} epochs per "
        f"run, {config.repeats} interleaved repetitions; same model, init, AdamW and device-resident data. "
        "Steady-state throughput, each epoch's first (compiling) step excluded. Two like-for-like comparisons: "
        "`attent train` (an Orbax checkpoint at every epoch end, its default) against the hand loop with an Orbax "
        "async save of its params and optimizer state at every epoch end; and the same `attent train` run saving "
        "only after its last epoch against the hand loop without saves. The last column, `attent train` against "
        "the hand loop without saves, is what the default per-epoch checkpoint costs here; the one after it, the "
        "library's own jitted step driven by the hand loop's bare `for` loop, is the step's share of the cost "
        "(the end-only ratio adds the loop's host work to it).\n",
        "Intervals: the median's distribution-free sign-test interval over the repetitions"
        + (f" ({coverage:.1%} coverage)" if coverage else " (none: too few repetitions)")
        + "; a verdict is *not resolved* when the interval straddles the target.\n",
        f"Measured on: {common.environment_line(env)}; 1-min load per repetition in the JSON.\n",
        stats.markdown_table(headers, table),
        "\nCPU seconds of one checkpoint save, waited for (all threads; median of 3): "
        + "; ".join(f"{r['width']} × {r['depth']}: the library's state {r['library_save_cpu_s']:.3f} s, the hand "
                    f"loop's params and optimizer state {r['hand_save_cpu_s']:.3f} s" for r in rows) + "."]) + "\n"


def plot(config: Config, rows: list[dict], out_dir: str) -> str:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    series = [("ratio", "attent train / hand + Orbax checkpoint", "C0", -0.225),
              ("ratio_final_ckpt", "end-only checkpoint / hand", "C1", -0.075),
              ("ratio_vs_plain", "attent train / hand (no checkpoint)", "C2", 0.075),
              ("ratio_step", "library step in a bare loop / hand", "C3", 0.225)]
    for k, r in enumerate(rows):
        for key, label, color, dx in series:
            ax.scatter([k + dx] * len(r[key]), r[key], color=color, alpha=0.6)
            ax.plot([k + dx - 0.06, k + dx + 0.06], [r[f"median_{key}"]] * 2, color=color,
                    label=label if k == 0 else None)
    ax.axhline(config.target_ratio, color="k", ls="--", lw=1, label=f"target {config.target_ratio}")
    ax.set_xticks(range(len(rows)), [f"{r['width']}×{r['depth']}\n{r['params']:,} params" for r in rows])
    ax.set_ylabel("throughput ratio")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("Framework overhead (all data)")
    return common.save_figure(fig, os.path.join(out_dir, f"{NAME}.png"))


def main(argv=None) -> int:
    return common.run_main(argv, NAME, Config, QUICK, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
