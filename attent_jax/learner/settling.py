"""When does a tracked kernel settle? Measures that do not end the run they judge (App. D.3, Figs. 5–6).

The drift ‖K_t − K_T‖ to a run's own final kernel is 0 at T by construction, so
"settled once it stays small" could not fail on it. These measures compare
K_t with kernels that are not the run's last:

- the window change w_t = ‖K_t − K_{t+Δ}‖_F / ‖K_0‖_F (how much the kernel
  still moves over the next Δ checkpoints, on the fixed scale of the first
  kernel: divided by the current ‖K_t‖ instead, a kernel that only grows would
  look settled while it moves at constant speed, and one that shrinks, as
  trained kernels often do, would look unsettled while it has stopped);
- the distance r_t = ‖K_t − K'‖_F / ‖K'‖_F to a reference K' from beyond the
  run (the kernel of a run twice as long).

Either is "settled" from the first checkpoint after which it stays at or
below a tolerance times its value at initialisation. The control is a kernel
moving at constant speed between two kernels (`linear_path`): it never
settles early, so a measure that calls it settled is broken.

Used by `theory.kernel_convergence` (the single-layer learner) and the MAE
pre-training experiment (the encoder); pure NumPy, on host arrays.
"""

from __future__ import annotations

import numpy as np


def relative_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖_F / ‖b‖_F."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def window_change(kernels, lag: int) -> np.ndarray:
    """w_i = ‖K_i − K_{i+lag}‖_F / ‖K_0‖_F for every checkpoint i with a partner `lag` checkpoints later."""
    if not isinstance(lag, (int, np.integer)) or lag < 1:
        raise ValueError(f"lag: got {lag!r}, expected an int >= 1 (checkpoints)")
    scale = np.linalg.norm(kernels[0])
    return np.array([float(np.linalg.norm(np.asarray(kernels[i + lag]) - np.asarray(kernels[i])) / scale)
                     for i in range(len(kernels) - lag)])


def reference_distance(kernels, k_ref: np.ndarray) -> np.ndarray:
    """r_i = ‖K_i − K'‖_F / ‖K'‖_F for every checkpoint i."""
    return np.array([relative_distance(k, k_ref) for k in kernels])


def settled_index(values, tolerance: float) -> int:
    """First index from which values / values[0] stays ≤ tolerance to the end; len(values) if the last is above."""
    values = np.asarray(values, dtype=float)
    above = np.nonzero(values > tolerance * values[0])[0]
    return int(above[-1]) + 1 if above.size else 0


def settled_fraction(values, times, total: float, tolerance: float, step: float) -> float:
    """t_s / T for `settled_index`, t_s read off `times` (the checkpoints' steps or epochs).

    Never settled → one checkpoint (`step`) past the measured range, so that a claim "t_s / T ≤ f" fails.
    """
    i = settled_index(values, tolerance)
    n = len(values)
    return (times[i] if i < n else times[n - 1] + step) / total


def linear_path(k0: np.ndarray, k1: np.ndarray, count: int) -> list:
    """The control: a kernel moving at constant speed from k0 to k1 over `count` checkpoints (never settles)."""
    if count < 2:
        raise ValueError(f"count: got {count!r}, expected >= 2 checkpoints")
    return [k0 + (i / (count - 1)) * (k1 - k0) for i in range(count)]
