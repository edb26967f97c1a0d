"""Training throughput and the cost of AtteNT's scoring and selection, on 1 and 8 (simulated) devices.

AtteNT pays for its savings with two extra pieces of work (§4.3 Algorithm 1,
Appendix C): scoring (a forward pass over all N examples when the schedule
re-selects, beyond the free per-step losses) and selection (ranking the score
table and building the epoch's order, on device). This benchmark trains the
MNIST-1D `EncoderClassifier` with every selector (hard, soft, random,
class_weight, in the scratch regime with the paper's schedule by default) and
with all data, and reports for each:

- training throughput: examples per second of the optimizer steps, and the
  library's steady-state ``examples_per_s`` as a cross-check;
- the share of training time spent on scoring + selection, over the run and in
  its worst epoch. Target: ≤ 5% over the run (PASS/MISS per method);
- how close its time comes to its ideal: the all-data run's time × the fraction
  of examples it trains on (time / ideal; 1 = no overhead beyond its examples).

"Training time" is `experiments.timing`'s ("Timing": optimizer steps + scoring
+ selection, compilation and evaluation excluded). 8 devices are simulated on
the CPU (a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``):
they share the same cores, so their throughput measures the sharded code path's
overhead, not a speed-up.

Outputs (``--out``, default experiments/results/bench_training):
bench_training.json, bench_training.md, bench_training.png, runs/dD_METHOD_seedK/.

Run:
    python -m experiments.bench_training           # full: 10k examples, 10 epochs, 5 methods × {1, 8} devices
    python -m experiments.bench_training --quick   # smoke test
Run time on a 2-core CPU: ``--quick`` 95 s (measured standalone, compilation included, on a machine
shared with other jobs, load ≈ 5); full mode measured 8 min (10 runs, half of them on 8 simulated
devices, machine load 3–5), 4 min with no other jobs on the machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np

from . import common, stats, timing

NAME = "bench_training"
METHODS = ("all_data", "hard", "soft", "random", "class_weight")
# Cheaper scoring, each changing one thing of Soft's paper setting (run with --methods): passes scoring
# only the examples outside the current subset (`rescore="unselected"`) or only those never scored, so
# later selections rank the training steps' own losses (`rescore="unseen"`); a bfloat16 scoring
# forward (`score_dtype`); scoring chunks of 1024 instead of 256 (`eval_batch_size`); re-selecting
# (and so rescoring) less often (`interval_min=2`: the interval grows from 2 epochs instead of 1); and the
# unseen rescoring together with 1024-chunks, or with the slower-growing interval.
VARIANT_FIELDS = {"soft_partial_rescore": {"rescore": "unselected"}, "soft_unseen": {"rescore": "unseen"},
                  "soft_bf16": {"score_dtype": "bfloat16"}, "soft_chunk1024": {"eval_batch_size": 1024},
                  "soft_interval2": {"interval_min": 2},
                  "soft_unseen_chunk1024": {"rescore": "unseen", "eval_batch_size": 1024},
                  "soft_unseen_interval2": {"rescore": "unseen", "interval_min": 2}}
VARIANTS = tuple(VARIANT_FIELDS)
REGIMES = ("scratch", "every_epoch", "finetune")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Config:
    num_train: int = 10000          # MNIST-1D training examples
    num_test: int = 1000            # held-out test examples (evaluation is not timed)
    epochs: int = 10                # training epochs per run
    batch_size: int = 64            # global batch size (a multiple of every device count)
    learning_rate: float = 1e-3     # peak AdamW learning rate
    width: int = 0                  # encoder width; 0 = the library default (64)
    depth: int = 0                  # encoder blocks; 0 = the library default (2)
    num_heads: int = 0              # attention heads; 0 = the library default (4)
    regime: str = "scratch"         # selection regime of the selectors: scratch (paper) | every_epoch | finetune
    methods: tuple = METHODS        # all_data and/or selectors to run
    devices: tuple = (1, 8)         # device counts (other than this process's: a subprocess with simulated CPUs)
    target_share: float = 0.05      # PASS if scoring + selection take at most this share of training time
    seeds: tuple = (0,)             # training seeds (each measurement repeats per seed)

    def __post_init__(self):
        for name in ("num_train", "num_test", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected an int >= 1")
        if self.regime not in REGIMES:
            raise ValueError(f"regime: got {self.regime!r}, expected one of {REGIMES}")
        common.check_choices("methods", self.methods, METHODS + VARIANTS)
        if not self.devices or any(d < 1 or self.batch_size % d for d in self.devices):
            raise ValueError(f"devices: got {self.devices!r}, expected device counts dividing batch_size "
                             f"{self.batch_size}")
        if not 0.0 < self.target_share < 1.0:
            raise ValueError(f"target_share: got {self.target_share!r}, expected a number in (0, 1)")
        common.check_seeds(self.seeds)


QUICK = Config(num_train=400, num_test=200, epochs=3, batch_size=32, width=32, depth=1, num_heads=2,
               methods=("all_data", "soft"), devices=(1, 8))


def train_config(config: Config, method: str, seed: int):
    if method == "all_data":
        return timing.mnist1d_config(config, seed, selection="none")
    if method in VARIANT_FIELDS:
        return timing.mnist1d_config(config, seed, selection="soft", regime=config.regime, ratio="incremental",
                                     interval="incremental", **VARIANT_FIELDS[method])
    return timing.mnist1d_config(config, seed, selection=method, regime=config.regime,
                                 ratio="incremental", interval="incremental")


_PER_SEED = ("train_time_s", "steps_s", "scoring_s", "selection_s", "fraction_seen", "throughput",
             "library_examples_per_s", "overhead_share", "worst_epoch_share", "final_accuracy_pct", "compile_s")


def measure(config: Config, out_dir: str) -> list[dict]:
    """Run every method and seed on this process's devices; one row per method (lists over seeds)."""
    import jax

    d = jax.device_count()
    rows = [{"devices": d, "method": method, "seeds": list(config.seeds),
             "scoring_passes": timing.scoring_passes(train_config(config, method, config.seeds[0])),
             "load_average": [], **{k: [] for k in _PER_SEED}} for method in config.methods]
    # Interleaved (for each seed, every method), so a drifting machine load favours no method.
    for seed in config.seeds:
        for method, row in zip(config.methods, rows):
            r = timing.timed_run(train_config(config, method, seed),
                                 os.path.join(out_dir, "runs", f"d{d}_{method}_seed{seed}"))
            st = r["stages"]["train"]
            per_epoch = [(e["scoring_s"] + e["selection_s"]) / max(e["steps_s"] + e["scoring_s"] + e["selection_s"],
                                                                   1e-12) for e in r["epochs"]]
            values = {"train_time_s": st["train_time_s"], "steps_s": st["steps_s"], "scoring_s": st["scoring_s"],
                      "selection_s": st["selection_s"], "fraction_seen": st["fraction_seen"],
                      "throughput": st["examples_seen"] / st["steps_s"] if st["steps_s"] > 0 else float("nan"),
                      "library_examples_per_s": r["result"].get("examples_per_s") or float("nan"),
                      "overhead_share": (st["scoring_s"] + st["selection_s"]) / st["train_time_s"],
                      "worst_epoch_share": max(per_epoch),
                      "final_accuracy_pct": 100.0 * timing.final(r, "eval_accuracy"), "compile_s": r["compile_s"]}
            for k in _PER_SEED:
                row[k].append(values[k])
            row["load_average"].append(r["load_average"])
            print(f"[{NAME}] {d} device(s) {method:>12s} seed {seed}: {values['throughput']:.0f} ex/s, scoring+"
                  f"selection {100 * values['overhead_share']:.2f}% of {values['train_time_s']:.1f}s, seen "
                  f"{values['fraction_seen']:.2f}", flush=True)
    return rows


def worker(config_json: str, out_dir: str, result_path: str, cache_dir: str = "") -> None:
    """Entry point of the subprocess that measures on simulated devices (its XLA_FLAGS set by the parent)."""
    config = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(config_json).items()})
    with timing.compile_cache(cache_dir or None):
        rows = measure(config, out_dir)
    with open(result_path, "w") as f:
        json.dump({"rows": rows, "environment": common.environment(config.seeds)}, f)


def _in_subprocess(config: Config, out_dir: str, devices: int) -> tuple[list[dict], dict]:
    import jax

    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env = dict(os.environ, XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]),
               PYTHONPATH=os.pathsep.join([_REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               JAX_PLATFORMS="cpu")
    result_path = os.path.join(out_dir, f"devices{devices}.json")
    cache = jax.config.jax_compilation_cache_dir or ""
    code = (f"import sys; from {__package__}.bench_training import worker; "
            "worker(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(dataclasses.asdict(config)), out_dir, result_path,
                           cache], env=env, cwd=_REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"the {devices}-device measurement subprocess failed with exit code {proc.returncode}")
    with open(result_path) as f:
        result = json.load(f)
    os.remove(result_path)
    return result["rows"], result["environment"]


def run(config: Config, out_dir: str) -> dict:
    """Measure every method on every device count, write JSON/markdown/figure; returns the payload."""
    import jax

    env = common.environment(config.seeds)
    rows, environments = [], {}
    for d in config.devices:
        if d == jax.device_count():
            rows += measure(config, out_dir)
            environments[str(d)] = env
        else:
            sub_rows, environments[str(d)] = _in_subprocess(config, out_dir, d)
            rows += sub_rows
    for d in config.devices:
        base = next((r for r in rows if r["devices"] == d and r["method"] == "all_data"), None)
        for r in rows:
            if r["devices"] == d:
                # Ideal: the same seed's all-data time scaled by the share of its examples this method trains on.
                r["ideal_time_s"] = ([b * f for b, f in zip(base["train_time_s"], r["fraction_seen"])] if base
                                     else None)
                r["time_over_ideal"] = ([t / i for t, i in zip(r["train_time_s"], r["ideal_time_s"])] if base
                                        else None)
                r["share_pass"] = bool(stats.mean_std(r["overhead_share"])[0] <= config.target_share)
    payload = {"experiment": NAME, "config": dataclasses.asdict(config), "environment": env,
               "environment_by_devices": environments,
               "timing": "optimizer steps + scoring + selection; compilation, evaluation, checkpoints excluded "
                         "(experiments/timing.py)",
               "rows": rows}
    figure = plot(config, rows, out_dir)
    paths = common.write_outputs(out_dir, NAME, payload, markdown(config, env, rows))
    for r in rows:
        if r["method"] != "all_data":
            ideal = stats.fmt_mean_std(r["time_over_ideal"], 3) if r["time_over_ideal"] else "—"
            print(f"[{NAME}] {r['devices']} device(s) {r['method']}: scoring+selection "
                  f"{stats.fmt_mean_std(r['overhead_share'], 4, 100.0)}% of training time (target <= "
                  f"{100 * config.target_share:.0f}%: {stats.verdict(r['share_pass'])}); time / ideal = {ideal}")
    common.print_outputs(NAME, [paths["json"], paths["markdown"], figure])
    return payload


def markdown(config: Config, env: dict, rows: list[dict]) -> str:
    def ms(values, digits, scale=1.0):
        return stats.fmt_mean_std(values, digits, scale) if values else "—"

    headers = ["devices", "method", "throughput (ex/s)", "library ex/s", "training time (s)", "scoring (s)",
               "selection (s)", "scoring passes", "scoring + selection (%)", "worst epoch (%)", "fraction seen",
               "time / ideal", "test accuracy (%)", f"share ≤ {100 * config.target_share:.0f}%"]
    table = [[r["devices"], r["method"], ms(r["throughput"], 0), ms(r["library_examples_per_s"], 0),
              ms(r["train_time_s"], 2), ms(r["scoring_s"], 3), ms(r["selection_s"], 3), r["scoring_passes"],
              ms(r["overhead_share"], 2, 100.0), ms(r["worst_epoch_share"], 2, 100.0), ms(r["fraction_seen"], 3),
              ms(r["time_over_ideal"], 3), ms(r.get("final_accuracy_pct", []), 1),
              "—" if r["method"] == "all_data" else stats.verdict(r["share_pass"])]
             for r in rows]
    return "\n".join([
        "# Training throughput and the cost of scoring and selection\n",
        f"MNIST-1D, {config.num_train} training examples, encoder (width {config.width or 'default'}, depth "
        f"{config.depth or 'default'}), {config.epochs} epochs, batch {config.batch_size}; selectors in the "
        f"{config.regime} regime (ratio 20% → 80%, incremental interval); mean ± std over seeds "
        f"{list(config.seeds)}. More than one device: simulated CPU devices sharing the same cores.\n",
        f"Measured on: {common.environment_line(env)}.\n",
        "Training time = optimizer steps + scoring + selection (compilation and evaluation excluded). Throughput = "
        "examples trained / optimizer-step time. Ideal time = the all-data run's time × the fraction of examples "
        "seen. PASS/MISS: the mean share of scoring + selection over the run.\n",
        stats.markdown_table(headers, table)]) + "\n"


def plot(config: Config, rows: list[dict], out_dir: str) -> str:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / len(config.devices)
    x = np.arange(len(config.methods))
    for k, d in enumerate(config.devices):
        rs = {r["method"]: r for r in rows if r["devices"] == d}
        bars = [[stats.mean_std(rs[m][key] or []) for m in config.methods]
                for key in ("throughput", "overhead_share", "time_over_ideal")]
        bars[1] = [(100 * m, 100 * s) for m, s in bars[1]]
        for ax, v in zip(axes, bars):
            ax.bar(x + (k - (len(config.devices) - 1) / 2) * width, [m for m, _ in v], width, yerr=[s for _, s in v],
                   label=f"{d} device(s)")
    axes[1].axhline(100 * config.target_share, color="k", ls="--", lw=1, label="target")
    axes[2].axhline(1.0, color="k", ls="--", lw=1)
    for ax, yl in zip(axes, ("throughput (examples/s)", "scoring + selection (% of training time)",
                             "training time / ideal time")):
        ax.set_xticks(x, config.methods, rotation=20)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend()
    axes[1].legend()
    fig.suptitle("Training throughput and selection overhead (MNIST-1D encoder)")
    return common.save_figure(fig, os.path.join(out_dir, "bench_training.png"))


def main(argv=None) -> int:
    return common.run_main(argv, NAME, Config, QUICK, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
