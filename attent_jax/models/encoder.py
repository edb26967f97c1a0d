"""ViT-style encoder classifier (the paper's ViT experiments, §5 / Appendix C, in miniature).

`EncoderClassifier` reads 1-D signals (B, L[, C]) or images (B, H, W[, C]):
patch embedding, learned positions, CLS token or mean pooling, `depth` pre-LN
blocks, linear head → logits (B, num_classes). Losses are per example (shape
(B,), never a batch mean) because AtteNT's selection (Algorithm 1, eq. 20-21)
needs each example's loss.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from attent_jax.models import encoder
    >>> model = encoder.EncoderClassifier(encoder.EncoderConfig(), rngs=nnx.Rngs(0))
    >>> encoder.classification_losses(model(jnp.zeros((2, 40))), jnp.array([3, 7])).shape
    (2,)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from attent_jax.learner.validate import check_array, check_same_leading
from attent_jax.models.layers import Block, check_dtype, check_heads, check_int, check_positive, embedding_param

POOLS = ("cls", "mean")


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
        check_positive(name, patch_size=self.patch_size, width=self.width, depth=self.depth,
                        num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, num_classes=self.num_classes)
        check_heads(name, self.width, self.num_heads)
        check_dtype(name, self.param_dtype)
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
        self.pos_embed = embedding_param(rngs, (num_tokens, c.width), dtype)
        self.cls_token = embedding_param(rngs, (1, c.width), dtype) if c.pool == "cls" else None
        self.blocks = nnx.List([Block(c.width, c.num_heads, c.mlp_ratio, causal=False, param_dtype=dtype,
                                      rngs=rngs) for _ in range(c.depth)])
        self.ln_final = nnx.LayerNorm(c.width, param_dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(c.width, c.num_classes, param_dtype=dtype, rngs=rngs)

    def patchify(self, x: jax.Array) -> jax.Array:
        """(B, *input_shape) → (B, num_patches, patch features): the patches in raster order, channels last."""
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
        return self.head(self.features(x))

    def features(self, x: jax.Array) -> jax.Array:
        """The pooled trunk output (B, width) the head reads: what a linear probe is trained on."""
        c = self.config
        expected = (None,) + c.input_shape
        if getattr(x, "ndim", None) != len(expected) or tuple(x.shape[1:]) != c.input_shape:
            raise ValueError(f"x: got shape {tuple(getattr(x, 'shape', ()))}, "
                             f"expected (B, {', '.join(map(str, c.input_shape))})")
        tokens_BxNxD = self.patch_embed(self.patchify(x))
        if self.cls_token is not None:
            cls_Bx1xD = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, c.width)).astype(tokens_BxNxD.dtype)
            tokens_BxNxD = jnp.concatenate([cls_Bx1xD, tokens_BxNxD], axis=1)
        h_BxNxD = tokens_BxNxD + self.pos_embed[...]
        for block in self.blocks:
            h_BxNxD = block(h_BxNxD)
        h_BxNxD = self.ln_final(h_BxNxD)
        return h_BxNxD[:, 0] if c.pool == "cls" else h_BxNxD.mean(axis=1)


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
    check_int("labels_B", labels_B)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)


def classification_correct(logits_BxC: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Per-example correctness (argmax == label), bool (B,)."""
    check_array("logits_BxC", logits_BxC, rank=2)
    check_array("labels_B", labels_B, rank=1, finite=False)
    check_same_leading("logits_BxC", logits_BxC, "labels_B", labels_B)
    return jnp.argmax(logits_BxC, axis=-1) == labels_B


# `attent_jax.models.make_model("encoder", ...)` builds MODEL(CONFIG, rngs=...).
CONFIG, MODEL = EncoderConfig, EncoderClassifier
