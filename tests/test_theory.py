"""Every theory script, quick config: its checks pass and its numbers are where the theory puts them.

Checks that fail honestly in measurement are listed in KNOWN_FAILURES and run
as strict xfails: the suite shows them, and flags the day they start passing.
"""

import math

import numpy as np
import pytest

from attent_theory.verify import fast_compile
from attent_theory import (antk, functional_consistency, gradient_form, greedy, kernel_convergence, length, loss_reduction,
                    permutation, reduction)
from attent_theory.report import Check, Report

# (script, check name) -> why it fails; see the script's docstring.
KNOWN_FAILURES = {
    ("kernel_convergence", "drift vs width d' (c=1/√d'): slope"):
        "widening d' alone cannot freeze the ANTK: logits and W_V move O(1) at any d'",
    ("kernel_convergence", "settled by, fraction of T (constant)"):
        "with a constant step the kernel keeps drifting slowly while the loss still falls",
    ("kernel_convergence", "settled by, fraction of T (cosine)"):
        "the quick run is too short for the kernel to settle within a quarter of it",
    ("greedy", "steps to mid target, ρ=1"):
        "at Proposition 4's boundary step the greedy learner's set loss zigzags above the random one's",
    ("greedy", "steps to final target, ρ=1"):
        "at Proposition 4's boundary step the greedy learner's set loss zigzags above the random one's",
}

SCRIPTS = {m.__name__.rsplit(".", 1)[1]: m for m in (gradient_form, permutation, length, reduction, antk,
                                                       functional_consistency, loss_reduction, greedy,
                                                       kernel_convergence)}
_CACHE: dict = {}


def quick_report(name: str) -> Report:
    """Each script runs once per session (its quick config, fast compilation), shared by the tests."""
    if name not in _CACHE:
        with fast_compile():
            _CACHE[name] = SCRIPTS[name].run(SCRIPTS[name].Config.quick())
    return _CACHE[name]


def _check(report: Report, name: str) -> Check:
    return next(c for c in report.checks if c.name == name)


def _assert_passes(report: Report) -> None:
    failing = [f"{c.name}: {c.value} ({c.threshold_text()})" for c in report.checks
               if not c.passed and (report.script, c.name) not in KNOWN_FAILURES]
    assert not failing, failing
    assert report.checks and all(isinstance(c.value, (int, float)) for c in report.checks)


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_checks_pass(name):
    _assert_passes(quick_report(name))


@pytest.mark.parametrize("key", list(KNOWN_FAILURES), ids=[k[1] for k in KNOWN_FAILURES])
def test_known_failures(key):
    report = quick_report(key[0])
    check = _check(report, key[1])
    if not check.passed:
        pytest.xfail(KNOWN_FAILURES[key])
    pytest.fail(f"{key} now passes ({check.value}): remove it from KNOWN_FAILURES")


def test_exactness_in_float64():
    # The exact identities hold to round-off (~1e-15), far inside their 1e-10 tolerance.
    for name in ("gradient_form", "permutation", "length", "reduction"):
        assert max(c.value for c in quick_report(name).checks) < 1e-12, name
    r = quick_report("antk")
    assert _check(r, "implementations = J Jᵀ").value < 1e-12
    assert _check(r, "rank K ≤ d(d+o)").value == r.data["paper learner"]["rank_bound"]


def test_functional_consistency_numbers():
    r = quick_report("functional_consistency")
    for c in r.checks:
        if "slope" in c.name:
            assert abs(c.value - 1.0) < 0.05, c
    rho = r.data["mse"]["rho_train"]
    assert all(b > a for a, b in zip(rho, rho[1:]))  # the remainder grows with η


def test_loss_reduction_numbers():
    r = quick_report("loss_reduction")
    assert r.data["num_inside"] >= 1000
    # (a) is tight (an equality for quadratic losses), and above the condition the loss can rise.
    assert abs(_check(r, "(a) descent lemma").value) < 1e-6
    assert r.data["fraction_above_loss_increases"] > 0
    assert _check(r, "(c) fails for ρ = 2.5").value < 0


def test_greedy_numbers():
    r = quick_report("greedy")
    assert r.data["runs"][0]["functional_ratio_init"] > 1.5
    assert all(math.isfinite(v) for run in r.data["runs"] for v in run["by_rho"][0.125]["curve_greedy"])


def test_kernel_convergence_numbers():
    r = quick_report("kernel_convergence")
    heads, dqk = r.data["width_heads"], r.data["width_dqk"]
    # The heads limit freezes the kernel clearly faster than widening d'.
    assert heads["slope"] < dqk["slope"] - 0.2
    drift = np.asarray(r.data["main"]["constant"]["drift"])
    assert drift[-1] == 0 and drift[0] > 0
    # The sharp early fall of Figure 5: most of the drift is gone within the first quarter of training.
    assert drift[len(drift) // 4] < 0.5 * drift[0]
