"""The kernel's output layout, in neural-tangents' conventions: which output axes are
kept as pairs, traced or diagonal, the einsum letters that produce them, and the
final placement of each leaf's batch pair (`attent_jax.learner.ntk`, "Layout").
Shared by every implementation, so that they agree entry for entry.
"""

from __future__ import annotations

import math
import string

import jax
import jax.numpy as jnp
from jax import lax

# Every contraction of ours runs at full float32 precision: on accelerators the
# default may be TF32, which would break the implementations' agreement.
_PREC = lax.Precision.HIGHEST

# How each output axis (but the batch axis) enters the kernel: kept as a pair, traced, or diagonal.
PAIR, TRACE, DIAG = "pair", "trace", "diag"


def _axes_tuple(name: str, axes) -> tuple[int, ...]:
    if isinstance(axes, int) and not isinstance(axes, bool):
        axes = (axes,)
    if not isinstance(axes, (tuple, list)) or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ValueError(f"{name}: got {axes!r}, expected a tuple of ints (output axes)")
    return tuple(axes)


def _modes(out1, out2, trace_axes, diagonal_axes, batch_axis) -> tuple[str, ...]:
    """PAIR / TRACE / DIAG for each output axis but the batch axis (None: every axis), checking the axis numbers."""
    rank = len(out1)
    canon = {}
    for name, axes in (("trace_axes", trace_axes), ("diagonal_axes", diagonal_axes)):
        seen = []
        for a in axes:
            if not -rank <= a < rank:
                raise ValueError(f"{name}: got axis {a} for an output of shape {tuple(out1)}, "
                                 f"expected axes in [{-rank}, {rank - 1}]"
                                 + ("" if batch_axis is None else f" other than the batch axis {batch_axis}"))
            a %= rank
            if a == batch_axis:
                raise ValueError(f"{name}: got {tuple(axes)}, which includes the batch axis {batch_axis} of output "
                                 f"shape {tuple(out1)}; expected non-batch axes only")
            if a in seen:
                raise ValueError(f"{name}: got {tuple(axes)}, expected distinct axes")
            seen.append(a)
        canon[name] = seen
    both = set(canon["trace_axes"]) & set(canon["diagonal_axes"])
    if both:
        raise ValueError(f"diagonal_axes: got axes {sorted(both)} also in trace_axes, expected disjoint axes")
    modes = []
    for a in range(rank):
        if a == batch_axis:
            continue
        mode = TRACE if a in canon["trace_axes"] else DIAG if a in canon["diagonal_axes"] else PAIR
        if mode != PAIR and out1[a] != out2[a]:
            name = "trace_axes" if mode == TRACE else "diagonal_axes"
            raise ValueError(f"{name}: axis {a} has size {out1[a]} for x1 but {out2[a]} for x2 "
                             f"(outputs {tuple(out1)} and {tuple(out2)}), expected equal sizes")
        modes.append(mode)
    return tuple(modes)


def _layout_subscripts(modes):
    """einsum letters for the output axes of x1, of x2 and of the kernel (batch letters excluded)."""
    letters = iter(string.ascii_lowercase[2:])   # 'a', 'b' are the batch axes; upper case, the parameters'
    sub1, sub2, out = "", "", ""
    for mode in modes:
        l1 = next(letters)
        l2 = l1 if mode != PAIR else next(letters)
        sub1, sub2 = sub1 + l1, sub2 + l2
        out += {PAIR: l1 + l2, DIAG: l1, TRACE: ""}[mode]
    return sub1, sub2, out


def _trace_size(shape, modes) -> int:
    return math.prod(s for s, m in zip(shape, modes) if m == TRACE)


def _swap_pairs(block, modes):
    """K(x2, x1) from K(x1, x2): swap the two axes of every pair (batch first)."""
    perm, pos = [1, 0], 2
    for mode in modes:
        if mode == PAIR:
            perm += [pos + 1, pos]
            pos += 2
        elif mode == DIAG:
            perm.append(pos)
            pos += 1
    return jnp.transpose(block, perm)


def _finish(kernels, modes, out_axes, out_def):
    """NT's layout: each leaf's batch pair moved to the place of its output axis; the output's pytree."""
    done = []
    for k, m, a in zip(kernels, modes, out_axes or (None,) * len(kernels)):
        if a:
            pos = sum({PAIR: 2, DIAG: 1, TRACE: 0}[mode] for mode in m[:a])
            k = jnp.moveaxis(k, (0, 1), (pos, pos + 1))
        done.append(k)
    return jax.tree.unflatten(out_def, done)
