"""Summaries, verdicts, NTK settling measures, markdown and figures of `experiments.mae_pretrain`."""

from __future__ import annotations

import math
import os

import numpy as np

from attent_jax.learner.settling import (collapsing_path, linear_path, relative_distance as _rel, settled_fraction,
                                        window_change, window_settled)

from . import common, frontier, stats

LABELS = {"all_data": "all data, fewer epochs (compute-matched)", "attent": "AtteNT (Soft, paper schedules)",
          "random": "random subsets each epoch (RS2)", "infobatch": "InfoBatch"}
METRICS = {"probe_acc_pct": "linear probe", "finetune_acc_pct": "fine-tune"}


# =========================================================================== the race

def summarize(points: dict) -> dict:
    """Per method and budget: cost and downstream accuracies, mean ± std and per seed."""
    out = {}
    for method, by_budget in points.items():
        out[method] = {}
        for b, ps in by_budget.items():
            row = {"per_seed_cost": [p["cost"] for p in ps], "cost": stats.mean_std([p["cost"] for p in ps]),
                   "per_seed_cost_wall": [p.get("cost_wall", p["cost"]) for p in ps],
                   "per_seed_pretrain_eval_loss": [p["pretrain_eval_loss"] for p in ps]}
            for key in METRICS:
                row[key] = stats.mean_std([p[key] for p in ps])
                row["per_seed_" + key] = [p[key] for p in ps]
            out[method][f"{b:g}"] = row
    return out


def verdicts(points: dict, budgets) -> list[dict]:
    """AtteNT minus the compute-matched all-data run, per budget and downstream metric, paired by seed."""
    rows = []
    if "attent" not in points:
        return rows
    for b in sorted(budgets):
        for key, what in METRICS.items():
            base = {p["seed"]: p[key] for p in points["all_data"][b]}
            diffs = [p[key] - base[p["seed"]] for p in points["attent"][b]]
            mean, lo, hi = frontier.paired_interval(diffs)
            word, interval = frontier.verdict(lo, hi), frontier.interval_text(lo, hi)
            rows.append({"budget": b, "metric": key, "diff_points": diffs, "mean": mean, "ci95": [lo, hi],
                         "verdict": word,
                         "sentence": f"At budget {b:g}, {what} accuracy after AtteNT pre-training minus after the "
                                     f"compute-matched all-data pre-training: {mean:+.2f} points ({interval}, "
                                     f"{len(diffs)} seeds): {word}."})
    return rows


# =========================================================================== NTK settling

def _settled(values, epochs, T: int, tolerance: float) -> float:
    return settled_fraction(values, epochs, T, tolerance, step=1)


def settling(kernels: list, epochs: list, k_2t: np.ndarray, config) -> dict:
    """The trust issue's settling measures of kernels K_0..K_T (module docstring of mae_pretrain), and the control.

    window: w_i = ‖K_i − K_{i+Δ}‖/‖K_0‖ for i in 0..T−Δ, and window_current the same over ‖K_i‖
    (`attent_jax.learner.settling`: settled only when both views are); ref: r_i = ‖K_i − K'_2T‖/‖K'_2T‖ for i in 0..T;
    each settled from the first epoch after which it stays ≤ tolerance × its value at initialization.
    The control moves K_0 → K'_2T at constant speed over the same epochs: it must never settle early.
    """
    T = epochs[-1]
    tol = config.settle_tolerance
    lag = max(int(round(config.window_fraction * T)), 1)

    def measures(ks):
        ref = [_rel(k, k_2t) for k in ks]
        return window_settled(ks, lag, epochs, T, tol, 1), ref, _settled(ref, epochs, T, tol)

    w_s, ref, r_s = measures(kernels)
    path = linear_path(kernels[0], k_2t, 2 * T + 1)[:len(kernels)]   # K_0 → K'_2T over 2T epochs
    cw_s, _, cr_s = measures(path)
    collapse_s = window_settled(collapsing_path(kernels[0], lag, len(kernels)), lag, epochs, T, tol, 1)["both"]
    window = window_change(kernels, lag).tolist()
    frac = config.settle_fraction
    return {"lag_epochs": lag, "window": window, "window_current": window_change(kernels, lag, "current").tolist(),
            "window_epochs": epochs[:len(window)], "ref_distance": ref,
            "window_settled": w_s["both"], "window_settled_initial": w_s["initial"],
            "window_settled_current": w_s["current"], "ref_settled": r_s,
            "control_window_settled": cw_s["both"], "control_window_collapsing_settled": collapse_s,
            "control_ref_settled": cr_s, "window_holds": w_s["both"] <= frac, "ref_holds": r_s <= frac,
            "control_caught": cw_s["both"] > frac and cr_s > frac and collapse_s > frac,
            "total_drift": _rel(kernels[-1], kernels[0]), "ref_at_T": ref[-1] / ref[0],
            "frobenius_norm": [float(np.linalg.norm(k)) for k in kernels]}


# =========================================================================== markdown and figures

def _race_tables(part: dict) -> list[str]:
    headers = ["budget", "method", "measured cost (of all data, step units)", "wall-time cost",
               "linear probe acc. (%)", "fine-tune acc. (%)", "pre-training eval loss"]
    rows = []
    for b in part["budgets"]:
        for m in part["methods"]:
            s = part["summary"][m][f"{b:g}"]
            rows.append([f"{b:g}", LABELS[m], stats.fmt_mean_std(s["per_seed_cost"], 3),
                         stats.fmt_mean_std(s["per_seed_cost_wall"], 3),
                         stats.fmt_mean_std(s["per_seed_probe_acc_pct"], 2),
                         stats.fmt_mean_std(s["per_seed_finetune_acc_pct"], 2),
                         stats.fmt_mean_std(s["per_seed_pretrain_eval_loss"], 4)])
    u = part["untrained"]
    rows.append(["0", "no pre-training (trunk at init)", "0", "0", stats.fmt_mean_std([r["probe_acc_pct"] for r in u], 2),
                 stats.fmt_mean_std([r["finetune_acc_pct"] for r in u], 2), "—"])
    vrows = [[f"{v['budget']:g}", METRICS[v["metric"]], f"{v['mean']:+.2f}",
              # A one-seed interval is NaN, null once read back from the JSON (--report-only).
              "—" if v["ci95"][0] is None or math.isnan(v["ci95"][0]) else f"[{v['ci95'][0]:+.2f}, {v['ci95'][1]:+.2f}]",
              v["verdict"]]
             for v in part["verdicts"]]
    return [stats.markdown_table(headers, rows),
            "AtteNT minus the compute-matched all-data pre-training (downstream points; paired by seed):\n",
            stats.markdown_table(["budget", "downstream", "mean difference", "95% interval", "verdict"], vrows)]


def markdown(config, env: dict, payload: dict) -> str:
    race = payload["race"]
    lines = ["# AtteNT during MAE pre-training, measured downstream (paper Table 2 setting, CPU scale)\n",
             f"MNIST-1D, encoder width {config.width}, depth {config.depth}, patch {config.patch_size}, mask ratio "
             f"{config.mask_ratio}, decoder width {config.decoder_width}; downstream on {config.num_train} labelled "
             f"/ {config.num_test} test examples: linear probe ({config.probe_steps} Adam steps) and full fine-tune "
             f"({config.finetune_epochs} epochs). Mean ± std over seeds {list(config.seeds)}.\n",
             f"Measured on: {common.environment_line(env)}; 1-min load at the end "
             f"{payload['load_average_end'][0]:.1f}.\n",
             "Cost = measured pre-training time (steps + scoring + selection) in the run's own optimizer steps, "
             "over the same for the same seed's all-data run (load drift between runs cancels); wall-time cost: "
             "the plain ratio of seconds.\n",
             f"## The race: {race['num_train']} examples, all-data reference {race['epochs']} epochs\n",
             *_race_tables(race)]
    if "long" in payload:
        lp = payload["long"]
        lines += [f"## Long pre-training: {lp['num_train']} examples, all-data reference {lp['epochs']} epochs\n",
                  *_race_tables(lp)]
    if "ntk" in payload:
        nt = payload["ntk"]
        rows = []
        for sel, r in nt["runs"].items():
            rows.append([sel, r["lag_epochs"], f"{r['window_settled']:.3f}", f"{r['ref_settled']:.3f}",
                         f"{r['ref_at_T']:.3f}", f"{r['total_drift']:.3f}",
                         f"{r['control_window_settled']:.3f} / {r['control_ref_settled']:.3f}",
                         "caught" if r["control_caught"] else "MISSED"])
        lines += [f"## NTK of the reconstruction across pre-training (Figures 5-6), T = {nt['epochs_T']} epochs\n",
                  f"Kernel on the 10 training examples {nt['kernel_example_indices']} (first of each class), each "
                  f"under its own mask, traced over its masked patches. t_s / T: first epoch (over T) from which the "
                  f"measure stays ≤ {config.settle_tolerance} of its value at initialization (window change over Δ "
                  f"epochs; distance to a 2T-epoch run's kernel); the paper's claim read as t_s / T ≤ "
                  f"{config.settle_fraction}.\n",
                  stats.markdown_table(["selection", "Δ (epochs)", "window change t_s/T", "2T-kernel distance t_s/T",
                                        "r_T / r_0", "‖K_T − K_0‖/‖K_0‖", "control t_s/T (window / 2T)",
                                        "control"], rows)]
    return "\n".join(lines) + "\n"


def plot(config, payload: dict, out_dir: str) -> list[str]:
    plt = common.pyplot()
    parts = [p for p in ("race", "long") if p in payload]
    fig, axes = plt.subplots(len(parts), 2, figsize=(10, 3.8 * len(parts)), squeeze=False)
    for row, part in zip(axes, parts):
        d = payload[part]
        for ax, key in zip(row, METRICS):
            for m in d["methods"]:
                xs = [d["summary"][m][f"{b:g}"]["cost"][0] for b in d["budgets"]]
                ys = [d["summary"][m][f"{b:g}"][key][0] for b in d["budgets"]]
                es = [d["summary"][m][f"{b:g}"][key][1] for b in d["budgets"]]
                ax.errorbar(xs, ys, yerr=np.nan_to_num(es), marker="o", ms=4, capsize=3, label=LABELS[m])
            u = [r[key] for r in d["untrained"]]
            ax.axhline(np.mean(u), color="grey", ls=":", label="no pre-training")
            ax.set_xlabel("measured pre-training cost (share of the all-data run)")
            ax.set_ylabel(f"{METRICS[key]} test accuracy (%)")
            ax.set_title(f"{part}: {d['num_train']} examples, reference {d['epochs']} epochs", fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    paths = [common.save_figure(fig, os.path.join(out_dir, "mae_pretrain.png"))]
    if "ntk" in payload:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for sel, r in payload["ntk"]["runs"].items():
            line, = ax.plot(r["window_epochs"], r["window"], marker="o", ms=3, label=f"window change, {sel}")
            ax.plot(r["epochs"], r["ref_distance"], ls="--", marker=".", color=line.get_color(),
                    label=f"distance to the 2T kernel, {sel}")
        ax.set_xlabel("pre-training epoch (0 = initialization)")
        ax.set_ylabel("relative Frobenius distance")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        ax.set_title("Reconstruction NTK on 10 fixed examples across MAE pre-training", fontsize=10)
        paths.append(common.save_figure(fig, os.path.join(out_dir, "mae_ntk.png")))
    return paths
