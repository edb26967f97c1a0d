"""What a run trains on: its dataset, its stages (each with a teacher), its model, and per-example losses.

A `Stage` is one phase of training on one dataset with one teacher: most runs
have one; arith with a text file has two (next-char pre-training on all data,
then fine-tuning with selection).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax.numpy as jnp
from flax import nnx

from attent_jax.learner.model import AttentionLearner, LearnerConfig
from attent_jax.models import make_model
from attent_jax.models.decoder import DecoderConfig, lm_accuracy, lm_losses
from attent_jax.models.encoder import EncoderConfig, classification_correct, classification_losses
from attent_jax.tasks import datasets as data_lib
from attent_jax.teaching.teacher import Teacher, TeacherConfig
from attent_jax.training.config import DataConfig, ModelConfig, TrainConfig


@dataclasses.dataclass(frozen=True, eq=False)
class Stage:
    """One phase of training on one dataset with one teacher (arith: pre-training, then fine-tuning)."""
    name: str                       # "train", "pretrain" or "finetune"
    kind: str                       # "regression", "classification" or "lm"
    train: dict                     # numpy arrays, axis 0 = examples: x, y (and m, the lm loss mask)
    test: dict                      # held-out arrays, same keys
    epochs: int                     # epochs of this stage
    teacher: Teacher                # plans each epoch (the pre-training stage: all data, reshuffled)
    decode: dict | None = None      # arith: prompts, prompt_lens, answers, vocab for exact match

    @property
    def num_train(self) -> int:
        return len(self.train["x"])

    def planned_steps(self, batch_size: int) -> list[int]:
        """Optimizer steps of each epoch from the teacher's host-side schedule (InfoBatch: as full epochs)."""
        return [(p.n_active if p.n_active is not None else self.num_train) // batch_size
                for p in self.teacher.schedule(self.epochs)]


def _arrays(ds: data_lib.Dataset, split: str) -> dict:
    out = {"x": getattr(ds, f"x_{split}"), "y": getattr(ds, f"y_{split}")}
    mask = getattr(ds, f"mask_{split}")
    if mask is not None:
        out["m"] = mask
    return out


def load_dataset(config: DataConfig) -> data_lib.Dataset:
    """The task's `Dataset` with the config's size options."""
    options = {}
    if config.num_train:
        options["num_train"] = config.num_train
    if config.num_test:
        options["num_test"] = config.num_test
    if config.task in ("charlm", "arith"):
        if config.context:
            options["context"] = config.context
        if config.text_file:
            options["text_path"] = config.text_file
    return data_lib.load_task(config.task, quick=config.quick, **options)


def build_stages(config: TrainConfig, ds: data_lib.Dataset) -> list[Stage]:
    """The run's stages: one, or for arith with a text file, pre-training then fine-tuning.

    Reads the run's epochs, batch and seed, and the selection (each stage's teacher).
    """
    task, run = config.data.task, config.run
    stages = []
    if task == "arith" and run.pretrain_epochs:
        pre = ds.pretrain
        stages.append(Stage("pretrain", "lm", _arrays(pre, "train"), _arrays(pre, "test"), run.pretrain_epochs,
                            Teacher(TeacherConfig(regime="full", seed=run.seed), pre.num_train)))
    labels = ds.labels_train if config.selection.selection == "class_weight" else None
    teacher = Teacher(config.teacher_config(), ds.num_train, labels=labels)
    decode = None
    if ds.prompts_test is not None:
        decode = {"prompts": ds.prompts_test, "prompt_lens": ds.prompt_lens_test, "answers": ds.answers_test,
                  "vocab": ds.vocab}
    stages.append(Stage("finetune" if task == "arith" else "train", ds.kind, _arrays(ds, "train"),
                        _arrays(ds, "test"), run.epochs, teacher, decode))
    for stage in stages:
        if run.batch_size > stage.num_train:
            raise ValueError(f"batch_size: got {run.batch_size}, expected at most the {stage.num_train} "
                             f"training examples of stage {stage.name!r} of task {task!r}")
    return stages


def model_builder(config: ModelConfig, ds: data_lib.Dataset, stages: list[Stage]) -> Callable[[nnx.Rngs], nnx.Module]:
    """``build(rngs) -> module`` for the (resolved) model config, sized from the data."""
    c = config
    if c.model == "attention":
        x, y = ds.x_train, ds.y_train
        learner = LearnerConfig(d_in=x.shape[-1], d_qk=c.width, d_out=y.shape[-1], num_heads=c.num_heads,
                                pool="mean" if y.ndim == 2 else "none", out_proj=c.num_heads > 1)
        return lambda rngs: AttentionLearner(learner, rngs=rngs)
    if c.model == "encoder":
        enc = EncoderConfig(input_shape=tuple(ds.x_train.shape[1:]), width=c.width, depth=c.depth,
                            num_heads=c.num_heads, num_classes=ds.num_classes)
        return lambda rngs: make_model("encoder", enc, rngs)
    lengths = [s.train["x"].shape[1] for s in stages] + [s.decode["prompts"].shape[1] for s in stages if s.decode]
    dec = DecoderConfig(vocab_size=ds.vocab_size, context=max(lengths), width=c.width, depth=c.depth,
                        num_heads=c.num_heads)
    return lambda rngs: make_model("decoder", dec, rngs)


def per_example_fn(kind: str, apply: Callable) -> Callable:
    """``f(params, batch) -> (loss_B, accuracy_B)``: per-example losses, never a batch mean.

    regression: mean squared error over each example's outputs; accuracy 0 (none).
    classification: softmax cross-entropy; accuracy = argmax hit.
    lm: masked mean next-token cross-entropy (arith: answer tokens only); accuracy = masked token accuracy.
    """
    if kind == "regression":
        def f(params, batch):
            err = apply(params, batch["x"]) - batch["y"]
            loss_B = jnp.mean(jnp.square(err).reshape(err.shape[0], -1), axis=1)
            return loss_B, jnp.zeros_like(loss_B)
    elif kind == "classification":
        def f(params, batch):
            logits = apply(params, batch["x"])
            return (classification_losses(logits, batch["y"]),
                    classification_correct(logits, batch["y"]).astype(jnp.float32))
    else:
        def f(params, batch):
            logits = apply(params, batch["x"])
            return lm_losses(logits, batch["y"], batch["m"]), lm_accuracy(logits, batch["y"], batch["m"])
    return f


def example_scores(score: str, loss_B, batch):
    """What the teacher ranks: the per-example loss, or the discrepancy ‖f(S) − f*(S)‖ (paper eq. 21).

    The regression loss is the mean squared error over an example's D outputs,
    so the discrepancy is √(D · loss): the same order as the loss (hard selection
    picks the same examples), but a different scale for the soft selector.
    """
    if score == "loss":
        return loss_B
    outputs_per_example = math.prod(batch["y"].shape[1:])
    return jnp.sqrt(outputs_per_example * loss_B)
