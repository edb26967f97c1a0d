"""attent_jax.learner.settling: settling measures that cannot pass by construction."""

import numpy as np
import pytest

from attent_jax.learner import settling


def test_settled_index_on_known_sequences():
    """Catches "stays below once below" read off the first crossing: a dip and a rise must settle after the rise."""
    assert settling.settled_index(np.array([1.0, 0.5, 0.04, 0.03, 0.02]), 0.05) == 2
    assert settling.settled_index(np.array([1.0, 0.04, 0.2, 0.03, 0.02]), 0.05) == 3
    assert settling.settled_index(np.linspace(1.0, 0.5, 6), 0.05) == 6  # never settles: one past the end


def test_settled_fraction_reads_times_and_puts_never_one_step_past():
    """Catches t_s read as an index instead of a time, and a never-settled measure reported as settled at T."""
    times = [0, 10, 20, 30, 40]
    assert settling.settled_fraction([1.0, 0.5, 0.04, 0.03, 0.02], times, 40, 0.05, 10) == pytest.approx(0.5)
    assert settling.settled_fraction([1.0, 0.9, 0.8, 0.7, 0.6], times, 40, 0.05, 10) == pytest.approx(50 / 40)


def test_window_change_and_reference_distance_are_relative():
    """Catches a window measured against the wrong partner or normalised by a moving kernel instead of K_0."""
    ks = [np.eye(2) * v for v in (1.0, 2.0, 4.0, 4.0)]
    np.testing.assert_allclose(settling.window_change(ks, 1), [1.0, 2.0, 0.0])
    np.testing.assert_allclose(settling.window_change(ks, 2), [3.0, 2.0])
    np.testing.assert_allclose(settling.reference_distance(ks, 4 * np.eye(2)), [0.75, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="lag"):
        settling.window_change(ks, 0)


def test_linear_path_control_never_settles():
    """Catches a control that stops moving: its window change must stay at its initial size's order."""
    k0, k1 = np.eye(3), 5 * np.eye(3)
    path = settling.linear_path(k0, k1, 9)
    np.testing.assert_allclose(path[0], k0)
    np.testing.assert_allclose(path[-1], k1)
    w = settling.window_change(path, 2)
    assert settling.settled_index(w, 0.05) == len(w)
    with pytest.raises(ValueError, match="count"):
        settling.linear_path(k0, k1, 1)


def test_each_view_has_its_blind_spot_and_both_together_have_neither():
    """Catches a window judged in one view only: a constant-speed path to a 1000x larger kernel looks settled
    on its own (current) scale, a collapse followed by constant speed on the first kernel's scale; the
    settled time of both views together calls neither settled, and a kernel that does settle still settles."""
    k0, steps = np.eye(3) + 0.1, list(range(0, 1610, 10))
    growing = settling.linear_path(k0, 1000.0 * k0, 161)
    w = settling.window_change(growing, 10)
    np.testing.assert_allclose(w / w[0], 1.0, rtol=1e-9)   # constant speed: every window moves as far
    collapsing = settling.collapsing_path(k0, 10, 161)
    assert len(collapsing) == 161 and np.allclose(collapsing[10], 1e-3 * k0) and np.allclose(collapsing[-1], 0.5 * k0)
    for path, fooled in ((growing, "current"), (collapsing, "initial")):
        s = settling.window_settled(path, 10, steps, 800, 0.05, 10)
        assert s[fooled] <= 0.25 and s["both"] > 1.0 and s["both"] == max(s["initial"], s["current"]), (fooled, s)
    settles = [k0 + np.exp(-t / 3) * np.eye(3) for t in range(161)]
    assert settling.window_settled(settles, 10, steps, 800, 0.05, 10)["both"] <= 0.25
    np.testing.assert_allclose(settling.window_change([np.eye(2), 2 * np.eye(2), 4 * np.eye(2)], 1, "current"), [1.0, 1.0])
    with pytest.raises(ValueError, match="scale"):
        settling.window_change(growing, 1, "final")
