"""`fit`: AtteNT training of your own model, loss and data, in the loop `attent train` runs.

One stage of kind "custom" (`stages.user_stage`) and your model go to the same
`Trainer`: the same sharded jitted steps, teacher, checkpoints, resumption,
metrics log and progress bar as `attent train`. Only the task and model
sections of the config are replaced by your arguments.

Example (README, "Your own model, loss and data"):
    >>> result = fit(model, lambda out, b: ((out - b["y"]) ** 2).mean(-1), {"x": x, "y": y},
    ...              TrainConfig.from_flat(epochs=3, batch_size=32), workdir="runs/mine")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attent_jax.training.checkpoint import Checkpointer
from attent_jax.training.config import TrainConfig
from attent_jax.training.loop import Trainer
from attent_jax.training.stages import host_source, source_arrays, user_stage
from attent_jax.training.workdir import (CHECKPOINT_DIR, CONFIG_FILE, check_fingerprint, run_fingerprint,
                                        write_fingerprint)


def _config(config) -> TrainConfig:
    if config is None:
        return TrainConfig()
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config: got {type(config).__name__}, expected a TrainConfig, a dict of its fields or None")
    return config


def fit(model, per_example_loss: Callable, train_source, config: TrainConfig | dict | None = None,
        eval_source=None, eval_fn: Callable | None = None, *, workdir: str,
        on_step: Callable[[int], Any] | None = None) -> dict:
    """Train `model` on `train_source` with AtteNT selection; returns the final metrics (as `train_and_evaluate`).

    Args:
      model: an `nnx.Module` whose state is `nnx.Param` only, trained from its
        current parameters (updated in place at the end), or a callable
        ``rngs -> nnx.Module`` built with the run's seed. It is called on a
        batch's ``"x"``: ``out = model(batch["x"])``.
      per_example_loss: ``per_example_loss(out, batch) -> (B,)``, one loss per
        example (never the batch mean: the teacher ranks these); jittable.
        `batch` is the dict of the source's arrays for the B examples.
      train_source: a dict of equal-length arrays (axis 0 = examples; memory
        maps from `open_npy_dir` work), or a random-access source: anything
        with ``__len__`` and ``__getitem__(i) -> dict of arrays`` (Grain's
        protocol: a ``grain.MapDataset`` works), with an ``"x"`` (and ``"y"``
        int class ids for ``selection="class_weight"``). With
        ``data_placement="device"`` it is stacked and copied to every device;
        with ``"host"`` batches are read from it as training needs them.
      config: a `TrainConfig` (or a dict of its fields): selection, optim and
        run sections (epochs, batch size, seed, checkpoints, progress bar); its
        data and model sections are unused.
      eval_source: held-out examples, same keys and per-example shapes as
        `train_source`; None = evaluate on `train_source`.
      eval_fn: ``eval_fn(out, batch) -> (B,)`` per-example metric (e.g. 0/1
        correctness), logged as ``train_accuracy`` / ``eval_accuracy``; None = none.
      workdir: the run folder; a folder holding this run resumes from its newest
        intact checkpoint. Its fingerprint.json records what config.json cannot
        see: the sources' lengths, example shapes and a hash of a sample of their
        rows, the model's parameter shapes and the loss's name.
      on_step: called after each optimizer step with the step number.

    Raises ValueError (one line, before anything is written) for bad input: a
    loss or eval_fn not of shape (B,), sources of unequal lengths, examples of
    different shapes, a batch size above the number of examples, a model with
    non-Param state, a workdir holding a run of other data, model or loss.
    """
    config = _config(config)
    if not callable(per_example_loss):
        raise ValueError(f"per_example_loss: got {type(per_example_loss).__name__}, expected a callable "
                         "(model_output, batch) -> (B,)")
    if eval_fn is not None and not callable(eval_fn):
        raise ValueError(f"eval_fn: got {type(eval_fn).__name__}, expected a callable (model_output, batch) -> (B,)")
    if isinstance(model, nnx.Module):
        graphdef, params = nnx.split(model, nnx.Param, ...)[:2]
        build = lambda rngs: nnx.merge(graphdef, params, nnx.state(model, nnx.Not(nnx.Param)))  # noqa: E731
    elif callable(model):
        build = model
    else:
        raise ValueError(f"model: got {type(model).__name__}, expected an nnx.Module or a callable rngs -> nnx.Module")
    resolved = config.resolve()
    # Host placement reads batches from the source itself: a record source is never stacked into arrays.
    read = host_source if resolved.run.data_placement == "host" else source_arrays
    train = read("train_source", train_source)
    test = train if eval_source is None else read("eval_source", eval_source, like=train)
    stage = user_stage(resolved, per_example_loss, train, test, metric=eval_fn)
    trainer = Trainer(config, workdir, stages=[stage], build=build)
    # The config check passed (in Trainer), but a run folder of other data would resume its checkpoint and hand
    # back that run's parameters as this one's: refuse it before the folder is touched.
    fingerprint = run_fingerprint(train, None if eval_source is None else test, trainer.abstract_state["params"],
                                  per_example_loss)
    check_fingerprint(trainer.workdir, fingerprint)
    if jax.process_index() == 0:
        write_fingerprint(trainer.workdir, fingerprint)
    result = trainer.run(on_step=on_step)
    if isinstance(model, nnx.Module):
        state = nnx.state(model, nnx.Param)
        nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, jax.device_get(trainer.final_state["params"])))
        nnx.update(model, state)
    return result


def restore_params(workdir: str):
    """The params of the newest intact checkpoint in a run folder (on the current devices)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"workdir: got {workdir!r}, expected a run folder holding {CONFIG_FILE}")
    with open(path) as f:
        trainer = Trainer(TrainConfig.from_dict(json.load(f)), workdir)
    ckpt = Checkpointer(os.path.join(trainer.workdir, CHECKPOINT_DIR), keep=trainer.config.run.keep_checkpoints)
    try:
        restored = trainer.restore(ckpt)
    finally:
        ckpt.close()
    if restored is None:
        raise ValueError(f"workdir: {workdir!r} holds no intact checkpoint")
    return restored[0]["params"]
