"""theory.kernel_convergence, quick config: settling measured against references that do not end the run."""

import pytest

from attent_theory.verify import fast_compile
from attent_theory import kernel_convergence as kc


@pytest.fixture(scope="module")
def report():
    with fast_compile():
        return kc.run(kc.Config.quick())


def test_controls_caught_and_every_other_row_is_a_claim(report):
    """Catches a settling measure that calls a constant-speed (never settling) kernel settled, as the old one did."""
    assert {c.kind for c in report.checks} == {"claim", "control"}
    controls = report.of_kind("control")
    assert len(controls) == 4 and all(c.status == "caught" for c in controls)
    assert report.passed  # no identities; the controls are caught


def test_measures_do_not_vanish_at_T_by_construction(report):
    """Catches measuring against the run's own final kernel: that distance is 0 at T whatever the kernel does."""
    const = report.data["main"]["constant"]
    assert const["drift_to_own_end"][-1] == 0  # the old measure, kept in data to show this
    assert const["window_at_T"] > 0
    assert const["ref_steps"][-1] == kc.Config.quick().steps
    for kind, main in report.data["main"].items():
        assert main["ref_distance"][-1] > 0, kind
        assert main["ref_distance"][-1] < main["ref_distance"][0], kind  # the kernel does approach the 2T kernel


def test_constant_run_window_covers_twice_the_run(report):
    """Catches the constant-step window stopping at T - Δ (then w_T would be undefined, as for cosine)."""
    const, cosine = report.data["main"]["constant"], report.data["main"]["cosine"]
    steps = kc.Config.quick().steps
    assert const["window_steps"][-1] == 2 * steps - const["lag"]
    assert cosine["window_steps"][-1] == steps - cosine["lag"]


def test_heads_freeze_the_kernel_faster_than_width(report):
    """Catches a broken NTK parametrisation of W_O (the heads sweep would then drift like the d' sweep)."""
    heads, dqk = report.data["width_heads"], report.data["width_dqk"]
    assert heads["slope"] < dqk["slope"] - 0.2


def test_schedule_rejects_unknown_kind():
    """Catches a typo in Config.schedules silently running a constant step."""
    with pytest.raises(ValueError, match="schedule"):
        kc.schedule("linear", 0.1, 10)
