"""The AtteNT teacher: which examples each epoch trains on (§4.3 Algorithm 1, §5, Appendix C).

The teacher keeps a score table (one loss per example), refreshed for free by the
per-example losses of the training forward passes and, where the schedule says
so, by a full scoring pass. Each epoch it hands the training loop a fixed-length
permutation of all N examples whose first ``n_active`` entries are the ones to
train on, plus per-example loss weights. Selection runs on device and is
jittable; the schedule (which epoch selects, how many, whether to re-score) is
host-side Python, so the loop needs no device→host sync to know its shapes.

Regimes (every regime but ``scratch`` trains epoch 0 on all data, which fills the
score table from that epoch's training losses, except for the examples of a
dropped partial batch: see below):

- ``finetune`` (Appendix C, LLMs): epoch 0 on all data, recording each
  example's loss; at epoch 1 select round(r·N) examples from those losses
  (the paper: the top 70%) and train on that same subset, reshuffled, for every
  later epoch. Never asks for a scoring pass.
- ``scratch`` (Appendix C, ViT pre-training): training runs in cycles. With
  ``first_epoch="select"`` (default, the paper's first epoch) the first cycle
  starts at epoch 0 with a scoring pass over all N examples at initialization;
  with ``first_epoch="full"`` epoch 0 trains on all data (its training losses
  score every example) and the first cycle starts at epoch 1. A cycle starting
  at epoch e lasts ``k(p(e))`` epochs (p(e) = e / (E − 1), k from the interval
  schedule, cut short by the end of training) and trains every one of them on
  one subset (reshuffled each epoch) of round(r(p_last)·N) examples, where
  p_last = e_last / (E − 1) is the progress of the cycle's *last* epoch: the
  ratio a cycle uses is the one its end has reached, so the last cycle, which
  ends at epoch E − 1, uses ``ratio_end``, and a first cycle of one epoch at
  epoch 0 uses ``ratio_start`` (read at the cycle's start, a growing interval
  would never reach ``ratio_end``: with 20 epochs and 1 → 10 it stopped at
  0.74). Then ``full_epochs_per_cycle`` epochs on all data (0 by default: the
  paper's stages train on the selected subset only). With ``final_full_share``
  = a > 0 (our variant, InfoBatch's annealing applied to AtteNT) every epoch
  e ≥ (1 − a)·E trains on all data and the last cycle is cut short there. A
  cycle asks for a full scoring pass before its selection unless the epoch
  just before trained on all data, whose training losses already refreshed
  every score (so the first cycle after a full epoch 0, and every cycle when
  ``full_epochs_per_cycle >= 1``, score for free).
- ``every_epoch`` (Algorithm 1, plain greedy): a fresh selection every epoch
  from epoch 1 on; with ``greedy_full_scoring`` (default, as Algorithm 1
  evaluates every discrepancy each iteration) a scoring pass precedes each
  selection from epoch 2 on; without it the table is refreshed only by training,
  so unselected examples keep stale scores.
- ``infobatch`` (Qin et al., 2024): each epoch, among the examples whose score is
  below the mean score (of the examples seen so far), prune each with
  probability ``infobatch_prune_ratio`` = q; kept below-mean examples get loss
  weight 1/(1 − q), all others 1, so E[Σ_active w_i ∇ℓ_i] = Σ_all ∇ℓ_i. The
  last ``infobatch_anneal`` share of epochs (epoch ≥ (1 − anneal)·E) train on
  all data with weight 1. Its ``n_active`` depends on the scores, so this is the
  one regime where `plan_epoch` fetches a device value: one int32 per epoch, by
  an explicit `jax.device_get` (allowed under ``jax.transfer_guard("disallow")``).
- ``full``: all data every epoch (the "w/o AtteNT" baseline).

What a scoring pass scores (``rescore``): ``"all"`` (default, Algorithm 1:
every discrepancy is re-evaluated), ``"unselected"`` (our cheaper variant):
only the examples outside the current subset, since those inside it were just
scored by their own training steps (the table keeps those losses, from each
example's latest step), or ``"unseen"`` (cheapest): only examples never scored,
so after the pass at initialization every selection ranks the losses the
training steps left in the table (an unselected example keeps its score from
the last time it was scored or trained). Both variants score every example
never scored, so the pass at initialization still scores all N. `scoring_order` gives a loop the examples to score, first, and
their count.

Baselines on the same budget: the ``random`` and ``class_weight`` selectors in
the ``scratch``/``finetune`` regimes give the same ``n_active`` sequence as
``hard``/``soft`` (it depends only on the schedule). They never read a score,
so their schedule asks for no scoring pass (``needs_full_scoring`` is False for
every epoch): each method is charged only for the work it needs.

The score table starts at +inf with ``seen_N`` False: an unseen example outranks
every seen one for ``hard``/``soft`` (so it is tried before being skipped) and
is never pruned by InfoBatch. A scoring pass scores every example, but an
all-data epoch refreshes only the scores of the examples it trains, and a loop
with a fixed batch size B (`attent_jax.training.loop`) drops each epoch's last
partial batch. So when B does not divide N, the N mod B ≤ B − 1 examples that
land in the dropped part of an all-data epoch 0 are never trained, keep +inf,
and go first into the next score-reading selection whatever their loss, as no
scoring pass follows an all-data epoch: in ``finetune`` into the fixed subset
that every later epoch trains on, in ``every_epoch`` and in ``scratch`` with
``first_epoch="full"`` into the epoch-1 selection; InfoBatch keeps them, at
weight 1. (In a later all-data epoch the dropped examples keep their previous
scores instead.) When B divides N every example of an all-data epoch is trained
and this never happens.

Non-finite scores follow `attent_jax.teaching.selection`'s one rule (`selection.ranking`):
+inf first, NaN last, in every regime; InfoBatch's mean is over the finite
scores, +inf counts as above it and −inf / NaN as below it.

Randomness: epoch e uses ``fold_in(state.key, e)``, so an epoch's plan depends
only on the seed, the epoch and the score table: a resumed run continues the
same stream.

Example (a loop of your own; here the "losses" are made up):
    >>> import jax, jax.numpy as jnp
    >>> from attent_jax.teaching.teacher import Teacher, TeacherConfig
    >>> N, E = 10, 4
    >>> teacher = Teacher(TeacherConfig(regime="finetune", selector="hard", ratio_schedule="fixed",
    ...                                 ratio=0.7), num_examples=N)
    >>> state = teacher.init(jax.random.key(0))
    >>> n_seen = []
    >>> for epoch in range(E):
    ...     state, idx_N, w_N, n = teacher.plan_epoch(state, epoch, E)
    ...     for batch_idx in jnp.split(idx_N[:n], [n // 2]):      # two "steps"
    ...         losses = batch_idx.astype(jnp.float32)           # per-example losses of the step
    ...         state = teacher.update(state, batch_idx, losses)
    ...     n_seen.append(n)
    >>> n_seen
    [10, 7, 7, 7]
    >>> sorted(idx_N[:n].tolist())  # the 7 largest "losses"
    [3, 4, 5, 6, 7, 8, 9]
"""

from __future__ import annotations

import dataclasses
import fractions
import math

import jax
import jax.numpy as jnp
import numpy as np

from attent_jax.learner.validate import check_array, check_same_leading
from attent_jax.teaching import schedules, selection
from attent_jax.teaching.kernels import (_MODES, TeacherState, _device_int, _plan,  # noqa: F401
                                         _plan_infobatch, _update)
from attent_jax.teaching.teacher_config import EPOCH_KINDS, REGIMES, RESCORE, TeacherConfig  # noqa: F401


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """Host-side description of one epoch of the schedule."""
    epoch: int
    kind: str                  # full | select (new subset) | reuse (the cycle's subset) | infobatch
    n_active: int | None       # examples trained on; None for infobatch (decided on device)
    ratio: float | None        # r(p) behind n_active for select/reuse epochs
    needs_full_scoring: bool   # run a scoring pass over all N examples before plan_epoch


# ---------------------------------------------------------------------------- the teacher

def _all_data_tail(share: float, num_epochs: int) -> int:
    """The first epoch of a run's all-data tail: the first e with e >= (1 − share)·E (InfoBatch's anneal).

    Shared by the infobatch and scratch regimes, so equal shares give equal tails. The tail holds
    ⌊share·E⌋ epochs, computed exactly for the decimal the user wrote (0.7 of 10 epochs: 7).
    """
    # In floats (1.0 − 0.7)·10 is 3.0000000000000004 and ceil made it 4: a tail one epoch short. str() of a
    # float is the shortest decimal that reads back as it, i.e. the number as written, so the Fraction
    # product is exact and lands on the integer whenever (1 − share)·E is one; rounding the float
    # product to some number of digits instead would still misjudge shares written with more digits.
    return min(num_epochs, math.ceil((1 - fractions.Fraction(str(share))) * num_epochs))


class Teacher:
    """The AtteNT teacher for a dataset of `num_examples` examples.

    Args:
        config: the `TeacherConfig`.
        num_examples: N, the dataset size.
        labels: ``(N,)`` int class ids, required by the ``class_weight`` selector.

    Three calls drive a training loop (see the module docstring for a runnable one):
    ``state = teacher.init(key)``; per epoch
    ``state, idx_N, w_N, n = teacher.plan_epoch(state, epoch, num_epochs)`` and
    train on ``idx_N[:n]`` with per-example loss weights ``w_N[batch_idx]``;
    after each step ``state = teacher.update(state, batch_idx, per_example_losses)``.
    Before `plan_epoch`, run a forward pass feeding `update` whenever
    ``teacher.needs_full_scoring(epoch, num_epochs)``: over all N examples, or
    over those `scoring_order` names (``rescore="unselected"``).
    """

    def __init__(self, config: TeacherConfig, num_examples: int, labels=None):
        if not isinstance(config, TeacherConfig):
            raise ValueError(f"config: got {type(config).__name__}, expected a TeacherConfig")
        if not isinstance(num_examples, int) or isinstance(num_examples, bool) or num_examples < 1:
            raise ValueError(f"num_examples: got {num_examples!r}, expected an int >= 1")
        self.config = config
        self.num_examples = num_examples
        self._log_weights_N = None
        if config.selector == "class_weight" and config.regime in ("finetune", "scratch", "every_epoch"):
            if labels is None:
                raise ValueError("labels: got None, expected (N,) int class ids for the class_weight selector")
        if labels is not None:
            labels_N = np.asarray(labels)
            if labels_N.shape != (num_examples,) or not np.issubdtype(labels_N.dtype, np.integer):
                raise ValueError(f"labels: got {labels_N.dtype} array of shape {labels_N.shape}, "
                                 f"expected int class ids of shape ({num_examples},)")
            if labels_N.min() < 0:
                raise ValueError(f"labels: got a negative class id {int(labels_N.min())}, expected ids >= 0")
            self._log_weights_N = selection.class_log_weights(jnp.asarray(labels_N), int(labels_N.max()) + 1)
        self._schedules: dict[int, tuple[EpochPlan, ...]] = {}

    def init(self, key=None) -> TeacherState:
        """A fresh state: every score +inf (unseen), all weights 1, epoch 0.

        ``key`` is a typed `jax.random.key` of any implementation (or a legacy
        uint32 threefry key); None uses ``jax.random.key(config.seed)``.
        """
        if key is None:
            key = jax.random.key(self.config.seed)
        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key)
        n = self.num_examples
        return TeacherState(
            scores_N=jnp.full((n,), jnp.inf, jnp.float32),
            seen_N=jnp.zeros((n,), bool),
            selected_N=jnp.ones((n,), bool),
            weights_N=jnp.ones((n,), jnp.float32),
            epoch=jnp.zeros((), jnp.int32),
            key=jax.random.key_data(key),
            key_impl=str(jax.random.key_impl(key)))

    # -- host-side schedule

    def schedule(self, num_epochs: int) -> tuple[EpochPlan, ...]:
        """Every epoch's plan for a run of `num_epochs` epochs (host-side, cached)."""
        schedules.progress(0, num_epochs)   # validates num_epochs
        if num_epochs not in self._schedules:
            self._schedules[num_epochs] = tuple(self._build_schedule(num_epochs))
        return self._schedules[num_epochs]

    def _build_schedule(self, num_epochs: int) -> list[EpochPlan]:
        cfg, n_all = self.config, self.num_examples
        # Selectors that never read a score need no scoring pass: charging them one would bill a method
        # for work it does not do.
        reads_scores = cfg.selector in selection.SCORE_SELECTORS
        plans = []

        def ratio(e):
            return schedules.ratio_at(cfg.ratio_schedule, schedules.progress(e, num_epochs), ratio=cfg.ratio,
                                      start=cfg.ratio_start, end=cfg.ratio_end)

        def add_select(e, rescore, ratio_epoch=None):
            r = ratio(e if ratio_epoch is None else ratio_epoch)
            fresh = not plans or plans[-1].kind != "full"   # no all-data epoch just refreshed every score
            plans.append(EpochPlan(e, "select", schedules.num_selected(r, n_all), r,
                                   rescore and fresh and reads_scores))
            return plans[-1]

        if cfg.regime != "scratch" or cfg.first_epoch == "full":
            plans.append(EpochPlan(0, "full", n_all, None, False))
        if cfg.regime == "full":
            plans += [EpochPlan(e, "full", n_all, None, False) for e in range(1, num_epochs)]
        elif cfg.regime == "finetune":
            if num_epochs > 1:
                first = add_select(1, True)
                plans += [EpochPlan(e, "reuse", first.n_active, first.ratio, False) for e in range(2, num_epochs)]
        elif cfg.regime == "every_epoch":
            for e in range(1, num_epochs):
                add_select(e, cfg.greedy_full_scoring)
        elif cfg.regime == "scratch":
            tail = _all_data_tail(cfg.final_full_share, num_epochs)
            e = len(plans)
            while e < tail:
                k = schedules.interval_at(cfg.interval_schedule, schedules.progress(e, num_epochs),
                                          interval=cfg.interval, interval_min=cfg.interval_min,
                                          interval_max=cfg.interval_max)
                end = min(e + k, tail)
                first = add_select(e, True, ratio_epoch=end - 1)   # the ratio of the cycle's last epoch
                plans += [EpochPlan(j, "reuse", first.n_active, first.ratio, False) for j in range(e + 1, end)]
                e = end
                plans += [EpochPlan(j, "full", n_all, None, False)
                          for j in range(e, min(e + cfg.full_epochs_per_cycle, tail))]
                e = min(e + cfg.full_epochs_per_cycle, tail)
            plans += [EpochPlan(j, "full", n_all, None, False) for j in range(len(plans), num_epochs)]
        else:  # infobatch
            tail = _all_data_tail(cfg.infobatch_anneal, num_epochs)
            for e in range(1, num_epochs):
                plans.append(EpochPlan(e, "infobatch", None, None, False) if e < tail
                             else EpochPlan(e, "full", n_all, None, False))
        return plans

    def needs_full_scoring(self, epoch: int, num_epochs: int) -> bool:
        """Whether to score all N examples (feeding `update`) before ``plan_epoch(state, epoch, ...)``.

        Host-side, from the schedule alone: no device sync.
        """
        schedules.progress(epoch, num_epochs)
        return self.schedule(num_epochs)[epoch].needs_full_scoring

    # -- device work

    def plan_epoch(self, state: TeacherState, epoch: int, num_epochs: int):
        """Plan epoch `epoch` of `num_epochs`: which examples to train on, in what order, with what weight.

        Returns:
            state: the new teacher state (selection, weights and epoch updated).
            indices_N: int32 ``(N,)``, a permutation of all examples whose first
                ``n_active`` entries are this epoch's training examples, shuffled
                (the rest follow in random order). Slice ``indices_N[:n_active]``
                to keep static shapes; under ``jax.transfer_guard("disallow")``
                slice inside jit, as even an eager slice moves its bounds to device.
            weights_N: float32 ``(N,)``, the loss weight of each example, indexed by
                example id (``weights_N[batch_idx]``): 1 except InfoBatch's
                1/(1 − r) on kept below-mean examples.
            n_active: Python int, from the schedule (no device sync), except for
                InfoBatch pruning epochs (one explicit int32 fetch).
        """
        plan = self._plan(epoch, num_epochs)
        e = _device_int(epoch)
        if plan.kind == "infobatch":
            state, idx_N, n_keep = _plan_infobatch(state, e, prune_ratio=float(self.config.infobatch_prune_ratio))
            n_active = int(jax.device_get(n_keep))
        else:
            cfg = self.config
            state, idx_N = _plan(state, e, _device_int(_MODES[plan.kind]), _device_int(plan.n_active),
                                 self._log_weights_N, selector=cfg.selector, temperature=float(cfg.temperature),
                                 normalize=cfg.normalize_scores)
            n_active = plan.n_active
        return state, idx_N, state.weights_N, n_active

    def _plan(self, epoch: int, num_epochs: int) -> EpochPlan:
        schedules.progress(epoch, num_epochs)   # validates both
        return self.schedule(num_epochs)[epoch]

    def scoring_order(self, state: TeacherState):
        """The examples a scoring pass should score (jittable).

        Returns ``(indices_N, count)``: int32 ``(N,)`` with the examples to score
        first (ascending ids), and an int32 scalar ``count``. Score
        ``indices_N[:count]`` in fixed-size chunks (mask the rest of the last
        chunk) and hand the losses to `update`. With ``rescore="all"`` that is
        every example; with ``"unselected"`` those outside ``selected_N``; with
        ``"unseen"`` those never scored. Both cheaper modes always include the
        examples never scored (at initialization: all of them).
        """
        n = self.num_examples
        if self.config.rescore == "all":
            return jnp.arange(n, dtype=jnp.int32), jnp.asarray(n, jnp.int32)
        # An example never scored has no loss to reuse, whatever the mode: the paper's pass at
        # initialization (every example selected, none seen) must still score all N.
        fresh_N = state.seen_N & state.selected_N if self.config.rescore == "unselected" else state.seen_N
        return (jnp.argsort(fresh_N, stable=True).astype(jnp.int32),
                jnp.sum(jnp.logical_not(fresh_N), dtype=jnp.int32))

    def update(self, state: TeacherState, idx_B, losses_B, valid_B=None) -> TeacherState:
        """Write per-example losses into the score table: ``scores_N[idx_B] = losses_B`` (jittable).

        Feed it the per-example (unweighted) losses of each training step's own
        forward pass, and of the full scoring pass when one is asked for.
        ``valid_B`` (bool, optional) masks out padding rows of a batch. Any
        jit-compatible loop can call it inside its own jitted step.
        """
        check_array("idx_B", idx_B, rank=1, finite=False)
        check_array("losses_B", losses_B, rank=1, finite=False)
        check_same_leading("idx_B", idx_B, "losses_B", losses_B)
        if not jnp.issubdtype(idx_B.dtype, jnp.integer):
            raise ValueError(f"idx_B: got dtype {idx_B.dtype}, expected integer example indices")
        if valid_B is not None:
            check_array("valid_B", valid_B, rank=1, finite=False)
            check_same_leading("idx_B", idx_B, "valid_B", valid_B)
        return _update(state, idx_B, losses_B, valid_B)
