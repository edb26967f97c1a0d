"""What every theory script returns: a `Report` of `Check` rows (measured number, threshold, verdict).

Rows come in three kinds, because they mean different things to a reader:

- ``identity``: what our implementation must satisfy whatever the data
  (closed-form gradient = autodiff, ANTK = J Jᵀ, ...). Verdict PASS / FAIL; a
  FAIL means a bug, and `attent verify` exits 1.
- ``claim``: an empirical statement of the paper that may or may not hold at
  our scale (greedy convergence, early kernel settling, ...). Verdict HOLDS /
  DOES NOT HOLD; a finding, not a bug (`attent verify --strict` exits 1 on it).
- ``control``: a negative control, the measurement of an identity run on a
  deliberately broken input (a gradient with one term dropped, a step with the
  wrong sign, ...). It must *miss* its threshold: verdict "caught". A control
  that meets the threshold ("MISSED") shows that its identity cannot fail, and
  counts as a failed identity. Its ``of`` names the identity row whose
  measuring code it reuses.

`attent verify` and `script_main` print and save the three kinds in separate
sections ("Identities", "Paper claims", "Negative controls") and exit 1 only on
a failed identity or a MISSED control (``--strict``: also on a claim that does
not hold).

A check's verdict is *computed* from its measured value and threshold, never
stored separately, so a report cannot say PASS for a number that misses its
threshold. Scripts put anything else worth keeping (curves, per-case numbers)
into ``Report.data``; `write_json` saves the lot and `script_main` gives every
script the same command line (``python -m theory.<name> [--quick] [--out DIR]``).

Example:
    >>> r = Report("demo", "1 + 1 = 2", [Check("sum error", 0.0, 1e-12, "<=")])
    >>> r.passed, r.checks[0].status
    (True, 'PASS')
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from typing import Any, Callable

import numpy as np

RELATIONS = ("<=", ">=", "<", ">", "in")
KINDS = ("identity", "claim", "control")
# kind -> (verdict when the value meets the threshold, verdict when it does not)
VERDICTS = {"identity": ("PASS", "FAIL"), "claim": ("HOLDS", "DOES NOT HOLD"), "control": ("MISSED", "caught")}


@dataclasses.dataclass(frozen=True)
class Check:
    """One measured number against its threshold.

    ``relation`` reads "value <relation> threshold"; for "in" the threshold is a
    closed interval (lo, hi). A non-finite value always fails.
    """

    name: str                               # short label shown in the table
    value: float                            # the measured number
    threshold: float | tuple[float, float]  # bound (or interval for "in") the value must meet
    relation: str = "<="                    # one of RELATIONS
    detail: str = ""                        # one line: what was measured, on what
    kind: str = "identity"                  # one of KINDS: identity | claim | control (module docstring)
    of: str = ""                            # control only: name of the identity row whose measurement it repeats

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Check.kind: got {self.kind!r}, expected one of {KINDS}")
        if self.of and self.kind != "control":
            raise ValueError(f"Check.of: got {self.of!r} on a {self.kind} row, expected it only on a control")
        if self.relation not in RELATIONS:
            raise ValueError(f"Check.relation: got {self.relation!r}, expected one of {RELATIONS}")
        if self.relation == "in" and not (isinstance(self.threshold, tuple) and len(self.threshold) == 2):
            raise ValueError(f"Check.threshold: got {self.threshold!r}, expected an interval (lo, hi) for 'in'")

    @property
    def met(self) -> bool:
        """Whether the value meets the threshold (a non-finite value never does)."""
        v = float(self.value)
        if not math.isfinite(v):
            return False
        if self.relation == "in":
            lo, hi = self.threshold
            return lo <= v <= hi
        t = float(self.threshold)
        return {"<=": v <= t, ">=": v >= t, "<": v < t, ">": v > t}[self.relation]

    @property
    def passed(self) -> bool:
        """Good news for this kind: an identity passes, a claim holds, a control is caught."""
        return (not self.met) if self.kind == "control" else self.met

    @property
    def status(self) -> str:
        yes, no = VERDICTS[self.kind]
        return yes if self.met else no

    def threshold_text(self) -> str:
        if self.relation == "in":
            lo, hi = self.threshold
            return f"in [{_num(lo)}, {_num(hi)}]"
        return f"{self.relation} {_num(self.threshold)}"

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "value": float(self.value), "threshold": self.threshold,
                "relation": self.relation, "status": self.status, "passed": self.passed, "detail": self.detail,
                "of": self.of}


@dataclasses.dataclass
class Report:
    """The outcome of one theory script: its claim, checks, extra data and figures."""

    script: str                      # module name under theory/, e.g. "antk"
    claim: str                       # the paper's claim being checked, with its equation/section
    checks: list[Check]              # the PASS/FAIL rows
    data: dict = dataclasses.field(default_factory=dict)     # JSON-able numbers behind the checks and figures
    config: dict = dataclasses.field(default_factory=dict)   # the resolved config of the run
    notes: list[str] = dataclasses.field(default_factory=list)  # caveats a reader of the table must know
    seconds: float = 0.0             # wall time of run()
    figures: list[str] = dataclasses.field(default_factory=list)  # PNG paths written by the script's plot()

    def __post_init__(self):
        # A control pointing at no identity (a typo, a renamed row) would vouch for nothing.
        identities = {c.name for c in self.of_kind("identity")}
        for c in self.of_kind("control"):
            if c.of and c.of not in identities:
                raise ValueError(f"Check.of: got {c.of!r} on {c.name!r}, expected an identity of {sorted(identities)}")

    def of_kind(self, kind: str) -> list[Check]:
        return [c for c in self.checks if c.kind == kind]

    @property
    def identities_pass(self) -> bool:
        return all(c.passed for c in self.of_kind("identity"))

    @property
    def controls_caught(self) -> bool:
        return all(c.passed for c in self.of_kind("control"))

    @property
    def passed(self) -> bool:
        """Every identity passes and every control is caught (claims do not count: see `claims_hold`)."""
        return bool(self.checks) and self.identities_pass and self.controls_caught

    @property
    def claims_hold(self) -> bool:
        return all(c.passed for c in self.of_kind("claim"))

    def ok(self, strict: bool = False) -> bool:
        """The exit-code verdict: `passed`, and with ``strict`` also `claims_hold`."""
        return self.passed and (self.claims_hold or not strict)

    def to_dict(self) -> dict:
        return {"script": self.script, "claim": self.claim, "passed": self.passed,
                "identities_pass": self.identities_pass, "controls_caught": self.controls_caught,
                "claims_hold": self.claims_hold,
                "checks": [c.to_dict() for c in self.checks], "notes": list(self.notes),
                "seconds": self.seconds, "config": self.config, "figures": list(self.figures),
                "data": to_jsonable(self.data)}


# --------------------------------------------------------------------------- numbers

def _num(x) -> str:
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def rel_err(a, b) -> float:
    """max over pytree leaves of ‖a − b‖ / ‖b‖ (absolute error where ‖b‖ = 0)."""
    import jax

    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape != y.shape:
            raise ValueError(f"rel_err: got leaves of shapes {x.shape} and {y.shape}, expected equal shapes")
        scale = np.linalg.norm(y)
        err = np.linalg.norm(x - y)
        worst = max(worst, float(err / scale if scale > 0 else err))
    return worst


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x (the power p in y ∝ x^p)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def to_jsonable(x: Any):
    """Arrays, numpy scalars, tuples and dataclasses → plain JSON types (NaN/Inf as strings)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return to_jsonable(np.asarray(x).tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else str(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def float64():
    """Context in which JAX computes in float64: the checks that claim exactness run inside it."""
    import jax

    return jax.enable_x64(True)


# --------------------------------------------------------------------------- output

HEADER = ("script", "check", "measured", "threshold", "result")
# kind -> the section title it is printed under, in this order
SECTIONS = {"identity": "Identities", "claim": "Paper claims", "control": "Negative controls"}
_SECTION_NOTES = {
    "identity": "PASS / FAIL: what the implementation must satisfy; a FAIL is a bug.",
    "claim": "HOLDS / DOES NOT HOLD: the paper's empirical statements at our scale; findings, not bugs.",
    "control": "an identity's measurement on deliberately broken input must miss its threshold (caught); "
               "MISSED means the identity cannot fail.",
}


def table_rows(reports: list[Report], kind: str | None = None) -> list[tuple[str, str, str, str, str]]:
    return [(r.script, c.name, _num(c.value), c.threshold_text(), c.status)
            for r in reports for c in r.checks if kind is None or c.kind == kind]


def format_table(reports: list[Report], kind: str | None = None) -> str:
    """A fixed-width text table, one row per check (only those of ``kind`` if given)."""
    rows = [HEADER] + table_rows(reports, kind)
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(reports: list[Report], kind: str | None = None) -> str:
    rows = [HEADER] + table_rows(reports, kind)
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(out)


def control_line(script: str, c: Check) -> str:
    """'control: <what is broken> caught (...)': one line per control, its verdict right after its name."""
    name = c.name if c.name.startswith("control:") else f"control: {c.name}"
    of = f" {c.of!r}" if c.of else ""
    return f"{name} {c.status} ({script}: {_num(c.value)}; identity{of} needs {c.threshold_text()})"


def _count(reports: list[Report], kind: str) -> tuple[int, int]:
    rows = [c for r in reports for c in r.of_kind(kind)]
    return sum(c.passed for c in rows), len(rows)


def summary_line(reports: list[Report]) -> str:
    """'identities 40/40 PASS; paper claims 3/6 HOLD; negative controls 20/20 caught'."""
    (ip, it), (cp, ct), (kp, kt) = (_count(reports, k) for k in SECTIONS)
    return f"identities {ip}/{it} PASS; paper claims {cp}/{ct} HOLD; negative controls {kp}/{kt} caught"


def format_sections(reports: list[Report]) -> str:
    """The three kinds apart: an identities table, a claims table, one line per negative control."""
    out = []
    for kind, title in SECTIONS.items():
        out += [f"{title} ({_SECTION_NOTES[kind]})"]
        if not any(r.of_kind(kind) for r in reports):
            out += ["  (none)", ""]
        elif kind == "control":
            out += ["  " + control_line(r.script, c) for r in reports for c in r.of_kind(kind)] + [""]
        else:
            out += [format_table(reports, kind), ""]
    return "\n".join(out).rstrip()


def markdown_sections(reports: list[Report], level: int = 2) -> str:
    """`format_sections` as markdown: a heading per kind, tables for identities and claims, a list of controls."""
    out = []
    for kind, title in SECTIONS.items():
        out += [f"{'#' * level} {title}", "", _SECTION_NOTES[kind], ""]
        if not any(r.of_kind(kind) for r in reports):
            out += ["(none)", ""]
        elif kind == "control":
            out += [f"- {control_line(r.script, c)}" for r in reports for c in r.of_kind(kind)] + [""]
        else:
            out += [markdown_table(reports, kind), ""]
    return "\n".join(out).rstrip()


def write_json(report: Report, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{report.script}.json")
    with open(path, "w") as fh:
        json.dump(report.to_dict(), fh, indent=1)
    return path


def new_figure(*args, **kwargs):
    """A matplotlib figure on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, out_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timed_run(run: Callable, config) -> Report:
    """run(config) with its wall time and resolved config recorded in the report."""
    start = time.perf_counter()
    report = run(config)
    report.seconds = time.perf_counter() - start
    report.config = to_jsonable(dataclasses.asdict(config))
    return report


def script_main(module, argv: list[str] | None = None) -> int:
    """The shared ``main()``: run one script, print its sections, write JSON and figures.

    ``module`` provides ``Config`` (with ``Config.quick()``), ``run`` and ``plot``.
    Returns 1 when an identity fails or a control is MISSED (``--strict``: also
    when a paper claim does not hold), 0 otherwise.
    """
    # Under `python -m`, __name__ is "__main__" but __spec__ keeps the real name.
    spec = getattr(module, "__spec__", None)
    name = (spec.name if spec is not None else module.__name__).rsplit(".", 1)[-1]
    parser = argparse.ArgumentParser(prog=f"python -m theory.{name}", description=module.__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds), as the tests use")
    parser.add_argument("--out", default=os.path.join("verify_out", name), help="folder for JSON and PNG output")
    parser.add_argument("--strict", action="store_true", help="also exit 1 when a paper claim does not hold")
    args = parser.parse_args(argv)
    config = module.Config.quick() if args.quick else module.Config()
    report = timed_run(module.run, config)
    report.figures = module.plot(report, args.out)
    path = write_json(report, args.out)
    print(format_sections([report]))
    for note in report.notes:
        print(f"note: {note}")
    print(f"{name}: {'PASS' if report.ok(args.strict) else 'FAIL'} ({summary_line([report])}) "
          f"in {report.seconds:.1f} s; wrote {path}" + "".join(f", {p}" for p in report.figures))
    return 0 if report.ok(args.strict) else 1
