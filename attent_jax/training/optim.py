"""The optimizer: AdamW (Appendix C), its learning rate (linear warm-up then cosine decay), and which params it trains.

`Partition` splits a stage's params into the part it trains and the part it
keeps frozen (LoRA fine-tuning: the base weights), `stage_partitions` gives
each stage its own.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from attent_jax.training.config import OptimConfig


def learning_rate(config: OptimConfig, clock: dict, planned_steps: int, epochs: int):
    """Linear warm-up then cosine decay, at the middle of the current step (see `training.config`'s docstring).

    "steps": progress = (stage_step + ½) / planned steps of the stage;
    "epochs": progress = (epoch + (pos + ½) / steps_in_epoch) / epochs.
    """
    if config.lr_schedule_by == "steps":
        p = (clock["stage_step"] + 0.5) / max(planned_steps, 1)
    else:
        p = (clock["epoch"] + (clock["pos"] + 0.5) / jnp.maximum(clock["steps_in_epoch"], 1)) / epochs
    p = jnp.clip(p, 0.0, 1.0)
    warm = config.warmup_ratio
    lo = config.min_lr_ratio
    cosine = lo + (1.0 - lo) * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip((p - warm) / (1.0 - warm), 0.0, 1.0)))
    ramp = p / warm if warm > 0 else 1.0
    return config.learning_rate * jnp.where(p < warm, ramp, cosine)


def make_optimizer(config: OptimConfig) -> optax.GradientTransformation:
    """AdamW without its learning rate (the step scales by −lr(progress) itself).

    Weight decay applies to arrays with ≥ 2 axes (weights, embeddings), not to
    biases and norm scales.
    """
    parts = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip else []
    parts += [optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps),
              optax.add_decayed_weights(config.weight_decay,
                                        mask=lambda params: jax.tree.map(lambda x: x.ndim >= 2, params))]
    return optax.chain(*parts)


# =========================================================================== trainable and frozen params

@dataclasses.dataclass(frozen=True)
class Partition:
    """Which params a stage trains: all of them, or all but `frozen` (state paths, as in `nnx.to_pure_dict`).

    The train step differentiates and updates only the trainable part and the
    optimizer state covers only it (LoRA: adapters only); the frozen part is
    passed through untouched, so it stays bitwise as it was. With nothing
    frozen `split` is (params, {}) and `combine` returns the trainable part
    itself: the step is the same computation as without a partition.
    """
    frozen: frozenset = frozenset()     # paths of the leaves this stage does not train

    def split(self, params: dict) -> tuple[dict, dict]:
        """(trainable, frozen) nested dicts; their union is `params`."""
        if not self.frozen:
            return params, {}
        flat = traverse_util.flatten_dict(params)
        return (traverse_util.unflatten_dict({k: v for k, v in flat.items() if k not in self.frozen}),
                traverse_util.unflatten_dict({k: v for k, v in flat.items() if k in self.frozen}))

    def combine(self, trainable: dict, frozen: dict) -> dict:
        """The full params from the two parts of `split`."""
        if not self.frozen:
            return trainable
        return traverse_util.unflatten_dict({**traverse_util.flatten_dict(trainable),
                                             **traverse_util.flatten_dict(frozen)})


def stage_partitions(param_paths, adapter_paths, num_stages: int) -> list[Partition]:
    """Each stage's `Partition`: with adapters (LoRA), the last stage trains them only, earlier ones the base only.

    The pre-training stages (arith's first) train every base weight and leave
    the adapters at their initial value (B = 0, so the model is the base); the
    fine-tuning stage freezes the base and trains the adapters. Without adapters
    every stage trains everything.
    """
    adapters = frozenset(adapter_paths)
    if not adapters:
        return [Partition()] * num_stages
    base = frozenset(param_paths) - adapters
    return [Partition(frozen=adapters)] * (num_stages - 1) + [Partition(frozen=base)]
