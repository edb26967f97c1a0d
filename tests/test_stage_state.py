"""training/stage_state.py: per-stage state layouts (LoRA: the two stages' optimizer states differ)."""

import jax

from attent_jax.training.config import TrainConfig
from attent_jax.training.loop import Trainer

TINY = dict(task="arith", quick=True, width=16, depth=1, num_heads=2, num_train=32, num_test=16, batch_size=16,
            epochs=1, pretrain_epochs=1, selection="none", progress_bar=False, context=16)


def test_layouts_differ_only_with_lora_and_advance_switches_at_the_boundary(tmp_path):
    # Catches: LoRA's stages sharing one layout (the fine-tuning optimizer over the base), rank 0 getting two
    # layouts (a needless second restore attempt), and `advance` not moving the clock/optimizer to stage 1.
    text = tmp_path / "pre.txt"
    text.write_text("".join(f"Q:{a}+{a + 100}=A:{2 * a + 100}\n" for a in range(100)))
    plain = Trainer(TrainConfig.from_flat(**TINY, text_file=str(text)), str(tmp_path / "a")).layouts
    assert plain.layouts() == [0] and plain.abstract_states[1] is plain.abstract_states[0]
    trainer = Trainer(TrainConfig.from_flat(**TINY, text_file=str(text), lora_rank=2), str(tmp_path / "b"))
    layouts = trainer.layouts
    assert layouts.layouts() == [1, 0]
    state = trainer.init_state()
    clock = {"stage": 0, "epoch": 0, "stage_step": 5, "pos": 3, "planned": 1, "steps_in_epoch": 2}
    state = layouts.advance(state, clock, trainer.tx, 0, 0, 1)
    assert clock == {"stage": 1, "epoch": 0, "stage_step": 0, "pos": 0, "planned": 0, "steps_in_epoch": 0}
    assert (jax.tree.structure(state["opt"]) == jax.tree.structure(layouts.abstract_states[1]["opt"])
            != jax.tree.structure(layouts.abstract_states[0]["opt"]))
