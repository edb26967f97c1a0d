"""The state's layout per stage: what each stage trains, and its optimizer state over that part only.

Without LoRA every stage trains every param and all stages share one layout.
With LoRA (`models.lora`) the pre-training stage trains the base weights and the
fine-tuning stage only the adapters, so the two stages' optimizer states have
different trees: this module builds both layouts (abstract state + shardings),
re-initializes the optimizer over the next stage's part at a stage boundary,
and restores a checkpoint saved in any stage's layout.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx, traverse_util
from jax.sharding import Mesh

from attent_jax.models.lora import lora_paths

from attent_jax.training.checkpoint import (Checkpointer, CheckpointMismatchError, CheckpointRestoreError,
                                            abstract_like)
from attent_jax.training.mesh import state_shardings
from attent_jax.training.optim import stage_partitions


class StageLayouts:
    """Each stage's `Partition`, the fresh-state function, and each stage's abstract state and shardings.

    `init(key, si)` builds stage `si`'s fresh state (its "opt" entry over the
    part that stage trains). Consecutive stages with the same `Partition` share
    one abstract state and shardings object, so `layouts()` names the distinct
    layouts by identity.
    """

    def __init__(self, build: Callable[[nnx.Rngs], nnx.Module], abstract: nnx.Module, stages: list, tx,
                 seed: int, mesh: Mesh, *, fsdp: bool, fsdp_min_size: int):
        param_paths = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
        self.partitions = partitions = stage_partitions(param_paths, lora_paths(abstract), len(stages))

        def init(key, si=0):
            k_model, k_teacher, k_rng = jax.random.split(key, 3)
            params = nnx.to_pure_dict(nnx.state(build(nnx.Rngs(params=k_model)), nnx.Param))
            return {
                "params": params,
                "opt": tx.init(partitions[si].split(params)[0]),
                "teacher": [s.teacher.init(jax.random.fold_in(k_teacher, i)) for i, s in enumerate(stages)],
                "order": [jnp.zeros((s.num_train,), jnp.int32) for s in stages],
                "rng": k_rng,
            }

        self.init = init
        self.abstract_states, self.shardings = [], []
        for si, part in enumerate(partitions):
            if si and part == partitions[si - 1]:
                self.abstract_states.append(self.abstract_states[-1])
                self.shardings.append(self.shardings[-1])
                continue
            self.abstract_states.append(jax.eval_shape(lambda k, si=si: init(k, si), jax.random.PRNGKey(seed)))
            self.shardings.append(state_shardings(self.abstract_states[-1], mesh, fsdp=fsdp,
                                                  fsdp_min_size=fsdp_min_size))

    def layouts(self) -> list[int]:
        """The first stage of each distinct layout, latest first (the order `restore` tries them in)."""
        return [si for si in range(len(self.partitions))
                if si == 0 or self.abstract_states[si] is not self.abstract_states[si - 1]][::-1]

    def restore(self, checkpointer: Checkpointer):
        """(state, meta) of the newest intact checkpoint in whichever stage's layout it was saved, or None.

        The latest stage's layout is tried first, then the earlier ones; a wrong
        layout fails before anything is read or moved (Orbax compares the tree
        structures), and the last layout's failure is the one raised.
        """
        order = self.layouts()
        for k, si in enumerate(order):
            try:
                return checkpointer.restore_latest(abstract_like(self.abstract_states[si], self.shardings[si]))
            except (CheckpointMismatchError, CheckpointRestoreError):
                if k + 1 == len(order):
                    raise

    def reinit_optimizer(self, tx, si: int, params):
        """A fresh optimizer state for stage `si` over what it trains, placed in that stage's shardings."""
        part = self.partitions[si]
        reinit = jax.jit(lambda p: tx.init(part.split(p)[0]), in_shardings=(self.shardings[si]["params"],),
                         out_shardings=self.shardings[si]["opt"])
        return reinit(params)

    def advance(self, state, clock: dict, tx, si: int, epoch: int, stage_epochs: int):
        """Move `clock` to the start of the next epoch (or stage), so that a resumed run begins by planning it.

        At a stage boundary the next stage starts a fresh optimizer (new data,
        new schedule) over what that stage trains.
        """
        if epoch + 1 == stage_epochs and si + 1 < len(self.partitions):
            state = dict(state, opt=self.reinit_optimizer(tx, si + 1, state["params"]))
            clock.update(stage=si + 1, epoch=0, stage_step=0)
        else:
            clock.update(epoch=epoch + 1)
        clock.update(pos=0, planned=0, steps_in_epoch=0)
        return state
