"""attent_jax.tasks.dial: the dialled MNIST-1D training sets (easy share, near-duplicates, label noise)."""

import numpy as np
import pytest

from attent_jax.tasks.dial import dial_dataset, make_mnist1d_dial


def _class_spread(x, y):
    return float(np.mean([x[y == c].std(0).mean() for c in range(10) if (y == c).sum() > 1]))


def test_easy_share_is_that_share_and_less_varied():
    """Catches the easy arguments not reaching the generator (easy examples as varied as standard ones) or
    the wrong count: half the examples are easy, and their within-class spread is well below the others'."""
    d = make_mnist1d_dial(200, 20, easy_share=0.5, seed=1)
    easy = d["kind_N"] == 1
    assert easy.sum() == 100 and not (d["kind_N"] == 2).any()
    x, y = d["x_train"], d["y_train"]
    assert _class_spread(x[easy], y[easy]) < 0.5 * _class_spread(x[~easy], y[~easy])


def test_near_duplicates_are_noisy_copies_at_that_share():
    """Catches duplicates that are fresh draws (far from any source), sources pointing at the wrong row after
    the shuffle, or labels not kept: each duplicate sits within its noise of its source, with its label."""
    noise = 0.1
    d = make_mnist1d_dial(200, 20, duplicate_share=0.8, duplicate_noise=noise, seed=2)
    dup = d["kind_N"] == 2
    assert dup.sum() == 160
    src = d["source_N"][dup]
    assert (d["kind_N"][src] != 2).all() and (d["source_N"][~dup] == -1).all()
    dist = np.linalg.norm(d["x_train"][dup] - d["x_train"][src], axis=1)
    assert np.all(dist < 2 * noise * np.sqrt(40)) and np.all(dist > 0)
    assert (d["y_train"][dup] == d["y_train"][src]).all()


def test_label_noise_flips_exactly_that_share_to_another_class():
    """Catches flips to the same class (no noise), the wrong count, or a noisy test set."""
    d = make_mnist1d_dial(200, 50, label_noise=0.3, seed=3)
    changed = d["y_train"] != d["y_train_clean"]
    assert changed.sum() == 60 and (changed == d["flipped_N"]).all()
    clean = make_mnist1d_dial(200, 50, seed=3)
    np.testing.assert_array_equal(d["y_test"], clean["y_test"])
    np.testing.assert_array_equal(d["x_test"], clean["x_test"])


def test_reproducible_and_leaves_the_global_rng_alone():
    """Catches a generator that depends on (or changes) numpy's global RNG state."""
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    a = make_mnist1d_dial(50, 10, easy_share=0.2, duplicate_share=0.2, seed=5)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    np.random.seed(123)
    b = make_mnist1d_dial(50, 10, easy_share=0.2, duplicate_share=0.2, seed=5)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    ds = dial_dataset(50, 10, label_noise=0.1, seed=5)
    assert ds.x_train.shape == (50, 40) and ds.num_classes == 10 and ds.kind == "classification"


@pytest.mark.parametrize("kwargs, match", [
    (dict(easy_share=1.0), "easy_share: got 1.0"),
    (dict(label_noise=-0.1), "label_noise: got -0.1"),
    (dict(easy_share=0.5, duplicate_share=0.5), "easy_share \\+ duplicate_share: got 1.0"),
    (dict(duplicate_noise=float("nan")), "duplicate_noise: got nan"),
])
def test_bad_dials_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_mnist1d_dial(20, 10, **kwargs)
