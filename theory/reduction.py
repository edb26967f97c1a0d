"""With unit importances the attention gradient is a linear model's batch gradient (paper §4.1, after eq. 12).

Claim: "When all importance values are set to 1, the gradient of the ANN
reduces to the derivative of a multilayer perceptron without nonlinear
activations and with batch input."

What we check, and why it is meaningful. The closed form writes every weight's
gradient as ∂L/∂W = Σ_b Σ_e F_beᵀ Γ_be (`attent_jax.learner.importance`): a sum over the
*elements* e of all sequences, each feature row F_be (s_i for W_Q, t_j for W_K
and W_V) times an importance row Γ_be. Compare the linear model without
activation h_W(s) = s W, applied to the batch of element features
{F_be} as if they were independent examples, with the squared loss

    L_lin(W) = Σ_{b,e} ½‖F_be W − r_be‖²,   residual targets r_be = F_be W − γ_be,

so that ∂L_lin/∂(F_be W) = γ_be and jax.grad gives ∇_W L_lin = Σ F_beᵀ γ_be.

1. ``attention = linear (γ = Γ)``: with γ := Γ (held fixed), ∇_W L_lin equals
   the attention learner's gradient for W_Q, W_K and W_V: one importance-
   adaptive step of attention *is* one least-squares step of a linear model on
   the batch of element features whose per-example loss gradients are the
   importances. The whole attention mechanism enters only through Γ.
2. ``unit importances = linear (γ = 1)``: `importance.unit_importance_grad`
   (every Γ set to 1) equals ∇_W L_lin with γ = 1, i.e. Fᵀ1 — each column the
   sum of the feature rows, the gradient of a linear model with unit loss
   gradient on every example, independent of W.

Both in float64 (tolerance 1e-10) for self-, masked and cross-attention. Reported
as data: how far the unit-importance gradient is from the true one (the
importances are not trivial).

Example:
    >>> from attent_theory import reduction
    >>> reduction.run(reduction.Config.quick()).passed
    True
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from attent_jax.learner.importance import loss_grad, unit_importance_grad
from attent_jax.learner.model import LearnerConfig, learner_fn
from .common import output_shape, random_params, random_x
from .report import Check, Report, float64, rel_err, script_main

CLAIM = "unit importances reduce the gradient to a linear model's batch gradient (§4.1)"
WEIGHTS = ("w_q", "w_k", "w_v")


@dataclasses.dataclass(frozen=True)
class Config:
    batch: int = 3          # sequences
    seq_len: int = 6        # n
    kv_len: int = 5         # m (cross-attention)
    d_in: int = 4           # d
    d_qk: int = 5           # d'
    d_out: int = 2          # o
    cases: tuple[str, ...] = ("self", "masked", "cross")  # learners to check
    tolerance: float = 1e-10  # max relative error (float64)
    seed: int = 0           # params, inputs and targets

    @classmethod
    def quick(cls) -> "Config":
        return cls(batch=2, seq_len=4, kv_len=3, d_in=3, d_qk=4, d_out=1)


def _learner(case: str, cfg: Config) -> LearnerConfig:
    extra = {"self": {}, "masked": dict(causal=True), "cross": dict(cross=True, d_kv=cfg.d_in + 1)}
    if case not in extra:
        raise ValueError(f"Config.cases: got {case!r}, expected names from {sorted(extra)}")
    return LearnerConfig(d_in=cfg.d_in, d_qk=cfg.d_qk, d_out=cfg.d_out, **extra[case])


def linear_model_grad(w_dxw, features_Bxexd, gamma_Bxexw):
    """jax.grad of L_lin(W) = Σ ½‖F W − (F W − γ)‖² at W (targets fixed): a linear model's gradient."""
    x_Nxd = features_Bxexd.reshape(-1, features_Bxexd.shape[-1])
    targets = jax.lax.stop_gradient(x_Nxd @ w_dxw - gamma_Bxexw.reshape(-1, gamma_Bxexw.shape[-1]))
    return jax.grad(lambda w: 0.5 * jnp.sum((x_Nxd @ w - targets) ** 2))(w_dxw)


@functools.partial(jax.jit, static_argnums=0)
def _measure(lc: LearnerConfig, params, x, y):
    r = loss_grad(lc, params, x, y)
    unit = unit_importance_grad(r)
    lin_gamma, lin_unit = {}, {}
    for name in WEIGHTS:
        feats, gamma = r.features[name], r.importance[name][:, 0]  # one head
        lin_gamma[name] = linear_model_grad(params[name][0], feats, gamma)
        lin_unit[name] = linear_model_grad(params[name][0], feats, jnp.ones_like(gamma))
    f = learner_fn(lc)
    # The attention gradient by autodiff, not by the closed form whose split we use.
    autodiff = jax.grad(lambda p: 0.5 * jnp.sum((f(p, x) - y) ** 2))(params)
    grads = {name: autodiff[name][0] for name in WEIGHTS}
    units = {name: unit[name][0] for name in WEIGHTS}
    return grads, units, lin_gamma, lin_unit


def run(config: Config = Config()) -> Report:
    rng = np.random.default_rng(config.seed)
    errs_gamma, errs_unit, data = {}, {}, {}
    with float64():
        for case in config.cases:
            lc = _learner(case, config)
            params = random_params(lc, rng)
            x = random_x(lc, rng, config.batch, config.seq_len, config.kv_len)
            y = rng.standard_normal(output_shape(learner_fn(lc), params, x))
            grads, units, lin_gamma, lin_unit = _measure(lc, params, x, y)
            errs_gamma[case] = rel_err(lin_gamma, grads)
            errs_unit[case] = rel_err(units, lin_unit)
            data[case] = {"attention_vs_linear": errs_gamma[case], "unit_vs_linear": errs_unit[case],
                          "unit_vs_true_gradient": {k: rel_err(units[k], grads[k]) for k in WEIGHTS}}

    def check(label, errs, what):
        worst = max(errs, key=errs.get)
        return Check(label, errs[worst], config.tolerance, "<=", f"{what}; worst case: {worst}")

    checks = [check("attention = linear (γ = Γ)", errs_gamma,
                    "jax.grad of attention (W_Q, W_K, W_V) vs jax.grad of a linear model on the element "
                    "features with residuals Γ"),
              check("unit importances = linear (γ = 1)", errs_unit,
                    "unit_importance_grad vs jax.grad of the linear model with unit residuals (F^T 1)")]
    gap = min(min(v["unit_vs_true_gradient"].values()) for v in data.values())
    notes = [f"the importances matter: the unit-importance gradient differs from the true one by >= {gap:.2f} "
             f"(relative) on every weight and case"]
    return Report("reduction", CLAIM, checks, data, notes=notes)


def plot(report: Report, out_dir: str) -> list[str]:
    return []


def main(argv: list[str] | None = None) -> int:
    import sys

    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
