"""`attent verify`: run every theory check in `theory/` and print identities, paper claims and controls apart.

Each script in `theory/` checks one claim of the paper and returns a
`theory.report.Report` whose rows are of three kinds: identities our
implementation must satisfy (PASS / FAIL), the paper's empirical claims, which
may not hold at our scale (HOLDS / DOES NOT HOLD), and negative controls, an
identity's measurement on deliberately broken input, which must be "caught".
This command runs the scripts in order, prints the three sections
("Identities", "Paper claims", "Negative controls"), and writes into ``--out``:
one JSON record per script, their PNG figures, ``summary.json`` (every row with
its kind and status; ``identities_pass``, ``claims_hold``, ``controls_caught``)
and ``report.md`` (the three sections, then each script with its rows, notes
and figures).

Exit status: 1 if an identity fails, a control is MISSED or a script crashes (a
crash is a failed identity); with ``--strict`` also if a paper claim does not
hold; 0 otherwise.

``--quick`` runs every script with its small ``Config.quick()`` (about a minute
on 2 CPU cores; the tests use it) and compiles with XLA's optimisations off,
which roughly halves compile time — most of a quick run — at no cost to the
float64 results; the full run takes a few minutes.

Example:
    $ attent verify --quick --out verify_out
    $ attent verify --only antk functional_consistency
    $ attent verify --strict   # the paper's empirical claims must hold too
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import time
import traceback

from . import SCRIPTS

# Script name -> module providing Config, run, plot (a module object is accepted too, for tests).
REGISTRY: dict = {name: f"{__package__}.{name}" for name in SCRIPTS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="small configs (about a minute on 2 CPU cores), as the tests use")
    parser.add_argument("--out", default="verify_out", metavar="DIR",
                        help="folder for report.md, summary.json, one JSON per script and the PNG figures")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help=f"run only these scripts (of: {', '.join(REGISTRY)})")
    parser.add_argument("--strict", action="store_true",
                        help="also exit 1 when a paper claim does not hold (by default only identities and "
                             "negative controls decide the exit status)")


@contextlib.contextmanager
def fast_compile(enabled: bool = True):
    """Compile with XLA's optimisations off (quick runs are dominated by compilation)."""
    import jax

    previous = jax.config.read("jax_disable_most_optimizations")
    if enabled:
        jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


def _module(name: str):
    entry = REGISTRY[name]
    return importlib.import_module(entry) if isinstance(entry, str) else entry


def _crashed(name: str, error: BaseException):
    from .report import Check, Report

    last = traceback.format_exception_only(type(error), error)[-1].strip()
    return Report(name, "(the script raised an exception)",
                  [Check("ran without error", 1.0, 0.0, "<=", last)], notes=[last])


def run_one(name: str, quick: bool, out_dir: str):
    """Run one script, write its JSON and figures; a crash becomes a failed identity."""
    from .report import timed_run, write_json

    start = time.perf_counter()
    try:
        module = _module(name)
        config = module.Config.quick() if quick else module.Config()
        report = timed_run(module.run, config)
        report.figures = list(module.plot(report, out_dir))
    except Exception as error:  # noqa: BLE001 — any failure of a check script is a FAIL identity row, not a crash
        report = _crashed(name, error)
        report.seconds = time.perf_counter() - start
    write_json(report, out_dir)
    return report


def run_all(names: list[str], quick: bool, out_dir: str, log=print) -> list:
    """Run the named scripts in order (quick: fast compilation) and return their reports."""
    from .report import summary_line

    reports = []
    with fast_compile(quick):
        for i, name in enumerate(names, 1):
            report = run_one(name, quick, out_dir)
            log(f"[{i}/{len(names)}] {name}: {'PASS' if report.passed else 'FAIL'} "
                f"({summary_line([report])}; {report.seconds:.1f} s)")
            reports.append(report)
    return reports


def write_markdown(reports: list, out_dir: str, quick: bool, seconds: float, strict: bool = False) -> str:
    from .report import SECTIONS, markdown_sections, summary_line

    failed = [r.script for r in reports if not r.passed]
    lines = ["# attent verify: the paper's theory, checked numerically", "",
             f"Mode: {'quick' if quick else 'full'}{', strict' if strict else ''}. Wall time: {seconds:.1f} s. "
             f"{summary_line(reports)}" + (f" (failed identities or MISSED controls in {', '.join(failed)})."
                                            if failed else "."), "",
             markdown_sections(reports), "", "## Per script", ""]
    for r in reports:
        lines += [f"### {r.script}: {'PASS' if r.passed else 'FAIL'}", "", f"Claim: {r.claim}", "",
                  f"Run time {r.seconds:.1f} s. Record: `{r.script}.json`.", ""]
        for kind, title in SECTIONS.items():
            rows = r.of_kind(kind)
            if rows:
                lines += [f"{title}:", ""]
                lines += [f"- **{c.status}** {c.name}: {c.value:.4g} ({c.threshold_text()}). {c.detail}"
                          for c in rows]
                lines += [""]
        lines += [""] + [f"> Note: {note}" for note in r.notes] + ([""] if r.notes else [])
        lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in r.figures]
        lines += [""]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    return path


def cli(args: argparse.Namespace) -> int:
    names = list(REGISTRY) if not args.only else list(dict.fromkeys(args.only))
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"--only: got {unknown}, expected names from {list(REGISTRY)}")
    from .report import format_sections, summary_line, to_jsonable

    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    reports = run_all(names, args.quick, args.out)
    seconds = time.perf_counter() - start
    md = write_markdown(reports, args.out, args.quick, seconds, args.strict)
    ok = all(r.ok(args.strict) for r in reports)
    summary = {"quick": bool(args.quick), "strict": bool(args.strict), "seconds": seconds,
               "identities_pass": all(r.identities_pass for r in reports),
               "claims_hold": all(r.claims_hold for r in reports),
               "controls_caught": all(r.controls_caught for r in reports),
               "passed": all(r.passed for r in reports), "exit_code": 0 if ok else 1,
               "checks": [dict(script=r.script, **c.to_dict()) for r in reports for c in r.checks]}
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(to_jsonable(summary), fh, indent=1)
    print()
    print(format_sections(reports))
    for r in reports:
        for note in r.notes:
            print(f"note ({r.script}): {note}")
    claims = "" if summary["claims_hold"] else (" (claims that do not hold fail the run: --strict)" if args.strict
                                                else " (claims that do not hold are findings: --strict fails on them)")
    print(f"\n{'PASS' if ok else 'FAIL'}: {summary_line(reports)}{claims}; {seconds:.1f} s; report: {md}")
    return 0 if ok else 1
