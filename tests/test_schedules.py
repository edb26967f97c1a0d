"""Tests for attent_jax.teaching.schedules: ratio r(p), interval k(p), progress and subset sizes."""

import doctest
import math

import pytest

from attent_jax.teaching import schedules
from attent_jax.teaching.schedules import interval_at, num_selected, progress, ratio_at


def test_module_docstrings_run():
    assert doctest.testmod(schedules, optionflags=doctest.ELLIPSIS).failed == 0


@pytest.mark.parametrize("name", ["incremental", "cosine"])
def test_ratio_endpoints(name):
    assert ratio_at(name, 0.0, start=0.2, end=0.8) == pytest.approx(0.2)
    assert ratio_at(name, 1.0, start=0.2, end=0.8) == pytest.approx(0.8)
    values = [ratio_at(name, p / 20, start=0.2, end=0.8) for p in range(21)]
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_ratio_midpoints_and_fixed():
    assert ratio_at("cosine", 0.5, start=0.2, end=0.8) == pytest.approx(0.5)
    assert ratio_at("incremental", 0.5, start=0.2, end=0.8) == pytest.approx(0.5)
    # Cosine starts slower than linear: at p = 1/4 it has covered (1 − cos(π/4))/2 ≈ 14.6% of the way.
    assert ratio_at("cosine", 0.25, start=0.2, end=0.8) == pytest.approx(0.2 + 0.6 * (1 - math.sqrt(0.5)) / 2)
    assert ratio_at("incremental", 0.25, start=0.2, end=0.8) == pytest.approx(0.35)
    assert all(ratio_at("fixed", p, ratio=0.7) == 0.7 for p in (0.0, 0.3, 1.0))


def test_interval_values():
    assert [interval_at("fixed", p, interval=3) for p in (0.0, 0.5, 1.0)] == [3, 3, 3]
    assert interval_at("incremental", 0.0, interval_min=2, interval_max=10) == 2
    assert interval_at("incremental", 1.0, interval_min=2, interval_max=10) == 10
    assert interval_at("incremental", 0.5, interval_min=2, interval_max=10) == 6
    assert interval_at("incremental", 0.5, interval_min=1, interval_max=2) == 2   # half rounds up
    values = [interval_at("incremental", p / 10, interval_min=1, interval_max=8) for p in range(11)]
    assert all(b >= a for a, b in zip(values, values[1:])) and min(values) >= 1


def test_progress():
    assert progress(0, 5) == 0.0 and progress(4, 5) == 1.0 and progress(2, 5) == 0.5
    assert progress(0, 1) == 1.0
    with pytest.raises(ValueError, match="epoch: got 5"):
        progress(5, 5)
    with pytest.raises(ValueError, match="num_epochs: got 0"):
        progress(0, 0)


def test_num_selected_rounds_and_clamps():
    assert num_selected(0.7, 10) == 7
    assert num_selected(0.25, 10) == 3        # 2.5 rounds up
    assert num_selected(0.01, 10) == 1
    assert num_selected(1.0, 10) == 10


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="'linear'"):
        ratio_at("linear", 0.5)
    with pytest.raises(ValueError, match="'geometric'"):
        interval_at("geometric", 0.5)
    with pytest.raises(ValueError, match="progress: got 1.5"):
        ratio_at("fixed", 1.5)


@pytest.mark.parametrize("start,end", [(0.2, 0.8), (0.9, 0.3)])
def test_cosine_ratio_follows_its_formula_along_the_whole_run(start, end):
    """Catches a cosine schedule right only where the other tests look (p = 0, ¼, ½, 1), e.g. cos πp/2,
    a sine, a clipped or reversed ramp, or start and end swapped (the second case decreases)."""
    for p in [i / 12 for i in range(13)] + [0.1, 0.37, 0.9]:
        expected = start + (end - start) * (1.0 - math.cos(math.pi * p)) / 2.0
        assert ratio_at("cosine", p, start=start, end=end) == pytest.approx(expected, abs=1e-12), p
    assert ratio_at("cosine", 0.0, start=start, end=end) == pytest.approx(start, abs=1e-12)
    assert ratio_at("cosine", 1.0, start=start, end=end) == pytest.approx(end, abs=1e-12)
    # Cosine differs from the linear ramp away from 0, ½ and 1, so the formula above is the one checked.
    assert abs(ratio_at("cosine", 0.1, start=start, end=end) - ratio_at("incremental", 0.1, start=start, end=end)) \
        > 0.05 * abs(end - start)
