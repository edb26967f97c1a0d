"""The frontier's report: summary, verdicts, the moonshot check, markdown and figure, from the measured points.

`experiments.frontier` calls these at the end of a run; ``python -m
experiments.frontier --report-only [--out DIR]`` calls `regenerate`, which
rebuilds them from a saved frontier.json's points without training anything
(so a change to the report, not to the measurements, needs no re-run).

The moonshot (evidence issue): at some budget ≤ `moonshot_budget`, does a
named AtteNT configuration reach the accuracy of the all-data run at budget
1.0 minus `moonshot_gap` points, with the interval to back it? For every
AtteNT method and budget ≤ `moonshot_budget`: the paired (same seed)
difference to the all-data reference (budget 1.0), its mean and 95% Student-t
interval; "reached" needs the interval's lower end ≥ −gap. Otherwise the
report names the setting whose lower end comes closest.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from . import common, stats
from .stats import direction as verdict, paired_interval  # noqa: F401  (frontier.verdict / paired_interval, as before)

NAME = "frontier"
METHODS = ("all_data", "attent", "attent_lr_steps", "attent_unseen", "random", "infobatch")
LABELS = {"all_data": "all data, fewer epochs (compute-matched)", "attent": "AtteNT (Soft, paper schedules)",
          "attent_lr_steps": "AtteNT (Soft), lr over steps",
          "attent_unseen": "AtteNT (Soft), lr over steps, rescore unseen",
          "random": "random subsets each epoch (RS2)", "infobatch": "InfoBatch"}
ATTENT_METHODS = ("attent", "attent_lr_steps", "attent_unseen")


def added_seeds(config) -> list[int]:
    """The extra seeds a run adds at its close cells: `extra_seeds` less any already among `seeds`."""
    return [s for s in config.extra_seeds if s not in config.seeds]


def summarize(config, points: dict) -> dict:
    out = {}
    for method, by_budget in points.items():
        out[method] = {f"{b:g}": {"cost": stats.mean_std([p["cost"] for p in ps]),
                                  "accuracy_pct": stats.mean_std([p["accuracy_pct"] for p in ps]),
                                  "per_seed_accuracy_pct": [p["accuracy_pct"] for p in ps],
                                  "per_seed_cost": [p["cost"] for p in ps]}
                       for b, ps in by_budget.items()}
    return out


def interval_text(lo: float, hi: float) -> str:
    return "no interval" if math.isnan(lo) else f"95% CI [{lo:+.2f}, {hi:+.2f}]"


def verdict_rows(config, points: dict) -> list[dict]:
    rows = []
    for method in (m for m in ATTENT_METHODS if m in points):
        for b in sorted(config.budgets):
            base = {p["seed"]: p["accuracy_pct"] for p in points["all_data"][b]}
            diffs = [p["accuracy_pct"] - base[p["seed"]] for p in points[method][b]]
            mean, lo, hi = paired_interval(diffs)
            word, interval = verdict(lo, hi), interval_text(lo, hi)
            rows.append({"method": method, "budget": b, "diff_points": diffs, "mean": mean, "ci95": [lo, hi],
                         "verdict": word,
                         "sentence": f"At budget {b:g}, {LABELS[method]} minus the compute-matched all-data run: "
                                     f"{mean:+.2f} points ({interval}, {len(diffs)} seeds): {word}."})
    return rows


def markdown(config, env: dict, summary: dict, verdicts: list[dict], shot: dict) -> str:
    headers = ["budget", "method", "seeds", "measured cost (of all data)", "final test acc. (%)"]
    rows = []
    for b in sorted(config.budgets):
        for m in config.methods:
            s = summary[m][f"{b:g}"]
            rows.append([f"{b:g}", LABELS[m], len(s["per_seed_accuracy_pct"]), stats.fmt_mean_std(s["per_seed_cost"], 3),
                         stats.fmt_mean_std(s["per_seed_accuracy_pct"], 2)])
    vrows = [[f"{v['budget']:g}", LABELS[v["method"]], len(v["diff_points"]), f"{v['mean']:+.2f}",
              "—" if math.isnan(v["ci95"][0]) else f"[{v['ci95'][0]:+.2f}, {v['ci95'][1]:+.2f}]", v["verdict"]]
             for v in verdicts]
    srows = [[f"{r['budget']:g}", LABELS[r["method"]], len(r["diff_points"]), f"{r['measured_cost']:.3f}",
              f"{r['mean']:+.2f}", "—" if math.isnan(r["ci95"][0]) else f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]",
              "yes" if r["reached"] else "no"] for r in shot["rows"]]
    extra = added_seeds(config)
    seeds_line = (f"mean ± std over seeds {list(config.seeds)}"
                  + (f", plus seeds {extra} at the budgets where an AtteNT method came within 2 std of the baseline "
                     "(those AtteNT methods, the baseline, and each extra seed's reference at budget 1.0); as those cells "
                     "were picked because their first seeds were close, their intervals are not nominal 95% "
                     "intervals; the seeds column counts each cell's" if extra else ""))
    lines = ["# Accuracy against measured training cost (the frontier)\n",
             f"MNIST-1D, {config.num_train} training / {config.num_test} test examples; reference: all data, "
             f"{config.epochs} epochs, batch {config.batch_size}; {seeds_line}.\n",
             f"Measured on: {common.environment_line(env)}.\n",
             "Cost = measured training time (steps + scoring + selection; no compilation or evaluation) over the "
             "same seed's all-data run's. Every method's learning rate is fully decayed at its own end.\n",
             stats.markdown_table(headers, rows),
             "AtteNT minus the compute-matched baseline (points; paired by seed; 95% Student-t interval):\n",
             stats.markdown_table(["budget", "method", "seeds", "mean difference", "95% interval", "verdict"], vrows),
             f"AtteNT at a budget <= {shot['max_budget']:g} minus the all-data run at budget 1.0 (points; paired by "
             "seed; 95% Student-t interval; reached: lower end >= "
             f"-{shot['gap_points']:g}):\n",
             stats.markdown_table(["budget", "method", "seeds", "measured cost", "mean difference", "95% interval",
                                   "reached"], srows),
             shot["sentence"] + "\n"]
    return "\n".join(lines) + "\n"


def plot(config, summary: dict, out_dir: str) -> str:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in config.methods:
        bs = sorted(config.budgets)
        x = np.array([summary[m][f"{b:g}"]["cost"][0] for b in bs])
        y = np.array([summary[m][f"{b:g}"]["accuracy_pct"][0] for b in bs])
        sd = np.array([summary[m][f"{b:g}"]["accuracy_pct"][1] for b in bs])
        order = np.argsort(x)
        ax.plot(x[order], y[order], marker="o", ms=4, label=LABELS[m])
        ax.fill_between(x[order], (y - sd)[order], (y + sd)[order], alpha=0.15)
    ax.set_xlabel("measured training cost (share of the all-data run)")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    extra = added_seeds(config)
    ax.set_title(f"MNIST-1D frontier (mean over {len(config.seeds)} seeds" + (f", {len(config.seeds) + len(extra)} where "
                 "AtteNT is close" if extra else "") + "; band ±1 std)")
    return common.save_figure(fig, os.path.join(out_dir, f"{NAME}.png"))




def moonshot(config, points: dict) -> dict:
    """The moonshot check (module docstring): every candidate, the best one, and whether it is reached."""
    ref = {p["seed"]: p["accuracy_pct"] for p in points["all_data"][1.0]} if 1.0 in points["all_data"] else {}
    rows = []
    for method in (m for m in ATTENT_METHODS if m in points):
        for b in sorted(x for x in config.budgets if x <= config.moonshot_budget):
            ps = points[method][b]
            diffs = [p["accuracy_pct"] - ref[p["seed"]] for p in ps if p["seed"] in ref]
            mean, lo, hi = paired_interval(diffs)
            rows.append({"method": method, "budget": b, "diff_points": diffs, "mean": mean, "ci95": [lo, hi],
                         "measured_cost": stats.mean_std([p["cost"] for p in ps])[0],
                         "reached": bool(not math.isnan(lo) and lo >= -config.moonshot_gap)})
    scored = [r for r in rows if not math.isnan(r["ci95"][0])]
    best = max(scored, key=lambda r: (r["ci95"][0], r["mean"])) if scored else None
    reached = [r for r in rows if r["reached"]]
    if best is None:
        sentence = (f"Moonshot: no AtteNT run at a budget <= {config.moonshot_budget:g} with two or more seeds; "
                    "not decided.")
    else:
        head = (f"reached by {LABELS[reached[0]['method']]} at budget {reached[0]['budget']:g}" if reached
                else "not reached")
        sentence = (f"Moonshot (within {config.moonshot_gap:g} points of all data at budget 1.0, at a budget <= "
                    f"{config.moonshot_budget:g}): {head}; closest: {LABELS[best['method']]} at budget "
                    f"{best['budget']:g} (measured cost {best['measured_cost']:.3f}), {best['mean']:+.2f} points, "
                    f"95% CI [{best['ci95'][0]:+.2f}, {best['ci95'][1]:+.2f}].")
    return {"gap_points": config.moonshot_gap, "max_budget": config.moonshot_budget, "rows": rows,
            "best": best, "reached": bool(reached), "sentence": sentence}


def points_from_payload(payload: dict) -> dict:
    """A frontier.json's points with float budgets, as `run` builds them."""
    return {m: {float(b): ps for b, ps in bs.items()} for m, bs in payload["points"].items()}


def regenerate(out_dir: str, config_cls) -> dict:
    """Rebuild summary, verdicts, moonshot, markdown and figure from ``out_dir/frontier.json``; the payload."""
    path = os.path.join(out_dir, f"{NAME}.json")
    if not os.path.isfile(path):
        raise ValueError(f"out: got {out_dir!r}, expected a folder holding {NAME}.json (run the frontier first)")
    with open(path) as fh:
        payload = json.load(fh)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in payload["config"].items()}
    fields.setdefault("extra_seeds", ())   # a file from before extra seeds existed ran none
    config = config_cls(**fields)
    payload["config"] = {**payload["config"], **{k: v for k, v in vars(config).items() if k not in payload["config"]}}
    points = points_from_payload(payload)
    payload["summary"] = summarize(config, points)
    payload["verdicts"] = verdict_rows(config, points)
    payload["moonshot"] = moonshot(config, points)
    write(config, payload, out_dir)
    return payload


def write(config, payload: dict, out_dir: str) -> None:
    """frontier.json, frontier.md and frontier.png; the verdict sentences printed."""
    figure = plot(config, payload["summary"], out_dir)
    md = markdown(config, payload["environment"], payload["summary"], payload["verdicts"], payload["moonshot"])
    paths = common.write_outputs(out_dir, NAME, payload, md)
    for v in payload["verdicts"]:
        print(f"[{NAME}] {v['sentence']}")
    print(f"[{NAME}] {payload['moonshot']['sentence']}")
    common.print_outputs(NAME, [paths["json"], paths["markdown"], figure])
