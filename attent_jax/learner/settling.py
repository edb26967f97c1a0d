"""When does a tracked kernel settle? Measures that do not end the run they judge (App. D.3, Figs. 5–6).

The drift ‖K_t − K_T‖ to a run's own final kernel is 0 at T by construction, so
"settled once it stays small" could not fail on it. These measures compare
K_t with kernels that are not the run's last:

- the window change ‖K_t − K_{t+Δ}‖_F (how much the kernel still moves over
  the next Δ checkpoints), in two views: on the first kernel's fixed scale
  (/ ‖K_0‖_F, the paper's Figure 5 plots the unscaled distance) and on the
  current kernel's own scale (/ ‖K_t‖_F). Each view has a blind spot: a kernel
  that keeps moving at constant speed while it grows looks settled on its own
  scale, and one that first collapses in norm, then keeps moving at constant
  speed, looks settled on the first kernel's scale (its later motion is small
  next to the collapse). A window is called settled only when both views are;
  the controls `linear_path` with growth and `collapsing_path` catch each
  blind spot;
- the distance r_t = ‖K_t − K'‖_F / ‖K'‖_F to a reference K' from beyond the
  run (the kernel of a run twice as long).

Each is "settled" from the first checkpoint after which it stays at or
below a tolerance times its value at initialisation. The controls are kernels
that never settle (`linear_path`: constant speed between two kernels;
`collapsing_path`: a collapse, then constant speed): a measure that calls one
settled is broken.

Used by `theory.kernel_convergence` (the single-layer learner) and the MAE
pre-training experiment (the encoder); pure NumPy, on host arrays.
"""

from __future__ import annotations

import numpy as np


def relative_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖_F / ‖b‖_F."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


SCALES = ("initial", "current")


def window_change(kernels, lag: int, scale: str = "initial") -> np.ndarray:
    """w_i = ‖K_i − K_{i+lag}‖_F / ‖K_0‖_F ("initial") or / ‖K_i‖_F ("current"), for every checkpoint i
    with a partner `lag` checkpoints later."""
    if not isinstance(lag, (int, np.integer)) or lag < 1:
        raise ValueError(f"lag: got {lag!r}, expected an int >= 1 (checkpoints)")
    if scale not in SCALES:
        raise ValueError(f"scale: got {scale!r}, expected one of {SCALES}")
    norms = [np.linalg.norm(kernels[0] if scale == "initial" else kernels[i]) for i in range(len(kernels) - lag)]
    return np.array([float(np.linalg.norm(np.asarray(kernels[i + lag]) - np.asarray(kernels[i])) / norms[i])
                     for i in range(len(kernels) - lag)])


def window_settled(kernels, lag: int, times, total: float, tolerance: float, step: float) -> dict:
    """t_s / T of the window change in each view (`SCALES`), and ``"both"``: the later of the two."""
    out = {scale: settled_fraction(window_change(kernels, lag, scale), times, total, tolerance, step)
           for scale in SCALES}
    return {**out, "both": max(out.values())}


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


def collapsing_path(k0: np.ndarray, lag: int, count: int, floor: float = 1e-3, end: float = 0.5) -> list:
    """A control: k0 collapses to ``floor``·k0 over the first `lag` checkpoints, then moves at constant speed
    to ``end``·k0 (never settles; on k0's fixed scale its later motion is small next to the collapse)."""
    if count < 2 * lag + 1:
        raise ValueError(f"count: got {count!r}, expected >= 2·lag + 1 = {2 * lag + 1} checkpoints")
    k0 = np.asarray(k0)
    return linear_path(k0, floor * k0, lag + 1)[:-1] + linear_path(floor * k0, end * k0, count - lag)


def linear_path(k0: np.ndarray, k1: np.ndarray, count: int) -> list:
    """The control: a kernel moving at constant speed from k0 to k1 over `count` checkpoints (never settles)."""
    if count < 2:
        raise ValueError(f"count: got {count!r}, expected >= 2 checkpoints")
    return [k0 + (i / (count - 1)) * (k1 - k0) for i in range(count)]
