"""Paper Table 3 at CPU scale: ratio schedule × re-selection interval × selector.

The paper (§5, Table 3) ablates AtteNT's scratch regime on a ViT: the
selection ratio grows from 20% to 80% along a cosine or linear
("incremental") schedule, the subset is re-selected at a fixed or growing
("incremental") interval, and examples are picked by Random, Soft (sampling
∝ exp(loss), Gumbel-top-k) or Hard (top-k loss) selection. Its findings: a
growing interval saves ~25% of the time (fewer scoring passes), and Soft
selection gives the best accuracy. Here every combination trains the MNIST-1D
`EncoderClassifier` with the same data, model, epochs, optimizer and seed, plus
an all-data reference run.

Full mode uses one seed and 10,000 training examples (half of `from_scratch`'s)
to fit its 13 runs into 30 minutes on 2 CPU cores; its accuracy differences
are therefore single-seed numbers (the per-epoch noise of a 4000-example test
set is about ±0.4 points).

Reported per combination: training time (`experiments.timing`, "Timing":
steps + scoring + selection, no compilation or evaluation), scoring passes the
schedule asks for, scoring + selection time, final test accuracy, fraction of
the all-data run's examples seen; and the paper's two claims as measured
(interval incremental vs fixed: time; selector: accuracy), each stated as
AGREES, DISAGREES or NOT RESOLVED (within the config's resolution margins).

Outputs (``--out``, default experiments/results/ablation): ablation.json,
ablation.md, ablation.png, runs/NAME/.

Run:
    python -m experiments.ablation             # full: 12 combinations + all data, 10k examples, 20 epochs, seed 0
    python -m experiments.ablation --quick     # smoke test
Run time on a 2-core CPU: ``--quick`` 42 s (measured standalone, compilation included, on a machine
shared with other jobs, load ≈ 5); full mode measured 10 min (13 runs, machine load ≈ 3).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys

import numpy as np

from . import common, stats, timing

NAME = "ablation"
RATIOS = ("cosine", "incremental")
INTERVALS = ("fixed", "incremental")
SELECTORS = ("random", "soft", "hard")


@dataclasses.dataclass(frozen=True)
class Config:
    num_train: int = 10000          # MNIST-1D training examples (half of from_scratch's, to fit 30 minutes)
    num_test: int = 4000            # held-out test examples
    epochs: int = 20                # training epochs
    batch_size: int = 64            # global batch size
    learning_rate: float = 1e-3     # peak AdamW learning rate
    width: int = 0                  # encoder width; 0 = the library default (64)
    depth: int = 0                  # encoder blocks; 0 = the library default (2)
    num_heads: int = 0              # attention heads; 0 = the library default (4)
    interval_fixed: int = 2         # epochs between re-selections of the "fixed" interval
    ratios: tuple = RATIOS          # ratio schedules (20% → 80%) to run
    intervals: tuple = INTERVALS    # interval schedules to run (incremental: 1 → 10 epochs)
    selectors: tuple = SELECTORS    # selectors to run
    all_data: bool = True           # also run the all-data reference
    seeds: tuple = (0,)             # training seeds (each combination runs every seed)
    resolution_points: float = 1.0  # a selector lead below this many accuracy points is seed noise: "not resolved"
    resolution_time: float = 0.1    # a time saving within ± this share is run-to-run noise here: "not resolved"

    def __post_init__(self):
        for name in ("num_train", "num_test", "epochs", "batch_size", "interval_fixed"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected an int >= 1")
        if self.epochs < 2:
            raise ValueError(f"epochs: got {self.epochs}, expected >= 2 (selection re-plans between epochs)")
        for name in ("resolution_points", "resolution_time"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected a number >= 0")
        common.check_choices("ratios", self.ratios, RATIOS)
        common.check_choices("intervals", self.intervals, INTERVALS)
        common.check_choices("selectors", self.selectors, SELECTORS)
        common.check_seeds(self.seeds)


QUICK = Config(num_train=400, num_test=200, epochs=3, batch_size=32, width=32, depth=1, num_heads=2,
               interval_fixed=1, ratios=("cosine",), intervals=("fixed", "incremental"), selectors=("soft",),
               all_data=False)


def combinations(config: Config) -> list[tuple[str, str, str]]:
    return list(itertools.product(config.ratios, config.intervals, config.selectors))


def train_config(config: Config, combo, seed: int):
    """The `TrainConfig` of a (ratio, interval, selector) combination, or of the all-data run (combo None)."""
    if combo is None:
        return timing.mnist1d_config(config, seed, selection="none")
    ratio, interval, selector = combo
    return timing.mnist1d_config(config, seed, selection=selector, regime="scratch", ratio=ratio,
                                 interval=interval, interval_fixed=config.interval_fixed)


def _name(combo) -> str:
    return "all_data" if combo is None else "_".join(combo)


def run(config: Config, out_dir: str) -> dict:
    """Train every combination (and the all-data run), write JSON/markdown/figure; returns the payload."""
    env = common.environment(config.seeds)
    combos = ([None] if config.all_data else []) + combinations(config)
    rows = []
    # Interleaved (for each seed, every combination), so a drifting machine load favours no combination.
    by_combo: dict = {_name(c): [] for c in combos}
    for seed in config.seeds:
        for combo in combos:
            tc = train_config(config, combo, seed)
            by_combo[_name(combo)].append(timing.timed_run(tc, os.path.join(out_dir, "runs",
                                                                            f"{_name(combo)}_seed{seed}")))
    for combo in combos:
        runs = by_combo[_name(combo)]
        st = [r["stages"]["train"] for r in runs]
        row = {"ratio": combo[0] if combo else "—", "interval": combo[1] if combo else "—",
               "selector": combo[2] if combo else "all data",
               "scoring_passes": timing.scoring_passes(train_config(config, combo, config.seeds[0])),
               "train_time_s": [s["train_time_s"] for s in st],
               "scoring_plus_selection_s": [s["scoring_s"] + s["selection_s"] for s in st],
               "final_accuracy_pct": [100.0 * timing.final(r, "eval_accuracy") for r in runs],
               "fraction_seen": [s["fraction_seen"] for s in st],
               "runs": [{k: r[k] for k in ("config", "result", "epochs", "stages", "compile_s", "load_average",
                                           "workdir")} for r in runs]}
        rows.append(row)
        print(f"[{NAME}] {_name(combo):>28s}: train {stats.fmt_mean_std(row['train_time_s'], 1)}s, acc "
              f"{stats.fmt_mean_std(row['final_accuracy_pct'], 2)}%, seen "
              f"{stats.fmt_mean_std(row['fraction_seen'], 3)}, scoring passes {row['scoring_passes']}", flush=True)
    claims = check_claims(rows, config.resolution_points, config.resolution_time)
    payload = {"experiment": NAME, "paper": "Table 3", "config": dataclasses.asdict(config), "environment": env,
               "timing": "optimizer steps + scoring + selection; compilation, evaluation, checkpoints excluded "
                         "(experiments/timing.py)",
               "rows": rows, "claims": claims}
    figure = plot(rows, out_dir)
    paths = common.write_outputs(out_dir, NAME, payload, markdown(config, env, rows, claims))
    for c in claims:
        print(f"[{NAME}] {c['text']}")
    common.print_outputs(NAME, [paths["json"], paths["markdown"], figure])
    return payload


_WORD = {True: "AGREES", False: "DISAGREES", None: "NOT RESOLVED"}


def _decide(margin_measured: float, resolution: float) -> bool | None:
    """True / False when the measured margin reaches +/- `resolution` (a strict sign with no resolution: a tie decides nothing)."""
    if margin_measured > 0 and margin_measured >= resolution:
        return True
    if margin_measured < 0 and -margin_measured >= resolution:
        return False
    return None


def check_claims(rows: list[dict], resolution_points: float = 1.0, resolution_time: float = 0.1) -> list[dict]:
    """The paper's two findings, as measured here (only where both sides were run).

    Each needs a margin: the growing interval "agrees" when it saves at least `resolution_time` of the
    fixed interval's mean training time, "disagrees" when it costs that much more; Soft "agrees" when
    its mean accuracy beats every other selector's by at least `resolution_points`, "disagrees" when
    another beats it by that much. In between a claim is "not resolved" (with one seed, a few tenths of
    a point and several per cent of a run's time are noise). ``agrees`` is True, False or None.
    """
    sel = [r for r in rows if r["selector"] in SELECTORS]
    claims = []

    def mean_of(rs, key):
        return float(np.mean([stats.mean_std(r[key])[0] for r in rs])) if rs else float("nan")

    fixed = [r for r in sel if r["interval"] == "fixed"]
    incr = [r for r in sel if r["interval"] == "incremental"]
    if fixed and incr:
        t_fixed, t_incr = mean_of(fixed, "train_time_s"), mean_of(incr, "train_time_s")
        saving = 1.0 - t_incr / t_fixed
        agrees = _decide(saving, resolution_time)
        claims.append({"claim": "incremental interval trains faster than fixed", "fixed_s": t_fixed,
                       "incremental_s": t_incr, "saving": saving, "resolution_time": resolution_time,
                       "agrees": agrees,
                       "text": f"paper: a growing interval saves time. Measured mean training time: fixed "
                               f"{t_fixed:.1f}s, incremental {t_incr:.1f}s ({100 * saving:+.1f}% saved, "
                               f"resolution ±{100 * resolution_time:g}%): {_WORD[agrees]}"})
    by_sel = {s: [r for r in sel if r["selector"] == s] for s in SELECTORS}
    accs = {s: mean_of(rs, "final_accuracy_pct") for s, rs in by_sel.items() if rs}
    if "soft" in accs and len(accs) > 1:
        best = max(accs, key=accs.get)
        others = max(a for s, a in accs.items() if s != "soft")
        lead = accs["soft"] - others
        agrees = _decide(lead, resolution_points)
        word = _WORD[agrees]
        claims.append({"claim": "soft selection gives the best accuracy", "accuracy_pct": accs, "best": best,
                       "soft_lead_points": lead, "resolution_points": resolution_points, "agrees": agrees,
                       "text": "paper: Soft selection is the most accurate. Measured mean final accuracy: "
                               + ", ".join(f"{s} {a:.2f}%" for s, a in accs.items())
                               + f": {word} (best: {best}; Soft's lead {lead:+.2f} points, resolution "
                                 f"{resolution_points:g})"})
    return claims


def markdown(config: Config, env: dict, rows: list[dict], claims: list[dict]) -> str:
    headers = ["ratio", "interval", "selection", "training time (s)", "scoring passes", "scoring + selection (s)",
               "final test acc. (%)", "fraction of examples seen"]
    table = [[r["ratio"], r["interval"], r["selector"], stats.fmt_mean_std(r["train_time_s"], 1),
              r["scoring_passes"], stats.fmt_mean_std(r["scoring_plus_selection_s"], 2),
              stats.fmt_mean_std(r["final_accuracy_pct"], 2), stats.fmt_mean_std(r["fraction_seen"], 3)]
             for r in rows]
    lines = ["# Ablation of AtteNT's ratio, interval and selector (paper Table 3, CPU scale)\n",
             f"MNIST-1D, {config.num_train} training / {config.num_test} test examples, {config.epochs} epochs, "
             f"batch {config.batch_size}; ratio 20% → 80%; fixed interval {config.interval_fixed} epochs, "
             f"incremental 1 → 10; seeds {list(config.seeds)}"
             + (" (one seed: single-run numbers)" if len(config.seeds) == 1 else "") + ".\n",
             f"Measured on: {common.environment_line(env)}.\n",
             "Training time = optimizer steps + scoring + selection; compilation, evaluation and checkpoints "
             "excluded.\n", stats.markdown_table(headers, table), ""]
    lines += [f"- {c['text']}" for c in claims]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out_dir: str) -> str:
    plt = common.pyplot()
    labels = [("all data" if r["selector"] == "all data" else f"{r['ratio'][:3]}/{r['interval'][:4]}/{r['selector']}")
              for r in rows]
    t = [stats.mean_std(r["train_time_s"]) for r in rows]
    a = [stats.mean_std(r["final_accuracy_pct"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    x = np.arange(len(rows))
    axes[0].bar(x, [m for m, _ in t], yerr=[s for _, s in t], color="tab:blue")
    axes[0].set_ylabel("training time (s)")
    axes[1].bar(x, [m for m, _ in a], yerr=[s for _, s in a], color="tab:green")
    axes[1].set_ylabel("final test accuracy (%)")
    lo = min(m for m, _ in a)
    axes[1].set_ylim(max(0.0, lo - 3.0), min(100.0, max(m for m, _ in a) + 1.0))
    for ax in axes:
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Ablation: ratio schedule / interval / selector")
    return common.save_figure(fig, os.path.join(out_dir, "ablation.png"))


def main(argv=None) -> int:
    return common.run_main(argv, NAME, Config, QUICK, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
