"""theory.functional_consistency, quick config: the first-order step, Theorem 3's trajectory, and their controls."""

import numpy as np
import pytest

from attent_theory.verify import fast_compile
from attent_theory import functional_consistency as fc


@pytest.fixture(scope="module")
def report():
    with fast_compile():
        return fc.run(fc.Config.quick())


def _check(report, name):
    return next(c for c in report.checks if c.name == name)


def test_identities_pass_and_controls_are_caught(report):
    """Catches a broken ANTK or GD step (an identity FAILs) and a check that cannot fail (a control MISSED)."""
    kinds = {c.kind for c in report.checks}
    assert kinds == {"identity", "control", "claim"}
    assert report.passed, [(c.name, c.value, c.status) for c in report.checks]
    assert all(c.status == "caught" for c in report.of_kind("control"))


def test_first_order_remainder_is_second_order_and_broken_kernels_are_not(report):
    """Catches a kernel whose first-order term is wrong (sign, a missing block): its remainder stays O(η), order ≈ 0.

    The controls also pin that the fitted order separates the two cases by far, not by a hair.
    """
    order = report.data["mse"]["order"]
    assert abs(order["train"] - 1) < 0.05 and abs(order["test"] - 1) < 0.05
    assert abs(order["wrong_sign"]) < 0.2 and abs(order["no_value_block"]) < 0.2
    rho = report.data["mse"]["rho_train"]
    assert all(b > a for a, b in zip(rho, rho[1:]))  # the relative remainder grows with η


def test_trajectory_error_falls_like_eta(report):
    """Theorem 3: functional GD with the dynamic ANTK tracks parameter GD with an error ∝ η at fixed ηT.

    Catches a functional iteration that uses the wrong kernel (e.g. frozen at θ_0, or a kernel block missing):
    its error would not vanish as η → 0, so the order would be ≈ 0 instead of ≈ 1.
    """
    t = report.data["trajectory"]
    for key in ("train", "test"):
        assert 0.7 <= t["order"][key] <= 1.3, t["order"]
    err = np.asarray(t["error_train"])
    assert np.all(np.diff(err) < 0)  # η falls along the grid, and so does the error
    assert err[-1] < 0.01
    # The frozen kernel misses by far more: the kernel really moves over the run (it is not lazy here).
    assert t["error_frozen_train"][-1] > 10 * err[-1]
    assert abs(t["order"]["frozen_train"]) < 0.2


def test_limit_rows_are_claims_with_measured_ratios(report):
    """Catches the approach-to-limit rows being tagged as identities, or a ratio computed against a zero kernel."""
    for name in ("ANTK approaches a limit: speed end/start", "premise |∂L/∂f| → 0: end/start"):
        c = _check(report, name)
        assert c.kind == "claim" and 0 < c.value < 1, c
    lim = report.data["trajectory"]["limit"]
    assert lim["speed"][-1] > 0  # the speed is a window change, not a distance to the run's own end


def test_bad_config_raises():
    """Catches a trajectory set larger than the training set being silently truncated."""
    with pytest.raises(ValueError, match="traj_train"):
        fc.Config(num_train=2, traj_train=3)
    with pytest.raises(ValueError, match="traj_steps"):
        fc.Config(traj_steps=(100,))
