"""The optimizer: AdamW (Appendix C) and its learning rate, linear warm-up then cosine decay."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

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
