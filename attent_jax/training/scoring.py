"""The teacher's full scoring pass: every example it names gets its loss, no gradients, written into its table.

A host loop over fixed-size chunks of the teacher's ``scoring_order`` (its
count fetched once per pass, an explicit ``jax.device_get``) calls one jitted
per-chunk scorer that updates the teacher state (donated); the chunk shape is
fixed, so a changing count never recompiles. Device placement: the scorer
gathers chunk c from the device-resident arrays. Host placement: the ids are
fetched too, and a prefetch thread reads each chunk's rows from the host
source. Both run the same per-chunk computation on the same ids; their
scores agree to float32 rounding, not bitwise: XLA (CPU) compiles a loss whose
input is a jit argument (host) differently from one whose input is a gather
(device), and some losses differ in their last bit (tests/test_host_data.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from attent_jax.training.host_data import BatchAssembler, Prefetcher, chunk_ids
from attent_jax.training.score_precision import scoring_apply
from attent_jax.training.stages import example_scores, stage_per_example


def make_score(trainer, si: int):
    """``score(state, train) -> state`` (the scoring pass of stage `si`) for the trainer's data placement."""
    stage, config = trainer.stages[si], trainer.config
    # The pass only ranks examples: it may run at a lower precision than training (score_precision.py).
    per_example = stage_per_example(stage, scoring_apply(trainer._apply, config.selection.score_dtype))
    n, chunk = stage.num_train, trainer.eval_chunk
    teacher_sh, batch_sh, rep = trainer.shardings["teacher"][si], trainer.batch_sharding, trainer.replicated
    params_sh = trainer.shardings["params"]

    def score_chunk(params, teacher_state, batch):
        batch = dict(batch)
        idx, valid = batch.pop("idx"), batch.pop("valid")
        scores = example_scores(config.selection.score, per_example(params, batch)[0], batch)
        return stage.teacher.update(teacher_state, idx, scores, valid_B=valid)

    def gather_chunk(params, teacher_state, data, order_N, count, c):
        # Chunk c of the teacher's order, padded by wrapping around; positions past `count` are masked.
        pos = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
        idx = order_N[pos % n]
        return score_chunk(params, teacher_state, dict(trainer._gather(data, idx), idx=idx, valid=pos < count))

    order_fn = jax.jit(stage.teacher.scoring_order, out_shardings=(rep, rep))
    if trainer.host_data:
        chunk_fn = jax.jit(score_chunk, in_shardings=(params_sh, teacher_sh, batch_sh), out_shardings=teacher_sh,
                           donate_argnums=1)
    else:
        chunk_fn = jax.jit(gather_chunk, in_shardings=(params_sh, teacher_sh, trainer._data_shardings(stage.train),
                                                       rep, rep, rep), out_shardings=teacher_sh, donate_argnums=1)

    def score(state, data):
        # The teacher names the examples to score (all, or only the unselected ones) and how many: one
        # explicit fetch per pass (host placement: the ids too, which drive the reads).
        order_N, count = order_fn(state["teacher"][si])
        num_chunks = -(-int(jax.device_get(count)) // chunk)
        teacher_state = state["teacher"][si]
        if trainer.host_data:
            chunks = chunk_ids(np.asarray(jax.device_get(order_N)), int(jax.device_get(count)), chunk)
            assemble = BatchAssembler(data, batch_sh, chunk)
            with Prefetcher(lambda c: assemble(chunks[c][0], idx=chunks[c][0], valid=chunks[c][1]), num_chunks,
                            config.run.prefetch) as batches:
                for batch in batches:
                    teacher_state = chunk_fn(state["params"], teacher_state, batch)
        else:
            for c in range(num_chunks):
                teacher_state = chunk_fn(state["params"], teacher_state, data, order_N, count,
                                         trainer._put(np.int32(c)))
        teachers = list(state["teacher"])
        teachers[si] = teacher_state
        return dict(state, teacher=teachers)

    return score
