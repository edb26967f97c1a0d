"""The README's evidence blocks: the frontier's verdicts and the dial's edges, rendered from their result files.

Each block is a function of `readme_values.Results` returning markdown, registered
in `experiments.readme.BLOCKS`. The one-line headlines are composed from the
verdicts in the files (never typed), so a re-run that changes a verdict changes
the sentence.
"""

from __future__ import annotations

import math

from . import stats
from .frontier_report import LABELS, verdict
from .readme_values import Results

EXP = "experiments/results"
FRONTIER = f"{EXP}/frontier/frontier.json"
DIAL = f"{EXP}/dial/dial.json"


def _table(headers, rows) -> str:
    return stats.markdown_table(headers, rows).rstrip("\n") + "\n"


def _interval(ci) -> str:
    return "—" if ci[0] is None or math.isnan(ci[0]) else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _budgets(words: list[str]) -> str:
    return ", ".join(words[:-1]) + (" and " if len(words) > 1 else "") + words[-1]


def frontier_verdicts(results: Results) -> str:
    """Per budget and AtteNT method: both measured costs and accuracies, the paired difference, the verdict."""
    data = results.load(FRONTIER)
    s = data["summary"]
    rows = []
    for v in data["verdicts"]:
        b = f"{v['budget']:g}"
        a = s[v["method"]][b]
        # The baseline over the cell's own seeds (it may have more: extra seeds, references), so that its
        # accuracy minus the baseline's is the paired difference shown.
        seeds = {p["seed"] for p in data["points"][v["method"]][b]}
        base = [p for p in data["points"]["all_data"][b] if p["seed"] in seeds]
        rows.append([b, LABELS[v["method"]], len(v["diff_points"]), stats.fmt_mean_std(a["per_seed_cost"], 2),
                     stats.fmt_mean_std([p["cost"] for p in base], 2), stats.fmt_mean_std(a["per_seed_accuracy_pct"], 2),
                     stats.fmt_mean_std([p["accuracy_pct"] for p in base], 2), f"{v['mean']:+.2f}",
                     _interval(v["ci95"]), v["verdict"]])
    return _table(["budget", "method", "seeds", "its cost", "baseline's cost", "its acc. (%)", "baseline acc. (%)",
                   "difference (points)", "95% interval", "verdict"], rows)


def frontier_others(results: Results) -> str:
    """The other methods on the same budgets: accuracy (mean ± std) and measured cost."""
    data = results.load(FRONTIER)
    budgets, main = sorted(data["config"]["budgets"]), set(data["config"]["seeds"])

    def cell(m, b):
        # The main seeds only, as every method has them: a cell with extra seeds would not compare.
        ps = [p for p in data["points"][m][f"{b:g}"] if p["seed"] in main]
        return (f"{stats.fmt_mean_std([p['accuracy_pct'] for p in ps], 2)} "
                f"({stats.mean_std([p['cost'] for p in ps])[0]:.2f})")
    rows = [[LABELS[m]] + [cell(m, b) for b in budgets] for m in data["config"]["methods"]]
    return _table(["method: acc. % (measured cost)"] + [f"B = {b:g}" for b in budgets], rows)


def frontier_headline(results: Results) -> str:
    """One plain sentence per AtteNT method: at which budgets it is better, worse or not resolved."""
    data = results.load(FRONTIER)
    lines = []
    for method in dict.fromkeys(v["method"] for v in data["verdicts"]):
        by = {}
        for v in data["verdicts"]:
            if v["method"] == method:
                by.setdefault(v["verdict"].split(" (")[0], []).append(f"{v['budget']:g}")
        parts = [f"{word} at budget{'s' if len(bs) > 1 else ''} {_budgets(bs)}" for word, bs in
                 sorted(by.items(), key=lambda kv: ("better", "not resolved", "worse").index(kv[0])
                        if kv[0] in ("better", "not resolved", "worse") else 3)]
        counts = {v["budget"]: len(v["diff_points"]) for v in data["verdicts"] if v["method"] == method}
        base = len(data["config"]["seeds"])
        more = sorted(b for b, n in counts.items() if n > base)
        seeds = f"{base} seeds" + (f", {max(counts.values())} at budget{'s' if len(more) > 1 else ''} "
                                   f"{_budgets([f'{b:g}' for b in more])}" if more else "")
        lines.append(f"**{LABELS[method]}** against all data for fewer epochs on the same measured budget: "
                     f"{'; '.join(parts)} ({seeds}; 95% paired intervals).")
    lines.append(data["moonshot"]["sentence"])
    return "\n".join(f"- {line}" for line in lines) + "\n"


def dial_edges(results: Results) -> str:
    """Per dial level: AtteNT's accuracy minus each other method's, with the interval."""
    data = results.load(DIAL)
    versus = list(dict.fromkeys(e["versus"] for e in data["edges"]))
    rows = []
    for d in data["datasets"]:
        es = {e["versus"]: e for e in data["edges"] if e["dataset"] == d["name"]}
        rows.append([d["dial"] or "standard", f"{100 * d['level']:g}%"]
                    + [f"{es[o]['mean']:+.2f} {_interval(es[o]['ci95'])}" for o in versus])
    return _table(["dial", "level"] + [f"AtteNT − {LABELS[o]}" for o in versus], rows)


def dial_headline(results: Results) -> str:
    """One sentence per compared method: at which dial levels AtteNT's edge is better, worse or not resolved."""
    data = results.load(DIAL)
    names = {"easy_share": "easy", "duplicate_share": "near-duplicates", "label_noise": "label noise", None: "standard"}
    done, planned = data.get("seeds_completed"), data.get("config", {}).get("seeds")
    lines = []
    for versus in dict.fromkeys(e["versus"] for e in data["edges"]):
        by: dict[str, list[str]] = {}
        for e in (e for e in data["edges"] if e["versus"] == versus):
            level = "standard" if e["dial"] is None else f"{names.get(e['dial'], e['dial'])} {100 * e['level']:g}%"
            word = verdict(*(math.nan if x is None else x for x in e["ci95"])).split(" (")[0]
            by.setdefault(word, []).append(level)
        parts = [f"{word} at {_budgets(levels)}" for word, levels in
                 sorted(by.items(), key=lambda kv: ("better", "not resolved", "worse", "").index(
                     kv[0] if kv[0] in ("better", "not resolved", "worse") else ""))]
        seeds = f"{len(done)} seeds" if done is not None else "seeds"
        if done is not None and planned and len(done) < len(planned):
            seeds += f" of {len(planned)} planned"
        lines.append(f"**AtteNT against {LABELS[versus]}** at budget {data.get('config', {}).get('budget', 0.5):g}: "
                     f"{'; '.join(parts)} ({seeds}, 95% paired intervals).")
    return "\n".join(f"- {line}" for line in lines) + "\n"
