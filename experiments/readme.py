"""Rewrite README.md's numbers from the committed result files, so that none is typed by hand.

``python -m experiments.readme`` (from the repository root) rewrites README.md
in place; ``--check`` writes nothing and exits 1, with a one-line summary of
what differs, when README.md is not what the result files give (the tests run
it, so a retyped or stale number fails CI).

Three kinds of markers, all HTML comments (GitHub hides them):

``<!-- source: PATH -->``
    sets the JSON file, relative to the README's folder, that the inline values
    after it read from (until the next ``source``).

``<!-- v: EXPR:FMT -->VALUE<!-- /v -->``
    an inline value; VALUE is replaced by EXPR evaluated on the current source
    file and formatted with the Python format spec FMT (``.2f``, ``.3g``,
    ``.1%``, ``d``; ``:FMT`` may be left out). ``PATH#EXPR`` reads another file
    for this one value. EXPR is a small expression language over the JSON
    (parsed with `ast`, never `eval`):

    - ``summary.attent.final_accuracy_pct``, ``rows[3].time_s``,
      ``checks["odd key"]``: keys and list indices. A list of dicts followed by
      ``.key`` gives the key of every element (``where(rows,
      devices=1).selection_s``).
    - numbers, ``+ - * /``, comparisons; on a list of numbers they act
      elementwise (None and non-finite values become NaN).
    - functions: ``mean`` and ``std`` (of the finite values; std with ddof=1,
      as `stats.mean_std`), ``ms`` (mean ± std, formatted with FMT for both),
      ``min``, ``max``, ``sum``, ``count`` (how many are true), ``len``,
      ``abs``, ``where(rows, key=value, ...)`` (rows whose key equals value, or
      is in value when it is a list), ``one(rows, key=value, ...)`` (exactly
      one such row), ``at(values, keys, key)`` (the value where keys == key,
      e.g. a curve at a step), ``flat(x)`` (nested lists as one list),
      ``column(lists, i)`` (element i of each), ``verdict(ok)`` (PASS / MISS,
      as the experiments write it), ``json(PATH)`` (another file's root).

    A list value is written as its elements joined by ", "; a string as it is.
    A leading minus is written "−" (U+2212), the README's typography.

``<!-- generated: KEY -->`` … ``<!-- /generated -->``
    a whole block (a table, or a line) rendered by ``BLOCKS[KEY]`` below from
    its result files.

A missing file, key or block is a one-line `ValueError` naming it and the
README line of the marker (exit code 2 from the command line).

For instance, after ``<!-- source: experiments/results/from_scratch/from_scratch.json -->``,
``<!-- v: mean(summary.attent.final_accuracy_pct):.2f -->93.18<!-- /v -->`` is
AtteNT's mean final accuracy over seeds, and ``<!-- v: mean((summary.attent.scoring_s
+ summary.attent.selection_s) / summary.attent.train_time_s):.1% -->12.2%<!-- /v -->``
the mean over seeds of its scoring share.

Example:
    $ python -m experiments.readme            # rewrite README.md
    $ python -m experiments.readme --check    # exit 1 if README.md is stale
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Callable

from . import stats
from . import readme_evidence
from .readme_values import Results, _mean, _minus, _one, inline_value

# One pass over the README finds the three markers in order (a source applies to the values after it).
MARKERS = re.compile(r"<!-- source: (?P<source>\S+) -->"
                     r"|<!-- v: (?P<spec>[^\n]*?) -->(?P<old>[^\n]*?)<!-- /v -->"
                     r"|<!-- generated: (?P<key>\S+) -->\n(?P<block>.*?)<!-- /generated -->", re.S)

# =========================================================================== blocks

THEORY = "theory/results"
EXP = "experiments/results"


def _num(x) -> str:
    """As theory/report.py writes a measured number."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return str(x)
    return _minus(f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}")


def _threshold_text(row) -> str:
    t = row["threshold"]
    if row["relation"] == "in":
        return f"in [{_num(t[0])}, {_num(t[1])}]"
    return f"{row['relation']} {_num(t)}"


def closeness(row) -> float:
    """How close an identity row is to its threshold, for "worst measured": 1 at the threshold, > 1 failing.

    For a bound t: 1 + (v − t)/|t| below an upper bound, 1 + (t − v)/|t| above a
    lower one (v/t for a positive upper bound: 1e-15 against 1e-10 is 1e-5); for
    an interval, the distance from its middle in half-widths.
    """
    v = float(row["value"])
    if not math.isfinite(v):
        return math.inf
    t, rel = row["threshold"], row["relation"]
    if rel == "in":
        lo, hi = map(float, t)
        half = (hi - lo) / 2
        return abs(v - (lo + hi) / 2) / half if half > 0 else (0.0 if v == lo else math.inf)
    t = float(t)
    over = (v - t) if rel in ("<=", "<") else (t - v)
    if t == 0:
        return 1.0 + math.copysign(math.inf, over) if over else 1.0
    return 1.0 + over / abs(t)


def _table(headers, rows) -> str:
    return stats.markdown_table(headers, rows).rstrip("\n")


def theory_identities(results: Results) -> str:
    summary = results.load(f"{THEORY}/summary.json")
    rows = []
    for script in dict.fromkeys(c["script"] for c in summary["checks"]):
        report = results.load(f"{THEORY}/{script}.json")
        ids = [c for c in summary["checks"] if c["script"] == script and c["kind"] == "identity"]
        if not ids:
            continue
        worst = max(ids, key=closeness)
        passed = sum(c["passed"] for c in ids)
        rows.append([f"`{script}`", (report["claim"]), f"{passed}/{len(ids)}",
                     f"{(worst['name'])}: {_num(worst['value'])} ({_threshold_text(worst)})",
                     "PASS" if passed == len(ids) else "**FAIL**"])
    return _table(["script", "claim checked", "identities passing", "worst measured (threshold)", "result"], rows)


def theory_claims(results: Results) -> str:
    summary = results.load(f"{THEORY}/summary.json")
    rows = [[f"`{c['script']}`", (c["name"]), _num(c["value"]), _threshold_text(c),
             c["status"] if c["passed"] else f"**{c['status']}**", (c["detail"])]
            for c in summary["checks"] if c["kind"] == "claim"]
    return _table(["script", "paper claim", "measured", "threshold", "result", "what was measured"], rows)


def theory_controls(results: Results) -> str:
    summary = results.load(f"{THEORY}/summary.json")
    controls = [c for c in summary["checks"] if c["kind"] == "control"]
    missed = [f"{c['script']}: {c['name']}" for c in controls if not c["passed"]]
    scripts = len({c["script"] for c in controls})
    if missed:
        return f"{len(controls)} negative controls in {scripts} scripts, {len(missed)} MISSED: {'; '.join(missed)}."
    return f"{len(controls)} negative controls in {scripts} scripts, all caught."


def _seconds(t: float) -> str:
    return f"{t:.3f}" if t < 1 else f"{t:.3g}"


def bench_ntk(results: Results) -> str:
    data = results.load(f"{EXP}/bench_ntk/bench_ntk.json")
    rows, target = [], data["target"]
    for n in data["config"]["sizes"]:
        by = {r["implementation"]: r for r in data["rows"] if r["N"] == n}
        chunk = by["jacobian"]["chunk"]
        speedup = by["analytic"]["speedup_vs_jacobian"]
        cell = f"{speedup:.1f}×"
        if n == target["N"]:
            cell = f"**{cell}** (target ≥ {target['speedup_needed']:g}×)"
        rows.append([f"{n}" + (f" (chunks of {chunk})" if chunk else "")]
                    + [f"{_seconds(by[i]['time_s'])} s" for i in ("jacobian", "ntvp", "analytic")] + [cell])
    return _table(["N", "jacobian", "ntvp", "analytic", "analytic speed-up"], rows)


def from_scratch(results: Results) -> str:
    data = results.load(f"{EXP}/from_scratch/from_scratch.json")
    run = data["runs"]["attent"][0]["config"]["selection"]  # the label states the schedule the runs used
    labels = {"all_data": "all data (baseline)",
              "attent": f"AtteNT ({run['selection'].capitalize()}, ratio {run['ratio_start']:g}→{run['ratio_end']:g}, "
                        f"{'growing' if run['interval'] == 'incremental' else run['interval']} interval)",
              "random": "random subsets, same examples", "infobatch": "InfoBatch"}
    rows = []
    for method, s in data["summary"].items():
        overhead = [a + b for a, b in zip(s["scoring_s"], s["selection_s"])]
        rows.append([labels.get(method, method), stats.fmt_mean_std(s["train_time_s"], 1),
                     stats.fmt_mean_std(s["time_to_target_s"], 1), stats.fmt_mean_std(s["final_accuracy_pct"], 2),
                     f"{stats.mean_std(s['fraction_seen'])[0]:.3f}", f"{stats.mean_std(overhead)[0]:.2f}"])
    return _table(["method", "training time (s)", "time to baseline acc. (s)", "final test acc. (%)",
                   "examples seen", "scoring + selection (s)"], rows)


def _finetune(path: str, per_seed: bool) -> Callable[[Results], str]:
    def block(results: Results) -> str:
        data = results.load(path)
        labels = {"all_data": "w/o AtteNT", "attent": f"AtteNT (top {data['config']['ratio']:.0%} after epoch 1)"}
        rows = []
        for method, s in data["summary"].items():
            row = [labels.get(method, method), stats.fmt_mean_std(s["train_time_s"], 1),
                   stats.fmt_mean_std(s["exact_match_pct"], 1)]
            row += [", ".join(f"{v:.1f}" for v in s["exact_match_pct"])] if per_seed else \
                   [f"{stats.mean_std(s['fraction_seen'])[0]:.3f}"]
            rows.append(row)
        return _table(["method", "fine-tuning time (s)", "exact match (%)",
                       "per seed (%)" if per_seed else "examples seen"], rows)
    return block


def lora_finetune(results: Results) -> str:
    data = results.load(f"{EXP}/lora_finetune/lora_finetune.json")
    labels = {"all_data": "w/o AtteNT (all data)", "attent": f"AtteNT (top {data['config']['ratio']:.0%} after epoch 1)",
              "all_data_matched": "all data, compute-matched epochs"}
    rows = [[labels.get(m, m), "/".join(str(e) for e in sorted(set(s["epochs"]))),
             stats.fmt_mean_std(s["train_time_s"], 1), stats.fmt_mean_std(s["exact_match_pct"], 1),
             ", ".join(f"{v:.1f}" for v in s["exact_match_pct"]), f"{stats.mean_std(s['share_seen'])[0]:.3f}"]
            for m, s in data["summary"].items()]
    return _table(["method", "epochs", "fine-tuning time (s)", "exact match (%)", "per seed (%)",
                   "share of examples seen"], rows)


def ablation(results: Results) -> str:
    data = results.load(f"{EXP}/ablation/ablation.json")
    cfg = data["config"]
    rows = []
    for ratio in cfg["ratios"]:
        for interval in cfg["intervals"]:
            cells = []
            for selector in cfg["selectors"]:
                r = _one(data["rows"], ratio=ratio, interval=interval, selector=selector)
                cells.append(f"{_mean(r['final_accuracy_pct']):.2f}% / {_mean(r['train_time_s']):.1f} s")
            rows.append([ratio, interval] + cells)
    return _table(["ratio", "interval"] + list(cfg["selectors"]), rows)


def sample_ratio(results: Results) -> str:
    data = results.load(f"{EXP}/sample_ratio/sample_ratio.json")
    rows = data["rows"]
    return _table(["sample ratio"] + [f"{r['ratio']:.0%}" for r in rows],
                  [["final test acc. (%)"] + [stats.fmt_mean_std(r["final_accuracy_pct"], 2) for r in rows],
                   ["training time (s)"] + [f"{_mean(r['train_time_s']):.1f}" for r in rows]])


def bench_training(results: Results) -> str:
    data = results.load(f"{EXP}/bench_training/bench_training.json")
    rows = [[str(r["devices"]), r["method"].replace("_", " "), f"{_mean(r['throughput']):.0f}",
             f"{_mean(r['train_time_s']):.1f}", f"{_mean(r['overhead_share']):.1%}",
             f"{_mean(r['time_over_ideal']):.3f}"] for r in data["rows"]]
    return _table(["devices", "method", "examples/s", "training time (s)", "scoring + selection", "time / ideal"], rows)


def mae_pretrain(results: Results) -> str:
    """The MAE race's rows; a result file of any config but the full one says so first (smoke-test sizes)."""
    import dataclasses as _dc

    from . import mae_pretrain as mp
    data = results.load(f"{EXP}/mae_pretrain/mae_pretrain.json")
    # Compared with the full config, not with QUICK: a QUICK edited since the file was written must not pass it
    # off as the full run.
    full = data["config"] == json.loads(json.dumps(_dc.asdict(mp.Config())))
    race, rows = data["race"], []
    for b in race["budgets"]:
        for m in race["methods"]:
            s = race["summary"][m][f"{b:g}"]
            rows.append([f"{b:g}", mp.mae_report.LABELS[m], stats.fmt_mean_std(s["per_seed_cost"], 3),
                         stats.fmt_mean_std(s["per_seed_probe_acc_pct"], 2),
                         stats.fmt_mean_std(s["per_seed_finetune_acc_pct"], 2)])
    table = _table(["budget", "method", "measured cost (step units)", "linear probe acc. (%)",
                    "fine-tune acc. (%)"], rows)
    if not full:
        return ("**Not the full run** (the file is from a smaller config, such as `--quick`: smoke-test sizes, "
                "these numbers mean nothing; the full run is still to be done).\n\n" + table)
    return table


BLOCKS: dict[str, Callable[[Results], str]] = {
    "theory_identities": theory_identities, "theory_claims": theory_claims, "theory_controls": theory_controls,
    "bench_ntk": bench_ntk, "from_scratch": from_scratch,
    "finetune": _finetune(f"{EXP}/finetune/finetune.json", per_seed=False),
    "finetune_pretrained": _finetune(f"{EXP}/finetune_pretrained/finetune.json", per_seed=True),
    "lora_finetune": lora_finetune,
    "ablation": ablation, "sample_ratio": sample_ratio, "bench_training": bench_training,
    "frontier_headline": readme_evidence.frontier_headline, "frontier_verdicts": readme_evidence.frontier_verdicts,
    "frontier_others": readme_evidence.frontier_others, "mae_pretrain": mae_pretrain,
    "dial_headline": readme_evidence.dial_headline, "dial_edges": readme_evidence.dial_edges,
}


# =========================================================================== rendering

def render(text: str, root: str = ".") -> tuple[str, list[tuple[int, str, str, str]]]:
    """README text with every marker re-generated from the files under ``root``, and what changed.

    Returns ``(new_text, changes)``, each change ``(line, marker, old, new)``: for a block, its
    first differing line.
    """
    results = Results(root)
    out, changes, source, pos = [], [], None, 0
    for m in MARKERS.finditer(text):
        _check_no_broken_marker(text, pos, m.start())
        out.append(text[pos:m.start()])
        pos = m.end()
        line = text.count("\n", 0, m.start()) + 1
        where = f"README line {line}"
        if m.group("source"):
            source = m.group("source")
            results.load(source)  # a missing file is named where it is set, even if nothing reads it
            out.append(m.group(0))
        elif m.group("spec") is not None:
            spec, old = m.group("spec"), m.group("old")
            new = inline_value(spec, source, results, where)
            out.append(f"<!-- v: {spec} -->{new}<!-- /v -->")
            if new != old:
                changes.append((line, f"v: {spec}", old, new))
        else:
            key, old = m.group("key"), m.group("block")
            if key not in BLOCKS:
                raise ValueError(f"{where}: unknown generated block {key!r} (known: {', '.join(BLOCKS)})")
            try:
                new = BLOCKS[key](results).rstrip("\n") + "\n"
            except KeyError as err:
                raise ValueError(f"{where}: block {key!r}: result file lacks key {err}") from None
            out.append(f"<!-- generated: {key} -->\n{new}<!-- /generated -->")
            if new != old:
                # Report the first row that differs, at its own README line (a table's header rarely does).
                olds, news = old.splitlines(), new.splitlines()
                i = next((i for i, (a, b) in enumerate(zip(olds, news)) if a != b), min(len(olds), len(news)))
                changes.append((line + 1 + i, f"generated: {key}", olds[i] if i < len(olds) else "",
                                news[i] if i < len(news) else ""))
    _check_no_broken_marker(text, pos, len(text))
    out.append(text[pos:])
    return "".join(out), changes


def _check_no_broken_marker(text: str, start: int, end: int) -> None:
    """A marker the pattern does not match (``:.1%-->``, no space) would keep its typed value unchecked."""
    for opener in ("<!-- v:", "<!-- source:"):
        at = text.find(opener, start, end)
        if at >= 0:
            line = text.count("\n", 0, at) + 1
            raise ValueError(f"README line {line}: malformed marker {text[at:at + 60]!r}, expected "
                             f"'<!-- v: EXPR:FMT -->VALUE<!-- /v -->' or '<!-- source: PATH -->' on one line")


def summarize(changes) -> str:
    """One line: how many markers differ, and the first of them."""
    line, marker, old, new = changes[0]
    clip = lambda s: s if len(s) <= 100 else s[:97] + "..."  # noqa: E731 — one line, whatever the row
    return (f"README.md: {len(changes)} generated value(s) differ from the result files; first at line {line} "
            f"({marker}): README has {clip(old)!r}, files give {clip(new)!r}; run python -m experiments.readme")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", default="README.md", help="the README to rewrite (paths in it are relative to its folder)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the README differs")
    args = parser.parse_args(argv)
    try:
        with open(args.readme) as fh:
            text = fh.read()
        new, changes = render(text, os.path.dirname(os.path.abspath(args.readme)))
    except (ValueError, OSError) as err:
        print(f"readme: error: {err}", file=sys.stderr)
        return 2
    if args.check:
        if changes:
            print(summarize(changes))
            return 1
        print(f"{args.readme}: every generated value matches the result files")
        return 0
    if new != text:
        with open(args.readme, "w") as fh:
            fh.write(new)
    print(f"{args.readme}: {len(changes)} generated value(s) rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
