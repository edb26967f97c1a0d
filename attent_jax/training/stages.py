"""What a run trains on: its dataset, its stages (each with a teacher), its model, and per-example losses.

A `Stage` is one phase of training on one dataset with one teacher: most runs
have one; arith with a text file has two (next-char pre-training on all data,
then fine-tuning with selection). A user's run (`attent_jax.fit`) is one stage of
kind "custom" carrying its own per-example loss (`user_stage`); a user's model
factory (``--model package.module:factory``) is built by `model_builder` too.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attent_jax.learner.model import AttentionLearner, LearnerConfig
from attent_jax.models import make_model
from attent_jax.models.decoder import DecoderConfig, lm_accuracy, lm_losses
from attent_jax.models.encoder import EncoderConfig, classification_correct, classification_losses
from attent_jax.models.mae import MAEConfig, reconstruction_losses
from attent_jax.tasks import datasets as data_lib
from attent_jax.teaching.teacher import Teacher, TeacherConfig
from attent_jax.training.config import FACTORY_PATTERN, MODELS, DataConfig, ModelConfig, TrainConfig
from attent_jax.training.host_data import RecordSource, first_record, num_examples, source_spec
from attent_jax.training.run_log import warn_once


@dataclasses.dataclass(frozen=True, eq=False)
class Stage:
    """One phase of training on one dataset with one teacher (arith: pre-training, then fine-tuning)."""
    name: str                       # "train", "pretrain" or "finetune"
    kind: str                       # "regression", "classification", "lm", "mae" or "custom" (a user's loss)
    train: dict                     # arrays, axis 0 = examples: x, y (m, the lm loss mask; mae: x, id); memory-mapped or a host_data.RecordSource too
    test: dict                      # held-out arrays (or source), same keys
    epochs: int                     # epochs of this stage
    teacher: Teacher                # plans each epoch (the pre-training stage: all data, reshuffled)
    decode: dict | None = None      # arith: prompts, prompt_lens, answers, vocab for exact match
    loss: Callable | None = None    # kind "custom": loss(model_output, batch) -> (B,) per-example losses
    metric: Callable | None = None  # kind "custom": metric(model_output, batch) -> (B,), logged as accuracy

    @property
    def num_train(self) -> int:
        return num_examples(self.train)

    @property
    def has_accuracy(self) -> bool:
        """Whether the run logs an accuracy (regression has none; a user's stage only with a metric)."""
        return self.kind in ("classification", "lm") or self.metric is not None

    def planned_steps(self, batch_size: int) -> list[int]:
        """Optimizer steps of each epoch from the teacher's host-side schedule (InfoBatch: as full epochs,
        so a "steps" learning-rate schedule does not finish: `warn_lr_schedule`)."""
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
    if config.model.objective == "mae":
        stages.append(Stage("train", "mae", *mae_arrays(ds), run.epochs, teacher))
        return _check_stages(stages, config)
    decode = None
    if ds.prompts_test is not None:
        decode = {"prompts": ds.prompts_test, "prompt_lens": ds.prompt_lens_test, "answers": ds.answers_test,
                  "vocab": ds.vocab}
    stages.append(Stage("finetune" if task == "arith" else "train", ds.kind, _arrays(ds, "train"),
                        _arrays(ds, "test"), run.epochs, teacher, decode))
    return _check_stages(stages, config)


def _check_stages(stages: list[Stage], config: TrainConfig) -> list[Stage]:
    _check_batch(stages, config.run.batch_size, config.data.task)
    for stage in stages:
        warn_lr_schedule(stage, config.optim.lr_schedule_by)
    return stages


def _check_batch(stages: list[Stage], batch_size: int, task: str) -> list[Stage]:
    for stage in stages:
        if batch_size > stage.num_train:
            raise ValueError(f"batch_size: got {batch_size}, expected at most the {stage.num_train} "
                             f"training examples of stage {stage.name!r} of task {task!r}")
    return stages


def warn_lr_schedule(stage: Stage, lr_schedule_by: str) -> None:
    """Warn once when a "steps" learning-rate schedule cannot finish its decay: InfoBatch pruning epochs.

    `planned_steps` counts an InfoBatch epoch as a full one (its size is drawn on device, after the schedule
    is laid out), so the run ends with the schedule short of its end by about the pruned share of those
    epochs' steps. Only warned, not changed: "steps" is the default, and a default resolved per regime
    would change how an existing infobatch run folder resumes (`check_run_folder` compares the configs).
    """
    cfg = stage.teacher.config
    if lr_schedule_by != "steps" or cfg.infobatch_prune_ratio == 0:
        return
    if any(p.kind == "infobatch" for p in stage.teacher.schedule(stage.epochs)):
        warn_once(f"lr_schedule_by: 'steps' with the infobatch regime (stage {stage.name!r}) lays the learning-rate "
                  "schedule out over full epochs, but InfoBatch prunes part of each epoch's steps on device, so the "
                  "run ends before the warm-up + cosine decay does (the learning rate stays above its end value)"
                  "; pass lr_schedule_by='epochs' (--lr-schedule-by epochs) to finish the decay")


def mae_arrays(ds: data_lib.Dataset) -> tuple[dict, dict]:
    """MAE pre-training's (train, test) arrays: the inputs and each example's id, which seeds its mask.

    Test ids follow the training ids, so no held-out example shares a training example's mask key.
    """
    n, m = len(ds.x_train), len(ds.x_test)
    return ({"x": ds.x_train, "id": np.arange(n, dtype=np.int32)},
            {"x": ds.x_test, "id": np.arange(n, n + m, dtype=np.int32)})


def load_factory(path: str) -> Callable:
    """The callable named by ``package.module:factory``; a one-line ValueError if it cannot be imported."""
    if not isinstance(path, str) or not re.fullmatch(FACTORY_PATTERN, path):
        raise ValueError(f"model: got {path!r}, expected one of {MODELS} or an import path package.module:factory")
    module_name, attr = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a user's module may fail in any way; name it on one line
        raise ValueError(f"model: got {path!r}, but module {module_name!r} does not import "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model: got {path!r}, expected module {module_name!r} to define a callable {attr!r}")
    return factory


def factory_spec(config: ModelConfig, ds: data_lib.Dataset, rngs: nnx.Rngs) -> dict:
    """The one argument of a user's model factory: what it is to be sized from (README: your own model)."""
    return {"rngs": rngs, "task": ds.name, "kind": ds.kind,
            "input_shape": tuple(ds.x_train.shape[1:]), "output_shape": tuple(ds.y_train.shape[1:]),
            "num_classes": ds.num_classes or 0, "vocab_size": ds.vocab_size or 0,
            "width": config.width, "depth": config.depth, "num_heads": config.num_heads}


def model_builder(config: ModelConfig, ds: data_lib.Dataset, stages: list[Stage]) -> Callable[[nnx.Rngs], nnx.Module]:
    """``build(rngs) -> module`` for the (resolved) model config, sized from the data."""
    c = config
    if c.model not in MODELS:
        factory = load_factory(c.model)

        def build(rngs):
            module = factory(factory_spec(c, ds, rngs))
            if not isinstance(module, nnx.Module):
                raise ValueError(f"model: factory {c.model!r} returned {type(module).__name__}, expected an "
                                 "nnx.Module")
            return module
        return build
    if c.model == "attention":
        x, y = ds.x_train, ds.y_train
        learner = LearnerConfig(d_in=x.shape[-1], d_qk=c.width, d_out=y.shape[-1], num_heads=c.num_heads,
                                pool="mean" if y.ndim == 2 else "none", out_proj=c.num_heads > 1)
        return lambda rngs: AttentionLearner(learner, rngs=rngs)
    if c.model == "encoder":
        enc = EncoderConfig(input_shape=tuple(ds.x_train.shape[1:]), width=c.width, depth=c.depth,
                            num_heads=c.num_heads, num_classes=ds.num_classes,
                            patch_size=c.patch_size or EncoderConfig.patch_size)
        if c.objective == "mae":
            mae = mae_config(c, enc)
            return lambda rngs: make_model("mae", mae, rngs)
        return lambda rngs: make_model("encoder", enc, rngs)
    lengths = [s.train["x"].shape[1] for s in stages] + [s.decode["prompts"].shape[1] for s in stages if s.decode]
    dec = DecoderConfig(vocab_size=ds.vocab_size, context=max(lengths), width=c.width, depth=c.depth,
                        num_heads=c.num_heads)
    return lambda rngs: make_model("decoder", dec, rngs)


def mae_config(config: ModelConfig, encoder: EncoderConfig) -> MAEConfig:
    """The `MAEConfig` of a model config's MAE fields around `encoder` (mean-pooled: MAE has no CLS read-out)."""
    c = config
    width = c.decoder_width or encoder.width
    return MAEConfig(encoder=dataclasses.replace(encoder, pool="mean"), mask_ratio=c.mask_ratio,
                     decoder_width=width, decoder_depth=c.decoder_depth,
                     decoder_heads=encoder.num_heads if width % encoder.num_heads == 0 else 1,
                     norm_pix_loss=c.norm_pix_loss, mask_seed=c.mask_seed)


def per_example_fn(kind: str, apply: Callable) -> Callable:
    """``f(params, batch) -> (loss_B, accuracy_B)``: per-example losses, never a batch mean.

    regression: mean squared error over each example's outputs; accuracy 0 (none).
    classification: softmax cross-entropy; accuracy = argmax hit.
    lm: masked mean next-token cross-entropy (arith: answer tokens only); accuracy = masked token accuracy.
    mae: mean squared error of the reconstructed masked patches, the model called on (x, id); accuracy 0.
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
    elif kind == "mae":
        def f(params, batch):
            loss_B = reconstruction_losses(*apply(params, (batch["x"], batch["id"])))
            return loss_B, jnp.zeros_like(loss_B)
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


def stage_per_example(stage: Stage, apply: Callable) -> Callable:
    """``f(params, batch) -> (loss_B, accuracy_B)`` of a stage: its kind's losses, or a user's own loss."""
    if stage.loss is None:
        return per_example_fn(stage.kind, apply)

    def f(params, batch):
        out = apply(params, batch["x"])
        loss_B = jnp.asarray(stage.loss(out, batch))
        acc_B = jnp.zeros_like(loss_B) if stage.metric is None else jnp.asarray(stage.metric(out, batch))
        return loss_B, acc_B.astype(loss_B.dtype)
    return f


def check_params_only(abstract: nnx.Module) -> None:
    """The model's state is nnx.Param only: the training state carries Params, so anything else would reset."""
    other = [jax.tree_util.keystr(path) for path, _ in
             jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(nnx.state(abstract, nnx.Not(nnx.Param))))]
    if other:
        raise ValueError(f"model: holds non-Param state {other[0]} ({type(abstract).__name__}), expected a "
                         "module whose state is nnx.Param only (no batch statistics, no stored RNG keys)")


def check_per_example(stage: Stage, apply: Callable, params, batch_size: int) -> None:
    """Before training: the stage's losses (and metric) on a batch are one value per example, shape (B,).

    A loss that averages over the batch returns a scalar; training on it would
    weight every example alike and leave the teacher nothing to rank, so it is
    refused here (traced with `jax.eval_shape`: nothing runs).
    """
    batch = {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:], v.dtype) for k, v in source_spec(stage.train).items()}
    loss_B, acc_B = jax.eval_shape(stage_per_example(stage, apply), params, batch)
    what = "per_example_loss" if stage.loss is not None else f"the {stage.kind} loss of stage {stage.name!r}"
    if loss_B.shape != (batch_size,):
        raise ValueError(f"{what}: returned shape {loss_B.shape}, expected ({batch_size},): one loss per example "
                         f"of a batch of {batch_size} (do not average over the batch)")
    if acc_B.shape != (batch_size,):
        raise ValueError(f"eval_fn: returned shape {acc_B.shape}, expected ({batch_size},): one value per example "
                         f"of a batch of {batch_size}")


def source_arrays(name: str, source, like: dict | None = None) -> dict:
    """A user's source of examples as a dict of numpy arrays, axis 0 = examples.

    `source`: a dict of equal-length arrays, or anything with ``__len__`` and
    ``__getitem__(i) -> dict of arrays`` (every example the same keys, shapes and
    dtypes). It must hold the model's input ``"x"``. With `like` (the training
    arrays) the keys and per-example shapes must match it. Bad input: a one-line
    ValueError naming what was expected.
    """
    if isinstance(source, dict):
        arrays = {k: np.asarray(v) for k, v in source.items()}
        lengths = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
        if any(n is None for n in lengths.values()) or len(set(lengths.values())) > 1:
            raise ValueError(f"{name}: got arrays of lengths {lengths}, expected arrays of one length along axis 0")
    elif hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        n, first = first_record(source, name)
        columns = {k: [v] for k, v in first.items()}
        for i in range(1, n):
            try:
                item = source[i]
            except IndexError:
                raise ValueError(f"{name}: len() is {n}, but item {i} raises IndexError; expected {n} "
                                 "examples") from None
            if not isinstance(item, dict) or set(item) != set(first):
                got = sorted(item) if isinstance(item, dict) else type(item).__name__
                raise ValueError(f"{name}[{i}]: got keys {got}, expected {sorted(first)} as item 0")
            for k, v in item.items():
                v = np.asarray(v)
                if v.shape != first[k].shape or v.dtype != first[k].dtype:
                    raise ValueError(f"{name}[{i}][{k!r}]: got {v.dtype} {v.shape}, expected "
                                     f"{first[k].dtype} {first[k].shape} as item 0")
                columns[k].append(v)
        arrays = {k: np.stack(v) for k, v in columns.items()}
    else:
        raise ValueError(f"{name}: got {type(source).__name__}, expected a dict of equal-length arrays or a "
                         "sequence of dicts of arrays (__len__ and __getitem__)")
    if "x" not in arrays:
        raise ValueError(f"{name}: got keys {sorted(arrays)}, expected an 'x' (the model's input)")
    if like is not None:
        if set(arrays) != set(like):
            raise ValueError(f"{name}: got keys {sorted(arrays)}, expected {sorted(like)} as the training source")
        for k, v in arrays.items():
            if v.shape[1:] != like[k].shape[1:]:
                raise ValueError(f"{name}[{k!r}]: got examples of shape {v.shape[1:]}, expected "
                                 f"{like[k].shape[1:]} as the training source")
    return arrays


def host_source(name: str, source, like=None):
    """A user's source for host placement: a dict of arrays as `source_arrays` checks it (memory maps stay
    maps), anything else as a `RecordSource` (never materialised; record 0 gives keys and shapes)."""
    if isinstance(source, dict):
        return source_arrays(name, source, like=None if like is None else source_spec(like))
    records = RecordSource(source, name)
    spec, like_spec = records.spec, None if like is None else source_spec(like)
    if "x" not in spec:
        raise ValueError(f"{name}: got keys {sorted(spec)}, expected an 'x' (the model's input)")
    if like_spec is not None and ({k: v.shape[1:] for k, v in spec.items()} !=
                                  {k: v.shape[1:] for k, v in like_spec.items()}):
        raise ValueError(f"{name}: got examples {({k: v.shape[1:] for k, v in spec.items()})}, expected "
                         f"{({k: v.shape[1:] for k, v in like_spec.items()})} as the training source")
    return records


def user_stage(config: TrainConfig, loss: Callable, train: dict, test: dict, metric: Callable | None = None) -> Stage:
    """The one stage of a user's run (`attent_jax.fit`): its arrays, loss and the config's teacher."""
    run = config.run
    n = num_examples(train)
    if run.batch_size > n:
        raise ValueError(f"batch_size: got {run.batch_size}, expected at most the {n} examples of train_source")
    labels = None
    if config.selection.selection == "class_weight":
        if "y" not in source_spec(train):
            raise ValueError("train_source: has no 'y', expected (N,) int class ids in 'y' for the class_weight "
                             "selector")
        # The teacher weights classes from every label: a record source is read for its labels once.
        labels = train["y"] if isinstance(train, dict) else np.stack([np.asarray(r["y"]) for r in
                                                                       map(train.source.__getitem__, range(n))])
    teacher = Teacher(config.teacher_config(), n, labels=labels)
    stage = Stage("train", "custom", train, test, run.epochs, teacher, loss=loss, metric=metric)
    warn_lr_schedule(stage, config.optim.lr_schedule_by)
    return stage
