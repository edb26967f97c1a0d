"""Sufficient loss reduction of functional gradient descent (Proposition 4, eq. 19, App. B.2).

Setting. A finite training set, f ∈ ℝ^N the learner's values on it, a convex
loss L(f) whose gradient g = ∇L(f) is ξ-Lipschitz (L is ξ-smooth), a kernel Gram
matrix K (symmetric positive definite, largest eigenvalue λ_max(K) ≤ τ), and one
functional-gradient step f' = f − η K g (paper eq. 5 with the canonical kernel).

The bound. The paper's formulas were lost in extraction; we rebuild the chain of
App. B.2 (eqs. 64–74) from its text. Write ρ = ξ η τ.

(a) ξ-smoothness (the descent lemma; the "Lipschitz smooth" step, eq. 70):
        L(f') ≤ L(f) − η gᵀKg + (ξ/2) η² ‖Kg‖².
(b) K ⪰ 0 with λ_max ≤ τ gives ‖Kg‖² = gᵀK²g ≤ τ gᵀKg (the "bounded kernel" step, eq. 71), so
        L(f') ≤ L(f) − η (1 − ρ/2) gᵀKg                                         (our eq. 73)
(c) hence, for η ≤ 1/(ξτ) (ρ ≤ 1), a sufficient reduction                        (our eq. 74 / eq. 19)
        L(f) − L(f') ≥ (η/2) gᵀKg  > 0   whenever g ≠ 0.
(d) The paper's chain starts from convexity instead (eq. 64:
    L(f') ≤ L(f) + ⟨∇L(f'), f' − f⟩ = L(f) − η g'ᵀKg), splits g'ᵀKg by
    polarisation (eqs. 66–67: 2g'ᵀKg = g'ᵀKg' + gᵀKg − (g' − g)ᵀK(g' − g)), drops
    the non-negative g'ᵀKg' (K positive definite) and bounds
    (g' − g)ᵀK(g' − g) ≤ τ ξ² ‖f' − f‖² ≤ ξ²τ²η² gᵀKg, giving
        L(f') ≤ L(f) − (η/2)(1 − ρ²) gᵀKg,
    a weaker form of (b) that also yields a reduction for ρ < 1.

Checks over `num_instances` random instances with ρ drawn in (0, 1] (the
condition), each the worst *normalized slack* — (bound-side − actual)/(η gᵀKg),
≥ 0 when the inequality holds — against −1e-9 (float64 round-off; the bounds
are tight: (a) is an equality for a quadratic loss):
``(a) descent lemma``, ``(b) eq. 73``, ``(c) reduction ≥ (η/2)gᵀKg``,
``(d) convexity chain``. Above the condition, ``(c) fails for ρ > 2`` takes
instances with ρ = `rho_above` and reports the *smallest* normalized
reduction D/(η gᵀKg); it must be < 1/2 (the guarantee fails on some instance —
for a quadratic loss with the residual along K's top eigenvector, D/(η gᵀKg)
= 1 − ρ/2 exactly, negative: the loss goes up). (b) itself holds for every η;
what the condition buys is that its right side is a reduction.

Random instances: kernels — a random spectrum in a random basis, an RBF Gram
matrix of random points, a linear Gram matrix of random features, and an
importance-adaptive sequence kernel K_ab = Σ_ij α_ai α_bj k(s_ai, s_bj) over
random sequences with softmax importances α (the canonical kernel's form);
τ = λ_max(K) or up to twice it. Losses with their smoothness ξ: a·½(f − y)²
(ξ = a), a·softplus(−y f) with y = ±1 (ξ = a/4), a·Huber_δ (ξ = a),
a·log cosh (ξ = a), and a non-separable ½ (f − y)ᵀH(f − y) (ξ = λ_max(H)).

Example:
    >>> from attent_theory import loss_reduction
    >>> loss_reduction.run(loss_reduction.Config.quick()).passed
    True
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .report import Check, Report, script_main

CLAIM = "η ≤ 1/(ξτ) ⇒ L(f - ηKg) ≤ L(f) - (η/2) gᵀKg (Proposition 4, eq. 19, App. B.2)"
KERNELS = ("spectrum", "rbf", "linear", "sequence")
LOSSES = ("mse", "logistic", "huber", "logcosh", "quadratic")


@dataclasses.dataclass(frozen=True)
class Config:
    num_instances: int = 5000   # random instances with ρ = ξητ in (0, 1]
    num_above: int = 500        # instances with ρ = rho_above
    rho_above: float = 2.5      # a step size above the condition
    max_size: int = 40          # N drawn in [2, max_size]
    tolerance: float = 1e-9     # round-off allowance on the normalized slack
    seed: int = 0               # the instance stream

    @classmethod
    def quick(cls) -> "Config":
        return cls(num_instances=1000, num_above=200, max_size=20)


# --------------------------------------------------------------------------- instances

def _kernel(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "spectrum":
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        lam = np.exp(rng.uniform(np.log(1e-3), 0.0, n)) * np.exp(rng.uniform(-2, 2))
        return (q * lam) @ q.T
    if kind == "rbf":
        x = rng.standard_normal((n, rng.integers(1, 6)))
        h = np.exp(rng.uniform(np.log(0.3), np.log(3.0)))
        k = np.exp(-np.sum((x[:, None] - x[None]) ** 2, -1) / (2 * h * h))
    elif kind == "linear":
        x = rng.standard_normal((n, n + rng.integers(0, 5)))
        k = x @ x.T / x.shape[1]
    else:  # importance-adaptive sequence kernel: Σ_ij α_ai α_bj k(s_ai, s_bj)
        length, dim = rng.integers(2, 6), rng.integers(1, 5)
        s = rng.standard_normal((n, length, dim))
        z = rng.standard_normal((n, length)) * 2
        alpha = np.exp(z - z.max(1, keepdims=True))
        alpha /= alpha.sum(1, keepdims=True)
        d2 = np.sum((s[:, None, :, None] - s[None, :, None, :]) ** 2, -1)  # (a, b, i, j)
        k = np.einsum("ai,bj,abij->ab", alpha, alpha, np.exp(-d2 / 2))
    # Strictly positive definite (a Gram matrix of distinct points can be near-singular).
    return 0.5 * (k + k.T) + 1e-6 * np.trace(k) / n * np.eye(n)


def _huber(r, delta):
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _loss(kind: str, n: int, rng: np.random.Generator):
    """(L, ∇L, ξ) for a random convex ξ-smooth loss of f ∈ ℝ^N."""
    a = float(np.exp(rng.uniform(np.log(0.1), np.log(10.0))))
    y = rng.standard_normal(n) * 2
    if kind == "mse":
        return (lambda f: a * 0.5 * np.sum((f - y) ** 2)), (lambda f: a * (f - y)), a
    if kind == "logistic":
        s = np.sign(y)
        return (lambda f: a * np.sum(np.logaddexp(0.0, -s * f))), \
               (lambda f: -a * s / (1.0 + np.exp(s * f))), a / 4
    if kind == "huber":
        delta = float(np.exp(rng.uniform(np.log(0.1), np.log(3.0))))
        return (lambda f: a * np.sum(_huber(f - y, delta))), (lambda f: a * np.clip(f - y, -delta, delta)), a
    if kind == "logcosh":
        return (lambda f: a * np.sum(np.logaddexp(f - y, y - f) - np.log(2.0))), (lambda f: a * np.tanh(f - y)), a
    b = rng.standard_normal((n, rng.integers(1, n + 1)))
    h = a * b @ b.T / b.shape[1]
    return (lambda f: 0.5 * (f - y) @ h @ (f - y)), (lambda f: h @ (f - y)), float(np.linalg.eigvalsh(h)[-1])


def _instance(rng: np.random.Generator, max_size: int, rho: float | None):
    """One random instance: returns ρ and the measured pieces of one step."""
    n = int(rng.integers(2, max_size + 1))
    k = _kernel(KERNELS[rng.integers(len(KERNELS))], n, rng)
    loss_kind = LOSSES[rng.integers(len(LOSSES))]
    loss, grad, xi = _loss(loss_kind, n, rng)
    tau = float(np.linalg.eigvalsh(k)[-1]) * (1.0 if rng.random() < 0.5 else rng.uniform(1.0, 2.0))
    if rho is None:  # within the condition, the boundary ρ = 1 included
        rho = 1.0 if rng.random() < 0.1 else float(np.exp(rng.uniform(np.log(1e-2), 0.0)))
    eta = rho / (xi * tau)
    f = rng.standard_normal(n) * np.exp(rng.uniform(-1, 1.5))
    if loss_kind in ("mse", "quadratic") and rng.random() < 0.3:
        # The tight case: residual along K's top eigenvector, where (a) holds with equality.
        y_eff = f - grad(f) / (xi if loss_kind == "mse" else 1.0)
        f = y_eff + np.linalg.eigh(k)[1][:, -1] * rng.normal()
    g = grad(f)
    kg = k @ g
    gkg = float(g @ kg)
    decrease = loss(f) - loss(f - eta * kg)
    return dict(rho=rho, eta=eta, xi=xi, tau=tau, gkg=gkg, kg2=float(kg @ kg), decrease=float(decrease),
                loss=loss_kind, size=n)


def _slacks(m: dict) -> dict:
    """Normalized slack of each bound: (actual decrease − guaranteed decrease) / (η gᵀKg)."""
    scale = m["eta"] * m["gkg"]
    rho, d = m["rho"], m["decrease"]
    return {"a": (d - (m["eta"] * m["gkg"] - 0.5 * m["xi"] * m["eta"] ** 2 * m["kg2"])) / scale,
            "b": (d - m["eta"] * (1 - rho / 2) * m["gkg"]) / scale,
            "c": (d - 0.5 * m["eta"] * m["gkg"]) / scale,
            "d": (d - 0.5 * m["eta"] * (1 - rho ** 2) * m["gkg"]) / scale}


def run(config: Config = Config()) -> Report:
    rng = np.random.default_rng(config.seed)
    inside, above = [], []
    for _ in range(config.num_instances):
        m = _instance(rng, config.max_size, None)
        if m["gkg"] > 0:  # g = 0: nothing to reduce
            inside.append(m)
    for _ in range(config.num_above):
        m = _instance(rng, config.max_size, config.rho_above)
        if m["gkg"] > 0:
            above.append(m)
    slacks = [_slacks(m) for m in inside]
    worst = {key: min(s[key] for s in slacks) for key in "abcd"}
    normalized_above = [m["decrease"] / (m["eta"] * m["gkg"]) for m in above]
    tol = -config.tolerance
    n = len(inside)
    checks = [
        Check("(a) descent lemma", worst["a"], tol, ">=",
              f"min over {n} instances of normalized slack of L(f') ≤ L(f) - ηgᵀKg + ξη²|Kg|²/2"),
        Check("(b) eq. 73: ≤ L - η(1-ξητ/2)gᵀKg", worst["b"], tol, ">=",
              f"min normalized slack, {n} instances"),
        Check("(c) reduction ≥ (η/2)gᵀKg, η ≤ 1/(ξτ)", worst["c"], tol, ">=",
              f"min normalized slack, {n} instances with ρ = ξητ in (0, 1]"),
        Check("(d) convexity chain (App. B.2)", worst["d"], tol, ">=",
              "min normalized slack of L(f') ≤ L(f) - (η/2)(1-ρ²)gᵀKg"),
        Check(f"(c) fails for ρ = {config.rho_above:g}", min(normalized_above), 0.5, "<",
              f"min over {len(above)} instances of (L(f) - L(f'))/(ηgᵀKg): the guarantee needs ≥ 1/2"),
    ]
    worst_above = int(np.argmin(normalized_above))
    data = {"num_inside": n, "num_above": len(above), "worst_slack": worst,
            "fraction_above_violating": float(np.mean(np.asarray(normalized_above) < 0.5)),
            "fraction_above_loss_increases": float(np.mean(np.asarray(normalized_above) < 0)),
            "worst_above_instance": above[worst_above],
            "scatter": {"rho": [m["rho"] for m in inside + above],
                        "normalized_decrease": [m["decrease"] / (m["eta"] * m["gkg"]) for m in inside + above],
                        "loss": [m["loss"] for m in inside + above]}}
    notes = [f"above the condition (ρ = {config.rho_above:g}) the guarantee fails on "
             f"{100 * data['fraction_above_violating']:.0f}% of instances and the loss rises on "
             f"{100 * data['fraction_above_loss_increases']:.0f}%"]
    return Report("loss_reduction", CLAIM, checks, data, notes=notes)


def plot(report: Report, out_dir: str) -> list[str]:
    """Normalized decrease D/(η gᵀKg) against ρ = ξητ, with the bounds (b) and (c)."""
    from .report import new_figure, save_figure

    sc = report.data["scatter"]
    rho, dec, loss = np.asarray(sc["rho"]), np.asarray(sc["normalized_decrease"]), np.asarray(sc["loss"])
    fig, ax = new_figure(figsize=(6, 4))
    for kind in LOSSES:
        sel = loss == kind
        ax.scatter(rho[sel], dec[sel], s=4, alpha=0.5, label=kind)
    grid = np.linspace(1e-2, max(rho.max(), 1.0), 200)
    ax.plot(grid, 1 - grid / 2, "k-", lw=1, label="(b) 1 - ρ/2")
    ax.plot([0, 1], [0.5, 0.5], "r--", lw=1.2, label="(c) 1/2 for ρ ≤ 1")
    ax.axvline(1.0, color="gray", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("ρ = ξ η τ")
    ax.set_ylabel("(L(f) - L(f - ηKg)) / (η gᵀKg)")
    ax.set_title("Proposition 4: every point lies above the bounds", fontsize=9)
    ax.legend(fontsize=7, markerscale=3)
    return [save_figure(fig, out_dir, "loss_reduction")]


def main(argv: list[str] | None = None) -> int:
    import sys

    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
