"""Per-example scores and the AtteNT selectors (§4.3 eqs. 20–21, §5 Table 3, Appendix D.2).

The greedy teacher (Algorithm 1) trains on the sequences whose discrepancy
‖f_θ(S) − f*(S)‖_F is largest; for a convex loss the per-example training loss
rises with that discrepancy, so either can be the score. Scores are always one
number per example, never a batch mean.

Every selector is a pure, jittable ``(key, scores_N, k) -> idx_k`` (int32, k
static) that returns k distinct example indices:

- `hard`: the top k scores (deterministic; the key is unused).
- `soft`: Gumbel-top-k (Kool et al., 2019): k draws without replacement with
  probabilities softmax(score / temperature), i.e. a Plackett–Luce sample.
- `random`: a uniform subset (the Random baseline of Table 3).
- `class_weight`: draws without replacement with weight 1 / class frequency
  (the Class-Weight baseline of Table 8); ignores the scores.

Each is "top-k of a priority": `priority(name, key, scores_N, ...)` returns the
perturbed score whose k largest entries are the selection. The teacher ranks the
whole priority vector once instead (a full argsort), so the subset size can be
a traced value and changing it along the ratio schedule never recompiles.

Scores equal to +inf mean "not yet seen": `hard` and `soft` take such examples
before any finite score (`soft` in uniformly random order among them).

Non-finite scores rank one way in every selector and in the teacher (`ranking`
is the one sort they share): +inf first (unseen, or infinitely wrong: look at
it), then the finite scores, largest first, then −inf, and NaN last (a NaN
score says nothing about the example, so it is the lowest priority and is
taken only when nothing else is left). A NaN never displaces another example,
and never hides the lift of unseen ones. (The training loop stops on a NaN
score before ranking it; this rule keeps library callers' selections sane.)

Example:
    >>> import jax, jax.numpy as jnp
    >>> from attent_jax import selection
    >>> losses_N = jnp.array([0.1, 2.0, 0.5, 3.0, 1.0])
    >>> selection.hard(jax.random.key(0), losses_N, 2).tolist()
    [3, 1]
    >>> selection.soft(jax.random.key(0), losses_N, 2, temperature=0.5).shape
    (2,)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from attent_jax.learner.validate import check_array, check_same_leading

SELECTORS = ("hard", "soft", "random", "class_weight")
SCORE_SELECTORS = ("hard", "soft")   # the selectors that read the score table (the others never need scoring)


def discrepancy(pred_N, target_N):
    """‖f(S) − f*(S)‖_F per example: the greedy teaching score of eq. (20).

    Args:
        pred_N: learner outputs, batch axis first, any trailing shape (e.g.
            ``(N, n, o)`` for element-level outputs, ``(N, o)`` pooled).
        target_N: the target property values f*(S), same shape.

    Returns:
        ``(N,)`` float: the Frobenius norm over all non-batch axes of each
        example's residual (the absolute residual for scalar outputs).

    Example:
        >>> import jax.numpy as jnp
        >>> discrepancy(jnp.zeros((2, 3, 1)), jnp.ones((2, 3, 1))).tolist()  # doctest: +ELLIPSIS
        [1.73..., 1.73...]
    """
    check_array("pred_N", pred_N, rank=tuple(range(1, 9)))
    check_array("target_N", target_N, rank=tuple(range(1, 9)))
    if tuple(pred_N.shape) != tuple(target_N.shape):
        raise ValueError(f"target_N: got shape {tuple(target_N.shape)}, expected {tuple(pred_N.shape)} to match pred_N")
    resid = (jnp.asarray(pred_N) - jnp.asarray(target_N)).reshape(pred_N.shape[0], -1)
    return jnp.sqrt(jnp.sum(resid * resid, axis=-1))


def class_log_weights(labels_N, num_classes: int):
    """log(1 / class frequency) of each example's class: the Table 8 baseline's weights.

    Every class then carries the same total weight, so a weighted draw is class
    balanced in expectation (for draws small against the rarest class).
    """
    labels_N = jnp.asarray(labels_N)
    counts_C = jnp.bincount(labels_N, length=num_classes)
    return -jnp.log(counts_C[labels_N].astype(jnp.float32))


def _check_selector_args(scores_N, k) -> None:
    check_array("scores_N", scores_N, rank=1, finite=False)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= scores_N.shape[0]:
        raise ValueError(f"k: got {k!r}, expected a Python int in [1, {scores_N.shape[0]}] (the number of scores)")


def _lift_unseen(logits_N, gumbel_N):
    """Logits + Gumbel noise, with every +inf logit ranked above all finite ones.

    Adding noise to +inf would leave ties that `top_k` breaks by index; instead
    each unseen example keeps its own noise and is shifted just above the
    largest finite perturbed value, so unseen examples come first in random order.
    """
    unseen_N = jnp.isposinf(logits_N)
    pert_N = jnp.where(unseen_N, 0.0, logits_N) + gumbel_N
    # NaN is left out of the max (it would make the max NaN and drop the lift) and stays NaN: ranked last.
    top = jnp.max(jnp.where(unseen_N | jnp.isnan(pert_N), -jnp.inf, pert_N))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    floor = jnp.min(jnp.where(unseen_N, gumbel_N, jnp.inf))
    lift = top - floor + 1.0 + 1e-3 * jnp.abs(top)
    return jnp.where(unseen_N, gumbel_N + lift, pert_N)


def _standardized(scores_N):
    """(score − mean) / std over the finite scores, so `temperature` is scale free.

    Centring leaves the softmax unchanged and keeps equal scores at 0 (a uniform
    draw) instead of blowing them up to 1/eps, where float32 noise would drown.
    """
    finite_N = jnp.isfinite(scores_N)
    count = jnp.maximum(jnp.sum(finite_N), 1)
    mean = jnp.sum(jnp.where(finite_N, scores_N, 0.0)) / count
    var = jnp.sum(jnp.where(finite_N, (scores_N - mean) ** 2, 0.0)) / count
    return (scores_N - mean) / (jnp.sqrt(var) + 1e-12)


def priority(name: str, key, scores_N, *, temperature: float = 1.0, normalize: bool = False,
             log_weights_N=None):
    """The perturbed score whose k largest entries are selector `name`'s pick.

    - ``hard``: the scores themselves.
    - ``soft``: score / temperature + Gumbel(0, 1) noise; its top k is a sample of
      k draws without replacement from softmax(score / temperature) (Kool et al.
      2019, Gumbel-top-k). With ``normalize`` the scores are first standardized
      ((score − mean) / std, which leaves only the division by std to matter).
    - ``random``: Gumbel noise alone (a uniform subset).
    - ``class_weight``: log_weights_N + Gumbel noise (draws with weight ∝ exp(log_weights)).

    Float32 throughout unless the scores are float64.
    """
    if name not in SELECTORS:
        raise ValueError(f"selector: got {name!r}, expected one of {SELECTORS}")
    scores_N = jnp.asarray(scores_N)
    dtype = jnp.promote_types(scores_N.dtype, jnp.float32)
    scores_N = scores_N.astype(dtype)
    if name == "hard":
        return scores_N
    gumbel_N = jax.random.gumbel(key, scores_N.shape, dtype)
    if name == "random":
        return gumbel_N
    if name == "class_weight":
        if log_weights_N is None:
            raise ValueError("log_weights_N: got None, expected (N,) log class weights for the class_weight selector")
        return jnp.asarray(log_weights_N, dtype) + gumbel_N
    if normalize:
        scores_N = _standardized(scores_N)
    logits_N = scores_N / temperature
    # Shifting by the largest finite logit leaves the softmax unchanged and keeps the
    # noise's float precision when losses are large but close together.
    top = jnp.max(jnp.where(jnp.isfinite(logits_N), logits_N, -jnp.inf))
    logits_N = logits_N - jnp.where(jnp.isfinite(top), top, 0.0)
    return _lift_unseen(logits_N, gumbel_N)


def ranking(priority_N):
    """All indices by descending priority, NaN last, ties by lower index (int32, jittable).

    The one ordering of every selector's top k and of the teacher's ranking.
    `lax.top_k` would rank NaN first, and a plain ``argsort(-p)`` lets NaN's
    sign decide; here NaN is the primary key, so it ranks last whatever its sign
    (and below −inf).
    """
    nan_N = jnp.isnan(priority_N)
    return jnp.lexsort((jnp.where(nan_N, 0.0, -priority_N), nan_N)).astype(jnp.int32)


def _top_k(priority_N, k: int):
    return ranking(priority_N)[:k]


@functools.partial(jax.jit, static_argnums=(2,))
def hard(key, scores_N, k: int):
    """The k largest scores, largest first (Algorithm 1's greedy pick, eq. 21).

    ``key`` is unused (kept so every selector has one signature). Ties go to the
    lower index.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> hard(jax.random.key(0), jnp.array([0.3, 0.9, 0.1]), 2).tolist()
        [1, 0]
    """
    _check_selector_args(scores_N, k)
    return _top_k(priority("hard", key, scores_N), k)


@functools.partial(jax.jit, static_argnums=(2,), static_argnames=("temperature", "normalize"))
def soft(key, scores_N, k: int, temperature: float = 1.0, normalize: bool = False):
    """k draws without replacement, each ∝ exp(score / temperature) (§5, Table 3's Soft).

    Implemented as top-k of score / temperature + Gumbel noise, which is exactly a
    Plackett–Luce sample of the first k draws (Kool et al., 2019). The scores are
    losses, so their scale matters: with temperature 1 a loss gap of 1 is a factor
    e in odds; losses near zero make the draw almost uniform, large losses make it
    almost `hard`. ``normalize=True`` standardizes the scores first ((s − mean) / std;
    the softmax ignores the shift), making the temperature scale free (off by
    default, as in the paper).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> soft(jax.random.key(1), jnp.array([0.3, 0.9, 0.1]), 2).shape
        (2,)
    """
    _check_selector_args(scores_N, k)
    if not temperature > 0:
        raise ValueError(f"temperature: got {temperature!r}, expected a positive number")
    return _top_k(priority("soft", key, scores_N, temperature=temperature, normalize=normalize), k)


@functools.partial(jax.jit, static_argnums=(2,))
def random(key, scores_N, k: int):
    """A uniformly random subset of k examples, in random order; the scores are ignored.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> sorted(random(jax.random.key(0), jnp.zeros(4), 4).tolist())
        [0, 1, 2, 3]
    """
    _check_selector_args(scores_N, k)
    return _top_k(priority("random", key, scores_N), k)


@functools.partial(jax.jit, static_argnums=(2, 4))
def class_weight(key, scores_N, k: int, labels_N, num_classes: int):
    """k draws without replacement with weight 1 / (frequency of the example's class).

    Appendix D.2's Class-Weight Sampling baseline: Gumbel-top-k over the log
    weights. The scores are ignored; ``labels_N`` holds int class ids in
    ``[0, num_classes)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> labels = jnp.array([0, 0, 0, 1])
        >>> class_weight(jax.random.key(0), jnp.zeros(4), 2, labels, 2).shape
        (2,)
    """
    _check_selector_args(scores_N, k)
    check_array("labels_N", labels_N, rank=1)
    check_same_leading("scores_N", scores_N, "labels_N", labels_N)
    return _top_k(priority("class_weight", key, scores_N,
                           log_weights_N=class_log_weights(labels_N, num_classes)), k)
