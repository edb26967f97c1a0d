"""Character-level causal decoder (the paper's LLM experiments, §5 / Appendix C, in miniature).

`CausalDecoder`: token embedding, learned positions, `depth` pre-LN blocks with
a causal mask, tied or untied head → logits (B, T, vocab); per-example LM
losses with a response mask; greedy decoding for exact match.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from attent_jax.models import decoder
    >>> model = decoder.CausalDecoder(decoder.DecoderConfig(vocab_size=30, context=16), rngs=nnx.Rngs(0))
    >>> decoder.lm_losses(model(jnp.zeros((2, 10), jnp.int32)), jnp.zeros((2, 10), jnp.int32)).shape
    (2,)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from attent_jax.learner.validate import check_array, check_same_leading
from attent_jax.models.layers import Block, check_dtype, check_heads, check_int, check_positive, embedding_param


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int = 128         # V: token ids are 0..V-1 (take it from the Dataset's vocab_size)
    context: int = 64             # longest input T the learned positions cover
    width: int = 128              # D: token width throughout the blocks
    depth: int = 2                # number of pre-LN Transformer blocks
    num_heads: int = 4            # attention heads; must divide width
    mlp_ratio: int = 4            # MLP hidden width = mlp_ratio * width
    tie_embeddings: bool = True   # output head reuses the token embedding (logits = h Eᵀ)
    param_dtype: str = "float32"  # parameter dtype (float64 needs jax x64 enabled)

    def __post_init__(self):
        name = type(self).__name__
        check_positive(name, vocab_size=self.vocab_size, context=self.context, width=self.width,
                        depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
        check_heads(name, self.width, self.num_heads)
        check_dtype(name, self.param_dtype)


class CausalDecoder(nnx.Module):
    """Character-level causal LM (the paper's LLM experiments, §5 / Appendix C, in miniature).

    tokens (B, T) int, T ≤ context → next-token logits (B, T, vocab_size);
    logits[:, t] depend on tokens[:, :t+1] only.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = CausalDecoder(DecoderConfig(vocab_size=30, context=16), rngs=nnx.Rngs(0))
        >>> model(jnp.zeros((2, 10), jnp.int32)).shape
        (2, 10, 30)
    """

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        dtype = jnp.dtype(c.param_dtype)
        self.embed = nnx.Embed(c.vocab_size, c.width, param_dtype=dtype, rngs=rngs)
        self.pos_embed = embedding_param(rngs, (c.context, c.width), dtype)
        self.blocks = nnx.List([Block(c.width, c.num_heads, c.mlp_ratio, causal=True, param_dtype=dtype,
                                      rngs=rngs) for _ in range(c.depth)])
        self.ln_final = nnx.LayerNorm(c.width, param_dtype=dtype, rngs=rngs)
        self.head = None if c.tie_embeddings else nnx.Linear(c.width, c.vocab_size, use_bias=False,
                                                             param_dtype=dtype, rngs=rngs)

    def __call__(self, tokens_BxT: jax.Array) -> jax.Array:
        c = self.config
        check_array("tokens_BxT", tokens_BxT, rank=2)
        if not jnp.issubdtype(tokens_BxT.dtype, jnp.integer):
            raise ValueError(f"tokens_BxT: got dtype {tokens_BxT.dtype}, expected integer token ids")
        T = tokens_BxT.shape[1]
        if T > c.context:
            raise ValueError(f"tokens_BxT: got length {T}, expected at most context={c.context}")
        h_BxTxD = self.embed(tokens_BxT) + self.pos_embed[:T]
        for block in self.blocks:
            h_BxTxD = block(h_BxTxD)
        h_BxTxD = self.ln_final(h_BxTxD)
        return self.embed.attend(h_BxTxD) if self.head is None else self.head(h_BxTxD)


def _lm_checks(logits_BxTxV, targets_BxT, mask_BxT):
    check_array("logits_BxTxV", logits_BxTxV, rank=3)
    check_array("targets_BxT", targets_BxT, rank=2, finite=False)
    check_same_leading("logits_BxTxV", logits_BxTxV, "targets_BxT", targets_BxT, axes=2)
    check_int("targets_BxT", targets_BxT)
    if mask_BxT is None:
        return jnp.ones(targets_BxT.shape, logits_BxTxV.dtype)
    check_array("mask_BxT", mask_BxT, rank=2, finite=False)
    check_same_leading("targets_BxT", targets_BxT, "mask_BxT", mask_BxT, axes=2)
    return mask_BxT.astype(logits_BxTxV.dtype)


def _masked_mean(values_BxT, mask_BxT):
    # max(count, 1): an example with an empty mask has loss 0 instead of 0/0 = NaN.
    return (values_BxT * mask_BxT).sum(axis=1) / jnp.maximum(mask_BxT.sum(axis=1), 1.0)


def lm_losses(logits_BxTxV: jax.Array, targets_BxT: jax.Array, mask_BxT: jax.Array | None = None) -> jax.Array:
    """Per-example LM loss: mean next-token cross-entropy over each example's masked positions, (B,).

    ℓ_b = Σ_t m_bt CE(logits_bt, y_bt) / max(Σ_t m_bt, 1). The mask puts the loss
    on the response only (the paper's fine-tuning, Appendix C: "loss on
    responses only"); `mask_BxT=None` means every position. An example whose
    mask is all zero gets loss 0.

    Example:
        >>> import jax.numpy as jnp
        >>> lm_losses(jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), jnp.int32), jnp.array([[0, 1, 1], [0, 0, 0]]))
        Array([1.609438, 0.      ], dtype=float32)
    """
    mask_BxT = _lm_checks(logits_BxTxV, targets_BxT, mask_BxT)
    ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)
    return _masked_mean(ce_BxT, mask_BxT)


def lm_accuracy(logits_BxTxV: jax.Array, targets_BxT: jax.Array, mask_BxT: jax.Array | None = None) -> jax.Array:
    """Per-example fraction of masked positions whose argmax is the target, (B,) float."""
    mask_BxT = _lm_checks(logits_BxTxV, targets_BxT, mask_BxT)
    hit_BxT = (jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT).astype(mask_BxT.dtype)
    return _masked_mean(hit_BxT, mask_BxT)


def lm_all_correct(logits_BxTxV: jax.Array, targets_BxT: jax.Array, mask_BxT: jax.Array | None = None) -> jax.Array:
    """Per-example flag: every masked position predicted right under teacher forcing, bool (B,).

    A teacher-forced stand-in for exact match; `greedy_decode` gives the real one.
    """
    mask_BxT = _lm_checks(logits_BxTxV, targets_BxT, mask_BxT)
    miss_BxT = (jnp.argmax(logits_BxTxV, axis=-1) != targets_BxT) & (mask_BxT > 0)
    return ~miss_BxT.any(axis=1)

# --------------------------------------------------------------------------- greedy decoding

@nnx.jit
def _greedy_fill(model: nnx.Module, tokens_BxT: jax.Array, prompt_lens_B: jax.Array) -> jax.Array:
    T = tokens_BxT.shape[1]

    def step(t, tokens_BxT):
        # A full forward per step (no KV cache): contexts here are tens of tokens, and this keeps
        # the decoder a plain module. Causality makes logits[:, t-1] independent of positions ≥ t.
        next_B = jnp.argmax(model(tokens_BxT)[:, t - 1], axis=-1).astype(tokens_BxT.dtype)
        return tokens_BxT.at[:, t].set(jnp.where(t >= prompt_lens_B, next_B, tokens_BxT[:, t]))

    # Start at the shortest prompt: earlier positions are prompt for every row.
    return jax.lax.fori_loop(jnp.maximum(jnp.min(prompt_lens_B), 1), T, step, tokens_BxT)


def greedy_decode(model: nnx.Module, prompts_BxT: jax.Array, prompt_lens_B: jax.Array) -> jax.Array:
    """Greedily continue each prompt to the end of its fixed-length buffer (jitted, fixed-length loop).

    Row b holds its prompt in positions [0, prompt_lens_B[b]); what follows is
    ignored and overwritten: position t ≥ prompt_len gets argmax of the model's
    logits at t−1. Prompts of different lengths share one buffer, so the
    arithmetic task's questions need no padding tricks. Returns the filled
    (B, T) buffer; the answer of row b starts at prompt_lens_B[b]
    (`attent_jax.tasks.answers_match` scores it).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = CausalDecoder(DecoderConfig(vocab_size=20, context=8), rngs=nnx.Rngs(0))
        >>> greedy_decode(model, jnp.zeros((3, 8), jnp.int32), jnp.array([2, 3, 5])).shape
        (3, 8)
    """
    check_array("prompts_BxT", prompts_BxT, rank=2, finite=False)
    check_array("prompt_lens_B", prompt_lens_B, rank=1, finite=False)
    check_same_leading("prompts_BxT", prompts_BxT, "prompt_lens_B", prompt_lens_B)
    check_int("prompts_BxT", prompts_BxT)
    check_int("prompt_lens_B", prompt_lens_B)
    context = getattr(getattr(model, "config", None), "context", None)
    if context is not None and prompts_BxT.shape[1] > context:
        raise ValueError(f"prompts_BxT: got length {prompts_BxT.shape[1]}, expected at most context={context}")
    return _greedy_fill(model, jnp.asarray(prompts_BxT), jnp.asarray(prompt_lens_B))


# `attent_jax.models.make_model("decoder", ...)` builds MODEL(CONFIG, rngs=...).
CONFIG, MODEL = DecoderConfig, CausalDecoder
