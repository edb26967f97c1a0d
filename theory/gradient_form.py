"""The importance-adaptive closed form of the gradient equals autodiff (paper §4.1, eqs. 9–12, App. A.3).

Claim: for the single-layer attention learner, ∂L/∂W for every weight is the
batch gradient Σ_b F_bᵀ Γ_b of `attent_jax.learner.importance`, with F the element
features each weight multiplies (S for W_Q; T — S itself for self-attention —
for W_K and W_V) and Γ the per-element importances computed in closed form from
Q, K, V, A and ∂L/∂f. Checked in float64 against `jax.grad`, on every variant
of paper eq. 23: self-, masked (causal) and cross-attention, element-level and
sequence-level (mean-pooled) outputs, and (full run) a multi-head learner with
an output projection.

Two checks per variant and two overall:
- ``grad <variant>``: max over weights of ‖closed form − jax.grad‖ / ‖jax.grad‖
  for L = Σ ⟨f(params, x), G⟩ with a random cotangent G (any loss's gradient is
  this with G = ∂L/∂f). Threshold 1e-10: float64 round-off is ~1e-15, so
  anything above 1e-10 is a wrong formula, not rounding.
- ``importance = dL/d(SW)``: the importance rows are exactly the gradients of
  L with respect to the projected features Q = S W_Q, K = T W_K and V = T W_V,
  computed by `jax.grad` through an independent forward pass written from Q,
  K, V. This pins down the per-element split, not only its sum over elements.
- ``loss_grad (MSE)``: `importance.loss_grad` equals jax.grad of Σ ½‖f − y‖².

Negative controls (kind "control"; each runs its identity's measuring code on a
deliberately broken closed form and must miss the 1e-10 threshold):
- ``control: grad <variant>, softmax centring dropped``: the closed form with
  the −Σ_l a_il ∂L/∂a_il term of the softmax Jacobian left out (P_ij = a_ij g_i·v_j
  instead of a_ij g_i·(v_j − f_i)), i.e. `importance`'s own backward pass fed f = 0;
- ``control: importance, Γ_K sign flipped``: the importance rows with Γ_K negated,
  against jax.grad w.r.t. Q, K, V (the value is the *smallest* over variants, so
  every variant must catch it);
- ``control: loss_grad, target dropped``: `loss_grad` with cotangent f instead
  of f − y, against jax.grad of Σ ½‖f − y‖².

Example:
    >>> from attent_theory import gradient_form
    >>> report = gradient_form.run(gradient_form.Config.quick())
    >>> report.passed
    True
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from attent_jax.learner.importance import _backward, _forward, importance_grad, loss_grad
from attent_jax.learner.model import LearnerConfig, learner_fn
from .common import output_shape, random_params, random_x
from .report import Check, Report, float64, rel_err, script_main

CLAIM = "closed-form importance-adaptive gradient = jax.grad (eqs. 9-12, App. A.3)"


@dataclasses.dataclass(frozen=True)
class Config:
    batch: int = 4          # sequences per batch
    seq_len: int = 7        # n: elements of S
    kv_len: int = 5         # m: elements of T (cross-attention)
    d_in: int = 5           # d: element features
    d_kv: int = 3           # features of T's elements (cross-attention)
    d_qk: int = 6           # d': query/key width
    d_out: int = 2          # o: outputs per head and element
    num_heads: int = 3      # heads of the multi-head variant (0: leave that variant out)
    tolerance: float = 1e-10  # max relative error (float64)
    seed: int = 0           # draws params, inputs and cotangents

    @classmethod
    def quick(cls) -> "Config":
        return cls(batch=2, seq_len=5, kv_len=4, d_in=3, d_kv=2, d_qk=4, d_out=2, num_heads=0)


def variants(cfg: Config) -> dict[str, LearnerConfig]:
    """The learners of paper eq. 2 and eq. 23, element- and sequence-level."""
    base = dict(d_in=cfg.d_in, d_qk=cfg.d_qk, d_out=cfg.d_out)
    out = {
        "self/element": LearnerConfig(**base),
        "self/sequence": LearnerConfig(**base, pool="mean"),
        "masked/element": LearnerConfig(**base, causal=True),
        "masked/sequence": LearnerConfig(**base, causal=True, pool="mean"),
        "cross/element": LearnerConfig(**base, cross=True, d_kv=cfg.d_kv),
        "cross/sequence": LearnerConfig(**base, cross=True, d_kv=cfg.d_kv, pool="mean"),
    }
    if cfg.num_heads:
        out["multihead+W_O/element"] = LearnerConfig(**base, num_heads=cfg.num_heads, out_proj=True, scale="sqrt")
    return out


def make_inputs(lc: LearnerConfig, cfg: Config, rng: np.random.Generator):
    """Random params, input x (s, or (s, t) for cross) and a cotangent shaped like f(params, x)."""
    params = random_params(lc, rng)
    x = random_x(lc, rng, cfg.batch, cfg.seq_len, cfg.kv_len)
    cot = jnp.asarray(rng.standard_normal(output_shape(learner_fn(lc), params, x)))
    return params, x, cot


def output_from_qkv(lc: LearnerConfig, w_o, q_BxHxnxk, k_BxHxmxk, v_BxHxmxo):
    """The learner's output written from the projections Q, K, V (independent of importance.py)."""
    logits = lc.c * jnp.einsum("bhnk,bhmk->bhnm", q_BxHxnxk, k_BxHxmxk)
    if lc.causal:
        n, m = logits.shape[-2:]
        logits = jnp.where(jnp.arange(m)[None, :] <= jnp.arange(n)[:, None], logits, -jnp.inf)
    f_BxHxnxo = jnp.einsum("bhnm,bhmo->bhno", jax.nn.softmax(logits, axis=-1), v_BxHxmxo)
    b, h, n, o = f_BxHxnxo.shape
    out = jnp.transpose(f_BxHxnxo, (0, 2, 1, 3)).reshape(b, n, h * o)
    out = out @ w_o if w_o is not None else out
    return out.mean(axis=1) if lc.pool == "mean" else out


def projections(params, x):
    s, t = x if isinstance(x, tuple) else (x, x)
    return (jnp.einsum("bnd,hdk->bhnk", s, params["w_q"]), jnp.einsum("bmd,hdk->bhmk", t, params["w_k"]),
            jnp.einsum("bmd,hdo->bhmo", t, params["w_v"]))


@functools.partial(jax.jit, static_argnums=0)
def _measure(lc: LearnerConfig, params, x, cot):
    """Everything one variant compares, in one compilation."""
    f = learner_fn(lc)
    reference = jax.grad(lambda p: jnp.sum(f(p, x) * cot))(params)
    closed = importance_grad(lc, params, x, cot)
    # Γ = ∂L/∂(projections), via an independent forward pass from Q, K, V.
    w_o = params.get("w_o")
    qkv = projections(params, x)
    by_qkv = jax.grad(lambda q, k, v: jnp.sum(output_from_qkv(lc, w_o, q, k, v) * cot), argnums=(0, 1, 2))(*qkv)
    imp = closed.importance
    # Control: importance's own backward pass with f = 0, which drops exactly the g_i·f_i (centring) term of
    # P_ij = a_ij g_i·(v_j − f_i) and nothing else (f enters the backward pass nowhere else).
    s, t = x if isinstance(x, tuple) else (x, None)
    fw = _forward(lc, params, s, t)
    no_centring = _backward(lc, params, {**fw, "f": jnp.zeros_like(fw["f"])}, cot).grads
    return dict(reference=reference, closed=closed.grads, no_centring=no_centring, out=f(params, x),
                out_qkv=output_from_qkv(lc, w_o, *qkv), by_qkv=by_qkv,
                importance=(imp["w_q"], imp["w_k"], imp["w_v"]))


def _importance_err(m, importance) -> float:
    """The importance identity's measure: output from Q, K, V and Γ vs jax.grad w.r.t. Q, K, V."""
    return max(rel_err(m["out_qkv"], m["out"]), rel_err(importance, m["by_qkv"]))


@functools.partial(jax.jit, static_argnums=0)
def _measure_mse(lc: LearnerConfig, params, x, y):
    f = learner_fn(lc)
    # The control's loss_grad without its target: cotangent f instead of f − y.
    return (loss_grad(lc, params, x, y).grads, loss_grad(lc, params, x, jnp.zeros_like(y)).grads,
            jax.grad(lambda p: 0.5 * jnp.sum((f(p, x) - y) ** 2))(params))


def run(config: Config = Config()) -> Report:
    checks, controls, data = [], [], {}
    importance_errs, flipped_errs = {}, {}
    tol = config.tolerance
    rng = np.random.default_rng(config.seed)
    with float64():
        for name, lc in variants(config).items():
            m = _measure(lc, *make_inputs(lc, config, rng))
            err, broken = rel_err(m["closed"], m["reference"]), rel_err(m["no_centring"], m["reference"])
            data[name] = {"grad_rel_err": err, "control_no_centring_rel_err": broken,
                          "per_weight": {k: rel_err(m["closed"][k], m["reference"][k]) for k in m["reference"]}}
            checks.append(Check(f"grad {name}", err, tol, "<=",
                                "max over weights of |closed - jax.grad| / |jax.grad|, float64"))
            controls.append(Check(f"control: grad {name}, softmax centring dropped", broken, tol, "<=",
                                  "closed form without the -g_i·f_i term of the softmax Jacobian vs jax.grad",
                                  kind="control", of=f"grad {name}"))
            importance_errs[name] = _importance_err(m, m["importance"])
            q, k, v = m["importance"]
            flipped_errs[name] = _importance_err(m, (q, -k, v))
            data[name].update(importance_rel_err=importance_errs[name], control_flipped_rel_err=flipped_errs[name])

        worst = max(importance_errs, key=importance_errs.get)
        checks.append(Check("importance = dL/d(SW)", importance_errs[worst], tol, "<=",
                            f"Γ_Q, Γ_K, Γ_V vs jax.grad w.r.t. Q, K, V; worst variant {worst}"))
        best = min(flipped_errs, key=flipped_errs.get)
        controls.append(Check("control: importance, Γ_K sign flipped", flipped_errs[best], tol, "<=",
                              f"same measure with -Γ_K; smallest over variants: {best}",
                              kind="control", of="importance = dL/d(SW)"))

        lc = variants(config)["self/element"]
        closed, no_target, reference = _measure_mse(lc, *make_inputs(lc, config, rng))
        err, broken = rel_err(closed, reference), rel_err(no_target, reference)
        data["loss_grad_mse_rel_err"] = err
        data["control_loss_grad_no_target_rel_err"] = broken
        checks.append(Check("loss_grad (MSE)", err, tol, "<=",
                            "importance.loss_grad vs jax.grad of sum 1/2|f - y|^2"))
        controls.append(Check("control: loss_grad, target dropped", broken, tol, "<=",
                              "loss_grad with cotangent f instead of f - y vs the same jax.grad",
                              kind="control", of="loss_grad (MSE)"))
    return Report("gradient_form", CLAIM, checks + controls, data)


def plot(report: Report, out_dir: str) -> list[str]:
    """A bar chart of the relative errors per variant (log scale) against the tolerance."""
    from .report import new_figure, save_figure

    names = [k for k, v in report.data.items() if isinstance(v, dict)]
    fig, ax = new_figure(figsize=(7, 3.2))
    grad = [max(report.data[n]["grad_rel_err"], 1e-18) for n in names]
    imp = [max(report.data[n]["importance_rel_err"], 1e-18) for n in names]
    pos = range(len(names))
    ax.bar([p - 0.2 for p in pos], grad, width=0.4, label="gradient")
    ax.bar([p + 0.2 for p in pos], imp, width=0.4, label="importance rows")
    ax.axhline(report.config.get("tolerance", 1e-10), color="r", ls="--", label="tolerance")
    ax.set_yscale("log")
    ax.set_xticks(list(pos), names, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel("relative error vs jax.grad")
    ax.set_title("closed-form gradient (float64)")
    ax.legend(fontsize=7)
    return [save_figure(fig, out_dir, "gradient_form")]


def main(argv: list[str] | None = None) -> int:
    import sys

    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
