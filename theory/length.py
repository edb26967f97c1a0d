"""The gradient does not depend on the sequence length: lengths average out (paper §4.1, after eq. 12).

Claim: "the ANN gradient does not depend on the input sequence length (i.e.,
the number of elements), as this is averaged out ... the parameter gradient
remains unchanged even if the input sequence length is scaled."

Our reading, made exact: scale the length by repeating every element of S k
times (S ↦ S ⊗ 1_k, targets repeated with their elements). Each query then
sees every key k times, the softmax divides each weight by k, so A ↦ (A ⊗ 1_kᵀ)/k
and f(S ⊗ 1_k) = f(S) ⊗ 1_k: the outputs are the same, only repeated. In the
closed form Σ_i F_iᵀ Γ_i every element's term appears k times with 1/k of its
weight, so the gradient of the *mean* per-element loss

    L = 1/(B·n) Σ_b Σ_i ½‖f_i(S_b) − y_bi‖²

is unchanged, while the gradient of the *sum* over elements grows exactly by k
(the length is "averaged out", not absent). Checked for k = 2, 4, 8 (quick: 2, 8) in float64
(tolerance 1e-10) on the paper's learner (element level), a sequence-level
(mean-pooled, loss ½‖f − y‖² per sequence) learner and — in the full run —
cross-attention (S and T both repeated) and a multi-head learner with W_O.

Negative controls (kind "control", each the check's own measuring code on a
broken input, which must miss the 1e-10 threshold for every case and k): the
mean-loss comparison applied to the *sum* loss (it grows by k), and all three
checks on the map x ↦ f(x + E) with a fixed position-dependent E, whose
repeated copies are no longer copies.

Not claimed, reported as data: the masked (causal) learner is not
length-invariant in this sense, since a repeated element's copies see different
prefixes.

Example:
    >>> from attent_theory import length
    >>> length.run(length.Config.quick()).passed
    True
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from attent_jax.learner.model import LearnerConfig, learner_fn
from .common import output_shape, random_params, random_x
from .report import Check, Report, float64, rel_err, script_main

CLAIM = "gradient of the mean per-element loss is unchanged when the length is scaled (§4.1)"


@dataclasses.dataclass(frozen=True)
class Config:
    repeats: tuple[int, ...] = (2, 4, 8)   # k: each element repeated k times
    batch: int = 3                          # sequences
    seq_len: int = 5                        # n before repeating
    kv_len: int = 4                         # m before repeating (cross-attention)
    d_in: int = 4                           # d
    d_qk: int = 6                           # d'
    d_out: int = 2                          # o per head
    cases: tuple[str, ...] = ("paper learner", "sequence-level", "cross", "multihead+W_O")  # learners to check
    contrast_causal: bool = True            # also measure the (not claimed) causal learner, as data
    tolerance: float = 1e-10                # max relative error (float64)
    seed: int = 0                           # params, inputs and targets

    @classmethod
    def quick(cls) -> "Config":
        return cls(repeats=(2, 8), batch=2, seq_len=3, kv_len=3, d_in=3, d_qk=4, d_out=1,
                   cases=("paper learner", "sequence-level"), contrast_causal=False)


def _learner(case: str, cfg: Config) -> LearnerConfig:
    base = dict(d_in=cfg.d_in, d_qk=cfg.d_qk, d_out=cfg.d_out)
    extra = {"paper learner": {}, "sequence-level": dict(pool="mean"), "cross": dict(cross=True, d_kv=cfg.d_in + 1),
             "multihead+W_O": dict(num_heads=2, out_proj=True, scale="sqrt"), "causal": dict(causal=True)}
    if case not in extra:
        raise ValueError(f"Config.cases: got {case!r}, expected names from {sorted(extra)}")
    return LearnerConfig(**base, **extra[case])


@functools.partial(jax.jit, static_argnums=0)
def _measure(lc: LearnerConfig, params, x, y):
    """Output, ∇θ of the mean per-element loss and of the sum over elements (one backward graph)."""
    f = learner_fn(lc)

    out, vjp = jax.vjp(lambda p: f(p, x), params)
    # Cotangents of the sum over elements (f − y) and of the mean (divided by the element count).
    count = y.shape[0] * (1 if lc.pool == "mean" else y.shape[1])
    grad_sum = vjp(out - y)[0]
    grad_mean = vjp((out - y) / count)[0]
    return out, grad_mean, grad_sum


def _repeat(x, k):
    if isinstance(x, tuple):
        return tuple(np.repeat(np.asarray(a), k, axis=1) for a in x)
    return np.repeat(np.asarray(x), k, axis=1)


def _positional(x):
    """x + E, E[i, j] = sin((i + 1)(j + 1)) for element i, feature j: the copies of a repeated element differ."""
    if isinstance(x, tuple):
        return tuple(_positional(a) for a in x)
    x = np.asarray(x)
    i, j = np.arange(1, x.shape[1] + 1), np.arange(1, x.shape[2] + 1)
    return x + np.sin(i[:, None] * j[None, :])


def _repeat_row(lc: LearnerConfig, params, x, y, k: int, positional: bool = False) -> dict:
    """The repeat measures for one learner and k; positional: for the map x ↦ f(x + E) (a control)."""
    # Both paths hand _measure host arrays (k = 1: a numpy copy), so the control reuses the check's compilations.
    prep = _positional if positional else (lambda a: _repeat(a, 1))
    out1, mean1, sum1 = _measure(lc, params, prep(x), y)
    yk = y if lc.pool == "mean" else np.repeat(y, k, axis=1)
    outk, meank, sumk = _measure(lc, params, prep(_repeat(x, k)), yk)
    row = {"mean_loss_grad": rel_err(meank, mean1),
           "output": rel_err(outk, out1 if lc.pool == "mean" else np.repeat(np.asarray(out1), k, 1))}
    if lc.pool != "mean":
        row["sum_loss_grad_vs_k_times"] = rel_err(sumk, jax.tree.map(lambda g: k * np.asarray(g), sum1))
        # The control of the mean-loss check: the same comparison on the sum over elements.
        row["sum_loss_grad"] = rel_err(sumk, sum1)
    return row


def run(config: Config = Config()) -> Report:
    rng = np.random.default_rng(config.seed)
    errs = {"mean_loss_grad": {}, "output": {}, "sum_loss_grad_vs_k_times": {}, "sum_loss_grad": {}}
    ctl = {"mean_loss_grad": {}, "output": {}, "sum_loss_grad_vs_k_times": {}}   # on f(x + E)
    data = {}
    with float64():
        for case in config.cases + (("causal",) if config.contrast_causal else ()):
            lc = _learner(case, config)
            params = random_params(lc, rng)
            x = random_x(lc, rng, config.batch, config.seq_len, config.kv_len)
            y = np.asarray(rng.standard_normal(output_shape(learner_fn(lc), params, x)))
            data[case] = {}
            for k in config.repeats:
                row = _repeat_row(lc, params, x, y, k)
                data[case][k] = row
                if case == "causal":
                    continue
                broken = _repeat_row(lc, params, x, y, k, positional=True)
                data[case][k] = {**row, "control_position_term": broken}
                for name, value in row.items():
                    errs[name][(case, k)] = value
                for name in ctl:
                    if name in broken:
                        ctl[name][(case, k)] = broken[name]

    def check(label, errs, what, pick=max, kind="identity", of=""):
        case, k = pick(errs, key=errs.get)
        return Check(label, errs[(case, k)], config.tolerance, "<=",
                     f"{what}; k in {list(config.repeats)}, {'worst' if pick is max else 'smallest'}: {case}, k={k}",
                     kind=kind, of=of)

    mean, out, summed = "mean-loss gradient unchanged", "outputs repeated", "sum-loss gradient = k x"
    pos = "with E[i,j] = sin((i+1)(j+1)) added per position"
    # A control is caught only if every case and k catches it: its value is the smallest over them.
    control = dict(pick=min, kind="control")
    checks = [check(mean, errs["mean_loss_grad"], "rel. error of ∇θ after repeating elements k times"),
              check(out, errs["output"], "f(S ⊗ 1_k) vs f(S) ⊗ 1_k"),
              check(summed, errs["sum_loss_grad_vs_k_times"], "∇θ of the sum over elements vs k times the original"),
              check("control: mean-loss gradient unchanged, sum (not mean) loss", errs["sum_loss_grad"],
                    "the same comparison on ∇θ of the sum over elements (element-level learners)", **control, of=mean),
              check("control: mean-loss gradient unchanged, position term added", ctl["mean_loss_grad"],
                    f"∇θ of the mean loss {pos}", **control, of=mean),
              check("control: outputs repeated, position term added", ctl["output"], f"outputs {pos}",
                    **control, of=out),
              check("control: sum-loss gradient = k x, position term added", ctl["sum_loss_grad_vs_k_times"],
                    f"∇θ of the sum loss vs k times the original {pos}", **control, of=summed)]
    notes = []
    if "causal" in data:
        causal = max(v["mean_loss_grad"] for v in data["causal"].values())
        notes.append(f"masked (causal) attention is not length-invariant in this sense (not claimed): "
                     f"the mean-loss gradient changes by {causal:.2f} (relative)")
    return Report("length", CLAIM, checks, data, notes=notes)


def plot(report: Report, out_dir: str) -> list[str]:
    return []


def main(argv: list[str] | None = None) -> int:
    import sys

    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
