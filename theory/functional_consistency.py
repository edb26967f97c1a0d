"""One parameter GD step is functional gradient descent with the ANTK, up to O(η²) (Theorem 3, eqs. 13–18).

Claim (paper eqs. 13–15, Theorem 3, App. B.1): a gradient-descent step
θ' = θ − η ∇_θ L on a training set {(S_j, y_j)} changes the learner at any S by

    f_θ'(S) − f_θ(S) = −η Σ_j K_θ(S, S_j) ∂L/∂f(S_j) + R(η),      R(η) = O(η²),

with K_θ the ANTK (`attent_jax.learner.ntk`), i.e. to first order the parameter step is
a functional-gradient step with the kernel. We check the order of the
remainder: the *relative* remainder ρ(η) = ‖R(η)‖ / ‖η K ∂L/∂f‖ must shrink
linearly in η. Measured on the training sequences and on held-out sequences,
in float64, for η on a log grid spanning `decades` decades below
η_max = `eta_max_scale` / λ_max(K_train); a least-squares fit of log ρ against
log η must give a slope in [0.9, 1.1] (exactly 1 for an O(η²) remainder that
is not O(η³)). Also checked: the first-order term computed with the kernel
equals the directional derivative J·(−η∇θL) by `jax.jvp` (rel. error ≤ 1e-10).

Losses (both convex in f): ½‖f − y‖² (MSE) and a softplus/logistic loss
Σ softplus(−y·f) with y ∈ {±1}; ∂L/∂f by `jax.grad`.

Example:
    >>> from attent_theory import functional_consistency as fc
    >>> fc.run(fc.Config.quick()).passed
    True
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from attent_jax.learner.model import LearnerConfig, learner_fn
from attent_jax.learner.ntk import empirical_ntk_fn
from .common import kernel_matrix, random_params, random_x
from .report import Check, Report, float64, loglog_slope, rel_err, script_main

CLAIM = "a GD step changes f by -η K ∂L/∂f + O(η²) (Theorem 3, eqs. 13-18)"
LOSSES = ("mse", "logistic")


@dataclasses.dataclass(frozen=True)
class Config:
    num_train: int = 8       # N: training sequences
    num_test: int = 4        # held-out sequences where the change is also predicted
    seq_len: int = 5         # n
    d_in: int = 4            # d
    d_qk: int = 8            # d'
    scale: str = "sqrt"      # logit scale c ("one" = the paper's eq. 2)
    decades: float = 3.0     # η grid spans this many decades
    num_etas: int = 7        # points on the η grid
    eta_max_scale: float = 0.1  # largest η = this / λ_max(K_train)
    slope_range: tuple[float, float] = (0.9, 1.1)  # accepted log-log slope of the relative remainder
    tolerance: float = 1e-10  # first-order term: kernel form vs jax.jvp (float64)
    losses: tuple[str, ...] = LOSSES  # convex losses in f
    seed: int = 0            # params, inputs and targets

    @classmethod
    def quick(cls) -> "Config":
        return cls(num_train=4, num_test=2, seq_len=4, d_in=3, d_qk=4, num_etas=4, losses=("mse",))


def _loss(kind: str, out, y):
    if kind == "mse":
        return 0.5 * jnp.sum((out - y) ** 2)
    return jnp.sum(jax.nn.softplus(-y * out))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _step_and_change(lc: LearnerConfig, kind: str, params, x_train, y, x_test, eta):
    """Δf on train and test after θ' = θ − η∇L, and the jvp prediction J·(−η∇L)."""
    f = learner_fn(lc)
    grad = jax.grad(lambda p: _loss(kind, f(p, x_train), y))(params)
    new = jax.tree.map(lambda p, g: p - eta * g, params, grad)
    step = jax.tree.map(lambda g: -eta * g, grad)
    jvp = lambda x: jax.jvp(lambda p: f(p, x), (params,), (step,))[1]
    return (f(new, x_train) - f(params, x_train), f(new, x_test) - f(params, x_test), jvp(x_train), jvp(x_test))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _dloss_df(lc: LearnerConfig, kind: str, params, x, y):
    return jax.grad(lambda out: _loss(kind, out, y))(learner_fn(lc)(params, x))


@functools.lru_cache(maxsize=None)
def _ntk(lc: LearnerConfig):
    return empirical_ntk_fn(None, trace_axes=(), implementation="analytic", learner_config=lc)


def run(config: Config = Config()) -> Report:
    rng = np.random.default_rng(config.seed)
    lc = LearnerConfig(d_in=config.d_in, d_qk=config.d_qk, scale=config.scale)
    checks, data = [], {}
    with float64():
        params = random_params(lc, rng)
        x_train = random_x(lc, rng, config.num_train, config.seq_len)
        x_test = random_x(lc, rng, config.num_test, config.seq_len)
        y_real = rng.standard_normal((config.num_train, config.seq_len, 1))
        ntk = _ntk(lc)
        k_tt = kernel_matrix(ntk(x_train, None, params))
        k_st = kernel_matrix(ntk(x_test, x_train, params))
        lam = float(np.linalg.eigvalsh(k_tt)[-1])
        etas = config.eta_max_scale / lam * np.logspace(-config.decades, 0, config.num_etas)
        for kind in config.losses:
            y = y_real if kind == "mse" else np.sign(y_real)
            g = np.asarray(_dloss_df(lc, kind, params, x_train, y)).reshape(-1)
            rho_train, rho_test, jvp_err = [], [], 0.0
            for eta in etas:
                d_train, d_test, jvp_train, jvp_test = _step_and_change(lc, kind, params, x_train, y, x_test, eta)
                first_train, first_test = -eta * k_tt @ g, -eta * k_st @ g
                # ρ = ‖Δf − first‖ / ‖first‖ = ‖R‖ / ‖η K g‖
                rho_train.append(rel_err(np.asarray(d_train).reshape(-1), first_train))
                rho_test.append(rel_err(np.asarray(d_test).reshape(-1), first_test))
                jvp_err = max(jvp_err, rel_err(first_train, np.asarray(jvp_train).reshape(-1)),
                              rel_err(first_test, np.asarray(jvp_test).reshape(-1)))
            data[kind] = {"etas": etas, "rho_train": rho_train, "rho_test": rho_test, "jvp_err": jvp_err,
                          "slope_train": loglog_slope(etas, rho_train), "slope_test": loglog_slope(etas, rho_test)}
            span = f"η in [{etas[0]:.2g}, {etas[-1]:.2g}] ({config.decades:g} decades), λ_max(K) = {lam:.3g}"
            checks.append(Check(f"remainder slope, train ({kind})", data[kind]["slope_train"], config.slope_range,
                                "in", f"log-log slope of |R|/|η K g| on the training sequences; {span}"))
            checks.append(Check(f"remainder slope, held-out ({kind})", data[kind]["slope_test"],
                                config.slope_range, "in", f"same, on {config.num_test} held-out sequences"))
            checks.append(Check(f"η K g = jvp ({kind})", jvp_err, config.tolerance, "<=",
                                "first-order term via the analytic ANTK vs jax.jvp along -η∇θL"))
        data["lambda_max"] = lam
    return Report("functional_consistency", CLAIM, checks, data)


def plot(report: Report, out_dir: str) -> list[str]:
    """log-log relative remainder against η with a slope-1 guide (Figure: remainder order)."""
    from .report import new_figure, save_figure

    fig, ax = new_figure(figsize=(5.2, 3.8))
    for kind in LOSSES:
        d = report.data.get(kind)
        if not d:
            continue
        etas = np.asarray(d["etas"])
        ax.loglog(etas, d["rho_train"], "o-", label=f"{kind}, train (slope {d['slope_train']:.3f})")
        ax.loglog(etas, d["rho_test"], "s--", label=f"{kind}, held-out (slope {d['slope_test']:.3f})")
        ax.loglog(etas, d["rho_train"][0] * etas / etas[0], "k:", lw=0.8)
    ax.set_xlabel("step size η")
    ax.set_ylabel("|R(η)| / |η K ∂L/∂f|")
    ax.set_title("Theorem 3: remainder is O(η²) (dotted: slope 1)", fontsize=9)
    ax.legend(fontsize=7)
    return [save_figure(fig, out_dir, "functional_consistency")]


def main(argv: list[str] | None = None) -> int:
    import sys

    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
