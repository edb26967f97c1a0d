"""experiments/lora_finetune.py: the quick run end to end, and its compute-matched baseline's epochs."""

import json
import os

import pytest

from attent_experiments import lora_finetune, timing


def test_lora_finetune_quick(tmp_path):
    assert lora_finetune.main(["--quick", "--out", str(tmp_path), "--compile-cache", str(tmp_path / "cache")]) == 0
    payload = json.loads((tmp_path / "lora_finetune.json").read_text())
    assert (tmp_path / "lora_finetune.md").read_text().startswith("# ")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s, c, q = payload["summary"], payload["checks"], lora_finetune.QUICK
    assert s["all_data"]["share_seen"] == [1.0] and 0.0 < s["attent"]["share_seen"][0] < 1.0
    # The matched baseline runs AtteNT's measured share of the epochs, all data each (catches a baseline
    # given the full epochs, or a share measured against the wrong reference).
    assert c["matched_epochs"] == [lora_finetune.matched_epochs(q, s["attent"]["share_seen"][0])]
    assert s["all_data_matched"]["epochs"] == c["matched_epochs"] < [q.epochs]
    assert s["all_data_matched"]["share_seen"][0] == pytest.approx(c["matched_epochs"][0] / q.epochs)
    assert 0.0 <= c["base_exact_match_pct"][0] <= 100.0
    for run in payload["runs"]["attent"] + payload["runs"]["all_data"]:
        assert run["config"]["model"]["lora_rank"] == q.lora_rank
        assert [e["stage"] for e in run["epochs"]] == ["pretrain"] * q.pretrain_epochs + ["finetune"] * q.epochs
    # AtteNT resumed from the all-data run's stage boundary ends exactly as a run of its own from scratch
    # (catches a resumed state that differs from the one the run would reach: the pre-training, its
    # optimizer or the fine-tuning teacher's initial state depending on the method).
    text = os.path.join(str(tmp_path), "pretrain_arith3.txt")
    alone = timing.timed_run(lora_finetune.train_config(q, "attent", q.seeds[0], text), str(tmp_path / "alone"))
    resumed = payload["runs"]["attent"][0]
    assert [e["eval_loss"] for e in alone["epochs"]] == [e["eval_loss"] for e in resumed["epochs"]]
    assert alone["result"]["exact_match"] == resumed["result"]["exact_match"]


def test_matched_epochs_and_config_errors():
    cfg = lora_finetune.Config()
    assert lora_finetune.matched_epochs(cfg, (1 + 0.7 * 4) / 5) == 4   # the paper's AtteNT: 76% of 5 epochs
    assert lora_finetune.matched_epochs(cfg, 0.01) == 1
    with pytest.raises(ValueError, match="lora_rank: got 0"):
        lora_finetune.Config(lora_rank=0)
    with pytest.raises(ValueError, match="context: got 64"):
        lora_finetune.Config(context=64)
    with pytest.raises(ValueError, match="epochs: got 1"):
        lora_finetune.Config(epochs=1)


def test_pretrain_text_is_related_but_never_the_task():
    # Catches: a held-out question (or a 2-digit addition reaching 100, the skill fine-tuning must teach) in
    # the base's pre-training text, and lines that do not start every window at a question.
    from attent_jax.tasks.generators import make_arith_questions

    cfg = lora_finetune.Config(num_train=2000, num_test=1000, pretrain_lines=500)
    text = lora_finetune.pretrain_text(cfg)
    held_out = set(make_arith_questions(3000, 2, "+", 0)[0][2000:])
    lines = [line for line in text.split("\n") if line]
    assert len(lines) == 500 + len(lora_finetune.short_sum_additions(held_out))
    two_digit = 0
    for line in lines:
        question, answer = line.split("A:")
        a, b = (int(x) for x in question[len("Q:"):-1].split("+"))
        assert int(answer) == a + b
        if max(a, b) < 100:
            two_digit += 1
            assert question + "A:" not in held_out and a + b < 100
    assert two_digit > 4000 and len(text) % lora_finetune.LINE_CHARS == 0
    assert set(text[::lora_finetune.LINE_CHARS]) == {"Q"}
