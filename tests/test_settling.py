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


def test_a_growing_kernel_moving_at_constant_speed_never_settles():
    """Catches a window divided by the current kernel's norm: along a constant-speed path to a 1000x larger
    kernel that window shrinks like 1/‖K_t‖ and calls the path settled within a few per cent of it."""
    path = settling.linear_path(np.eye(3) + 0.1, 1000.0 * np.eye(3), 161)
    w = settling.window_change(path, 10)
    np.testing.assert_allclose(w / w[0], 1.0, rtol=1e-9)   # constant speed: every window moves as far
    assert settling.settled_index(w, 0.05) == len(w)
