"""`attent plot RUN [RUN ...] [--out FILE]`: loss and accuracy of runs against wall time and examples seen.

One PNG, a 2×2 grid: rows loss and accuracy, columns wall-clock time and
training examples seen (the cost axes on which AtteNT's selection should win,
§5 Table 3), one colour per run. Thin lines are training records (every
``log_every`` steps), lines with dots the per-epoch evaluation (arith: exact
match as the accuracy).

Example:
    attent plot runs/full runs/soft --out compare.png
"""

from __future__ import annotations

import argparse
import json
import os


def read_metrics(workdir_or_file: str) -> list[dict]:
    """The records of a run's metrics.jsonl (a folder or the file itself)."""
    path = workdir_or_file
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    if not os.path.isfile(path):
        raise ValueError(f"run: got {workdir_or_file!r}, expected a run folder holding metrics.jsonl")
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return records


_X_AXES = (("wall_time", "wall-clock time (s)"), ("examples_seen", "training examples seen"))


def _series(records: list[dict], event: str, key: str, x_key: str):
    points = [(r[x_key], r[key]) for r in records if r.get("event") == event and key in r and x_key in r]
    return [p[0] for p in points], [p[1] for p in points]


def plot_runs(runs: list[str], out: str | None = None) -> str:
    """Draw the runs' curves into a PNG; returns its path (default: RUN/curves.png for one run, else ./curves.png)."""
    if not runs:
        raise ValueError("runs: got none, expected at least one run folder")
    data = [(run, read_metrics(run)) for run in runs]
    out = out or (os.path.join(runs[0], "curves.png") if len(runs) == 1 else "curves.png")
    if os.path.splitext(out)[1].lower() != ".png":
        raise ValueError(f"out: got {out!r}, expected a .png file name")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [os.path.basename(os.path.normpath(run)) for run in runs]
    if len(set(names)) < len(names):
        names = [os.path.normpath(run) for run in runs]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), squeeze=False)
    any_accuracy = False
    for i, ((run, records), name) in enumerate(zip(data, names)):
        color = f"C{i % 10}"
        acc_key = "exact_match" if any("exact_match" in r for r in records) else "eval_accuracy"
        for col, (x_key, _) in enumerate(_X_AXES):
            x, y = _series(records, "train", "train_loss", x_key)
            axes[0, col].plot(x, y, color=color, alpha=0.35, lw=0.8)
            x, y = _series(records, "eval", "eval_loss", x_key)
            axes[0, col].plot(x, y, color=color, marker=".", label=f"{name} (eval)")
            x, y = _series(records, "train", "train_accuracy", x_key)
            axes[1, col].plot(x, y, color=color, alpha=0.35, lw=0.8)
            x, y = _series(records, "eval", acc_key, x_key)
            any_accuracy = any_accuracy or bool(y)
            axes[1, col].plot(x, y, color=color, marker=".",
                              label=f"{name} ({'exact match' if acc_key == 'exact_match' else 'eval'})")
    for col, (_, label) in enumerate(_X_AXES):
        axes[0, col].set_ylabel("loss (thin: train)")
        axes[1, col].set_ylabel("accuracy (thin: train)")
        axes[1, col].set_xlabel(label)
        axes[0, col].set_yscale("log")
        for row in range(2):
            axes[row, col].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    if any_accuracy:
        axes[1, 0].legend(fontsize=8)
    else:
        for col in range(2):
            axes[1, col].text(0.5, 0.5, "no accuracy (regression task)", ha="center", va="center",
                              transform=axes[1, col].transAxes)
    fig.suptitle("AtteNT runs: loss and accuracy against cost")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders of attent train (holding metrics.jsonl)")
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="PNG to write (default: RUN/curves.png for one run, ./curves.png for several)")


def cli(args: argparse.Namespace) -> int:
    print(plot_runs(args.runs, args.out))
    return 0
