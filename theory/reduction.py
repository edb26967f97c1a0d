"""The attention gradient is a linear model's batch gradient with importance weights (paper §4.1, after eq. 12).

Claim: "When all importance values are set to 1, the gradient of the ANN
reduces to the derivative of a multilayer perceptron without nonlinear
activations and with batch input." The claim rests on the form behind it: the
gradient of every attention weight is a linear model's batch gradient over the
*elements* of the sequences, each element's feature row weighted by an
importance row that attention computes.

The linear model. z = x W without activation, applied to a batch of rows X
(E × d); if its loss has ∂L/∂z_e = γ_e (so Γ = ∂L/∂Z, E × w), its gradient is

    ∇_W L = Σ_e x_eᵀ γ_e = Xᵀ Γ             (`linear_batch_grad`; squared loss: Γ = XW − Y)

and the derivative of its summed output Σ_e z_e·1 is Xᵀ1 (Γ = 1).

Importances, written here from scratch (numpy, float64, from the weights and the
inputs; no `attent_jax` code): per sequence, Q = S W_Q, K = T W_K, V = T W_V
(T = S unless cross-attention), A = softmax_row(c Q Kᵀ + M) (M the causal
mask), F = A V, G = ∂L/∂F for L = Σ ½‖f − y‖² (G = (f − y)/n on every row when
the output is mean-pooled), and

    Γ_V = Aᵀ G,    P_ij = a_ij g_i·(v_j − f_i),    Γ_Q = c P K,    Γ_K = c Pᵀ Q,

with features X = S for W_Q and X = T for W_K and W_V. (v_j − f_i is the softmax
Jacobian: ∂L/∂z_ij = a_ij(∂L/∂a_ij − Σ_l a_il ∂L/∂a_il) with ∂L/∂a_ij = g_i·v_j and
Σ_l a_il v_l = f_i.)

Rows (every identity in float64, tolerance 1e-10 relative, worst over the cases
self / masked / cross / pooled and over W_Q, W_K, W_V; every control's value is
its *smallest* error over the cases and weights it breaks, which must exceed
the tolerance):

1. identity ``attention grad = linear batch grad (Xᵀ Γ)``: jax.grad of the
   learner's loss (autodiff through `model.learner_fn`) equals Xᵀ Γ with the
   script's Γ. Controls: Γ_Q, Γ_K with the −f_i of the softmax Jacobian dropped
   (P_ij = a_ij g_i·v_j); Γ_V with the attention dropped (A uniform).
2. identity ``unit importances = linear derivative (Xᵀ 1)``:
   `importance.unit_importance_grad` (the library's features with every
   importance set to 1) equals Xᵀ1 written here with X taken from the inputs.
   Control: the same comparison with the true (non-unit) importances, i.e. the
   true gradient against Xᵀ1.
3. identity ``library Γ = independent Γ``: `importance.loss_grad`'s importances
   equal the script's. Control: against the script's Γ with the −f_i dropped.

Reported as data: the numpy forward pass against `learner_fn`, and how far the
unit-importance gradient is from the true one (the importances are not trivial).

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

CLAIM = "the attention gradient is Xᵀ Γ, a linear model's batch gradient; with Γ = 1 it is Xᵀ1 (§4.1)"
WEIGHTS = ("w_q", "w_k", "w_v")
CASES = ("self", "masked", "cross", "pooled")


@dataclasses.dataclass(frozen=True)
class Config:
    batch: int = 3          # sequences
    seq_len: int = 6        # n
    kv_len: int = 5         # m (cross-attention)
    d_in: int = 4           # d
    d_qk: int = 5           # d'
    d_out: int = 2          # o
    cases: tuple[str, ...] = CASES  # learners to check
    tolerance: float = 1e-10  # max relative error (float64)
    seed: int = 0           # params, inputs and targets

    @classmethod
    def quick(cls) -> "Config":
        return cls(batch=2, seq_len=4, kv_len=3, d_in=3, d_qk=4, d_out=1)

    def __post_init__(self):
        unknown = [c for c in self.cases if c not in CASES]
        if unknown or not self.cases:
            raise ValueError(f"Config.cases: got {self.cases!r}, expected a non-empty subset of {CASES}")


def _learner(case: str, cfg: Config) -> LearnerConfig:
    extra = {"self": {}, "masked": dict(causal=True), "cross": dict(cross=True, d_kv=cfg.d_in + 1),
             "pooled": dict(pool="mean")}[case]
    return LearnerConfig(d_in=cfg.d_in, d_qk=cfg.d_qk, d_out=cfg.d_out, **extra)


def linear_batch_grad(x_Exd: np.ndarray, dz_Exw: np.ndarray) -> np.ndarray:
    """∇_W of a linear model z = x W (no activation) on the batch X whose loss has ∂L/∂Z = dz: Xᵀ dz."""
    return x_Exd.T @ dz_Exw


def _softmax_rows(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _importances(lc: LearnerConfig, params: dict, s, t, y) -> dict:
    """Per weight: stacked features X, importances Γ, and the broken Γ of the controls (numpy, from scratch)."""
    w_q, w_k, w_v = (np.asarray(params[name][0], dtype=np.float64) for name in WEIGHTS)
    rows = {name: {"x": [], "gamma": [], "broken": []} for name in WEIGHTS}
    outs = []
    for b in range(s.shape[0]):
        s_b = s[b]
        t_b = s_b if t is None else t[b]
        q, k, v = s_b @ w_q, t_b @ w_k, t_b @ w_v
        z = lc.c * q @ k.T
        if lc.causal:
            z = np.where(np.tri(*z.shape, dtype=bool), z, -np.inf)
        a = _softmax_rows(z)
        f = a @ v
        n = f.shape[0]
        if lc.pool == "mean":
            out = f.mean(axis=0)
            g = np.broadcast_to((out - y[b]) / n, f.shape)
        else:
            out = f
            g = f - y[b]
        outs.append(out)
        gv = g @ v.T
        p = a * (gv - np.sum(g * f, axis=1, keepdims=True))
        p_uncentred = a * gv
        uniform = np.full_like(a, 1.0 / a.shape[1])
        for name, x, gamma, broken in (("w_q", s_b, lc.c * p @ k, lc.c * p_uncentred @ k),
                                       ("w_k", t_b, lc.c * p.T @ q, lc.c * p_uncentred.T @ q),
                                       ("w_v", t_b, a.T @ g, uniform.T @ g)):
            rows[name]["x"].append(x)
            rows[name]["gamma"].append(gamma)
            rows[name]["broken"].append(broken)
    stacked = {name: {key: np.concatenate(val, axis=0) for key, val in r.items()} for name, r in rows.items()}
    return {"weights": stacked, "output": np.stack(outs)}


@functools.partial(jax.jit, static_argnums=0)
def _library(lc: LearnerConfig, params, x, y):
    """One compilation per case: the learner's output, its autodiff gradient, and importance.py's pieces."""
    f = learner_fn(lc)
    # Autodiff of the loss through the model: no importance.py code on this path.
    autodiff = jax.grad(lambda p: 0.5 * jnp.sum((f(p, x) - y) ** 2))(params)
    lib = loss_grad(lc, params, x, y)
    return f(params, x), autodiff, lib.importance, unit_importance_grad(lib)


def _measure(case: str, config: Config, rng: np.random.Generator) -> dict:
    lc = _learner(case, config)
    params = random_params(lc, rng)
    x = random_x(lc, rng, config.batch, config.seq_len, config.kv_len)
    y = rng.standard_normal(output_shape(learner_fn(lc), params, x))
    s, t = (x if lc.cross else (x, None))
    s_np = np.asarray(s, dtype=np.float64)
    t_np = None if t is None else np.asarray(t, dtype=np.float64)
    ours = _importances(lc, params, s_np, t_np, y)
    out, autodiff, lib_importance, lib_unit = _library(lc, params, x, jnp.asarray(y))
    autodiff = {name: np.asarray(autodiff[name][0]) for name in WEIGHTS}
    w = ours["weights"]
    linear = {name: linear_batch_grad(w[name]["x"], w[name]["gamma"]) for name in WEIGHTS}
    broken = {name: linear_batch_grad(w[name]["x"], w[name]["broken"]) for name in WEIGHTS}
    ones = {name: linear_batch_grad(w[name]["x"], np.ones_like(w[name]["gamma"])) for name in WEIGHTS}
    # The library's Γ is (B, 1 head, elements, width); ours is stacked over (batch, element).
    lib_gamma = {name: np.asarray(lib_importance[name][:, 0]).reshape(w[name]["gamma"].shape) for name in WEIGHTS}
    err = rel_err
    return {
        "grad": {name: err(linear[name], autodiff[name]) for name in WEIGHTS},
        "grad_control": {name: err(broken[name], autodiff[name]) for name in WEIGHTS},
        "unit": {name: err(np.asarray(lib_unit[name][0]), ones[name]) for name in WEIGHTS},
        "unit_control": {name: err(autodiff[name], ones[name]) for name in WEIGHTS},
        "gamma": {name: err(lib_gamma[name], w[name]["gamma"]) for name in WEIGHTS},
        "gamma_control": {name: err(lib_gamma[name], w[name]["broken"]) for name in ("w_q", "w_k")},
        "forward": err(ours["output"], np.asarray(out)),
        "unit_vs_true_gradient": {name: err(np.asarray(lib_unit[name][0]), autodiff[name]) for name in WEIGHTS},
    }


def run(config: Config = Config()) -> Report:
    rng = np.random.default_rng(config.seed)
    with float64():
        data = {case: _measure(case, config, rng) for case in config.cases}
    tol = config.tolerance

    def worst(key, weights=WEIGHTS):
        return max((data[c][key][w], f"{c}/{w}") for c in config.cases for w in weights)

    def least(key, weights):
        return min((data[c][key][w], f"{c}/{w}") for c in config.cases for w in weights)

    def identity(label, key, what):
        value, where = worst(key)
        return Check(label, value, tol, "<=", f"{what}; worst: {where}")

    def control(label, key, weights, what, of):
        value, where = least(key, weights)
        return Check(label, value, tol, "<=", f"{what}; must exceed the tolerance, smallest: {where}", kind="control",
                     of=of)

    GRAD, UNIT, GAMMA = ("attention grad = linear batch grad (Xᵀ Γ)", "unit importances = linear derivative (Xᵀ 1)",
                         "library Γ = independent Γ")
    checks = [
        identity(GRAD, "grad",
                 "jax.grad of Σ½‖f - y‖² vs Xᵀ Γ, Γ from A, Q, K, V and ∂L/∂f written in the script"),
        control("control: Γ_Q, Γ_K without the softmax's -f_i", "grad_control", ("w_q", "w_k"),
                "P_ij = a_ij g_i·v_j instead of a_ij g_i·(v_j - f_i)", GRAD),
        control("control: Γ_V without attention (A uniform)", "grad_control", ("w_v",),
                "Γ_V = Uᵀ G with U = 1/m instead of Aᵀ G", GRAD),
        identity(UNIT, "unit",
                 "importance.unit_importance_grad vs Xᵀ1 with X the inputs (S for W_Q, T for W_K, W_V)"),
        control("control: true (non-unit) importances vs Xᵀ 1", "unit_control", WEIGHTS,
                "the true gradient against Xᵀ1", UNIT),
        identity(GAMMA, "gamma", "importance.loss_grad(...).importance vs the script's Γ"),
        control("control: library Γ vs Γ without the -f_i", "gamma_control", ("w_q", "w_k"),
                "the script's Γ_Q, Γ_K with the softmax's -f_i dropped", GAMMA),
    ]
    gap = min(min(v["unit_vs_true_gradient"].values()) for v in data.values())
    forward = max(v["forward"] for v in data.values())
    notes = [f"the importances matter: the unit-importance gradient differs from the true one by >= {gap:.2f} "
             f"(relative) on every weight and case",
             f"the script's numpy forward pass matches learner_fn to {forward:.1e} (relative)"]
    return Report("reduction", CLAIM, checks, data, notes=notes)


def plot(report: Report, out_dir: str) -> list[str]:
    return []


def main(argv: list[str] | None = None) -> int:
    import sys

    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
