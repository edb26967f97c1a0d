"""The analytic kernel of the attention learner (`attent_jax.learner.ntk`,
implementation "analytic"): per-example features and the closed form built from
their Gram matrices, never calling f.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from attent_jax.learner.model import LearnerConfig, attention_weights
from attent_jax.learner.ntk_layout import _PREC, DIAG, PAIR, TRACE


def _mixing(cfg: LearnerConfig, params):
    """M (H, o, O): how head h's output channel a enters final output c (W_O, or the concatenation)."""
    h, o = cfg.num_heads, cfg.d_out
    if cfg.out_proj:
        return params["w_o"].reshape(h, o, cfg.output_dim)
    return jnp.eye(h * o, dtype=params["w_v"].dtype).reshape(h, o, h * o)


def _analytic_features(cfg: LearnerConfig, params, x):
    """Per-example, per-head features whose inner products make up the kernel.

    Derivation (one head, one example; s_i rows of S, t_j rows of T, T = S for
    self-attention; q_i = s_i W_Q, k_j = t_j W_K, v_j = t_j W_V ∈ ℝ^o,
    a_ij = softmax_j(c q_i·k_j + M_ij), f_i = Σ_j a_ij v_j). The softmax
    Jacobian gives ∂f_ia/∂logit_ij = a_ij (v_ja − f_ia) =: e_ija, and
    ∂logit_ij/∂W_Q = c s_iᵀ k_j, ∂logit_ij/∂W_K = c t_jᵀ q_i, so

        ∂f_ia/∂W_V[p, b] = δ_ab (A T)_ip
        ∂f_ia/∂W_Q = c s_iᵀ C_ia,   C_ia = Σ_j e_ija k_j      ∈ ℝ^{d'}
        ∂f_ia/∂W_K = c U_iaᵀ q_i,   U_ia = Σ_j e_ija t_j      ∈ ℝ^{d_kv}

    (MATH.md's c_i and u_i for o = 1). Head h's channel a reaches final output c
    through M_hac (W_O, or 1 where c = h·o + a); mixing gives C̃_ic = Σ_a M_hac C_ia.
    Returns arrays with the c factor folded into C̃ and Ũ.
    """
    s, t = x if isinstance(x, tuple) else (x, None)
    mix_hxoxO = _mixing(cfg, params)

    def one_example(s_nxd, t_mxd):
        t_mxd = s_nxd if t_mxd is None else t_mxd

        def one_head(w_q, w_k, w_v, mix_oxO):
            a_nxm = attention_weights(w_q, w_k, s_nxd, t_mxd, c=cfg.c, causal=cfg.causal)
            q_nxk, k_mxk, v_mxo = s_nxd @ w_q, t_mxd @ w_k, t_mxd @ w_v
            f_nxo = a_nxm @ v_mxo
            # C_ia = Σ_j a_ij v_ja k_j − f_ia (A K)_i, and likewise for U: no (n, m, o) tensor.
            c_nxoxk = (jnp.einsum("ij,ja,je->iae", a_nxm, v_mxo, k_mxk, precision=_PREC)
                       - f_nxo[:, :, None] * (a_nxm @ k_mxk)[:, None, :])
            at_nxp = a_nxm @ t_mxd
            u_nxoxp = (jnp.einsum("ij,ja,jp->iap", a_nxm, v_mxo, t_mxd, precision=_PREC)
                       - f_nxo[:, :, None] * at_nxp[:, None, :])
            ct_nxOxk = cfg.c * jnp.einsum("iae,aC->iCe", c_nxoxk, mix_oxO, precision=_PREC)
            ut_nxOxp = cfg.c * jnp.einsum("iap,aC->iCp", u_nxoxp, mix_oxO, precision=_PREC)
            return q_nxk, at_nxp, ct_nxOxk, ut_nxOxp, f_nxo

        q, at, ct, ut, fo = jax.vmap(one_head)(params["w_q"], params["w_k"], params["w_v"], mix_hxoxO)
        f_nxHo = jnp.transpose(fo, (1, 0, 2)).reshape(s_nxd.shape[0], -1)
        return {"s": s_nxd, "q": q, "at": at, "ct": ct, "ut": ut, "f": f_nxHo}

    with jax.default_matmul_precision("highest"):
        if t is None:
            return jax.vmap(lambda s1: one_example(s1, None))(s)
        return jax.vmap(one_example)(s, t)


# x1 examples per step of the analytic kernel's loop: small tiles keep the Gram
# matrices of one step in cache; measured ~2x faster on CPU than one big einsum
# at N = 256, n = 16. Kernels with fewer entries than _ANALYTIC_TILE_MIN are
# computed in one piece (cheaper to compile, no speed to gain).
_ANALYTIC_ROWS = 2
_ANALYTIC_TILE_MIN = 1 << 16


def _analytic_block(cfg: LearnerConfig, p1, p2, params, modes):
    """`_analytic_dense`, row tile by row tile for large kernels (same numbers, less memory traffic)."""
    (n1, len1), (n2, len2) = p1["s"].shape[:2], p2["s"].shape[:2]
    if n1 * n2 * len1 * len2 < _ANALYTIC_TILE_MIN:
        return _analytic_dense(cfg, p1, p2, params, modes)

    def rows(r):
        return _analytic_dense(cfg, jax.tree.map(lambda a: a[None], r), p2, params, modes)[0]
    return lax.map(rows, p1, batch_size=_ANALYTIC_ROWS)


def _analytic_dense(cfg: LearnerConfig, p1, p2, params, modes):
    """The kernel from features: a sum over parameter blocks of (element Gram) ∘ (output Gram).

    For x1 element i, output c and x2 element j, output k (all heads h):

        K = Σ_h (A_hT_h)_i·(A'_hT'_h)_j · G_h[c, k]          (W_V; G_h = M_hᵀ M_h)
          + (s_i·s'_j) · Σ_h C̃_hic·C̃'_hjk                   (W_Q)
          + Σ_h (q_hi·q'_hj) · (Ũ_hic·Ũ'_hjk)                 (W_K)
          + (F_i·F'_j) · δ_ck                                  (W_O, F = concatenated heads)

    which for o = H = 1 and c = 1 is MATH.md's
    K_ij = (AS)_i·(A'S')_j + c²(s_i·s'_j)(c_i·c'_j) + c²(u_i·u'_j)(q_i·q'_j).
    Each Gram costs N1·N2·n² times a feature width, never d·d'. Pooled
    learners average the element kernel over i and j (pooling is linear).
    """
    pooled = cfg.pool == "mean"
    elem_mode, out_mode = (PAIR, modes[0]) if pooled else modes
    ei, ej = "i", ("j" if elem_mode == PAIR else "i")
    e_out = ei + ej if elem_mode == PAIR else "i"
    oc, ok = "c", ("k" if out_mode == PAIR else "c")
    o_out = {PAIR: "ck", DIAG: "c", TRACE: ""}[out_mode]
    n_out = len(o_out)

    def elem(a, b):      # element Gram: (N1, N2, i[, j])
        return jnp.einsum(f"a{ei}x,b{ej}x->ab{e_out}", a, b, precision=_PREC)

    def outer(a, b):     # output-channel Gram: (N1, N2, i[, j], [c[, k]])
        return jnp.einsum(f"a{ei}{oc}x,b{ej}{ok}x->ab{e_out}{o_out}", a, b, precision=_PREC)

    def times(e, o):
        return e.reshape(e.shape + (1,) * n_out) * o

    def out_identity(m):  # output-channel factor of a term that is m ⊗ 1 over (i, j)
        return {PAIR: m, DIAG: jnp.diagonal(m), TRACE: jnp.trace(m)}[out_mode]

    mix = _mixing(cfg, params)
    gram_hxOxO = jnp.einsum("haC,haK->hCK", mix, mix, precision=_PREC)
    # W_Q: the element factor s_i·s'_j is the same for every head, so heads and
    # widths contract in one einsum.
    kernel = times(elem(p1["s"], p2["s"]),
                   jnp.einsum(f"ah{ei}{oc}x,bh{ej}{ok}x->ab{e_out}{o_out}", p1["ct"], p2["ct"], precision=_PREC))
    for h in range(cfg.num_heads):
        kernel = kernel + times(elem(p1["at"][:, h], p2["at"][:, h]), out_identity(gram_hxOxO[h]))
        kernel = kernel + times(elem(p1["q"][:, h], p2["q"][:, h]), outer(p1["ut"][:, h], p2["ut"][:, h]))
    if cfg.out_proj:
        eye = jnp.eye(cfg.output_dim, dtype=kernel.dtype)
        kernel = kernel + times(elem(p1["f"], p2["f"]), out_identity(eye))

    n = p1["s"].shape[1]
    if pooled:
        kernel = kernel.mean(axis=(2, 3))
    elif elem_mode == TRACE:
        kernel = kernel.sum(axis=2) / n
    return kernel / (cfg.output_dim if out_mode == TRACE else 1)
