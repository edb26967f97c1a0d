"""`TeacherConfig`: the AtteNT teacher's regime, selector and schedules (Appendix C), validated.

The regimes and what each field does are described in `attent_jax.teaching.teacher`.
"""

from __future__ import annotations

import dataclasses
import math

from attent_jax.teaching import schedules, selection

REGIMES = ("finetune", "scratch", "every_epoch", "infobatch", "full")
EPOCH_KINDS = ("full", "select", "reuse", "infobatch")
RESCORE = ("all", "unselected", "unseen")
FIRST_EPOCHS = ("select", "full")


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    regime: str = "scratch"              # one of REGIMES (see the module docstring)
    selector: str = "soft"               # hard | soft | random | class_weight (attent_jax.teaching.selection)
    temperature: float = 1.0             # soft: draws ∝ exp(loss / temperature); losses' scale matters
    normalize_scores: bool = False       # soft: standardize losses ((s − mean) / std) first (off = the paper)
    ratio_schedule: str = "incremental"  # fixed | incremental | cosine: r(p), share of data per selected epoch
    ratio: float = 0.7                   # r for "fixed" (Appendix C fine-tuning keeps the top 70%)
    ratio_start: float = 0.2             # r(0) for incremental/cosine (Appendix C: 20% → 80%)
    ratio_end: float = 0.8               # r(1) for incremental/cosine
    interval_schedule: str = "incremental"  # fixed | incremental: epochs between re-selections (scratch)
    interval: int = 2                    # k for "fixed": re-select every `interval` epochs
    interval_min: int = 1                # k(0) for "incremental" (Table 3: a growing interval saves time)
    interval_max: int = 10               # k(1) for "incremental"
    first_epoch: str = "select"          # scratch: select (the paper: score all at initialization, train epoch 0
                                         # on the selected share) | full (epoch 0 on all data; its losses score)
    full_epochs_per_cycle: int = 0       # scratch: all-data epochs closing each cycle (0 = selected only)
    final_full_share: float = 0.0        # scratch: the last share of epochs trains on all data (0 = the paper;
                                         # InfoBatch anneals with 0.125)
    greedy_full_scoring: bool = True     # every_epoch: re-score all before each selection (Algorithm 1)
    infobatch_prune_ratio: float = 0.5   # InfoBatch r: share of below-mean examples pruned per epoch
    infobatch_anneal: float = 0.125      # InfoBatch δ: the last share of epochs trains on all data
    rescore: str = "all"                 # scoring passes score all (Algorithm 1) | unselected (cheaper: the subset's
                                         # examples keep the losses of their own training steps) | unseen (cheapest:
                                         # only never-scored examples; later selections rank the training losses)
    seed: int = 0                        # PRNG seed used by Teacher.init() when no key is given

    def __post_init__(self):
        def one_of(name, allowed):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected one of {allowed}")

        def number(name, lo, hi, lo_open, hi_open):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            if not ok:
                rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
                raise ValueError(f"{name}: got {v!r}, expected a number in {rng}")

        def integer(name, lo):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name}: got {v!r}, expected an int >= {lo}")

        one_of("regime", REGIMES)
        one_of("selector", selection.SELECTORS)
        one_of("ratio_schedule", schedules.RATIO_SCHEDULES)
        one_of("interval_schedule", schedules.INTERVAL_SCHEDULES)
        one_of("rescore", RESCORE)
        one_of("first_epoch", FIRST_EPOCHS)
        number("temperature", 0.0, math.inf, True, True)
        for name in ("ratio", "ratio_start", "ratio_end"):
            number(name, 0.0, 1.0, True, False)
        for name in ("interval", "interval_min", "interval_max"):
            integer(name, 1)
        if self.interval_max < self.interval_min:
            raise ValueError(f"interval_max: got {self.interval_max!r}, expected >= interval_min ({self.interval_min})")
        integer("full_epochs_per_cycle", 0)
        number("final_full_share", 0.0, 1.0, False, True)
        number("infobatch_prune_ratio", 0.0, 1.0, False, True)
        number("infobatch_anneal", 0.0, 1.0, False, False)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed: got {self.seed!r}, expected an int")

    @classmethod
    def paper_finetune(cls, **overrides) -> "TeacherConfig":
        """Appendix C, LLM fine-tuning: all data in epoch 1, then the top 70% by loss."""
        return cls(**{"regime": "finetune", "selector": "hard", "ratio_schedule": "fixed", "ratio": 0.7, **overrides})

    @classmethod
    def paper_scratch(cls, **overrides) -> "TeacherConfig":
        """Appendix C / Table 2, training from scratch: Soft, ratio 20% → 80%, growing interval."""
        return cls(**{"regime": "scratch", "selector": "soft", "ratio_schedule": "incremental",
                      "interval_schedule": "incremental", **overrides})
