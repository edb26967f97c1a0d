"""theory.loss_reduction (Proposition 4 on ANTK instances): quick run, numbers, and the derivation's tight case."""

import math

import numpy as np
import pytest

from attent_theory.verify import fast_compile
from attent_theory import loss_reduction
from attent_theory.report import Check


@pytest.fixture(scope="module")
def report():
    with fast_compile():
        return loss_reduction.run(loss_reduction.Config.quick())


def _row(report, prefix: str) -> Check:
    return next(c for c in report.checks if c.name.startswith(prefix))


def test_identities_pass_and_controls_are_caught(report):
    # Catches any bound of the chain violated on an ANTK instance (a wrong ξ for a loss, K not
    # PSD, a step that is not f − ηKg) and any control that no longer detects its broken input.
    identities, controls = report.of_kind("identity"), report.of_kind("control")
    assert len(identities) == 5 and len(controls) == 5
    assert all(c.status == "PASS" for c in identities), [(c.name, c.value) for c in identities]
    assert all(c.status == "caught" for c in controls), [(c.name, c.value) for c in controls]
    assert report.passed


def test_numbers_are_where_the_derivation_puts_them(report):
    d = report.data
    # Worst slack of the (η/2) reduction inside either condition: ≥ 0 up to round-off (a sign or
    # normalization slip in the step would push it below).
    assert d["worst_half_slack_rho_le_1"] >= -1e-9 and d["worst_half_slack_rho_le_half"] >= -1e-9
    assert _row(report, "claim: paper's condition").status == "HOLDS"
    # The descent lemma is an equality for the quadratic loss: a loose (mis-scaled) curvature term
    # would leave a visible positive worst slack.
    assert abs(d["worst_slack"]["descent"]) < 1e-6
    # Above η = 1/(ξτ) the guarantee fails on some instance, and the search finds the first
    # failure just above 1 (a kernel bound τ below λ_max would move it below 1).
    assert d["above"]["worst_normalized_decrease"] < 0.5
    assert 1.0 < d["search"]["min_first_failure_rho"] <= d["above"]["rho"]
    # What (64) certifies is ≥ 1 − ρ ≥ 0 for ρ ≤ 1, so its shortfall lies in [-1/2, 0): below 0
    # means the chain cannot prove the (η/2) reduction for ρ in (1/2, 1], where it holds.
    chain = _row(report, "claim: B.2's chain").value
    assert -0.5 - 1e-9 <= chain < 0
    assert d["num_instances"] == 100 and d["num_half"] + d["num_upper"] == 100


def _quadratic_instance(rng, n=6, xi=1.7, along_top=True):
    """(ξ/2)‖f − y‖² on a random PSD K, residual along K's top eigenvector (the derivation's tight case)."""
    b = rng.standard_normal((n, n))
    k = b @ b.T
    eig, vec = np.linalg.eigh(k)
    f = rng.standard_normal(n)
    r = vec[:, -1] if along_top else rng.standard_normal(n)
    y = f - 0.8 * r
    return dict(f=f, k=k, xi=xi, tau=float(eig[-1]), tau_mean=float(np.trace(k) / n),
                loss=lambda u: xi * 0.5 * np.sum((u - y) ** 2), grad=lambda u: xi * (u - y))


@pytest.mark.parametrize("rho", [0.3, 0.75, 0.99, 1.2])
def test_tight_case_matches_the_docstring(rho):
    # The docstring's claims on the tight instance: reduction = 1 − ρ/2 exactly (descent lemma an
    # equality), what (64) certifies = 1 − ρ exactly (so the chain needs ρ ≤ 1/2). Catches a
    # mis-normalized slack in _step, or a derivation that is wrong about where the chain is loose.
    inst = _quadratic_instance(np.random.default_rng(3))
    s = loss_reduction._step(inst, rho / (inst["xi"] * inst["tau"]))
    assert s["rho"] == pytest.approx(rho, rel=1e-12)
    assert s["decrease"] == pytest.approx(1 - rho / 2, abs=1e-10)
    assert s["descent"] == pytest.approx(0.0, abs=1e-10)
    assert s["certified"] + 0.5 == pytest.approx(1 - rho, abs=1e-10)
    assert s["cross"] == pytest.approx(0.0, abs=1e-10)      # Cauchy–Schwarz and λ_max both tight
    assert (s["half"] < 0) == (rho > 1)


def test_first_failure_search_finds_the_sharp_threshold():
    # On the tight instance the guarantee fails for every ρ > 1 and at no ρ ≤ 1: the search must
    # return 1 (to bisection accuracy); a search that skipped the first grid cell would not.
    inst = _quadratic_instance(np.random.default_rng(4))
    assert loss_reduction._first_failure(inst, 4.0) == pytest.approx(1.0, abs=1e-9)
    # A random residual needs a longer step: ρ* = τ rᵀKr / rᵀK²r > 1.
    inst = _quadratic_instance(np.random.default_rng(4), along_top=False)
    g = inst["grad"](inst["f"])
    expected = inst["tau"] * (g @ inst["k"] @ g) / (g @ inst["k"] @ inst["k"] @ g)
    found = loss_reduction._first_failure(inst, 40.0)
    assert found == pytest.approx(expected, rel=1e-8) if expected < 40 else math.isinf(found)


@pytest.mark.parametrize("kwargs, name", [(dict(num_instances=0), "num_instances"), (dict(rho_above=0.9), "rho_above"),
                                          (dict(rho_min=1.5), "rho_min"), (dict(learners=("nope",)), "learners")])
def test_bad_config_is_a_one_line_value_error(kwargs, name):
    with pytest.raises(ValueError, match=f"Config.{name}: got"):
        loss_reduction.Config(**kwargs)
