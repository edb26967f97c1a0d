"""Greedy teaching picks the steepest sequences and speeds up learning (§4.3, eqs. 20–21, Algorithm 1).

Setting. A target mapping f* realized by a dense set of N ≥ 4096 sequence–
property pairs {(S_j, y_j = f*(S_j))} from `attent_jax.tasks.datasets.make_teach_data`
(a random per-element MLP plus a cross-element mean term: not an attention map
of the learner's form, so no learner fits it exactly), an attention learner f_θ
(the paper's single-layer learner, element-level output), a subset size m.

Definitions (all losses are sums of per-sequence terms ℓ_j = ½‖f_θ(S_j) − y_j‖_F²):
- discrepancy of sequence j: ‖f_θ(S_j) − f*(S_j)‖_F (= ‖∂ℓ_j/∂f‖_F for this loss);
- greedy subset (eq. 21): the m sequences with the largest discrepancy;
  random subset: m sequences drawn uniformly without replacement;
- for a subset A, L_A = Σ_{j∈A} ℓ_j, and
  * the parameter-gradient norm ‖∇_θ L_A‖;
  * the functional gradient on the dense set, G_A = K(·, A) ∂L_A/∂f_A =
    J_all ∇_θ L_A (eq. 20: the sum of the projections of ∂L/∂f onto the kernel
    basis functions of the subset, evaluated on all N sequences; it is the
    first-order change of f on the whole target per unit step, computed as one
    `jax.jvp` instead of forming K), and its norm ‖G_A‖_F.

Step size. The same for both learners, from Proposition 4 rather than tuned:
the subset's mean loss is ξ-smooth in f with ξ = 1/m, so the condition
η ≤ 1/(ξτ) reads η ≤ m/τ, with τ the largest eigenvalue of the ANTK over the
selected sequences; we take τ over the greedy and a random subset at the
initial learner and η = ρ·m/τ for each ρ in `lr_scales` (ρ = 1: the
condition's boundary; ρ = 1/8: well inside it).

Checks, all paper claims (kind "claim": empirical, they may not hold at our
scale; `attent verify --strict` fails on them), each the median over `seeds`,
each seed its own target mapping, dense set and initial learner:
- ``|K(:,A) g_A| greedy/random``: ‖G_greedy‖ / mean over `num_random` random
  subsets of ‖G_random‖ at the initial learner, > 1;
- ``|∇θ L_A| greedy/random``: the same ratio for the parameter gradient, > 1;
- ``steps to ... target, random/greedy``: Algorithm 1 — each step select m
  sequences (greedy: re-selected from the current discrepancies; random: a
  fresh random subset), one gradient step of size η on the subset's mean loss —
  from the same initial learner; the set loss is the mean ℓ_j over all N. For a
  target set loss, the ratio of the steps at which each learner reaches it —
  from which on its set loss stays at or below the target to the end of the
  run — (> 1: greedy needs fewer steps; 0: greedy never gets there). Two
  targets, for each step size: "final" = the random learner's set loss
  after `steps` steps, "mid" = the geometric mean of the initial set loss and
  that final one (the early phase of teaching).
Reported as data: the ratios along training (after each quarter of the greedy
run), step sizes, kernel bounds and both loss curves (figure).

What the measurement shows (see the report for numbers): the greedy subset's
gradients are several times steeper, as eq. 20 says; in training, greedy
selection gets through the early phase faster at a small step, but on this
unrealizable target it ends above the random learner's set loss, and at the
boundary step its set loss zigzags (each step refits the current worst
sequences), so the training claims do not hold there.

Example:
    >>> from attent_theory import greedy
    >>> report = greedy.run(greedy.Config.quick())
    >>> report.checks[0].value > 1
    True
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from attent_jax.tasks.datasets import make_teach_data
from attent_jax.learner.model import LearnerConfig, learner_fn
from attent_jax.learner.ntk import empirical_ntk_fn
from .common import kernel_matrix, random_params
from .report import Check, Report, script_main

CLAIM = "greedy (largest |f - f*|) subsets steepen the functional gradient and learn faster (eqs. 20-21, Alg. 1)"


@dataclasses.dataclass(frozen=True)
class Config:
    num_examples: int = 4096   # N: the dense set realizing f*
    seq_len: int = 8           # n
    d_in: int = 8              # d
    d_qk: int = 16             # d' of the learner
    subset: int = 64           # m: sequences selected per step
    steps: int = 400           # training steps of Algorithm 1
    lr_scales: tuple[float, ...] = (0.125, 1.0)  # ρ: steps η = ρ·m/τ (ρ = 1: Proposition 4's boundary)
    num_random: int = 32       # random subsets averaged in the gradient-norm ratios
    seeds: tuple[int, ...] = (0, 1, 2)  # one target mapping, dense set and initial learner per seed

    @classmethod
    def quick(cls) -> "Config":
        return cls(num_examples=1024, steps=80, num_random=4, seeds=(0,))

    def __post_init__(self):
        # Algorithm 1 runs in 4 equal chunks (one compilation): other counts would be cut short unseen.
        if self.steps < 4 or self.steps % 4:
            raise ValueError(f"Config.steps: got {self.steps!r}, expected a positive multiple of 4")


def _learner(cfg: Config) -> LearnerConfig:
    return LearnerConfig(d_in=cfg.d_in, d_qk=cfg.d_qk, scale="sqrt")


def _per_seq_loss(out, y):
    return 0.5 * jnp.sum((out - y) ** 2, axis=(1, 2))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _norms(lc: LearnerConfig, m: int, params, x, y, random_idx):
    """‖G_A‖ and ‖∇θ L_A‖ for the greedy subset and each row of random_idx (R, m)."""
    f = learner_fn(lc)
    out = f(params, x)
    greedy_idx = jax.lax.top_k(jnp.sqrt(_per_seq_loss(out, y)), m)[1]

    def measure(idx):
        grad = jax.grad(lambda p: jnp.sum(_per_seq_loss(f(p, x[idx]), y[idx])))(params)
        func = jax.jvp(lambda p: f(p, x), (params,), (grad,))[1]
        gnorm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grad)))
        return jnp.linalg.norm(func), gnorm

    return measure(greedy_idx), jax.lax.map(measure, random_idx), greedy_idx


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _train(lc: LearnerConfig, m: int, steps: int, greedy: bool, params, x, y, lr, key):
    """Algorithm 1 (greedy) or its random-subset baseline; returns final params and the set loss per step."""
    f = learner_fn(lc)
    n = x.shape[0]

    def step(carry, key):
        p = carry
        losses = _per_seq_loss(f(p, x), y)
        idx = jax.lax.top_k(losses, m)[1] if greedy else jax.random.choice(key, n, (m,), replace=False)
        grad = jax.grad(lambda q: jnp.mean(_per_seq_loss(f(q, x[idx]), y[idx])))(p)
        return jax.tree.map(lambda a, g: a - lr * g, p, grad), jnp.mean(losses)

    params, curve = jax.lax.scan(step, params, jax.random.split(key, steps))
    final = jnp.mean(_per_seq_loss(f(params, x), y))
    return params, jnp.append(curve, final)


def _ratios(lc, cfg, params, x, y, rng):
    n = x.shape[0]
    random_idx = np.stack([rng.choice(n, cfg.subset, replace=False) for _ in range(cfg.num_random)])
    (g_func, g_param), (r_func, r_param), greedy_idx = _norms(lc, cfg.subset, params, x, y, random_idx)
    return float(g_func / np.mean(r_func)), float(g_param / np.mean(r_param)), np.asarray(greedy_idx)


@functools.lru_cache(maxsize=None)
def _ntk(lc: LearnerConfig):
    return empirical_ntk_fn(None, implementation="analytic", learner_config=lc)


def _step_size(lc, cfg, params, x, greedy_idx, rng) -> tuple[float, float]:
    """(m/τ, τ) with τ the largest ANTK eigenvalue over the greedy and a random subset at init.

    The subset's mean loss (1/m) Σ ½‖f − y‖² is ξ-smooth in f with ξ = 1/m, so
    Proposition 4's condition η ≤ 1/(ξτ) reads η ≤ m/τ: the step ρ·m/τ meets it for ρ ≤ 1.
    """
    random_idx = rng.choice(x.shape[0], cfg.subset, replace=False)
    tau = max(float(np.linalg.eigvalsh(kernel_matrix(_ntk(lc)(x[idx], None, params)))[-1])
              for idx in (greedy_idx, random_idx))
    return cfg.subset / tau, tau


def _train_chunks(lc, cfg, greedy, params, x, y, lr, key):
    """Algorithm 1 in 4 chunks (one compilation), with the learner after each chunk."""
    chunk = cfg.steps // 4
    curves, snapshots, p = [], [], params
    for k in range(4):
        p, curve = _train(lc, cfg.subset, chunk, greedy, p, x, y, lr, jax.random.fold_in(key, k))
        curve = np.asarray(curve, dtype=np.float64)
        curves.append(curve[:-1] if k < 3 else curve)
        snapshots.append(((k + 1) * chunk, p))
    return np.concatenate(curves), snapshots


def _reached(curve, target) -> int | None:
    """The first step from which the set loss stays at or below target to the end (None: never).

    "Stays", not "touches": a learner whose set loss zigzags has not reached a
    level it only dips under.
    """
    above = np.nonzero(np.asarray(curve) > target)[0]
    if above.size == 0:
        return 0
    return int(above[-1]) + 1 if above[-1] + 1 < len(curve) else None


def _speedup(curve_r, curve_g, target) -> tuple[float, int | None, int | None]:
    t_random, t_greedy = _reached(curve_r, target), _reached(curve_g, target)
    if t_greedy is None or t_random is None:
        return 0.0, t_random, t_greedy
    return t_random / max(t_greedy, 1), t_random, t_greedy


def run(config: Config = Config()) -> Report:
    lc = _learner(config)
    runs = []
    for seed in config.seeds:
        rng = np.random.default_rng(seed)
        # A different target mapping, dense set and initial learner per seed.
        x, y = make_teach_data(config.num_examples, config.seq_len, config.d_in, 1, seed=seed)
        x, y = jnp.asarray(x), jnp.asarray(y)
        params = random_params(lc, rng)
        func_ratio, param_ratio, greedy_idx = _ratios(lc, config, params, x, y, rng)
        lr_unit, tau = _step_size(lc, config, params, x, greedy_idx, rng)
        run_ = {"seed": seed, "tau": tau, "functional_ratio_init": func_ratio, "param_ratio_init": param_ratio,
                "by_rho": {}}
        for i, rho in enumerate(config.lr_scales):
            key = jax.random.key(seed)
            curve_g, snaps = _train_chunks(lc, config, True, params, x, y, rho * lr_unit, key)
            curve_r, _ = _train_chunks(lc, config, False, params, x, y, rho * lr_unit, key)
            final_target = float(curve_r[-1])
            # Halfway (geometrically) from the initial set loss to the random learner's final one.
            mid_target = float(np.sqrt(curve_r[0] * curve_r[-1]))
            run_["by_rho"][rho] = {
                "lr": rho * lr_unit, "final_target": final_target, "mid_target": mid_target,
                "final": _speedup(curve_r, curve_g, final_target), "mid": _speedup(curve_r, curve_g, mid_target),
                "curve_greedy": curve_g, "curve_random": curve_r}
            if i == 0:
                run_["along_training"] = [{"step": step, "ratios": _ratios(lc, config, p, x, y, rng)[:2]}
                                          for step, p in snaps]
        runs.append(run_)

    seeds = f"median over seeds {list(config.seeds)}"

    def median(values):
        return float(np.median(values)), f"{seeds}: {np.round(values, 2).tolist()}"

    func, func_txt = median([r["functional_ratio_init"] for r in runs])
    param, param_txt = median([r["param_ratio_init"] for r in runs])
    checks = [
        Check("|K(:,A) g_A| greedy/random", func, 1.0, ">",
              f"functional gradient on all {config.num_examples} sequences, m = {config.subset}, initial learner, "
              f"mean of {config.num_random} random subsets; {func_txt}", kind="claim"),
        Check("|∇θ L_A| greedy/random", param, 1.0, ">", f"parameter-gradient norm, same subsets; {param_txt}", kind="claim"),
    ]
    notes = []
    for rho in config.lr_scales:
        mid, mid_txt = median([r["by_rho"][rho]["mid"][0] for r in runs])
        final, final_txt = median([r["by_rho"][rho]["final"][0] for r in runs])
        checks.append(Check(f"steps to mid target, ρ={rho:g}", mid, 1.0, ">",
                            f"random/greedy, target sqrt(initial x random's final set loss); {mid_txt}", kind="claim"))
        checks.append(Check(f"steps to final target, ρ={rho:g}", final, 1.0, ">",
                            f"random/greedy, target random's set loss after {config.steps} steps "
                            f"(0 = greedy never stays there); {final_txt}", kind="claim"))
        lost = [r["seed"] for r in runs
                if r["by_rho"][rho]["curve_greedy"][-1] > r["by_rho"][rho]["curve_random"][-1]]
        if lost:
            notes.append(f"ρ = {rho:g}: greedy ends with a higher set loss than random on seeds {lost} (the target "
                         f"is not realizable: the largest discrepancies include the learner's approximation error)")
    return Report("greedy", CLAIM, checks, {"runs": runs}, notes=notes)


def plot(report: Report, out_dir: str) -> list[str]:
    """Set loss against step for greedy (Algorithm 1) and random subsets: rows step sizes, columns seeds."""
    from .report import new_figure, save_figure

    runs = report.data["runs"]
    rhos = list(runs[0]["by_rho"])
    fig, axes = new_figure(len(rhos), len(runs), figsize=(4.2 * len(runs), 3.2 * len(rhos)), squeeze=False)
    for row, rho in enumerate(rhos):
        for ax, r in zip(axes[row], runs):
            d = r["by_rho"][rho]
            ax.semilogy(d["curve_greedy"], lw=0.7, label="greedy (largest |f - f*|)")
            ax.semilogy(d["curve_random"], label="random subsets")
            ax.axhline(d["mid_target"], color="gray", ls=":", lw=1)
            ax.axhline(d["final_target"], color="k", ls=":", lw=1, label="targets")
            ax.set_title(f"seed {r['seed']}, ρ = {rho}: random/greedy steps mid {d['mid'][0]:.2f}, "
                         f"final {d['final'][0]:.2f}", fontsize=7)
        axes[row][0].set_ylabel("set loss (mean over the dense set)")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    return [save_figure(fig, out_dir, "greedy")]


def main(argv: list[str] | None = None) -> int:
    import sys

    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
