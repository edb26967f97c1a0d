"""MNIST-1D training sets along three dials: easy share, near-duplicates, label noise (`experiments.dial`).

When does selecting data pay? A selector can only win where the data holds
examples that teach little: ones that are easy, ones that repeat others, or
(against it) ones whose labels are wrong. `make_mnist1d_dial` builds a
training set of N examples with any mix of:

- an **easy share** e: round(e·N) examples drawn from the mnist1d generator
  with its variation turned down: scale, translation, correlated and iid noise
  and shear each multiplied by ``easy_scale`` (0.1 by default);
- a **near-duplicate share** d: round(d·N) examples that are noisy copies
  (Gaussian noise of std ``duplicate_noise`` in the normalized units, label
  kept) of the others, so the set holds N − round(d·N) distinct examples at
  any N (every level costs the same per epoch);
- **label noise** ℓ: round(ℓ·N) training labels replaced by a uniformly drawn
  other class.

The test set is always the standard generator, clean. Every example, easy or
not, is normalized with the mean and std of the standard examples (mnist1d's
own `make_dataset` normalizes each set by its own statistics, which would put
easy examples on another scale), so the arrays are not bitwise those of
`generators.make_mnist1d`, only drawn the same way.

Like `generators.make_mnist1d` it reseeds numpy's global RNG (the mnist1d
transforms draw from it) and restores its state afterwards.

Example:
    >>> from attent_jax.tasks.dial import make_mnist1d_dial
    >>> d = make_mnist1d_dial(100, 20, duplicate_share=0.5, label_noise=0.1)
    >>> d["x_train"].shape, int((d["kind_N"] == 2).sum()), int(d["flipped_N"].sum())
    ((100, 40), 50, 10)
"""

from __future__ import annotations

import math

import numpy as np

KINDS = ("standard", "easy", "duplicate")   # kind_N values 0, 1, 2
_VARIATION = ("scale_coeff", "max_translation", "corr_noise_scale", "iid_noise_scale", "shear_scale")


def _share(name: str, value, hi_open: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: got {value!r}, expected a number in [0, 1)")
    return float(value)


def _draw(num: int, args, templates, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`num` raw (unnormalized) examples, balanced over the classes, in random order."""
    import importlib
    mt = importlib.import_module("mnist1d.transform")   # `import … as` finds the package's same-named function
    y = rng.permutation(np.arange(num) % len(templates["y"]))
    x = np.stack([mt.transform(templates["x"][c], templates["t"], args)[0] for c in y]) if num else \
        np.zeros((0, args.final_seq_length))
    return x, y.astype(np.int32)


def make_mnist1d_dial(num_train: int, num_test: int, *, easy_share: float = 0.0, duplicate_share: float = 0.0,
                      label_noise: float = 0.0, seed: int = 42, easy_scale: float = 0.1,
                      duplicate_noise: float = 0.1) -> dict:
    """A dialled MNIST-1D training set and a standard test set (module docstring).

    Returns a dict of numpy arrays: ``x_train`` (N, 40) float32, ``y_train`` (N,)
    int32 (noisy labels), ``y_train_clean``, ``x_test``, ``y_test`` (clean),
    ``kind_N`` (0 standard, 1 easy, 2 duplicate), ``source_N`` (a duplicate's
    original, −1 otherwise) and ``flipped_N`` (bool, label replaced).
    """
    for name, v in (("num_train", num_train), ("num_test", num_test)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: got {v!r}, expected an int >= 1")
    easy_share, duplicate_share = _share("easy_share", easy_share), _share("duplicate_share", duplicate_share)
    label_noise = _share("label_noise", label_noise)
    if easy_share + duplicate_share >= 1.0:
        raise ValueError(f"easy_share + duplicate_share: got {easy_share + duplicate_share!r}, expected < 1 "
                         f"(some examples must be standard originals)")
    for name, v in (("easy_scale", easy_scale), ("duplicate_noise", duplicate_noise)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}: got {v!r}, expected a number >= 0")

    import mnist1d.data

    n_easy = math.floor(easy_share * num_train + 0.5)
    n_dup = math.floor(duplicate_share * num_train + 0.5)
    n_std = num_train - n_easy - n_dup
    templates = mnist1d.data.get_templates()
    std_args = mnist1d.data.get_dataset_args()
    easy_args = mnist1d.data.get_dataset_args()
    for k in _VARIATION:
        setattr(easy_args, k, type(getattr(std_args, k))(getattr(std_args, k) * easy_scale))
    rng = np.random.default_rng(seed)
    np_state = np.random.get_state()
    try:
        np.random.seed(seed)
        x_test, y_test = _draw(num_test, std_args, templates, rng)
        x_std, y_std = _draw(n_std, std_args, templates, rng)
        x_easy, y_easy = _draw(n_easy, easy_args, templates, rng)
    finally:
        np.random.set_state(np_state)
    # One normalization for every example: the standard examples' statistics (test included, as mnist1d does).
    ref = np.concatenate([x_test, x_std])
    mean, std = ref.mean(), ref.std()
    x_orig = (np.concatenate([x_std, x_easy]) - mean) / std
    y_orig = np.concatenate([y_std, y_easy])
    source = rng.integers(0, len(x_orig), size=n_dup)
    x_dup = x_orig[source] + duplicate_noise * rng.standard_normal((n_dup, x_orig.shape[1]))
    x = np.concatenate([x_orig, x_dup]).astype(np.float32)
    y_clean = np.concatenate([y_orig, y_orig[source]]).astype(np.int32)
    kind = np.concatenate([np.zeros(n_std), np.ones(n_easy), np.full(n_dup, 2)]).astype(np.int32)
    src = np.concatenate([np.full(len(x_orig), -1), source]).astype(np.int64)
    perm = rng.permutation(num_train)
    inverse = np.argsort(perm)   # where each original index lands, so source_N names positions after the shuffle
    x, y_clean, kind, src = x[perm], y_clean[perm], kind[perm], src[perm]
    src = np.where(src >= 0, inverse[np.maximum(src, 0)], -1)
    flipped = np.zeros(num_train, bool)
    flipped[rng.choice(num_train, size=math.floor(label_noise * num_train + 0.5), replace=False)] = True
    y = np.where(flipped, (y_clean + rng.integers(1, 10, size=num_train)) % 10, y_clean).astype(np.int32)
    return {"x_train": x, "y_train": y, "y_train_clean": y_clean, "kind_N": kind, "source_N": src,
            "flipped_N": flipped, "x_test": ((x_test - mean) / std).astype(np.float32),
            "y_test": y_test.astype(np.int32)}


def dial_dataset(num_train: int, num_test: int, **dials):
    """`make_mnist1d_dial` as the training loop's `attent_jax.tasks.datasets.Dataset` (task name "mnist1d")."""
    from attent_jax.tasks.datasets import Dataset

    d = make_mnist1d_dial(num_train, num_test, **dials)
    return Dataset("mnist1d", "classification", d["x_train"], d["y_train"], d["x_test"], d["y_test"],
                   config={"generator": "attent_jax.tasks.dial.make_mnist1d_dial", "num_train": num_train,
                           "num_test": num_test, **dials},
                   labels_train=d["y_train"], num_classes=10)
