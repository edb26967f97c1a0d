"""Selection-ratio and re-selection-interval schedules (§5 Table 3, Appendix C).

Host-side Python: a schedule is a function of training progress p ∈ [0, 1] and
the config, never of device values, so the trainer knows every epoch's subset
size and whether to re-score without a device→host sync.

Ratio r(p), the fraction of the data trained on in a selected epoch (Appendix C:
"a dynamic selection ratio from 20% to 80%", after Zhang et al. 2023a):

    fixed:        r(p) = ratio
    incremental:  r(p) = start + (end − start) · p
    cosine:       r(p) = start + (end − start) · (1 − cos πp) / 2

Interval k(p), in epochs, between re-selections (Table 3: a fixed interval pays
for frequent re-scoring; one that grows over training saved ~20% of the time):

    fixed:        k(p) = interval
    incremental:  k(p) = round(interval_min + (interval_max − interval_min) · p)

Example:
    >>> from attent_jax.teaching.schedules import ratio_at, interval_at, progress
    >>> ratio_at("cosine", 0.5, start=0.2, end=0.8)  # doctest: +ELLIPSIS
    0.5...
    >>> interval_at("incremental", progress(9, 10), interval_min=1, interval_max=5)
    5
"""

from __future__ import annotations

import math

RATIO_SCHEDULES = ("fixed", "incremental", "cosine")
INTERVAL_SCHEDULES = ("fixed", "incremental")


def progress(epoch: int, num_epochs: int) -> float:
    """Training progress of `epoch` (0-based): 0 at the first epoch, 1 at the last."""
    if not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs: got {num_epochs!r}, expected an int >= 1")
    if not isinstance(epoch, int) or not 0 <= epoch < num_epochs:
        raise ValueError(f"epoch: got {epoch!r}, expected an int in [0, {num_epochs})")
    return epoch / (num_epochs - 1) if num_epochs > 1 else 1.0


def _check_progress(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"progress: got {p!r}, expected a number in [0, 1]")


def ratio_at(name: str, p: float, *, ratio: float = 0.7, start: float = 0.2, end: float = 0.8) -> float:
    """The selection ratio r(p) of schedule `name` at progress p (see the module docstring)."""
    _check_progress(p)
    if name == "fixed":
        return ratio
    if name == "incremental":
        return start + (end - start) * p
    if name == "cosine":
        return start + (end - start) * (1.0 - math.cos(math.pi * p)) / 2.0
    raise ValueError(f"ratio_schedule: got {name!r}, expected one of {RATIO_SCHEDULES}")


def interval_at(name: str, p: float, *, interval: int = 2, interval_min: int = 1, interval_max: int = 10) -> int:
    """The re-selection interval k(p) in epochs (≥ 1) of schedule `name` at progress p."""
    _check_progress(p)
    if name == "fixed":
        return max(1, interval)
    if name == "incremental":
        # floor(x + 0.5): Python's round() would round halves to even, a surprise in a schedule.
        return max(1, math.floor(interval_min + (interval_max - interval_min) * p + 0.5))
    raise ValueError(f"interval_schedule: got {name!r}, expected one of {INTERVAL_SCHEDULES}")


def num_selected(ratio: float, num_examples: int) -> int:
    """Examples trained on at `ratio`: round(ratio · N), at least 1 and at most N."""
    return min(num_examples, max(1, math.floor(ratio * num_examples + 0.5)))
