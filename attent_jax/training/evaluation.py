"""A stage's held-out evaluation: mean loss and accuracy over its test set, and arith's exact match.

Both placements run the same jitted per-chunk sum over the same chunks from a
host loop: device placement gathers each chunk from the device-resident test
arrays, host placement has a prefetch thread read each process's rows of it
from the host source; the two agree to float32 rounding (`training.scoring` says why not bitwise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attent_jax.models.decoder import greedy_decode
from attent_jax.tasks import generators as tasks_lib
from attent_jax.training.host_data import BatchAssembler, Prefetcher, chunk_ids, num_examples
from attent_jax.training.stages import stage_per_example


def _chunk_sums(per_example, params, batch):
    batch = dict(batch)
    ok = batch.pop("ok")
    loss_B, acc_B = per_example(params, batch)
    ok = ok.astype(loss_B.dtype)
    return jnp.sum(loss_B * ok), jnp.sum(acc_B * ok)


def make_eval(trainer, si: int):
    """``evaluate(params, test) -> {"loss", "accuracy"}`` for stage `si` and the trainer's data placement.

    Chunks of ``eval_chunk`` examples (the last wrapped around to fill it,
    its extra examples masked) go through one jitted per-chunk sum; one
    jitted reduction adds the chunk sums and divides by the test size.
    """
    stage = trainer.stages[si]
    per_example = stage_per_example(stage, trainer._apply)
    n, chunk = num_examples(stage.test), trainer.eval_chunk
    num_chunks = -(-n // chunk)
    params_sh, rep = trainer.shardings["params"], trainer.replicated
    total = jax.jit(lambda ls, accs: {"loss": jnp.sum(jnp.stack(ls)) / n, "accuracy": jnp.sum(jnp.stack(accs)) / n},
                    out_shardings={"loss": rep, "accuracy": rep})

    def gather_sums(params, data, c):
        pos = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
        return _chunk_sums(per_example, params, dict(trainer._gather(data, pos % n), ok=pos < n))

    if trainer.host_data:
        sums = jax.jit(lambda p, b: _chunk_sums(per_example, p, b), in_shardings=(params_sh, trainer.batch_sharding),
                       out_shardings=(rep, rep))
        chunks = chunk_ids(np.arange(n, dtype=np.int32), n, chunk)
    else:
        sums = jax.jit(gather_sums, in_shardings=(params_sh, trainer._data_shardings(stage.test), rep),
                       out_shardings=(rep, rep))

    def evaluate(params, data):
        if trainer.host_data:
            assemble = BatchAssembler(data, trainer.batch_sharding, chunk)
            with Prefetcher(lambda c: assemble(chunks[c][0], ok=chunks[c][1]), num_chunks,
                            trainer.config.run.prefetch) as batches:
                out = [sums(params, batch) for batch in batches]
        else:
            out = [sums(params, data, trainer._put(np.int32(c))) for c in range(num_chunks)]
        return total([o[0] for o in out], [o[1] for o in out])

    return evaluate


def exact_match(trainer, params, decode: dict, prompts, prompt_lens) -> float:
    """Share of arith's test questions whose greedy-decoded answer is exactly right."""
    tokens = greedy_decode(nnx.merge(trainer.graphdef, params), prompts, prompt_lens)
    hits = tasks_lib.answers_match(jax.device_get(tokens), decode["prompt_lens"], decode["answers"], decode["vocab"])
    return float(np.mean(hits))


def evaluate_stage(trainer, state, si: int, evaluate, test, decode_dev) -> dict:
    """The metrics logged after an epoch: eval_loss, and eval_accuracy / exact_match where the stage has them."""
    stage = trainer.stages[si]
    out = {k: float(v) for k, v in jax.device_get(evaluate(state["params"], test)).items()}
    result = {"eval_loss": out["loss"]}
    if stage.has_accuracy:
        result["eval_accuracy"] = out["accuracy"]
    if stage.decode is not None:
        result["exact_match"] = exact_match(trainer, state["params"], stage.decode, *decode_dev)
    return result
