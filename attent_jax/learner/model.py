"""The attention learner of the paper: single-layer self-attention (eq. 2) and its variants (eq. 23).

    f(S) = softmax_row( c · S W_Q (T W_K)ᵀ + M ) · T W_V          ∈ ℝ^{n×o}

with T = S for self-attention, T a second sequence for cross-attention, M = 0 or
the causal mask (−∞ strictly above the diagonal), and c the logit scale
(c = 1 is the paper's exact form; 1/√d' is the usual practice). Multi-head
learners run H such maps side by side and concatenate their outputs, optionally
followed by an output projection W_O. Sequence-level properties pool the element
outputs (mean over elements).

Parameters always carry a head axis (H = 1 for the paper's learner):
``w_q: (H, d, d')``, ``w_k: (H, d_kv, d')``, ``w_v: (H, d_kv, o)`` and, with
``out_proj=True``, ``w_o: (H·o, o)``.

Two views of one computation:
- `AttentionLearner`, a Flax NNX module, batched: ``model(s_Bxnxd)`` or
  ``model(s_Bxnxd, t_Bxmxd)`` for cross-attention.
- `functional(model) -> (f, params)`, a pure ``f(params, x)`` over a plain dict
  of arrays (via `nnx.split` / `nnx.merge`) for `jax.grad`, `jax.jacrev`,
  `jax.vmap` and the kernels in `attent_jax.learner.ntk`. For cross-attention ``x`` is
  the pair ``(s_Bxnxd, t_Bxmxd)``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from attent_jax.learner.model import LearnerConfig, AttentionLearner, functional
    >>> model = AttentionLearner(LearnerConfig(d_in=4, d_qk=8), rngs=nnx.Rngs(0))
    >>> f, params = functional(model)
    >>> f(params, jnp.ones((2, 5, 4))).shape
    (2, 5, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from attent_jax.learner.validate import check_array, check_same_leading

SCALES = ("one", "sqrt")
POOLS = ("none", "mean")


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    d_in: int                      # d: feature size of each query-side element
    d_qk: int                      # d': width of queries and keys
    d_out: int = 1                 # o: output size of each head per element
    num_heads: int = 1             # H: heads, outputs concatenated (1 = the paper's learner)
    scale: str | float = "one"     # logit scale c: "one" (paper eq. 2), "sqrt" (1/√d'), or a number
    causal: bool = False           # masked self-attention: element i attends to j ≤ i only
    cross: bool = False            # keys and values come from a second sequence T
    d_kv: int | None = None        # feature size of T's elements (cross-attention); None = d_in
    pool: str = "none"             # "none": element-level output (n×o); "mean": sequence-level (o)
    out_proj: bool = False         # apply W_O ∈ ℝ^{H·o × o} after concatenating heads
    init_std: float | None = None  # weight init std; None = 1/√fan_in

    def __post_init__(self):
        for name in ("d_in", "d_qk", "d_out", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LearnerConfig.{name}: got {value!r}, expected a positive integer")
        if self.d_kv is not None and (not isinstance(self.d_kv, int) or self.d_kv < 1):
            raise ValueError(f"LearnerConfig.d_kv: got {self.d_kv!r}, expected a positive integer or None")
        if isinstance(self.scale, str):
            if self.scale not in SCALES:
                raise ValueError(f"LearnerConfig.scale: got {self.scale!r}, expected one of {SCALES} or a number")
        elif not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"LearnerConfig.scale: got {self.scale!r}, expected a positive finite number")
        if self.pool not in POOLS:
            raise ValueError(f"LearnerConfig.pool: got {self.pool!r}, expected one of {POOLS}")
        if self.causal and self.cross:
            raise ValueError("LearnerConfig.causal: got True with cross=True, expected at most one of them")

    @property
    def c(self) -> float:
        """The logit scale c as a number."""
        if self.scale == "one":
            return 1.0
        if self.scale == "sqrt":
            return 1.0 / math.sqrt(self.d_qk)
        return float(self.scale)

    @property
    def kv_dim(self) -> int:
        return self.d_in if self.d_kv is None else self.d_kv

    @property
    def output_dim(self) -> int:
        return self.d_out if self.out_proj else self.num_heads * self.d_out


def attention_weights(w_q_dxk, w_k_dxk, s_nxd, t_mxd, *, c: float, causal: bool):
    """Row-stochastic attention A = softmax(c · S W_Q (T W_K)ᵀ + M) for one head, shape (n, m)."""
    logits_nxm = c * (s_nxd @ w_q_dxk) @ (t_mxd @ w_k_dxk).T
    if causal:
        n, m = logits_nxm.shape
        allowed_nxm = jnp.arange(m)[None, :] <= jnp.arange(n)[:, None]
        logits_nxm = jnp.where(allowed_nxm, logits_nxm, -jnp.inf)
    return jax.nn.softmax(logits_nxm, axis=-1)


def attend(params: dict, s_nxd, t_mxd=None, *, c: float = 1.0, causal: bool = False, pool: str = "none"):
    """The learner on one sequence (no batch axis): f(S) of paper eq. 2 / eq. 23.

    Returns (n, H·o) — or (n, o) with an output projection — and the mean over
    elements instead when ``pool == "mean"``. Pure; callers validate inputs.
    """
    t_mxd = s_nxd if t_mxd is None else t_mxd

    def one_head(w_q, w_k, w_v):
        a_nxm = attention_weights(w_q, w_k, s_nxd, t_mxd, c=c, causal=causal)
        return a_nxm @ (t_mxd @ w_v)

    out_hxnxo = jax.vmap(one_head)(params["w_q"], params["w_k"], params["w_v"])
    out_nxHo = jnp.transpose(out_hxnxo, (1, 0, 2)).reshape(s_nxd.shape[0], -1)
    if "w_o" in params:
        out_nxHo = out_nxHo @ params["w_o"]
    return out_nxHo.mean(axis=0) if pool == "mean" else out_nxHo


def check_inputs(config: LearnerConfig, s, t=None) -> None:
    """Validate a batch for a learner of this config (before any tracing)."""
    check_array("s", s, rank=3, last_dim=config.d_in)
    if config.cross:
        if t is None:
            raise ValueError("t: got None, expected the key/value sequence (B, m, d_kv) for cross-attention")
        check_array("t", t, rank=3, last_dim=config.kv_dim)
        check_same_leading("s", s, "t", t)
    elif t is not None:
        raise ValueError(f"t: got shape {tuple(t.shape)}, expected None for self-attention (cross=False)")


def init_params(config: LearnerConfig, key) -> dict:
    """Gaussian weights with std `init_std` (default 1/√fan_in), as a plain dict."""
    h, d, kv = config.num_heads, config.d_in, config.kv_dim
    shapes = {"w_q": (h, d, config.d_qk), "w_k": (h, kv, config.d_qk), "w_v": (h, kv, config.d_out)}
    if config.out_proj:
        shapes["w_o"] = (h * config.d_out, config.d_out)
    keys = jax.random.split(key, len(shapes))
    params = {}
    for k, (name, shape) in zip(keys, shapes.items()):
        std = config.init_std if config.init_std is not None else 1.0 / math.sqrt(shape[-2])
        params[name] = std * jax.random.normal(k, shape, dtype=jnp.result_type(float))
    return params


class AttentionLearner(nnx.Module):
    """Flax NNX module for the (single-layer) attention learner; see the module docstring."""

    def __init__(self, config: LearnerConfig, *, rngs: nnx.Rngs):
        self.config = config
        for name, value in init_params(config, rngs.params()).items():
            setattr(self, name, nnx.Param(value))

    def params(self) -> dict:
        names = ("w_q", "w_k", "w_v") + (("w_o",) if self.config.out_proj else ())
        return {name: getattr(self, name)[...] for name in names}

    def __call__(self, s_Bxnxd, t_Bxmxd=None):
        check_inputs(self.config, s_Bxnxd, t_Bxmxd)
        return _apply_batch(self.config, self.params(), s_Bxnxd, t_Bxmxd)


def functional(model: nnx.Module):
    """A pure ``f(params, x)`` and its params (a plain dict) from an NNX module.

    Uses `nnx.split` once and `nnx.merge` inside ``f``, so it works for any NNX
    module whose ``__call__`` takes the batch ``x`` (a tuple ``x`` is unpacked
    into positional arguments, as cross-attention takes ``(s, t)``).
    """
    graphdef, state = nnx.split(model)

    def f(params, x):
        module = nnx.merge(graphdef, params)
        return module(*x) if isinstance(x, tuple) else module(x)

    return f, nnx.to_pure_dict(state)


@functools.partial(jax.jit, static_argnums=0)
def _apply_batch(config: LearnerConfig, params: dict, s_Bxnxd, t_Bxmxd=None):
    fn = lambda s, t: attend(params, s, t, c=config.c, causal=config.causal, pool=config.pool)
    if t_Bxmxd is None:
        return jax.vmap(lambda s: fn(s, None))(s_Bxnxd)
    return jax.vmap(fn)(s_Bxnxd, t_Bxmxd)


def learner_fn(config: LearnerConfig):
    """The pure, jitted ``f(params, x)`` of a learner config, without building a module.

    Same numbers as `AttentionLearner`; cheaper to trace, since no graph is merged.
    Shapes are checked on every call (values too, when ``x`` is concrete).
    """
    def f(params, x):
        s, t = x if isinstance(x, tuple) else (x, None)
        check_inputs(config, s, t)
        return _apply_batch(config, params, s, t)

    return f
