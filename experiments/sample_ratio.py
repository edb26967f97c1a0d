"""Paper Table 7 / Figure 4 at CPU scale: accuracy against a fixed AtteNT sample ratio.

The paper (Appendix D.1) trains its ViT with AtteNT at fixed sample ratios
and sees accuracy hold down to about 80%, then drop: part of the data changes
little during training and can be skipped up to a threshold. Here the MNIST-1D
`EncoderClassifier` trains in AtteNT's scratch regime (Soft selection, the
subset re-selected at the incremental interval 1 → 10 epochs) with the ratio
fixed at each of 100%, 90%, …, 40%; everything else (data, model, epochs,
optimizer, seeds) is the same. At 100% every example is selected, but the
run still pays AtteNT's scoring passes: the row isolates the effect of the
ratio alone.

Reported per ratio, mean ± std over seeds: final test accuracy, its change
from the 100% run, training time (`experiments.timing`, "Timing") and the
fraction of examples seen; the figure plots accuracy (and time) against the
ratio.

Outputs (``--out``, default experiments/results/sample_ratio):
sample_ratio.json, sample_ratio.md, sample_ratio.png, runs/ratioR_seedK/.

Run:
    python -m experiments.sample_ratio             # full: ratios 1.0 … 0.4, 10k examples, 20 epochs, seeds 0 1
    python -m experiments.sample_ratio --quick     # smoke test
Run time on a 2-core CPU: ``--quick`` 39 s (measured standalone, compilation included, on a machine
shared with other jobs, load ≈ 5); full mode measured 12 min (14 runs: 7 ratios × 2 seeds, machine load ≈ 2).
"""

from __future__ import annotations

import dataclasses
import os
import sys

from . import common, stats, timing

NAME = "sample_ratio"


@dataclasses.dataclass(frozen=True)
class Config:
    num_train: int = 10000          # MNIST-1D training examples
    num_test: int = 4000            # held-out test examples
    epochs: int = 20                # training epochs
    batch_size: int = 64            # global batch size
    learning_rate: float = 1e-3     # peak AdamW learning rate
    width: int = 0                  # encoder width; 0 = the library default (64)
    depth: int = 0                  # encoder blocks; 0 = the library default (2)
    num_heads: int = 0              # attention heads; 0 = the library default (4)
    ratios: tuple = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)  # fixed sample ratios to run
    selector: str = "soft"          # AtteNT selector (the paper's: soft)
    seeds: tuple = (0, 1)           # training seeds

    def __post_init__(self):
        for name in ("num_train", "num_test", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected an int >= 1")
        if self.epochs < 2:
            raise ValueError(f"epochs: got {self.epochs}, expected >= 2 (epoch 0 always trains on all data)")
        if not self.ratios or any(not 0.0 < r <= 1.0 for r in self.ratios) or len(set(self.ratios)) != len(self.ratios):
            raise ValueError(f"ratios: got {self.ratios!r}, expected distinct numbers in (0, 1]")
        if self.selector not in ("soft", "hard", "random"):
            raise ValueError(f"selector: got {self.selector!r}, expected soft, hard or random")
        common.check_seeds(self.seeds)


QUICK = Config(num_train=400, num_test=200, epochs=3, batch_size=32, width=32, depth=1, num_heads=2,
               ratios=(1.0, 0.5), seeds=(0,))


def train_config(config: Config, ratio: float, seed: int):
    return timing.mnist1d_config(config, seed, selection=config.selector, regime="scratch", ratio=float(ratio),
                                 interval="incremental")


def run(config: Config, out_dir: str) -> dict:
    """Train every ratio and seed, write JSON/markdown/figure into `out_dir`; returns the payload."""
    env = common.environment(config.seeds)
    rows = []
    ratios = sorted(config.ratios, reverse=True)
    # Interleaved (for each seed, every ratio), so a drifting machine load favours no ratio.
    by_ratio: dict = {ratio: [] for ratio in ratios}
    for seed in config.seeds:
        for ratio in ratios:
            by_ratio[ratio].append(timing.timed_run(train_config(config, ratio, seed),
                                                    os.path.join(out_dir, "runs", f"ratio{ratio:g}_seed{seed}")))
    for ratio in ratios:
        runs = by_ratio[ratio]
        st = [r["stages"]["train"] for r in runs]
        row = {"ratio": ratio, "final_accuracy_pct": [100.0 * timing.final(r, "eval_accuracy") for r in runs],
               "train_time_s": [s["train_time_s"] for s in st], "fraction_seen": [s["fraction_seen"] for s in st],
               "runs": [{k: r[k] for k in ("config", "result", "epochs", "stages", "compile_s", "load_average",
                                           "workdir")} for r in runs]}
        rows.append(row)
        print(f"[{NAME}] ratio {ratio:.0%}: acc {stats.fmt_mean_std(row['final_accuracy_pct'], 2)}%, train "
              f"{stats.fmt_mean_std(row['train_time_s'], 1)}s, seen {stats.fmt_mean_std(row['fraction_seen'], 3)}",
              flush=True)
    full = next((r for r in rows if r["ratio"] == 1.0), None)
    for r in rows:
        # Paired by seed: each seed's accuracy minus the same seed's 100% run.
        r["accuracy_change_points"] = ([a - b for a, b in zip(r["final_accuracy_pct"], full["final_accuracy_pct"])]
                                       if full else None)
    payload = {"experiment": NAME, "paper": "Table 7 / Figure 4", "config": dataclasses.asdict(config),
               "environment": env,
               "timing": "optimizer steps + scoring + selection; compilation, evaluation, checkpoints excluded "
                         "(experiments/timing.py)",
               "rows": rows}
    figure = plot(rows, out_dir)
    paths = common.write_outputs(out_dir, NAME, payload, markdown(config, env, rows))
    common.print_outputs(NAME, [paths["json"], paths["markdown"], figure])
    return payload


def markdown(config: Config, env: dict, rows: list[dict]) -> str:
    headers = ["sample ratio", "final test acc. (%)", "change vs 100% (points)", "training time (s)",
               "fraction of examples seen"]
    table = [[f"{r['ratio']:.0%}", stats.fmt_mean_std(r["final_accuracy_pct"], 2),
              stats.fmt_mean_std(r["accuracy_change_points"], 2) if r["accuracy_change_points"] else "—",
              stats.fmt_mean_std(r["train_time_s"], 1), stats.fmt_mean_std(r["fraction_seen"], 3)] for r in rows]
    return "\n".join([
        "# Accuracy against a fixed AtteNT sample ratio (paper Table 7 / Figure 4, CPU scale)\n",
        f"MNIST-1D, {config.num_train} training / {config.num_test} test examples, {config.epochs} epochs, batch "
        f"{config.batch_size}; {config.selector} selection, scratch regime with the ratio fixed, incremental "
        f"interval; mean ± std over seeds {list(config.seeds)}.\n",
        f"Measured on: {common.environment_line(env)}.\n",
        "Training time = optimizer steps + scoring + selection; compilation, evaluation and checkpoints excluded.\n",
        stats.markdown_table(headers, table)]) + "\n"


def plot(rows: list[dict], out_dir: str) -> str:
    plt = common.pyplot()
    x = [100 * r["ratio"] for r in rows]
    acc = [stats.mean_std(r["final_accuracy_pct"]) for r in rows]
    t = [stats.mean_std(r["train_time_s"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.errorbar(x, [m for m, _ in acc], yerr=[s for _, s in acc], marker="o", capsize=3, color="tab:green",
                label="test accuracy")
    ax.set_xlabel("sample ratio (%)")
    ax.set_ylabel("final test accuracy (%)", color="tab:green")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.errorbar(x, [m for m, _ in t], yerr=[s for _, s in t], marker="s", capsize=3, color="tab:blue", alpha=0.6,
                 label="training time")
    ax2.set_ylabel("training time (s)", color="tab:blue")
    ax.set_title("MNIST-1D: accuracy and time against the sample ratio")
    return common.save_figure(fig, os.path.join(out_dir, "sample_ratio.png"))


def main(argv=None) -> int:
    return common.run_main(argv, NAME, Config, QUICK, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
