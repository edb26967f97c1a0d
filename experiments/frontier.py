"""The accuracy-compute frontier: final test accuracy of each method against the training cost it spends.

A method that trains on less data spends less; the question is whether what it
buys with its budget beats the simplest use of the same budget: all data for
fewer epochs. For budgets B (default 0.25, 0.35, 0.5, 0.65, 0.8, 1.0) of the
all-data run's measured training cost C (same seed, `config.epochs` epochs,
what "training cost" means: `experiments.timing`, "Timing" — optimizer steps,
scoring and selection; compilation and evaluation excluded), every method is
fitted to spend B·C, and each lays its learning-rate schedule out so that it
is fully decayed at its own end:

- ``all_data``: all data for round(B·E) epochs (≥ 1), lr over its steps — the
  compute-matched baseline;
- ``attent``: AtteNT Soft with the paper's schedules (scratch regime, ratio
  20% → 80%, growing interval, the paper's first epoch), the number of epochs
  fitted to the budget, lr over epochs (as `experiments.from_scratch`);
- ``attent_lr_steps``: the same with lr laid out over its planned steps, the
  best AtteNT variant measured so far (from_scratch, README Results);
- ``attent_unseen``: ``attent_lr_steps`` whose scoring passes score only the
  examples never scored (``--rescore unseen``): after the pass at
  initialization every selection ranks the losses its training steps left in
  the score table, the cheapest AtteNT variant (bench_training: its scoring
  share meets the 5% target); not in the default method list, run it by name;
- ``random``: RS2-style random subsets: a fresh uniform subset of B·N each
  epoch (scratch regime, fixed ratio B, interval 1, no scoring pass), E epochs,
  lr over steps;
- ``infobatch``: InfoBatch with its prune ratio q (and, where q ≤ 0.9 cannot
  reach B at E epochs, fewer epochs) set to land on the budget, lr over epochs.

Fitting is a cost model calibrated on measurements, and the cost reported is
the measured one, never the plan: cost(plan) = planned optimizer steps × the
seed's all-data step time + scoring passes × N × the per-example scoring time
(first estimated as a third of a training step's per-example time, then the
median measured so far); InfoBatch's kept share of below-mean examples uses
the below-mean share m measured in its earlier runs (0.6 before any). Each
run's planned and measured cost are both in the JSON; the plot and the table
use the measured cost (fraction of the same seed's all-data cost).

Verdict per budget, for each AtteNT method: its final accuracy minus the
compute-matched baseline's, paired by seed, mean and 95% Student-t interval
over seeds (t quantile from scipy at n − 1 degrees of freedom; undefined for
one seed): "better" if the interval lies above 0, "worse" if below, else
"not resolved".

The moonshot check (`experiments.frontier_report`): does an AtteNT method at a
budget ≤ 0.6 reach the all-data run at budget 1.0 minus 0.2 points, with the
interval's lower end to back it; if none does, the closest is named.

Methods run interleaved (for each seed: the reference, then every budget and
method), so a drifting machine load favours none; each run records the load.
Seeds: every method and budget runs `seeds` (3); then `extra_seeds` (2 more)
run at each budget where an AtteNT method lies within 2 std of the
compute-matched baseline, for that method and the baseline (`close_pairs`):
the verdicts there rest on 5 seeds, elsewhere on 3.

Outputs (``--out``, default experiments/results/frontier): frontier.json,
frontier.md, frontier.png (accuracy vs measured cost, bands ±1 std over seeds),
runs/METHOD_bB_seedK/.

Run:
    python -m experiments.frontier            # full: 10k/4k MNIST-1D, 20 epochs, 6 budgets, 5 methods, 3 (+2) seeds
    python -m experiments.frontier --quick    # smoke test: tiny sizes, budgets 0.5 and 1.0, 2 seeds
    python -m experiments.frontier --report-only [--out DIR]   # tables, verdicts, figure again from frontier.json
Run time on a 2-core CPU: ``--quick`` 89 s standalone at load 3-5 (16 tiny runs). Full: 3 seeds ×
(1 reference + 6 budgets × 5 methods − 1 reused) = 90 runs whose costs sum to about 3 × 5 × 3.5 = 52
all-data runs of 20 epochs, plus the extra seeds' runs at the close budgets. The first full run, at 20k
training examples and 3 seeds, took about 75 min under load 0.5-9, over the evidence issue's 45-minute
bound; the full config now trains on 10k examples (as `experiments.dial`), about half the work per run,
and took 31.7 min (2026-12-05, load 1.5-2.9), extra seeds at three budgets included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys

import numpy as np

from . import common, stats, timing
from .frontier_report import (ATTENT_METHODS, LABELS, METHODS, NAME, added_seeds, interval_text,  # noqa: F401
                              moonshot, paired_interval, regenerate, summarize, verdict, verdict_rows, write)

_Q_MAX = 0.9            # InfoBatch's largest prune ratio used: beyond it, fewer epochs
_SCORE_SHARE = 1 / 3    # first guess of a scoring pass's per-example cost over a training step's (forward only)
_BELOW_MEAN = 0.6       # first guess of InfoBatch's below-mean share, before any InfoBatch run is measured


@dataclasses.dataclass(frozen=True)
class Config:
    num_train: int = 10000          # MNIST-1D training examples
    num_test: int = 4000            # held-out test examples (disjoint, same generator)
    epochs: int = 20                # epochs of the all-data reference run (budget 1.0)
    batch_size: int = 64            # global batch size
    learning_rate: float = 1e-3     # peak AdamW learning rate
    width: int = 0                  # encoder width; 0 = the library default (64)
    depth: int = 0                  # encoder blocks; 0 = the library default (2)
    num_heads: int = 0              # attention heads; 0 = the library default (4)
    budgets: tuple = (0.25, 0.35, 0.5, 0.65, 0.8, 1.0)  # shares of the all-data run's measured cost
    seeds: tuple = (0, 1, 2)        # training seeds (model init, teacher, data order)
    extra_seeds: tuple = (3, 4)     # seeds added after `seeds` where an AtteNT method is close to the baseline (`close_pairs`); 'none': no extra seeds; seeds already in `seeds` are skipped
    methods: tuple = tuple(m for m in METHODS if m != "attent_unseen")  # methods to run (all_data is the reference and the compute-matched baseline); attent_unseen by name
    moonshot_budget: float = 0.6    # the moonshot: largest budget at which AtteNT must match all data at 1.0 ...
    moonshot_gap: float = 0.2       # ... to within this many accuracy points (the interval's lower end)

    def __post_init__(self):
        for name in ("num_train", "num_test", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: got {v!r}, expected an int >= 1")
        if self.epochs < 2:
            raise ValueError(f"epochs: got {self.epochs}, expected >= 2")
        budgets = self.budgets
        if not budgets or any(not 0.0 < b <= 1.0 for b in budgets) or len(set(budgets)) != len(budgets):
            raise ValueError(f"budgets: got {self.budgets!r}, expected distinct numbers in (0, 1]")
        common.check_seeds(self.seeds)
        if self.extra_seeds:
            common.check_seeds(self.extra_seeds)
        common.check_choices("methods", self.methods, METHODS)
        if "all_data" not in self.methods:
            raise ValueError(f"methods: got {self.methods!r}, expected all_data among them (the reference)")
        if not 0.0 < self.moonshot_budget <= 1.0:
            raise ValueError(f"moonshot_budget: got {self.moonshot_budget!r}, expected a number in (0, 1]")
        if not self.moonshot_gap >= 0.0:
            raise ValueError(f"moonshot_gap: got {self.moonshot_gap!r}, expected a number >= 0 (points)")


# attent_lr_steps is left out of the quick run only to keep it within 2 minutes (it differs from attent
# in its lr layout alone, which the unit tests cover).
QUICK = Config(num_train=256, num_test=128, epochs=3, batch_size=32, learning_rate=5e-3, width=16, depth=1,
               num_heads=2, budgets=(0.5, 1.0), seeds=(0, 1), extra_seeds=(),
               methods=("all_data", "attent", "random", "infobatch"))


# =========================================================================== plans fitted to a budget

class Calibration:
    """What the cost model has measured so far: per-seed step time and reference cost, scoring and InfoBatch."""

    def __init__(self):
        self.step_s: dict[int, float] = {}
        self.reference_s: dict[int, float] = {}
        self.score_per_example_s: list[float] = []
        self.below_mean: list[float] = []

    def score_s(self, seed: int, batch_size: int) -> float:
        if self.score_per_example_s:
            return float(np.median(self.score_per_example_s))
        return _SCORE_SHARE * self.step_s[seed] / batch_size

    def m(self) -> float:
        return float(np.median(self.below_mean)) if self.below_mean else _BELOW_MEAN


def _teacher(train_config):
    from attent_jax.teaching.teacher import Teacher
    cfg = train_config.resolve()
    return Teacher(cfg.teacher_config(), cfg.data.num_train), cfg.run.epochs


def predicted_cost(train_config, cal: Calibration, seed: int, m: float | None = None) -> float:
    """The cost model's training seconds for one run (module docstring); InfoBatch epochs keep 1 − q·m."""
    cfg = train_config.resolve()
    teacher, epochs = _teacher(train_config)
    n, B = cfg.data.num_train, cfg.run.batch_size
    q = cfg.selection.infobatch_prune_ratio
    steps = sum((p.n_active if p.n_active is not None else round(n * (1 - q * (cal.m() if m is None else m)))) // B
                for p in teacher.schedule(epochs))
    return steps * cal.step_s[seed] + _scored_passes(cfg, teacher.schedule(epochs)) * n * cal.score_s(seed, B)


def _scored_passes(cfg, schedule) -> int:
    """Full passes' worth of examples the run's scoring passes score: with rescore "unseen" only the first
    pass scores all N (every example is seen from then on), so its later passes cost about nothing."""
    passes = sum(p.needs_full_scoring for p in schedule)
    return min(passes, 1) if cfg.selection.rescore == "unseen" else passes


def plan(config: Config, method: str, budget: float, seed: int, cal: Calibration):
    """``(train_config, description)``: `method` fitted to spend `budget` of the seed's all-data cost."""
    E = config.epochs
    if method == "all_data":
        e = max(1, round(budget * E))
        return timing.mnist1d_config(config, seed, selection="none", epochs=e, lr_schedule_by="steps"), {"epochs": e}
    if method == "random":
        return (timing.mnist1d_config(config, seed, selection="random", regime="scratch", ratio=float(budget),
                                      interval=1, first_epoch="select", lr_schedule_by="steps"),
                {"epochs": E, "ratio": float(budget)})
    target = budget * cal.reference_s[seed]
    if method in ATTENT_METHODS:
        lr_by = "epochs" if method == "attent" else "steps"
        rescore = "unseen" if method == "attent_unseen" else "all"

        def make(e):
            return timing.mnist1d_config(config, seed, selection="soft", regime="scratch", ratio="incremental",
                                         interval="incremental", epochs=e, lr_schedule_by=lr_by, rescore=rescore)
        costs = {e: predicted_cost(make(e), cal, seed) for e in range(2, 4 * E + 1)}
        e = min(costs, key=lambda k: (abs(costs[k] - target), k))
        return make(e), {"epochs": e}
    # InfoBatch: the most epochs (at most E) whose prune ratio q <= _Q_MAX lands on the budget.
    from attent_jax.teaching.teacher import _all_data_tail
    from attent_jax.teaching.teacher_config import TeacherConfig
    m, anneal = cal.m(), TeacherConfig().infobatch_anneal
    for e in range(E, 1, -1):
        tail = _all_data_tail(anneal, e)                 # the teacher's own all-data tail
        n_ib = tail - 1                                   # epochs 1 .. tail-1 prune; epoch 0 and the tail do not
        q = (e - budget * E) / (n_ib * m) if n_ib > 0 else 0.0
        if q <= _Q_MAX or e == 2:
            q = float(min(max(q, 0.0), _Q_MAX))
            return (timing.mnist1d_config(config, seed, selection="soft", regime="infobatch", epochs=e,
                                          infobatch_prune_ratio=q, lr_schedule_by="epochs"),
                    {"epochs": e, "prune_ratio": q})
    raise AssertionError("unreachable")


def _learn(cal: Calibration, train_config, run: dict) -> None:
    """Update the calibration from a measured run (scoring time per example; InfoBatch's below-mean share)."""
    cfg = train_config.resolve()
    teacher, epochs = _teacher(train_config)
    schedule = teacher.schedule(epochs)
    n, B = cfg.data.num_train, cfg.run.batch_size
    passes = _scored_passes(cfg, schedule)
    st = run["stages"]["train"]
    if passes and st["scoring_s"] > 0:
        cal.score_per_example_s.append(st["scoring_s"] / (passes * n))
    q = cfg.selection.infobatch_prune_ratio
    if cfg.selection.regime == "infobatch" and q > 0:
        kept = [row["steps"] * B / ((n // B) * B) for row, p in zip(run["epochs"], schedule) if p.kind == "infobatch"]
        if kept:
            cal.below_mean.append(float(np.clip((1.0 - np.mean(kept)) / q, 0.0, 1.0)))


# =========================================================================== the experiment

@contextlib.contextmanager
def training_on(dataset):
    """The training loop trains on `dataset` instead of loading (regenerating) the task's own in the block.

    Every run of a script shares one dataset; generating MNIST-1D again for each run would cost more than
    a quick run's training. `Trainer` loads its data via `attent_jax.training.loop.load_dataset`, swapped here.
    """
    from attent_jax.training import loop
    original = loop.load_dataset
    loop.load_dataset = lambda data_config: dataset
    try:
        yield
    finally:
        loop.load_dataset = original


def run(config: Config, out_dir: str) -> dict:
    """Every seed's reference, then every budget and method (interleaved); JSON/markdown/figure; the payload."""
    from attent_jax.training.stages import load_dataset

    extra_seeds = added_seeds(config)   # `--seeds 0 1 2 3 4` runs each once
    env = common.environment(list(config.seeds) + extra_seeds)
    cal = Calibration()
    points: dict[str, dict[float, list[dict]]] = {m: {b: [] for b in config.budgets} for m in config.methods}
    references: list[dict] = []
    dataset = load_dataset(plan(config, "all_data", 1.0, config.seeds[0], cal)[0].resolve().data)
    with training_on(dataset):
        for seed in config.seeds:
            _measure_seed(config, out_dir, seed, cal, points, references, close_pairs(config, points=None))
        extra = close_pairs(config, points)
        for seed in extra_seeds if extra else ():
            _measure_seed(config, out_dir, seed, cal, points, references, extra)
    payload = {"experiment": NAME, "config": dataclasses.asdict(config), "environment": env,
               "timing": "optimizer steps + scoring + selection; compilation, evaluation, checkpoints excluded "
                         "(experiments/timing.py); cost = measured training time / the same seed's all-data run's",
               "interval": "95% Student-t interval over seeds of the paired (same seed) accuracy difference",
               "calibration": {"score_per_example_s": cal.score_per_example_s, "below_mean_share": cal.below_mean},
               "references": references, "summary": summarize(config, points),
               "verdicts": verdict_rows(config, points), "moonshot": moonshot(config, points),
               "points": {m: {f"{b:g}": ps for b, ps in bs.items()} for m, bs in points.items()}}
    write(config, payload, out_dir)
    return payload


def close_pairs(config: Config, points: dict | None) -> set[tuple[str, float]]:
    """The (method, budget) pairs a seed runs: all of them (``points=None``), or the extra seeds' share.

    The evidence issue asks for 5+ seeds where two methods are within 2 std of each other. After
    `config.seeds`, a budget gets the extra seeds for each AtteNT method whose mean accuracy there is within
    2·max(std) of the compute-matched baseline's, plus that baseline; every extra seed also runs its own
    reference (budget 1.0's baseline, the moonshot's yardstick). Random subsets and InfoBatch keep
    `config.seeds` (no verdict is drawn on them). Seeds added because the first ones were close make
    those cells' intervals data-dependent: not nominal 95% intervals (the report says so).
    """
    if points is None:
        return {(m, b) for m in config.methods for b in config.budgets}
    pairs = set()
    for b in config.budgets:
        base = [p["accuracy_pct"] for p in points["all_data"][b]]
        for m in (m for m in ATTENT_METHODS if m in config.methods):
            acc = [p["accuracy_pct"] for p in points[m][b]]
            if len(acc) < 2 or len(base) < 2:
                continue
            spread = 2.0 * max(float(np.std(acc, ddof=1)), float(np.std(base, ddof=1)))
            if abs(float(np.mean(acc)) - float(np.mean(base))) <= spread:
                pairs |= {(m, b), ("all_data", b)}
    return pairs


def _measure_seed(config: Config, out_dir: str, seed: int, cal: Calibration, points: dict, references: list,
                  pairs: set) -> None:
    """One seed: its all-data reference (calibrating the cost model), then the (method, budget) `pairs`."""
    ref_config, _ = plan(config, "all_data", 1.0, seed, cal)
    ref = timing.timed_run(ref_config, os.path.join(out_dir, "runs", f"reference_seed{seed}"))
    st = ref["stages"]["train"]
    cal.reference_s[seed], cal.step_s[seed] = st["train_time_s"], st["steps_s"] / max(st["steps"], 1)
    references.append(_point("all_data", 1.0, seed, ref, ref, {"epochs": config.epochs}, st["train_time_s"]))
    print(f"[{NAME}] reference seed {seed}: {st['train_time_s']:.2f}s, acc "
          f"{timing.final(ref, 'eval_accuracy'):.4f}", flush=True)
    if 1.0 in config.budgets:
        points["all_data"][1.0].append(references[-1])   # the reference is budget 1.0's baseline
    for budget in sorted(config.budgets):
        for method in config.methods:
            if (method == "all_data" and budget == 1.0) or (method, budget) not in pairs:
                continue
            tc, desc = plan(config, method, budget, seed, cal)
            predicted = predicted_cost(tc, cal, seed)
            r = timing.timed_run(tc, os.path.join(out_dir, "runs", f"{method}_b{budget:g}_seed{seed}"))
            _learn(cal, tc, r)
            p = _point(method, budget, seed, r, ref, desc, predicted)
            points[method][budget].append(p)
            print(f"[{NAME}] {method:>15s} B={budget:g} seed {seed}: cost {p['cost']:.3f} of all data "
                  f"(planned {p['planned_cost']:.3f}), acc {p['accuracy_pct']:.2f}% {desc}", flush=True)


def _point(method, budget, seed, r, ref, desc, predicted_s) -> dict:
    ref_s = ref["stages"]["train"]["train_time_s"]
    st = r["stages"]["train"]
    return {"method": method, "budget": budget, "seed": seed, "plan": desc,
            "cost": st["train_time_s"] / ref_s, "planned_cost": predicted_s / ref_s,
            "train_time_s": st["train_time_s"], "reference_time_s": ref_s,
            "scoring_s": st["scoring_s"], "selection_s": st["selection_s"],
            "fraction_seen_of_reference": st["examples_seen"] / ref["stages"]["train"]["examples_seen"],
            "accuracy_pct": 100.0 * timing.final(r, "eval_accuracy"), "final_loss": timing.final(r, "eval_loss"),
            "load_average": r.get("load_average"), "workdir": r["workdir"]}


def main(argv=None) -> int:
    return common.run_main(argv, NAME, Config, QUICK, __doc__, run, report_only=lambda out: regenerate(out, Config))


if __name__ == "__main__":
    sys.exit(main())
