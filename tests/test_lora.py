"""LoRA: adapter surgery and merge (`models/lora.py`), the frozen-base partition (`training/optim.py`) in real runs.

Runs are arith at a tiny size (decoder width 16, depth 1, 64 questions, batch 16)
through `Trainer`, what `attent train --lora-rank R` runs.
"""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

from attent_jax.learner.model import AttentionLearner, LearnerConfig
from attent_jax.models import decoder, lora
from attent_jax.training.checkpoint import Checkpointer, abstract_like
from attent_jax.training.config import TrainConfig
from attent_jax.training.loop import Trainer
from attent_jax.training.optim import Partition, stage_partitions
from attent_experiments.common import compile_cache

TINY = dict(task="arith", quick=True, width=16, depth=1, num_heads=2, num_train=64, num_test=16, batch_size=16,
            epochs=1, pretrain_epochs=0, selection="none", progress_bar=False, checkpoint_every=1000)


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with compile_cache(str(tmp_path_factory.mktemp("jax_cache"))):
        yield


def _model(rank=4, seed=0):
    model = decoder.CausalDecoder(decoder.DecoderConfig(vocab_size=20, context=8, width=16, depth=1, num_heads=2),
                                  rngs=nnx.Rngs(seed))
    if rank:
        lora.add_lora(model, rank, nnx.Rngs(seed + 1))
    return model


def _flat(params):
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(params)).items()}


def _is_adapter(path):
    return path[-1] in ("lora_a", "lora_b")


def test_add_lora_keeps_base_and_adds_loraparams():
    # Catches: adapters that change the model before training (B not zero), base weights copied
    # instead of shared, adapters that are not LoRAParam (the trainer could not tell them apart).
    x = jnp.arange(16, dtype=jnp.int32).reshape(2, 8) % 20
    base = _model(rank=0)
    adapted = _model(rank=4)
    np.testing.assert_array_equal(np.asarray(adapted(x)), np.asarray(base(x)))
    assert len(lora.lora_paths(adapted)) == 2 * 4  # qkv, out, mlp_in, mlp_out: A and B each
    assert all(isinstance(v, nnx.LoRAParam) for _, v in nnx.to_flat_state(nnx.state(adapted, nnx.LoRAParam)))
    assert not nnx.state(adapted, nnx.Not(nnx.Param))  # LoRAParam is a Param: the trainer's check passes
    qkv = adapted.blocks[0].att.qkv
    assert isinstance(qkv, nnx.LoRALinear) and qkv.lora.lora_a.shape == (16, 4) and qkv.lora.lora_b.shape == (4, 48)


def test_merge_reproduces_adapted_outputs():
    # Catches: a merge that drops A B, transposes it, or adds it to the wrong layer.
    # Tolerance: x(W + AB) and xW + (xA)B differ by float32 rounding only; each logit is a sum of
    # a few dozen products of O(1) terms, so ~1e-6 relative; 1e-4 leaves room, and the adapter's
    # contribution checked below is far larger (a wrong merge misses by O(1)).
    model = _model(rank=4)
    for i, (_, var) in enumerate(nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))):
        var[...] = 0.3 * jax.random.normal(jax.random.key(i), var.shape)
    x = jnp.arange(16, dtype=jnp.int32).reshape(2, 8) % 20
    merged = lora.merge_lora(model)
    assert not lora.lora_paths(merged) and isinstance(merged.blocks[0].att.qkv, nnx.Linear)
    out, out_merged, out_base = (np.asarray(m(x)) for m in (model, merged, _model(rank=0)))
    np.testing.assert_allclose(out_merged, out, rtol=1e-4, atol=1e-4)
    assert np.abs(out - out_base).max() > 1e-2  # the adapters matter, so the comparison above can fail
    assert lora.lora_paths(model)  # the merge copied: the adapted model keeps its adapters


def test_bad_rank_one_line_errors():
    # Catches: a negative or non-int rank accepted, a rank above a layer's width, a model without Linear layers
    # silently "adapted" (training nothing).
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="lora_rank: got") as err:
            TrainConfig.from_flat(**TINY, lora_rank=bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="lora_rank: got 17, expected at most min"):
        lora.add_lora(_model(rank=0), 17, nnx.Rngs(0))
    learner = AttentionLearner(LearnerConfig(d_in=3, d_qk=4), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="has no nnx.Linear layer"):
        lora.add_lora(learner, 2, nnx.Rngs(0))


def test_rank_zero_trains_everything_as_before():
    # Catches: rank 0 freezing something or routing the step through a split/combine (a changed computation),
    # and `resolve` dropping the rank (a LoRA run silently training all params).
    assert TrainConfig.from_flat(**TINY, lora_rank=3).resolve().model.lora_rank == 3
    parts = stage_partitions({("a",): 0, ("b",): 0}, (), 2)
    assert parts == [Partition(), Partition()]
    params = {"a": jnp.ones(2), "b": {"c": jnp.zeros(3)}}
    trainable, frozen = Partition().split(params)
    assert trainable is params and frozen == {} and Partition().combine(trainable, frozen) is params
    trainer = Trainer(TrainConfig.from_flat(**TINY), "/tmp/unused_attent_lora_rank0")
    n_params = len(jax.tree.leaves(trainer.abstract_state["params"]))
    assert not any(_is_adapter(p) for p in traverse_util.flatten_dict(trainer.abstract_state["params"]))
    # Adam's two moments per param, plus its step count: the optimizer covers every param.
    assert len(jax.tree.leaves(trainer.abstract_state["opt"])) == 2 * n_params + 1


def test_lora_finetune_freezes_base_bitwise_and_merges(tmp_path):
    # Catches: base weights moved by the update (e.g. p + (-lr * 0) flipping -0.0, weight decay on frozen
    # leaves), adapters never trained, base moments in the optimizer state.
    trainer = Trainer(TrainConfig.from_flat(**TINY, lora_rank=2, learning_rate=1e-2), str(tmp_path / "run"))
    before = _flat(trainer.init_state()["params"])
    trainer.run()
    after = _flat(trainer.final_state["params"])
    assert before.keys() == after.keys()
    for k, v in before.items():
        if _is_adapter(k):
            continue
        assert v.tobytes() == after[k].tobytes(), k
    assert any(np.abs(after[k]).max() > 0 for k in after if k[-1] == "lora_b")  # B left zero: adapters trained
    opt_leaves = [x for x in jax.tree.leaves(trainer.final_state["opt"]) if np.ndim(x)]
    adapter_shapes = sorted(v.shape for k, v in after.items() if _is_adapter(k))
    assert sorted(x.shape for x in opt_leaves) == sorted(adapter_shapes * 2)  # Adam's mu and nu: adapters only
    # The merged model reproduces the adapted one (tolerance as in test_merge_reproduces_adapted_outputs).
    model = nnx.merge(trainer.graphdef, trainer.final_state["params"])
    x = jnp.asarray(trainer.stages[0].test["x"][:4])
    np.testing.assert_allclose(np.asarray(lora.merge_lora(model)(x)), np.asarray(model(x)), rtol=1e-4, atol=1e-4)


def test_two_stage_pretrains_base_then_adapters_and_resumes(tmp_path):
    # Catches: the pre-training stage moving the adapters (B no longer 0: the fine-tuning would not start from
    # the base), the fine-tuning stage moving the base, and a resume that cannot read a checkpoint of the
    # other stage's layout (the optimizer state differs between the stages).
    text = tmp_path / "pre.txt"
    text.write_text("".join(f"Q:{a}+{a + 100}=A:{2 * a + 100}\n" for a in range(300)))
    cfg = TrainConfig.from_flat(**dict(TINY, pretrain_epochs=1, num_train=32, checkpoint_every=4), lora_rank=2,
                                text_file=str(text), keep_checkpoints=100, context=16)
    run = str(tmp_path / "run")
    trainer = Trainer(cfg, run)
    init = _flat(trainer.init_state()["params"])
    trainer.run()
    final = _flat(trainer.final_state["params"])
    boundary = sum(trainer.planned[0])
    ckpt = Checkpointer(os.path.join(run, "checkpoints"))
    try:
        assert boundary in ckpt.all_steps()
        mid, _ = ckpt.restore(boundary, abstract_like(trainer.abstract_states[1], trainer.stage_shardings[1]))
    finally:
        ckpt.close()
    mid = _flat(mid["params"])
    assert all(not mid[k].any() for k in mid if k[-1] == "lora_b")
    assert all(mid[k].tobytes() == init[k].tobytes() for k in mid if k[-1] == "lora_a")
    assert any(mid[k].tobytes() != init[k].tobytes() for k in mid if not _is_adapter(k))  # pre-training trained
    assert all(mid[k].tobytes() == final[k].tobytes() for k in mid if not _is_adapter(k))  # fine-tuning did not
    # A folder whose newest checkpoint is of the pre-training stage's layout resumes from it, and ends as the
    # uninterrupted run did.
    copy = str(tmp_path / "copy")
    shutil.copytree(run, copy)
    for step in os.listdir(os.path.join(copy, "checkpoints")):
        if step.isdigit() and int(step) >= boundary:
            shutil.rmtree(os.path.join(copy, "checkpoints", step))
    resumed = Trainer(cfg, copy)
    resumed.run()
    assert resumed.final_state is not None
    again = _flat(resumed.final_state["params"])
    assert all(again[k].tobytes() == final[k].tobytes() for k in final)
