"""Tests for attent_jax.teaching.teacher: config validation, regimes, the score table, InfoBatch, determinism."""

import dataclasses
import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attent_jax.teaching import kernels, selection
from attent_jax.teaching import teacher as teacher_mod
from attent_jax.teaching.teacher import Teacher, TeacherConfig


def _key(seed=0):
    # "rbg" compiles much faster than threefry on CPU; the teacher works with any implementation.
    return jax.random.key(seed, impl="rbg")


_RBG = object()


def _run(teacher, num_epochs, losses_fn, key=_RBG):
    """Drive a loop as a user would; returns the final state and per-epoch (indices, weights, n_active).

    `key=None` lets the teacher use its config's seed.
    """
    state = teacher.init(_key() if key is _RBG else key)
    out = []
    for epoch in range(num_epochs):
        if teacher.needs_full_scoring(epoch, num_epochs):
            all_idx = jnp.arange(teacher.num_examples)
            state = teacher.update(state, all_idx, losses_fn(epoch, all_idx))
        state, idx, w, n = teacher.plan_epoch(state, epoch, num_epochs)
        # One fixed-shape update per epoch (inactive rows masked), so the update compiles once.
        state = teacher.update(state, idx, losses_fn(epoch, idx), jnp.arange(teacher.num_examples) < n)
        out.append((np.asarray(idx), np.asarray(w), n))
    return state, out


def test_module_docstring_example_runs():
    assert doctest.testmod(teacher_mod, optionflags=doctest.ELLIPSIS).failed == 0


# ---------------------------------------------------------------------------- config

@pytest.mark.parametrize("field,value", [
    ("selector", "greedy"), ("ratio_schedule", "linear"), ("interval_schedule", "exponential"),
    ("regime", "pretrain"), ("ratio", 0.0), ("ratio", 1.5), ("ratio_start", -0.1), ("ratio_end", 2.0),
    ("interval", 0), ("interval_min", 0), ("interval_max", 0), ("temperature", 0.0),
    ("infobatch_prune_ratio", 1.0), ("infobatch_anneal", 1.5), ("full_epochs_per_cycle", -1),
    ("interval", 2.5), ("final_full_share", 1.0), ("final_full_share", -0.1),
])
def test_bad_config_raises_naming_the_value(field, value):
    with pytest.raises(ValueError, match=f"{field}: got {value!r}"):
        TeacherConfig(**{field: value})


def test_ratio_one_is_allowed_and_presets_validate():
    TeacherConfig(ratio=1.0, ratio_end=1.0)
    assert TeacherConfig.paper_finetune().ratio == 0.7
    assert TeacherConfig.paper_scratch().ratio_start == 0.2


def test_teacher_argument_checks():
    with pytest.raises(ValueError, match="labels: got None"):
        Teacher(TeacherConfig(selector="class_weight"), num_examples=4)
    with pytest.raises(ValueError, match="labels"):
        Teacher(TeacherConfig(selector="class_weight"), num_examples=4, labels=np.zeros(3, int))
    with pytest.raises(ValueError, match="num_examples: got 0"):
        Teacher(TeacherConfig(), num_examples=0)
    t = Teacher(TeacherConfig(), num_examples=4)
    with pytest.raises(ValueError, match="epoch: got 4"):
        t.plan_epoch(t.init(_key()), 4, 4)
    with pytest.raises(ValueError, match="losses_B"):
        t.update(t.init(_key()), jnp.arange(2), jnp.zeros(3))
    with pytest.raises(ValueError, match="idx_B: got dtype"):
        t.update(t.init(_key()), jnp.zeros(2), jnp.zeros(2))


# ---------------------------------------------------------------------------- schedules of regimes

def _seq(teacher, num_epochs):
    plans = teacher.schedule(num_epochs)
    return [p.n_active for p in plans], [p.needs_full_scoring for p in plans], [p.kind for p in plans]


def test_finetune_schedule():
    n, scoring, kinds = _seq(Teacher(TeacherConfig.paper_finetune(), num_examples=10), 5)
    assert n == [10, 7, 7, 7, 7]
    assert scoring == [False] * 5
    assert kinds == ["full", "select", "reuse", "reuse", "reuse"]


def test_scratch_fixed_interval_schedule():
    cfg = TeacherConfig(regime="scratch", ratio_schedule="fixed", ratio=0.5, interval_schedule="fixed", interval=3,
                        first_epoch="full")
    n, scoring, kinds = _seq(Teacher(cfg, num_examples=10), 8)
    assert n == [10, 5, 5, 5, 5, 5, 5, 5]
    assert kinds == ["full", "select", "reuse", "reuse", "select", "reuse", "reuse", "select"]
    # The first cycle uses epoch 0's training losses; later cycles re-score first.
    assert scoring == [False, False, False, False, True, False, False, True]


def test_scratch_with_full_epochs_closing_each_cycle_never_rescores():
    cfg = TeacherConfig(regime="scratch", ratio_schedule="fixed", ratio=0.3, interval_schedule="fixed",
                        interval=2, full_epochs_per_cycle=1, first_epoch="full")
    n, scoring, kinds = _seq(Teacher(cfg, num_examples=10), 8)
    assert kinds == ["full", "select", "reuse", "full", "select", "reuse", "full", "select"]
    assert n == [10, 3, 3, 10, 3, 3, 10, 3]
    assert not any(scoring)


def test_scratch_final_full_share_ends_on_all_data_like_infobatch():
    # 0.25 of 8 epochs: e >= 6 trains on all data; the cycle started at epoch 5 is cut short there.
    cfg = TeacherConfig(regime="scratch", ratio_schedule="fixed", ratio=0.5, interval_schedule="fixed",
                        interval=2, final_full_share=0.25, first_epoch="full")
    n, scoring, kinds = _seq(Teacher(cfg, num_examples=10), 8)
    assert kinds == ["full", "select", "reuse", "select", "reuse", "select", "full", "full"]
    assert n == [10, 5, 5, 5, 5, 5, 10, 10]
    assert scoring == [False, False, False, True, False, True, False, False]
    infobatch = Teacher(TeacherConfig(regime="infobatch", infobatch_anneal=0.25), num_examples=10)
    assert [p.kind for p in infobatch.schedule(8)][5:] == ["infobatch", "full", "full"]
    # The default keeps the paper's schedule: no all-data tail.
    assert Teacher(TeacherConfig(regime="scratch"), num_examples=10).schedule(8)[-1].kind != "full"


@pytest.mark.parametrize("share,num_epochs,tail", [
    (0.7, 10, 7), (0.85, 20, 17), (0.95, 20, 19), (0.44, 25, 11),   # (1 − share)·E is an integer
    (0.125, 8, 1), (0.125, 20, 2), (0.125, 30, 3), (0.0, 10, 0),    # the defaults: unchanged
])
@pytest.mark.parametrize("regime", ["infobatch", "scratch"])
def test_all_data_tail_holds_floor_share_times_epochs(regime, share, num_epochs, tail):
    """Catches the tail computed in floats: (1.0 − 0.7)·10 = 3.0000000000000004, whose ceil put the tail's
    first epoch at 4, so infobatch_anneal / final_full_share = 0.7 of 10 epochs trained 6 epochs on all data
    instead of 7 (0.85 and 0.95 of 20: 16 and 18 instead of 17 and 19). Every epoch e >= (1 − share)·E
    trains on all data: ⌊share·E⌋ epochs."""
    field = "infobatch_anneal" if regime == "infobatch" else "final_full_share"
    cfg = TeacherConfig(regime=regime, **{field: share})
    plans = Teacher(cfg, num_examples=10).schedule(num_epochs)
    # Epoch 0 trains on all data in infobatch whatever the tail; the paper's scratch epoch 0 selects.
    assert [p.kind == "full" for p in plans[1:]] == [e >= num_epochs - tail for e in range(1, num_epochs)]


def test_scratch_incremental_ratio_and_interval_schedule():
    # p = e/10; r = 0.2 + 0.6 p read at each cycle's last epoch; k = round(1 + 2 p) at its first, halves up;
    # cycles [1], [2], [3, 4], [5, 6], [7, 8], [9, 10].
    cfg = TeacherConfig(regime="scratch", ratio_schedule="incremental", ratio_start=0.2, ratio_end=0.8,
                        interval_schedule="incremental", interval_min=1, interval_max=3, first_epoch="full")
    n, scoring, kinds = _seq(Teacher(cfg, num_examples=100), 11)
    assert n == [100, 26, 32, 44, 44, 56, 56, 68, 68, 80, 80]
    starts = [e for e, k in enumerate(kinds) if k == "select"]
    assert starts == [1, 2, 3, 5, 7, 9]
    assert [e for e, s in enumerate(scoring) if s] == [2, 3, 5, 7, 9]


def test_scratch_default_first_epoch_selects_after_scoring_at_initialization():
    """Catches the paper's first epoch not being the default: epoch 0 must train on the selected share
    (round(r(0)·N), not all N) after a scoring pass at initialization (soft reads scores, and the table is
    still empty); with first_epoch="full" epoch 0 trains on all data and needs no pass."""
    cfg = TeacherConfig(regime="scratch", ratio_schedule="fixed", ratio=0.5, interval_schedule="fixed", interval=3)
    n, scoring, kinds = _seq(Teacher(cfg, num_examples=10), 6)
    assert kinds == ["select", "reuse", "reuse", "select", "reuse", "reuse"]
    assert n == [5] * 6 and scoring == [True, False, False, True, False, False]
    n, scoring, kinds = _seq(Teacher(dataclasses.replace(cfg, first_epoch="full"), num_examples=10), 6)
    assert kinds[0] == "full" and n[0] == 10 and not scoring[0]
    with pytest.raises(ValueError, match="first_epoch: got 'all'"):
        TeacherConfig(first_epoch="all")


@pytest.mark.parametrize("first_epoch", ["select", "full"])
def test_scratch_schedule_reaches_both_ratio_endpoints(first_epoch):
    """Catches a cycle reading its ratio at its first epoch: with 20 epochs and the paper's growing interval
    (1 -> 10) the last cycle starts at epoch 17, so the ratio would stop at r(17/19) = 0.737 and never reach
    ratio_end 0.8. Read at the cycle's last epoch, the last cycle (ending at epoch 19) trains on 0.8·N, and the
    one-epoch first cycle at epoch 0 (default first_epoch) on ratio_start·N."""
    plans = Teacher(TeacherConfig.paper_scratch(first_epoch=first_epoch), num_examples=1000).schedule(20)
    ratios = [p.ratio for p in plans if p.ratio is not None]
    assert max(ratios) == pytest.approx(0.8) and plans[-1].n_active == 800
    assert ratios == sorted(ratios)
    if first_epoch == "select":
        assert plans[0].kind == "select" and plans[0].ratio == pytest.approx(0.2) and plans[0].n_active == 200


@pytest.mark.parametrize("regime", ["scratch", "every_epoch", "finetune"])
def test_selectors_that_read_no_score_never_ask_for_a_scoring_pass(regime):
    """Catches random / class_weight being charged a scoring pass they never read (and hard / soft losing
    theirs): same budgets as soft, but no needs_full_scoring epoch at all."""
    def seq(selector):
        return _seq(Teacher(TeacherConfig(regime=regime, selector=selector, ratio_schedule="fixed", ratio=0.5,
                                          interval_schedule="fixed", interval=2),
                            num_examples=20, labels=np.arange(20) % 4), 8)
    soft = seq("soft")
    assert seq("hard")[1] == soft[1] and any(soft[1]) == (regime != "finetune")   # finetune scores for free
    for selector in ("random", "class_weight"):
        n, scoring, _ = seq(selector)
        assert n == soft[0] and not any(scoring), selector
    teacher = Teacher(TeacherConfig(regime=regime, selector="random"), num_examples=20)
    assert not any(teacher.needs_full_scoring(e, 8) for e in range(8))


def test_every_epoch_schedule():
    cfg = TeacherConfig(regime="every_epoch", ratio_schedule="fixed", ratio=0.4)
    n, scoring, kinds = _seq(Teacher(cfg, num_examples=10), 4)
    assert n == [10, 4, 4, 4] and kinds == ["full", "select", "select", "select"]
    assert scoring == [False, False, True, True]
    cfg = TeacherConfig(regime="every_epoch", ratio_schedule="fixed", ratio=0.4, greedy_full_scoring=False)
    assert not any(_seq(Teacher(cfg, num_examples=10), 4)[1])


def test_infobatch_and_full_schedules():
    kinds = _seq(Teacher(TeacherConfig(regime="infobatch"), num_examples=10), 8)[2]
    assert kinds == ["full"] + ["infobatch"] * 6 + ["full"]          # last 12.5% of 8 epochs: all data
    n, scoring, kinds = _seq(Teacher(TeacherConfig(regime="full"), num_examples=10), 3)
    assert n == [10, 10, 10] and kinds == ["full"] * 3 and not any(scoring)


def test_budget_is_the_same_for_every_selector():
    seqs = {s: _seq(Teacher(TeacherConfig(selector=s), num_examples=50, labels=np.arange(50) % 5), 20)[0]
            for s in selection.SELECTORS}
    assert len({tuple(v) for v in seqs.values()}) == 1


# ---------------------------------------------------------------------------- plans on device

def test_plan_epoch_follows_the_schedule_and_selects_hard_top_k():
    n_ex, num_epochs = 12, 6
    cfg = TeacherConfig(regime="scratch", selector="hard", ratio_schedule="fixed", ratio=0.5,
                        interval_schedule="fixed", interval=2)
    teacher = Teacher(cfg, num_examples=n_ex)
    truth = jnp.asarray(np.random.default_rng(0).permutation(n_ex).astype(np.float32))
    _, out = _run(teacher, num_epochs, lambda e, idx: truth[idx] + 0.1 * e)
    plans = teacher.schedule(num_epochs)
    top = set(np.argsort(-np.asarray(truth))[:6].tolist())
    for (idx, w, n), plan in zip(out, plans):
        assert idx.dtype == np.int32 and sorted(idx.tolist()) == list(range(n_ex))   # a permutation
        assert n == plan.n_active
        np.testing.assert_array_equal(w, np.ones(n_ex, np.float32))
        if plan.kind in ("select", "reuse"):
            assert set(idx[:n].tolist()) == top
    # Reused epochs keep the cycle's subset but reshuffle it.
    assert not np.array_equal(out[1][0][:6], out[2][0][:6])


def test_teacher_selection_matches_the_public_selector():
    """The teacher ranks with a full argsort (traced n); the public selector uses top_k (static k)."""
    n_ex = 30
    teacher = Teacher(TeacherConfig(regime="every_epoch", selector="soft", temperature=0.5,
                                    ratio_schedule="fixed", ratio=0.3), num_examples=n_ex)
    state = teacher.init(_key(4))
    scores = jnp.asarray(np.random.default_rng(1).normal(size=n_ex).astype(np.float32))
    state = teacher.update(state, jnp.arange(n_ex), scores)
    state, idx, _, n = teacher.plan_epoch(state, 1, 3)
    k_sel, _ = kernels._epoch_keys(state, 1)
    want = selection.soft(k_sel, scores, n, temperature=0.5)
    assert set(np.asarray(idx[:n]).tolist()) == set(np.asarray(want).tolist())


def test_class_weight_teacher_balances_the_subset():
    labels = np.repeat([0, 1], [40, 8])
    teacher = Teacher(TeacherConfig(regime="every_epoch", selector="class_weight", ratio_schedule="fixed",
                                    ratio=0.25), num_examples=48, labels=labels)
    _, out = _run(teacher, 30, lambda e, idx: jnp.zeros(idx.shape))
    share = np.mean([np.mean(labels[idx[:n]] == 1) for idx, _, n in out[1:]])
    assert 0.3 < share < 0.6, share      # the data's share of class 1 is 1/6


@pytest.mark.parametrize("batch_size", [16, 20])
def test_examples_a_dropped_partial_batch_never_trained_are_selected_first(batch_size):
    """Catches the module docstring going stale on unseen examples (it once said every schedule trains or
    scores every example before the first selection that reads scores): a loop with a fixed batch size B
    runs ⌊N / B⌋ steps, so the last N mod B examples of the all-data epoch 0 are never trained, keep the
    +inf "unseen" score and go into finetune's fixed subset whatever their loss. Here they would have the
    lowest losses of all (0 against 1..2) and still take 4 of the 70 places at N = 100, B = 16; with B = 20,
    which divides N, every example is trained and the subset is the top 70 by loss."""
    n_ex, num_epochs = 100, 3
    teacher = Teacher(TeacherConfig.paper_finetune(), num_examples=n_ex)
    state, idx, _, n = teacher.plan_epoch(teacher.init(_key()), 0, num_epochs)
    steps = n // batch_size                                      # the loop drops the partial batch
    dropped = np.asarray(idx[steps * batch_size:n])
    assert len(dropped) == n_ex % batch_size <= batch_size - 1
    true_N = np.random.default_rng(0).uniform(1.0, 2.0, n_ex).astype(np.float32)
    true_N[dropped] = 0.0                                       # what they would score, had they trained
    for s in range(steps):
        batch = idx[s * batch_size:(s + 1) * batch_size]
        state = teacher.update(state, batch, jnp.asarray(true_N)[batch])
    assert not teacher.needs_full_scoring(1, num_epochs)        # nothing refreshes them before epoch 1
    np.testing.assert_array_equal(np.isposinf(state.scores_N), ~np.asarray(state.seen_N))
    assert sorted(np.flatnonzero(~np.asarray(state.seen_N)).tolist()) == sorted(dropped.tolist())
    ranked = np.argsort(-true_N, kind="stable")
    for epoch in (1, 2):                                        # select, then reuse the same subset
        state, idx, _, n = teacher.plan_epoch(state, epoch, num_epochs)
        subset = set(np.asarray(idx[:n]).tolist())
        assert n == 70 and set(dropped.tolist()) <= subset
        assert subset == set(dropped.tolist()) | set(ranked[:n - len(dropped)].tolist())


def test_update_scatters_losses_and_respects_valid_mask():
    teacher = Teacher(TeacherConfig(), num_examples=6)
    state = teacher.init(_key())
    assert np.all(np.isposinf(state.scores_N)) and not np.any(state.seen_N)
    state = teacher.update(state, jnp.array([4, 1, 2]), jnp.array([0.5, 1.5, 2.5]), jnp.array([True, True, False]))
    np.testing.assert_array_equal(state.scores_N, [np.inf, 1.5, np.inf, np.inf, 0.5, np.inf])
    np.testing.assert_array_equal(state.seen_N, [False, True, False, False, True, False])
    # Callable inside a user's own jitted step.
    step = jax.jit(lambda s, i, l: teacher.update(s, i, l))
    state = step(state, jnp.array([2, 4]), jnp.array([7.0, 8.0]))
    np.testing.assert_array_equal(state.scores_N, [np.inf, 1.5, 7.0, np.inf, 8.0, np.inf])


def test_loops_run_without_implicit_transfers():
    """Selection stays on device: a whole loop passes under transfer_guard("disallow")."""
    teacher = Teacher(TeacherConfig(regime="scratch", selector="hard", ratio_schedule="fixed", ratio=0.5,
                                    interval_schedule="fixed", interval=2), num_examples=16)
    losses = jnp.linspace(0.0, 1.0, 16)
    state = teacher.init(_key())
    all_idx = jnp.arange(16)
    # Even eager slicing moves its bounds host→device, so a loop slices and gathers inside jit.
    gather = jax.jit(lambda values, idx: values[idx])
    take = jax.jit(lambda idx, start, stop: idx[start:stop], static_argnums=(1, 2))
    with jax.transfer_guard("disallow"):
        for epoch in range(6):
            if teacher.needs_full_scoring(epoch, 6):
                state = teacher.update(state, all_idx, losses)
            state, idx, w, n = teacher.plan_epoch(state, epoch, 6)
            for batch in (take(idx, 0, n // 2), take(idx, n // 2, n)):
                state = teacher.update(state, batch, gather(losses, batch) * gather(w, batch))


def test_reproducible_from_seed():
    def indices(seed):
        teacher = Teacher(TeacherConfig(regime="every_epoch", selector="soft", ratio_schedule="fixed",
                                        ratio=0.5, seed=seed), num_examples=20)
        rng_losses = jnp.asarray(np.random.default_rng(0).random(20).astype(np.float32))
        _, out = _run(teacher, 3, lambda e, idx: rng_losses[idx], key=None)   # threefry key from config.seed
        return np.concatenate([o[0] for o in out])
    a, b, c = indices(1), indices(1), indices(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_state_is_a_pytree_that_roundtrips_through_orbax(tmp_path):
    import orbax.checkpoint as ocp
    teacher = Teacher(TeacherConfig(), num_examples=5)
    state = teacher.update(teacher.init(_key()), jnp.array([0, 3]), jnp.array([1.0, 2.0]))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "teacher", state)
        ckpt.wait_until_finished()
        restored = ckpt.restore(tmp_path / "teacher", state)
    assert restored.key_impl == "rbg"
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- InfoBatch

def _toy_least_squares(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.normal(size=n).astype(np.float32)
    theta = rng.normal(size=d).astype(np.float32)
    resid = x @ theta - y
    return 0.5 * resid ** 2, resid[:, None] * x          # per-example losses and gradients


def test_infobatch_weights_make_the_epoch_gradient_unbiased():
    losses, grads_Nxd = _toy_least_squares()
    n = len(losses)
    teacher = Teacher(TeacherConfig(regime="infobatch", selector="hard", infobatch_prune_ratio=0.5),
                      num_examples=n)
    state = teacher.update(teacher.init(_key()), jnp.arange(n), jnp.asarray(losses))
    draws = 4000
    new, _, n_keep = jax.vmap(lambda e: kernels._plan_infobatch(state, e, prune_ratio=0.5))(
        jnp.arange(draws, dtype=jnp.int32))
    kept = np.asarray(new.selected_N, np.float32)                      # (draws, N)
    w = np.asarray(new.weights_N)
    np.testing.assert_array_equal(np.asarray(n_keep), kept.sum(1).astype(int))
    full = grads_Nxd.mean(0)
    weighted = (kept * w) @ grads_Nxd / n                              # Σ_active w_i g_i / N per draw
    unweighted = kept @ grads_Nxd / n
    se = weighted.std(0) / np.sqrt(draws)
    assert np.all(np.abs(weighted.mean(0) - full) <= 5 * se), (weighted.mean(0), full, se)
    # The test has power: without the 1/(1 − r) weights the pruned gradient is biased.
    assert np.any(np.abs(unweighted.mean(0) - full) > 5 * unweighted.std(0) / np.sqrt(draws))
    below = losses < losses.mean()
    assert np.all(kept[:, ~below] == 1)                               # above-mean never pruned
    assert abs(1 - kept[:, below].mean() - 0.5) < 0.02                # half the below-mean pruned
    assert set(np.unique(w[kept > 0]).tolist()) <= {1.0, 2.0}


def test_infobatch_plan_epoch_outputs():
    losses, _ = _toy_least_squares(n=20, seed=1)
    teacher = Teacher(TeacherConfig(regime="infobatch", selector="hard", infobatch_prune_ratio=0.5),
                      num_examples=20)
    _, out = _run(teacher, 8, lambda e, idx: jnp.asarray(losses)[idx])
    below = losses < losses.mean()
    for epoch, (idx, w, n) in enumerate(out):
        assert sorted(idx.tolist()) == list(range(20)) and isinstance(n, int)
        if epoch in (0, 7):                    # first epoch and the annealing tail: all data, weight 1
            assert n == 20 and np.all(w == 1.0)
        else:
            active = np.zeros(20, bool)
            active[idx[:n]] = True
            assert np.all(active[~below])
            np.testing.assert_array_equal(w[active & below], 2.0)
            np.testing.assert_array_equal(w[~below], 1.0)
    assert min(n for _, _, n in out) < 20


def test_scoring_order_names_all_or_only_the_unselected_examples():
    n = 12
    losses = jnp.arange(n, dtype=jnp.float32)
    for rescore in ("all", "unselected"):
        teacher = Teacher(TeacherConfig.paper_finetune(ratio=0.5, rescore=rescore), num_examples=n)
        state = teacher.update(teacher.init(jax.random.key(0)), jnp.arange(n), losses)
        state, _, _, n_active = teacher.plan_epoch(state, 1, 3)       # hard top-6: examples 6..11
        idx_N, count = teacher.scoring_order(state)
        assert sorted(np.asarray(idx_N).tolist()) == list(range(n))
        if rescore == "all":
            assert int(count) == n
        else:
            assert int(count) == n - n_active == 6
            assert np.asarray(idx_N[:6]).tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("rescore", ["unselected", "unseen"])
def test_cheaper_rescoring_scores_every_example_never_scored(rescore):
    """Catches the cheaper modes skipping the paper's pass at initialization: a fresh state holds every
    example selected and none seen, so "outside the subset" alone would score nothing and the first
    selection would rank +inf placeholders. After a full update, "unseen" names nothing."""
    n = 12
    teacher = Teacher(TeacherConfig.paper_scratch(rescore=rescore), num_examples=n)
    state = teacher.init(jax.random.key(0))
    idx_N, count = teacher.scoring_order(state)
    assert int(count) == n and sorted(np.asarray(idx_N).tolist()) == list(range(n))
    # Seven examples scored (by a pass or a step), five never: those five come first either way.
    state = teacher.update(state, jnp.arange(7), jnp.ones(7))
    idx_N, count = teacher.scoring_order(state)
    assert int(count) == 5 and np.asarray(idx_N[:5]).tolist() == [7, 8, 9, 10, 11]
    state = teacher.update(state, jnp.arange(n), jnp.ones(n))
    idx_N, count = teacher.scoring_order(state)
    if rescore == "unseen":
        assert int(count) == 0
    else:   # everything selected at init, nothing outside the subset yet
        assert int(count) == 0
        state, _, _, n_active = teacher.plan_epoch(state, 0, 3)
        assert int(teacher.scoring_order(state)[1]) == n - n_active


def test_unknown_rescore_is_named():
    with pytest.raises(ValueError, match="rescore: got 'some'"):
        TeacherConfig(rescore="some")


def test_cosine_ratio_schedule_reaches_every_epoch_of_the_plan():
    """Catches the teacher using the cosine schedule at the wrong progress (e.g. e / E instead of
    e / (E − 1), or the cycle's end) or not at all: every select epoch's ratio and size follow
    r(p) = start + (end − start)(1 − cos πp)/2 at p = e / (E − 1), written out here, endpoints included."""
    num_epochs, n = 9, 200
    cfg = TeacherConfig(regime="every_epoch", selector="hard", ratio_schedule="cosine", ratio_start=0.1,
                        ratio_end=0.9)
    plans = Teacher(cfg, num_examples=n).schedule(num_epochs)
    assert plans[0].kind == "full" and plans[0].n_active == n
    for e in range(1, num_epochs):
        p = e / (num_epochs - 1)
        r = 0.1 + 0.8 * (1.0 - np.cos(np.pi * p)) / 2.0
        assert plans[e].kind == "select" and plans[e].ratio == pytest.approx(r, abs=1e-12), e
        assert plans[e].n_active == int(np.floor(r * n + 0.5)), e
    assert plans[-1].n_active == 180   # p = 1: ratio_end
