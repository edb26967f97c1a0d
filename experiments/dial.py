"""When does selection pay? AtteNT's edge along a redundancy and noise dial (MNIST-1D).

At one budget (default 0.5 of the all-data run's measured training cost, as
`experiments.frontier` fits it), AtteNT, the compute-matched all-data run
(all data, fewer epochs) and RS2-style random subsets are trained on MNIST-1D
training sets built by `attent_jax.tasks.dial.make_mnist1d_dial` along three
dials, each from the same standard set at 0%:

- **easy share** 50%, 80%, 95%: that share drawn with the generator's
  variation (scale, shift, noise, shear) turned down to a tenth;
- **near-duplicates** 50%, 80%, 95%: that share made of noisy copies of the
  others, at a fixed N (so N·(1 − share) distinct examples; every level costs
  the same per epoch);
- **label noise** 10%, 30%: that share of training labels flipped to another
  class.

The test set is the standard generator's, clean, at every level. Reported per
dataset and method: final test accuracy (mean ± std over seeds) and measured
cost; per dial level, AtteNT's edge: its accuracy minus the compute-matched
all-data run's and minus random's, paired by seed, with a 95% Student-t
interval over seeds (`frontier.paired_interval`). One figure, one panel per
dial, shows both edges against the level.

Plans and their calibration are `experiments.frontier`'s: one all-data
reference run per seed, on the standard set, calibrates the step time for
every dataset (they share N and shapes, so a step costs the same). The loop
is handed each dataset in place of the task's own (``Trainer`` loads it via
`attent_jax.training.loop.load_dataset`, which this script swaps for the run);
each run's config.json therefore says task "mnist1d" and the dial is recorded
in dial.json. Methods run interleaved (for each seed: every dataset, every
method); each run records the machine's load.

Outputs (``--out``, default experiments/results/dial): dial.json, dial.md,
dial.png, runs/DATASET_METHOD_seedK/.

Run:
    python -m experiments.dial            # full: 10k/4k, 20 epochs, 9 datasets × 3 methods × 3 seeds
    python -m experiments.dial --quick    # smoke test: tiny sizes, one level per dial, 1 seed
Run time on a 2-core CPU: ``--quick`` 69-78 s standalone at load 3-5. Full mode (10k/4k, 84 runs):
43 min at a 1-minute load of about 1.7 (2026-12-02: 21:31 to 22:14, data generation included); the
20k sets of the first attempt would have taken about 65 min (its 20-epoch reference: 99 s wall).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import numpy as np

from . import common, frontier, stats, timing

NAME = "dial"
METHODS = ("all_data", "attent", "random")
DIALS = {"easy_share": "easy share", "duplicate_share": "near-duplicate share", "label_noise": "label noise"}


@dataclasses.dataclass(frozen=True)
class Config:
    num_train: int = 10000          # MNIST-1D training examples at every level (half the frontier's: 84 runs in 45 min)
    num_test: int = 4000            # standard, clean test examples
    epochs: int = 20                # epochs of the all-data reference run (budget 1.0)
    batch_size: int = 64            # global batch size
    learning_rate: float = 1e-3     # peak AdamW learning rate
    width: int = 0                  # encoder width; 0 = the library default (64)
    depth: int = 0                  # encoder blocks; 0 = the library default (2)
    num_heads: int = 0              # attention heads; 0 = the library default (4)
    budget: float = 0.5             # share of the all-data reference's measured cost every method spends
    easy_levels: tuple = (0.5, 0.8, 0.95)       # easy shares (0 = the shared standard set)
    duplicate_levels: tuple = (0.5, 0.8, 0.95)  # near-duplicate shares
    noise_levels: tuple = (0.1, 0.3)            # label-noise shares
    data_seed: int = 42             # the generator's seed (the same data for every training seed)
    seeds: tuple = (0, 1, 2)        # training seeds
    methods: tuple = METHODS        # all_data (compute-matched), attent and/or attent_lr_steps, random

    def __post_init__(self):
        for name in ("num_train", "num_test", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: got {v!r}, expected an int >= 1")
        if not 0.0 < self.budget <= 1.0:
            raise ValueError(f"budget: got {self.budget!r}, expected a number in (0, 1]")
        for name in ("easy_levels", "duplicate_levels", "noise_levels"):
            v = getattr(self, name)
            if not v or any(not 0.0 < x < 1.0 for x in v):
                raise ValueError(f"{name}: got {v!r}, expected numbers in (0, 1)")
        common.check_seeds(self.seeds)
        common.check_choices("methods", self.methods, frontier.METHODS)
        if "all_data" not in self.methods or not set(self.methods) & set(frontier.ATTENT_METHODS):
            raise ValueError(f"methods: got {self.methods!r}, expected all_data and an AtteNT method")


QUICK = Config(num_train=256, num_test=128, epochs=3, batch_size=32, learning_rate=5e-3, width=16, depth=1,
               num_heads=2, easy_levels=(0.8,), duplicate_levels=(0.8,), noise_levels=(0.3,), seeds=(0,))


def datasets(config: Config) -> list[dict]:
    """The dial points: the shared standard set, then each dial's levels (name, dial, level, generator kwargs)."""
    points = [{"name": "standard", "dial": None, "level": 0.0, "kwargs": {}}]
    for dial, levels in (("easy_share", config.easy_levels), ("duplicate_share", config.duplicate_levels),
                         ("label_noise", config.noise_levels)):
        points += [{"name": f"{dial}{lv:g}", "dial": dial, "level": lv, "kwargs": {dial: lv}} for lv in levels]
    return points


_training_on = frontier.training_on


def run(config: Config, out_dir: str) -> dict:
    from attent_jax.tasks.dial import dial_dataset

    env = common.environment(config.seeds)
    points = datasets(config)
    data = {p["name"]: dial_dataset(config.num_train, config.num_test, seed=config.data_seed, **p["kwargs"])
            for p in points}
    cal = frontier.Calibration()
    results: dict[str, dict[str, list[dict]]] = {p["name"]: {m: [] for m in config.methods} for p in points}
    for seed in config.seeds:
        ref_config, _ = frontier.plan(config, "all_data", 1.0, seed, cal)
        with _training_on(data["standard"]):
            ref = timing.timed_run(ref_config, os.path.join(out_dir, "runs", f"reference_seed{seed}"))
        st = ref["stages"]["train"]
        cal.reference_s[seed], cal.step_s[seed] = st["train_time_s"], st["steps_s"] / max(st["steps"], 1)
        for p in points:
            for method in config.methods:
                tc, desc = frontier.plan(config, method, config.budget, seed, cal)
                with _training_on(data[p["name"]]):
                    r = timing.timed_run(tc, os.path.join(out_dir, "runs", f"{p['name']}_{method}_seed{seed}"))
                frontier._learn(cal, tc, r)
                pt = frontier._point(method, config.budget, seed, r, ref, desc, frontier.predicted_cost(tc, cal, seed))
                results[p["name"]][method].append(pt)
                print(f"[{NAME}] {p['name']:>20s} {method:>15s} seed {seed}: acc {pt['accuracy_pct']:.2f}%, "
                      f"cost {pt['cost']:.3f}", flush=True)
        # Written after every seed, so a run stopped part-way keeps the seeds it finished (and says which).
        payload = _write(config, env, points, results, out_dir, config.seeds[:config.seeds.index(seed) + 1])
    return payload


def _write(config: Config, env: dict, points: list[dict], results: dict, out_dir: str, done: tuple) -> dict:
    edges = edge_rows(config, points, results)
    payload = {"experiment": NAME, "config": dataclasses.asdict(config), "environment": env,
               "seeds_completed": list(done),
               "timing": "optimizer steps + scoring + selection; compilation, evaluation excluded; cost = measured "
                         "training time / the same seed's all-data reference on the standard set",
               "interval": "95% Student-t interval over seeds of the paired (same seed) accuracy difference",
               "datasets": [{k: p[k] for k in ("name", "dial", "level")} for p in points],
               "results": results, "edges": edges}
    figure = plot(config, edges, out_dir)
    paths = common.write_outputs(out_dir, NAME, payload, markdown(config, env, points, results, edges))
    common.print_outputs(NAME, [paths["json"], paths["markdown"], figure])
    return payload


def _attent(config: Config) -> str:
    return next(m for m in config.methods if m in frontier.ATTENT_METHODS)


def edge_rows(config: Config, points: list[dict], results: dict) -> list[dict]:
    """AtteNT minus each other method, per dataset: paired differences, mean and 95% t-interval."""
    a = _attent(config)
    rows = []
    for p in points:
        acc = {m: {q["seed"]: q["accuracy_pct"] for q in results[p["name"]][m]} for m in config.methods}
        for other in (m for m in config.methods if m != a and m not in frontier.ATTENT_METHODS):
            diffs = [acc[a][s] - acc[other][s] for s in config.seeds if s in acc[a] and s in acc[other]]
            mean, lo, hi = frontier.paired_interval(diffs)
            rows.append({"dataset": p["name"], "dial": p["dial"], "level": p["level"], "method": a, "versus": other,
                         "diff_points": diffs, "mean": mean, "ci95": [lo, hi]})
    return rows


def markdown(config, env, points, results, edges) -> str:
    headers = ["dataset"] + [f"{frontier.LABELS[m]} acc. (%)" for m in config.methods] + \
        [f"{frontier.LABELS[m]} cost" for m in config.methods]
    rows = [[p["name"]] + [stats.fmt_mean_std([q["accuracy_pct"] for q in results[p["name"]][m]], 2)
                           for m in config.methods]
            + [stats.fmt_mean_std([q["cost"] for q in results[p["name"]][m]], 3) for m in config.methods]
            for p in points]
    erows = [[e["dataset"], f"{frontier.LABELS[e['method']]} − {frontier.LABELS[e['versus']]}", f"{e['mean']:+.2f}",
              "—" if math.isnan(e["ci95"][0]) else f"[{e['ci95'][0]:+.2f}, {e['ci95'][1]:+.2f}]"] for e in edges]
    return "\n".join([
        "# AtteNT's edge along a redundancy and noise dial (MNIST-1D)\n",
        f"{config.num_train} training / {config.num_test} standard test examples at every level; budget "
        f"{config.budget:g} of the all-data reference ({config.epochs} epochs); seeds "
        f"{sorted({q['seed'] for r in results.values() for qs in r.values() for q in qs})} of {list(config.seeds)}.\n",
        f"Measured on: {common.environment_line(env)}.\n",
        stats.markdown_table(headers, rows),
        "Edge (points, paired by seed; 95% Student-t interval):\n",
        stats.markdown_table(["dataset", "difference", "mean", "95% interval"], erows)]) + "\n"


def plot(config: Config, edges: list[dict], out_dir: str) -> str:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, (dial, label) in zip(axes, DIALS.items()):
        for versus in sorted({e["versus"] for e in edges}):
            es = sorted((e for e in edges if e["versus"] == versus and e["dial"] in (None, dial)),
                        key=lambda e: e["level"])
            x = np.array([100 * e["level"] for e in es])
            y = np.array([e["mean"] for e in es])
            half = np.array([0.0 if math.isnan(e["ci95"][0]) else e["ci95"][1] - e["mean"] for e in es])
            ax.errorbar(x, y, yerr=half, marker="o", capsize=3, label=f"AtteNT − {frontier.LABELS[versus]}")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xlabel(f"{label} (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy edge (points)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"AtteNT's edge at budget {config.budget:g} (bars: 95% t-interval over seeds)")
    return common.save_figure(fig, os.path.join(out_dir, f"{NAME}.png"))


def main(argv=None) -> int:
    return common.run_main(argv, NAME, Config, QUICK, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
