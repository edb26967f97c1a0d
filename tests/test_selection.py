"""Tests for attent_jax.teaching.selection: discrepancy scores and the four selectors."""

import doctest
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attent_jax.teaching import selection

DRAWS = 20000


def _key(seed):
    # The "rbg" PRNG compiles several times faster than threefry on CPU under vmap;
    # the selectors do not depend on the key's implementation.
    return jax.random.key(seed, impl="rbg")


def _many(select, scores, k, draws=DRAWS, seed=0, **kw):
    """`draws` independent selections, vmapped over keys: (draws, k) int array."""
    keys = jax.random.split(_key(seed), draws)
    return np.asarray(jax.vmap(lambda key: select(key, scores, k, **kw))(keys))


def _within(emp, exact, draws, n_se=5.0):
    se = np.sqrt(np.maximum(exact * (1 - exact), 1e-12) / draws)
    return np.all(np.abs(emp - exact) <= n_se * se), np.max(np.abs(emp - exact) / se)


def test_module_docstrings_run():
    assert doctest.testmod(selection, optionflags=doctest.ELLIPSIS).failed == 0


def test_discrepancy_is_per_example_frobenius_norm():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(6, 4, 3)), rng.normal(size=(6, 4, 3))
    got = np.asarray(selection.discrepancy(jnp.asarray(pred), jnp.asarray(target)))
    want = np.linalg.norm((pred - target).reshape(6, -1), axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got.shape == (6,)
    np.testing.assert_allclose(selection.discrepancy(jnp.array([1.0, -2.0]), jnp.zeros(2)), [1.0, 2.0])


def test_discrepancy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="target_N"):
        selection.discrepancy(jnp.zeros((3, 2)), jnp.zeros((3, 4)))


@pytest.mark.parametrize("n,k", [(7, 1), (50, 13), (50, 50)])
def test_hard_is_exact_top_k(n, k):
    scores = np.random.default_rng(n + k).normal(size=n).astype(np.float32)
    got = np.asarray(selection.hard(_key(0), jnp.asarray(scores), k))
    np.testing.assert_array_equal(got, np.argsort(-scores, kind="stable")[:k])
    assert got.dtype == np.int32


def _plackett_luce(p, k):
    """Exact probability of each ordered k-draw without replacement, by enumeration."""
    out = {}
    for seq in itertools.permutations(range(len(p)), k):
        prob, left = 1.0, 1.0
        for i in seq:
            prob *= p[i] / left
            left -= p[i]
        out[seq] = prob
    return out


def test_soft_matches_plackett_luce_inclusion_and_order():
    scores = jnp.array([0.0, 0.4, 0.9, 1.5, 2.2])
    temperature = 0.8
    p = np.exp(np.asarray(scores) / temperature)
    p /= p.sum()
    ordered = _plackett_luce(p, 2)
    incl = np.array([sum(v for s, v in ordered.items() if i in s) for i in range(5)])
    first = p
    draws = _many(selection.soft, scores, 2, temperature=temperature)
    emp_incl = np.array([(draws == i).any(axis=1).mean() for i in range(5)])
    emp_first = np.array([(draws[:, 0] == i).mean() for i in range(5)])
    ok, worst = _within(emp_incl, incl, DRAWS)
    assert ok, f"inclusion frequencies off by {worst:.1f} standard errors"
    ok, worst = _within(emp_first, first, DRAWS)
    assert ok, f"first-draw frequencies off by {worst:.1f} standard errors"
    # The bound has power: uniform inclusion (k/N) is rejected.
    assert not _within(emp_incl, np.full(5, 0.4), DRAWS)[0]
    assert (draws[:, 0] != draws[:, 1]).all()


def test_soft_normalize_makes_temperature_scale_free():
    scores = jnp.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.05])
    key = _key(3)
    a = selection.soft(key, scores, 3, normalize=True)
    b = selection.soft(key, 100.0 * scores, 3, normalize=True)
    np.testing.assert_array_equal(a, b)
    # Equal scores give a uniform draw (the same as `random` with that key), however large they are.
    flat = jnp.full(6, 3.0e6)
    for normalize in (True, False):
        np.testing.assert_array_equal(selection.soft(key, flat, 3, normalize=normalize),
                                      selection.random(key, flat, 3))
    # Without normalisation a large scale makes Soft collapse onto Hard.
    hard = selection.hard(key, scores, 3)
    np.testing.assert_array_equal(selection.soft(key, 1e4 * scores, 3), hard)


def test_soft_takes_unseen_first_in_random_order():
    scores = jnp.array([5.0, jnp.inf, 1.0, jnp.inf, 9.0, jnp.inf])
    draws = _many(selection.soft, scores, 3, draws=3000)
    assert (np.sort(draws, axis=1) == np.array([1, 3, 5])).all()
    first = np.array([(draws[:, 0] == i).mean() for i in (1, 3, 5)])
    assert _within(first, np.full(3, 1 / 3), 3000)[0]
    # Hard also ranks unseen examples above every finite score.
    assert sorted(selection.hard(_key(0), scores, 3).tolist()) == [1, 3, 5]


def test_random_is_uniform_without_replacement():
    n, k = 8, 3
    draws = _many(selection.random, jnp.arange(n, dtype=jnp.float32), k)
    assert all(len(set(row)) == k for row in draws[:200])
    emp = np.array([(draws == i).any(axis=1).mean() for i in range(n)])
    ok, worst = _within(emp, np.full(n, k / n), DRAWS)
    assert ok, f"inclusion frequencies off by {worst:.1f} standard errors"


def _expected_class_counts(counts, k):
    """Exact E[#drawn of each class] for k weighted draws without replacement, weight 1/count per example."""
    w = 1.0 / np.asarray(counts, float)
    dist = {tuple(0 for _ in counts): 1.0}
    for _ in range(k):
        nxt = {}
        for taken, prob in dist.items():
            left = [(c - t) * wc for c, t, wc in zip(counts, taken, w)]
            total = sum(left)
            for j, lj in enumerate(left):
                if lj > 0:
                    t2 = tuple(t + (i == j) for i, t in enumerate(taken))
                    nxt[t2] = nxt.get(t2, 0.0) + prob * lj / total
        dist = nxt
    return np.array([sum(p * t[j] for t, p in dist.items()) for j in range(len(counts))])


def test_class_weight_balances_classes():
    counts = (60, 25, 15)
    labels = jnp.asarray(np.repeat(np.arange(3), counts))
    k = 9
    draws = _many(selection.class_weight, jnp.zeros(100), k, draws=5000, labels_N=labels, num_classes=3)
    per_class = np.stack([(np.asarray(labels)[draws] == c).sum(axis=1) for c in range(3)], axis=1)
    exact = _expected_class_counts(counts, k)
    se = per_class.std(axis=0) / np.sqrt(len(per_class))
    assert np.all(np.abs(per_class.mean(axis=0) - exact) <= 5 * se), (per_class.mean(axis=0), exact)
    # Balanced, far from the data's 60/25/15 split that a uniform draw would give.
    share = per_class.mean(axis=0) / k
    assert np.all(np.abs(share - 1 / 3) < 0.06), share


def test_selectors_return_distinct_int32():
    scores = jnp.linspace(0.0, 1.0, 12)
    labels = jnp.arange(12) % 3
    outs = [selection.hard(_key(0), scores, 5), selection.soft(_key(0), scores, 5),
            selection.random(_key(0), scores, 5),
            selection.class_weight(_key(0), scores, 5, labels, 3)]
    for out in outs:
        assert out.dtype == jnp.int32 and out.shape == (5,) and len(set(out.tolist())) == 5


def test_selectors_reproducible_from_key():
    scores = jnp.linspace(0.0, 1.0, 20)
    a = selection.soft(jax.random.key(7), scores, 6)
    b = selection.soft(jax.random.key(7), scores, 6)
    c = selection.soft(jax.random.key(8), scores, 6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_bad_arguments_raise_value_error_naming_them():
    with pytest.raises(ValueError, match="k: got 0"):
        selection.hard(_key(0), jnp.zeros(4), 0)
    with pytest.raises(ValueError, match="k: got 5"):
        selection.random(_key(0), jnp.zeros(4), 5)
    with pytest.raises(ValueError, match="scores_N"):
        selection.soft(_key(0), jnp.zeros((2, 2)), 1)
    with pytest.raises(ValueError, match="temperature: got 0.0"):
        selection.soft(_key(0), jnp.zeros(4), 1, temperature=0.0)
    with pytest.raises(ValueError, match="'best'"):
        selection.priority("best", _key(0), jnp.zeros(4))


# ---------------------------------------------------------------- non-finite scores: one ranking rule everywhere
# +inf first, finite largest first, then -inf, NaN last (see the module docstring).

def test_ranking_puts_nan_last_whatever_its_sign():
    """Catches NaN ranked first (lax.top_k's order); -NaN too, so a sort that reads NaN's sign bit is caught."""
    p = jnp.array([jnp.nan, 1.0, -jnp.inf, 3.0, jnp.inf, -jnp.nan, 0.0, 3.0])
    assert selection.ranking(p).tolist() == [4, 3, 7, 1, 6, 2, 0, 5]


def test_hard_ranks_nan_last():
    """Catches `hard` taking a NaN score first (lax.top_k orders NaN above +inf)."""
    scores = jnp.array([jnp.nan, 1.0, 3.0, 2.0, -jnp.inf])
    assert selection.hard(_key(0), scores, 3).tolist() == [2, 3, 1]
    assert selection.hard(_key(0), scores, 5).tolist() == [2, 3, 1, 4, 0]   # below -inf too


def test_soft_never_takes_nan_while_numbers_are_left():
    """Catches Soft's Gumbel-top-k picking a NaN score (NaN + noise is NaN, which top_k ranks first)."""
    scores = jnp.array([0.5, jnp.nan, 2.0, 1.0, jnp.nan, 0.1])
    draws = _many(selection.soft, scores, 4, draws=500)
    assert not np.isin(draws, [1, 4]).any()
    assert (np.sort(_many(selection.soft, scores, 6, draws=50)[:, 4:], axis=1) == [1, 4]).all()  # NaN last


def test_soft_lifts_unseen_above_all_seen_when_a_nan_is_present():
    """Catches the unseen-example lift being lost when a NaN is present (max over a NaN is NaN)."""
    n_seen = 40   # many equal seen scores: their noise would beat an unlifted unseen example
    scores = jnp.concatenate([jnp.full(n_seen, 5.0), jnp.array([jnp.nan, jnp.inf, jnp.inf, jnp.inf])])
    draws = _many(selection.soft, scores, 3, draws=500)
    assert (np.sort(draws, axis=1) == [n_seen + 1, n_seen + 2, n_seen + 3]).all()
    pri = selection.priority("soft", _key(1), scores, normalize=True)
    assert set(selection.ranking(pri)[:3].tolist()) == {n_seen + 1, n_seen + 2, n_seen + 3}


def test_random_and_class_weight_ignore_nan_scores():
    """Guards the score-free baselines: a NaN score must not change their pick (they ignore scores)."""
    labels = jnp.arange(6) % 2
    nan = jnp.array([jnp.nan, 1.0, 2.0, jnp.nan, 0.0, 1.0])
    for key in range(3):
        np.testing.assert_array_equal(selection.random(_key(key), nan, 4), selection.random(_key(key), jnp.zeros(6), 4))
        np.testing.assert_array_equal(selection.class_weight(_key(key), nan, 4, labels, 2),
                                      selection.class_weight(_key(key), jnp.zeros(6), 4, labels, 2))
