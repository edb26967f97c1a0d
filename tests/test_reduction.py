"""theory.reduction: the attention gradient as a linear model's batch gradient, with controls that must be caught."""

import numpy as np
import pytest

from attent_jax.learner.model import LearnerConfig
from attent_theory.verify import fast_compile
from attent_theory import reduction


@pytest.fixture(scope="module")
def report():
    with fast_compile():
        return reduction.run(reduction.Config.quick())


def test_identities_pass_and_controls_are_caught(report):
    # Catches a wrong importance formula (in the script or in importance.py), wrong features for a
    # weight (S vs T, missing batch sum) in unit_importance_grad, and a control that stops detecting.
    identities, controls = report.of_kind("identity"), report.of_kind("control")
    assert len(identities) == 3 and len(controls) == 4
    assert report.passed
    # Exact to round-off in float64, far inside 1e-10: an approximate formula would show here.
    assert max(c.value for c in identities) < 1e-12, [(c.name, c.value) for c in identities]
    # Each broken factor changes the gradient by O(1), not by round-off.
    assert min(c.value for c in controls) > 1e-2, [(c.name, c.value) for c in controls]
    assert set(report.data) == set(reduction.CASES)
    assert max(v["forward"] for v in report.data.values()) < 1e-12  # the numpy forward is the learner


def _draw(lc, rng, batch=2, n=4, m=3):
    params = {"w_q": rng.standard_normal((1, lc.d_in, lc.d_qk)), "w_k": rng.standard_normal((1, lc.kv_dim, lc.d_qk)),
              "w_v": rng.standard_normal((1, lc.kv_dim, lc.d_out))}
    s = rng.standard_normal((batch, n, lc.d_in))
    t = rng.standard_normal((batch, m, lc.kv_dim)) if lc.cross else None
    y = rng.standard_normal((batch, lc.d_out) if lc.pool == "mean" else (batch, n, lc.d_out))
    return params, s, t, y


def test_causal_first_query_has_zero_importance():
    # Element 0 of a causal learner attends only to itself (v_0 = f_0), so Γ_Q[0] = 0 in every
    # sequence; a mask on the wrong side of the diagonal would give it non-zero importance.
    lc = LearnerConfig(d_in=3, d_qk=4, d_out=2, causal=True)
    params, s, t, y = _draw(lc, np.random.default_rng(0))
    gamma_q = reduction._importances(lc, params, s, t, y)["weights"]["w_q"]["gamma"].reshape(2, 4, -1)
    assert np.abs(gamma_q[:, 0]).max() < 1e-14
    assert np.abs(gamma_q[:, 1:]).min(axis=-1).max() > 1e-6


def test_uniform_attention_control_is_blind_when_attention_is_uniform():
    # With W_Q = 0 every logit is 0 and A is uniform, so the "A uniform" control equals Γ_V: the
    # control measures the attention factor and nothing else (a control that differed here would
    # be catching some other slip).
    lc = LearnerConfig(d_in=3, d_qk=4)
    params, s, t, y = _draw(lc, np.random.default_rng(1))
    params["w_q"] = np.zeros_like(params["w_q"])
    w_v = reduction._importances(lc, params, s, t, y)["weights"]["w_v"]
    np.testing.assert_allclose(w_v["broken"], w_v["gamma"], rtol=1e-13, atol=1e-15)


def test_linear_batch_grad_is_the_squared_loss_gradient():
    # Xᵀ(XW − Y) written by hand against central differences of ½‖XW − Y‖²: catches a transposed
    # or mis-shaped linear-model gradient, which would make the identities compare wrong things.
    rng = np.random.default_rng(2)
    x, w, y = rng.standard_normal((7, 3)), rng.standard_normal((3, 2)), rng.standard_normal((7, 2))
    loss = lambda w_: 0.5 * np.sum((x @ w_ - y) ** 2)
    numeric = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        e = np.zeros_like(w)
        e[idx] = 1e-6
        numeric[idx] = (loss(w + e) - loss(w - e)) / 2e-6
    np.testing.assert_allclose(reduction.linear_batch_grad(x, x @ w - y), numeric, rtol=1e-7, atol=1e-8)


def test_bad_case_is_a_one_line_value_error():
    with pytest.raises(ValueError, match="Config.cases: got"):
        reduction.Config(cases=("self", "nope"))
