"""Statistics and tables of the experiment scripts: mean ± std over seeds (runs
that never reached a target counted apart), PASS/MISS verdicts, markdown tables.

Example (how every script reports a column over seeds):
    >>> from attent_experiments import stats
    >>> stats.mean_std([1.0, 3.0])  # doctest: +ELLIPSIS
    (2.0, 1.414...)
    >>> print(stats.markdown_table(["method", "time (s)"], [["all data", stats.fmt_mean_std([10.0, 12.0], 1)]]))
    | method | time (s) |
    |---|---|
    | all data | 11.0 ± 1.4 |
    <BLANKLINE>
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of the finite values; NaN if none."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def fmt_mean_std(values, digits: int = 2, scale: float = 1.0) -> str:
    """"m ± s" over the finite values, noting how many of them were not finite (e.g. a target not reached)."""
    values = list(values)
    m, s = mean_std([None if x is None else x * scale for x in values])
    missing = sum(1 for x in values if x is None or not math.isfinite(x))
    if math.isnan(m):
        return "—" if not values else f"not reached ({missing}/{len(values)})"
    text = f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"
    return text + (f" ({missing}/{len(values)} not reached)" if missing else "")


def median_interval(values, level: float = 0.95) -> tuple[float, float, float] | None:
    """A distribution-free interval for the median: order statistics (lo, hi) and their exact coverage.

    The sign-test interval ``[x_(k), x_(n-k+1)]`` with the largest k whose
    coverage ``1 - 2 P(Binomial(n, 1/2) < k)`` is still at least `level`; None
    when even the whole range covers less (n = 5 or fewer at 0.95). It assumes
    only independent draws from one continuous distribution.
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    best = None
    for k in range(1, n // 2 + 1):
        coverage = 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0 ** n
        if coverage < level:
            break
        best = (float(x[k - 1]), float(x[n - k]), coverage)
    return best


def paired_interval(diffs) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of paired differences (NaN interval for fewer than 2)."""
    d = np.asarray(diffs, float)
    mean = float(d.mean()) if d.size else float("nan")
    if d.size < 2:
        return mean, float("nan"), float("nan")
    from scipy import stats as sps
    half = float(sps.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return mean, mean - half, mean + half


def direction(lo: float, hi: float) -> str:
    """The verdict word of a paired difference's 95% interval: better (above 0), worse (below), else not resolved."""
    return ("not resolved (one seed)" if math.isnan(lo) else "better" if lo > 0 else
            "worse" if hi < 0 else "not resolved")


def verdict(ok: bool | None) -> str:
    return "N/A" if ok is None else ("PASS" if ok else "MISS")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x):
        return str(x).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
