"""Multi-layer attention learners for the paper's experiments (§5, Appendix C), in Flax NNX.

The paper trains AtteNT on two families beyond the single-layer learner of eq. 2
(`attent_jax.model`): a ViT (image classification from scratch) and an LLM
(fine-tuning with the loss on responses only). These are their small stand-ins:

- `EncoderClassifier`: a ViT over 1-D signals (B, L[, C]) or images (B, H, W[, C]):
  patch embedding, learned positions, CLS token or mean pooling, `depth` pre-LN
  blocks, linear head → logits (B, num_classes).
- `CausalDecoder`: a character LM: token embedding, learned positions, `depth`
  pre-LN blocks with a causal mask, tied or untied head → logits (B, T, vocab).

Both are deterministic (no dropout): the greedy teacher ranks examples by their
per-example losses, and a run sharded over 8 devices must rank them exactly as
a 1-device run does.

Losses and accuracies are per example (shape (B,), never a batch mean) because
AtteNT's selection (Algorithm 1, eq. 20-21) needs each example's loss.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from attent_jax.transformer import EncoderConfig, make_model, classification_losses
    >>> model = make_model("encoder", EncoderConfig(), nnx.Rngs(0))
    >>> logits_BxC = model(jnp.zeros((2, 40)))
    >>> classification_losses(logits_BxC, jnp.array([3, 7])).shape
    (2,)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from attent_jax.validate import check_array, check_same_leading

POOLS = ("cls", "mean")
_DTYPES = ("float32", "float64", "bfloat16")


def _check_positive(cls_name: str, **fields: int) -> None:
    for name, value in fields.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{cls_name}.{name}: got {value!r}, expected a positive int")


def _check_heads(cls_name: str, width: int, num_heads: int) -> None:
    if width % num_heads:
        raise ValueError(f"{cls_name}.num_heads: got {num_heads}, expected a divisor of width={width}")


def _check_dtype(cls_name: str, dtype: str) -> None:
    if dtype not in _DTYPES:
        raise ValueError(f"{cls_name}.param_dtype: got {dtype!r}, expected one of {_DTYPES}")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    input_shape: tuple[int, ...] = (40,)  # one example: (L,) / (L, C) if spatial_dims=1, (H, W) / (H, W, C) if 2
    spatial_dims: int = 1                 # 1: signals split along L; 2: images split into square patches
    patch_size: int = 4                   # P: patch length (1-D) or side (2-D); must divide every spatial size
    width: int = 64                       # D: token width throughout the blocks
    depth: int = 2                        # number of pre-LN Transformer blocks
    num_heads: int = 4                    # attention heads; must divide width
    mlp_ratio: int = 4                    # MLP hidden width = mlp_ratio * width
    num_classes: int = 10                 # C: logits per example
    pool: str = "cls"                     # "cls": read a learned CLS token; "mean": average the patch tokens
    param_dtype: str = "float32"          # parameter dtype (float64 needs jax x64 enabled)

    def __post_init__(self):
        name = type(self).__name__
        _check_positive(name, patch_size=self.patch_size, width=self.width, depth=self.depth,
                        num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, num_classes=self.num_classes)
        _check_heads(name, self.width, self.num_heads)
        _check_dtype(name, self.param_dtype)
        if self.pool not in POOLS:
            raise ValueError(f"{name}.pool: got {self.pool!r}, expected one of {POOLS}")
        if self.spatial_dims not in (1, 2):
            raise ValueError(f"{name}.spatial_dims: got {self.spatial_dims!r}, expected 1 or 2")
        shape = tuple(self.input_shape)
        if len(shape) not in (self.spatial_dims, self.spatial_dims + 1) or not all(
                isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"{name}.input_shape: got {self.input_shape!r}, expected {self.spatial_dims} "
                             f"spatial size(s) and an optional channel count, all positive ints")
        if any(s % self.patch_size for s in shape[:self.spatial_dims]):
            raise ValueError(f"{name}.patch_size: got {self.patch_size}, expected a divisor of the spatial "
                             f"sizes {shape[:self.spatial_dims]}")
        object.__setattr__(self, "input_shape", shape)  # a list from JSON/CLI becomes a hashable tuple

    @property
    def channels(self) -> int:
        return self.input_shape[self.spatial_dims] if len(self.input_shape) > self.spatial_dims else 1

    @property
    def num_patches(self) -> int:
        return math.prod(s // self.patch_size for s in self.input_shape[:self.spatial_dims])


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
        _check_positive(name, vocab_size=self.vocab_size, context=self.context, width=self.width,
                        depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
        _check_heads(name, self.width, self.num_heads)
        _check_dtype(name, self.param_dtype)


# --------------------------------------------------------------------------- blocks

def _embedding_param(rngs: nnx.Rngs, shape: tuple[int, ...], dtype) -> nnx.Param:
    # 0.02 as in ViT/GPT-2: small enough that positions do not swamp the patch/token signal at init.
    return nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), shape, dtype))


class SelfAttention(nnx.Module):
    """Multi-head scaled dot-product self-attention, optionally causal (paper eq. 2, M = causal mask).

    Written out rather than `nnx.MultiHeadAttention` so the masking and the
    1/√d_h scale are visible, and no dropout RNG is ever threaded through.
    """

    def __init__(self, width: int, num_heads: int, *, causal: bool, param_dtype, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.causal = causal
        self.qkv = nnx.Linear(width, 3 * width, param_dtype=param_dtype, rngs=rngs)
        self.out = nnx.Linear(width, width, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        B, T, D = x_BxTxD.shape
        H = self.num_heads
        qkv_BxTx3xHxDh = self.qkv(x_BxTxD).reshape(B, T, 3, H, D // H)
        q_BxTxHxDh, k_BxTxHxDh, v_BxTxHxDh = (qkv_BxTx3xHxDh[:, :, i] for i in range(3))
        logits_BxHxTxT = jnp.einsum("bqhd,bkhd->bhqk", q_BxTxHxDh, k_BxTxHxDh) / math.sqrt(D // H)
        if self.causal:
            # finfo.min rather than -inf: the row softmax stays finite even if a row were fully masked.
            allowed_TxT = jnp.tril(jnp.ones((T, T), dtype=bool))
            logits_BxHxTxT = jnp.where(allowed_TxT, logits_BxHxTxT, jnp.finfo(logits_BxHxTxT.dtype).min)
        att_BxHxTxT = jax.nn.softmax(logits_BxHxTxT, axis=-1)
        y_BxTxHxDh = jnp.einsum("bhqk,bkhd->bqhd", att_BxHxTxT, v_BxTxHxDh)
        return self.out(y_BxTxHxDh.reshape(B, T, D))


class Block(nnx.Module):
    """Pre-LN Transformer block: x + Attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: int, *, causal: bool, param_dtype,
                 rngs: nnx.Rngs):
        self.ln_att = nnx.LayerNorm(width, param_dtype=param_dtype, rngs=rngs)
        self.att = SelfAttention(width, num_heads, causal=causal, param_dtype=param_dtype, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(width, param_dtype=param_dtype, rngs=rngs)
        self.mlp_in = nnx.Linear(width, mlp_ratio * width, param_dtype=param_dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_ratio * width, width, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        x_BxTxD = x_BxTxD + self.att(self.ln_att(x_BxTxD))
        return x_BxTxD + self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln_mlp(x_BxTxD))))


# --------------------------------------------------------------------------- models

class EncoderClassifier(nnx.Module):
    """ViT-style classifier (the paper's ViT experiments, §5 / Appendix C, in miniature).

    x of shape (B, *config.input_shape) → logits (B, num_classes). 1-D inputs are
    cut into non-overlapping length-P patches, 2-D inputs into P×P patches; each
    patch (with its channels) is embedded linearly, which equals a stride-P conv.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> cfg = EncoderConfig(input_shape=(8, 8, 3), spatial_dims=2, patch_size=4, num_classes=5)
        >>> EncoderClassifier(cfg, rngs=nnx.Rngs(0))(jnp.zeros((2, 8, 8, 3))).shape
        (2, 5)
    """

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        dtype = jnp.dtype(c.param_dtype)
        patch_features = c.patch_size ** c.spatial_dims * c.channels
        self.patch_embed = nnx.Linear(patch_features, c.width, param_dtype=dtype, rngs=rngs)
        num_tokens = c.num_patches + (1 if c.pool == "cls" else 0)
        self.pos_embed = _embedding_param(rngs, (num_tokens, c.width), dtype)
        self.cls_token = _embedding_param(rngs, (1, c.width), dtype) if c.pool == "cls" else None
        self.blocks = nnx.List([Block(c.width, c.num_heads, c.mlp_ratio, causal=False, param_dtype=dtype,
                                      rngs=rngs) for _ in range(c.depth)])
        self.ln_final = nnx.LayerNorm(c.width, param_dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(c.width, c.num_classes, param_dtype=dtype, rngs=rngs)

    def _patchify(self, x: jax.Array) -> jax.Array:
        c = self.config
        B, P = x.shape[0], c.patch_size
        if len(c.input_shape) == c.spatial_dims:
            x = x[..., None]  # implicit single channel
        if c.spatial_dims == 1:
            return x.reshape(B, c.input_shape[0] // P, P * c.channels)
        H, W = c.input_shape[:2]
        x_BxHpxPxWpxPxC = x.reshape(B, H // P, P, W // P, P, c.channels)
        return x_BxHpxPxWpxPxC.transpose(0, 1, 3, 2, 4, 5).reshape(B, (H // P) * (W // P), P * P * c.channels)

    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        expected = (None,) + c.input_shape
        if getattr(x, "ndim", None) != len(expected) or tuple(x.shape[1:]) != c.input_shape:
            raise ValueError(f"x: got shape {tuple(getattr(x, 'shape', ()))}, "
                             f"expected (B, {', '.join(map(str, c.input_shape))})")
        tokens_BxNxD = self.patch_embed(self._patchify(x))
        if self.cls_token is not None:
            cls_Bx1xD = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, c.width)).astype(tokens_BxNxD.dtype)
            tokens_BxNxD = jnp.concatenate([cls_Bx1xD, tokens_BxNxD], axis=1)
        h_BxNxD = tokens_BxNxD + self.pos_embed[...]
        for block in self.blocks:
            h_BxNxD = block(h_BxNxD)
        h_BxNxD = self.ln_final(h_BxNxD)
        pooled_BxD = h_BxNxD[:, 0] if c.pool == "cls" else h_BxNxD.mean(axis=1)
        return self.head(pooled_BxD)


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
        self.pos_embed = _embedding_param(rngs, (c.context, c.width), dtype)
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


# --------------------------------------------------------------------------- registry

_BUILDERS: dict[str, tuple[type, Callable[..., nnx.Module]]] = {
    "encoder": (EncoderConfig, EncoderClassifier),
    "decoder": (DecoderConfig, CausalDecoder),
}


def register_model(name: str, config_cls: type, builder: Callable[..., nnx.Module]) -> None:
    """Make `make_model(name, ...)` build `builder(config, rngs=rngs)`.

    The hook for the single-layer learner: `attent_jax.model` registers
    "attention" (its `LearnerConfig`, `AttentionLearner`) so that callers pick any
    learner by name. Re-registering a name replaces it.
    """
    _BUILDERS[name] = (config_cls, builder)


def model_names() -> tuple[str, ...]:
    """Names `make_model` accepts right now."""
    _ensure_attention_registered()
    return tuple(sorted(_BUILDERS))


def _ensure_attention_registered() -> None:
    # "attention" lives in attent_jax.model; importing it lets that module register itself
    # (if it does), so make_model("attention", ...) works without the caller importing it first.
    if "attention" not in _BUILDERS:
        try:
            import attent_jax.model  # noqa: F401
        except ImportError:
            pass


def make_model(name: str, config: Any | None, rngs: nnx.Rngs) -> nnx.Module:
    """Build the model called `name` ("encoder", "decoder", or a registered one) from its config.

    `config=None` builds the default config of that model.

    Example:
        >>> from flax import nnx
        >>> make_model("decoder", DecoderConfig(vocab_size=65), nnx.Rngs(0)).config.width
        128
    """
    if name not in _BUILDERS:
        _ensure_attention_registered()
    if name not in _BUILDERS:
        raise ValueError(f"name: got {name!r}, expected one of {sorted(_BUILDERS)}")
    config_cls, builder = _BUILDERS[name]
    config = config_cls() if config is None else config
    if not isinstance(config, config_cls):
        raise ValueError(f"config: got {type(config).__name__}, expected {config_cls.__name__} for model {name!r}")
    return builder(config, rngs=rngs)


# --------------------------------------------------------------------------- per-example losses

def _check_int(name: str, x) -> None:
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"{name}: got dtype {x.dtype}, expected integer ids")


def classification_losses(logits_BxC: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy ℓ_b = −log softmax(logits_b)[label_b], shape (B,).

    The per-sample loss AtteNT ranks examples by (eq. 20-21: for a convex loss the
    largest loss gradient ↔ largest discrepancy). Never averaged here.

    Example:
        >>> import jax.numpy as jnp
        >>> classification_losses(jnp.zeros((2, 4)), jnp.array([0, 3]))  # log 4 each
        Array([1.3862944, 1.3862944], dtype=float32)
    """
    check_array("logits_BxC", logits_BxC, rank=2)
    check_array("labels_B", labels_B, rank=1, finite=False)
    check_same_leading("logits_BxC", logits_BxC, "labels_B", labels_B)
    _check_int("labels_B", labels_B)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)


def classification_correct(logits_BxC: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Per-example correctness (argmax == label), bool (B,)."""
    check_array("logits_BxC", logits_BxC, rank=2)
    check_array("labels_B", labels_B, rank=1, finite=False)
    check_same_leading("logits_BxC", logits_BxC, "labels_B", labels_B)
    return jnp.argmax(logits_BxC, axis=-1) == labels_B


def _lm_checks(logits_BxTxV, targets_BxT, mask_BxT):
    check_array("logits_BxTxV", logits_BxTxV, rank=3)
    check_array("targets_BxT", targets_BxT, rank=2, finite=False)
    check_same_leading("logits_BxTxV", logits_BxTxV, "targets_BxT", targets_BxT, axes=2)
    _check_int("targets_BxT", targets_BxT)
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
    _check_int("prompts_BxT", prompts_BxT)
    _check_int("prompt_lens_B", prompt_lens_B)
    context = getattr(getattr(model, "config", None), "context", None)
    if context is not None and prompts_BxT.shape[1] > context:
        raise ValueError(f"prompts_BxT: got length {prompts_BxT.shape[1]}, expected at most context={context}")
    return _greedy_fill(model, jnp.asarray(prompts_BxT), jnp.asarray(prompt_lens_B))
