"""Masked-autoencoder (MAE) pre-training of the ViT-style encoder (the paper's ViT runs, Table 2, in miniature).

The paper selects examples during *MAE pre-training* (He et al., 2022): a
share of each input's patches (75% by default) is hidden, the encoder sees
only the visible patches, and a light decoder reconstructs the hidden ones
from the encoder's tokens plus a learned mask token at each hidden position.
The per-example loss AtteNT ranks is the mean squared error of the
reconstructed *masked* patches (visible patches are never scored), optionally
against targets normalized per patch (MAE's ``norm_pix_loss``).

The mask of example i is drawn from its own key, ``fold_in(key(mask_seed), i)``,
and is **fixed for the whole run**: every scoring pass and every training step
sees the same patches hidden, so a score is reproducible and the teacher
compares like with like across epochs. (MAE itself draws a fresh mask each
time an example is seen; ours trades that augmentation for a score that
means the same thing at every pass.) The number of masked patches is
``round(mask_ratio · num_patches)``, the same for every example, so all shapes
are static.

The trunk is an `EncoderClassifier` (its head unused here), so a pre-trained
trunk moves into a classifier by copying its parameters (`classifier_from_mae`).

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from attent_jax.models import mae
    >>> model = mae.MaskedAutoencoder(mae.MAEConfig(), rngs=nnx.Rngs(0))
    >>> pred, target = model((jnp.zeros((2, 40)), jnp.array([0, 1])))
    >>> pred.shape, mae.reconstruction_losses(pred, target).shape   # 8 of 10 patches of 4 masked
    ((2, 8, 4), (2,))
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from attent_jax.learner.validate import check_array, check_same_leading
from attent_jax.models.encoder import EncoderClassifier, EncoderConfig
from attent_jax.models.layers import Block, check_heads, check_int, check_positive, embedding_param


@dataclasses.dataclass(frozen=True)
class MAEConfig:
    encoder: EncoderConfig = EncoderConfig(pool="mean")  # the trunk (its head is unused in pre-training)
    mask_ratio: float = 0.75      # share of each example's patches hidden and reconstructed (MAE: 75%)
    decoder_width: int = 32       # token width of the light decoder
    decoder_depth: int = 1        # decoder blocks (MAE's decoder is shallow: the encoder must do the work)
    decoder_heads: int = 2        # decoder attention heads; must divide decoder_width
    norm_pix_loss: bool = False   # reconstruct each patch normalized to zero mean, unit variance (MAE's option)
    mask_seed: int = 0            # example i's mask comes from fold_in(key(mask_seed), i)

    def __post_init__(self):
        name = type(self).__name__
        if not isinstance(self.encoder, EncoderConfig):
            raise ValueError(f"{name}.encoder: got {type(self.encoder).__name__}, expected an EncoderConfig")
        check_positive(name, decoder_width=self.decoder_width, decoder_depth=self.decoder_depth,
                       decoder_heads=self.decoder_heads)
        check_heads(name, self.decoder_width, self.decoder_heads)
        r = self.mask_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (math.isfinite(r) and 0.0 < r < 1.0):
            raise ValueError(f"{name}.mask_ratio: got {r!r}, expected a number in (0, 1)")
        n = self.encoder.num_patches
        if not 1 <= self.num_masked <= n - 1:
            raise ValueError(f"{name}.mask_ratio: got {r!r}, which masks {self.num_masked} of {n} patches; expected "
                             f"at least 1 masked and 1 visible patch")

    @property
    def num_masked(self) -> int:
        return int(round(self.mask_ratio * self.encoder.num_patches))

    @property
    def num_visible(self) -> int:
        return self.encoder.num_patches - self.num_masked


def mask_indices(ids_B: jax.Array, num_patches: int, num_masked: int, mask_seed: int = 0):
    """``(masked_BxM, visible_BxV)``: each example's masked and visible patch positions, each sorted.

    Example i's positions are a uniform random split of range(num_patches)
    drawn from ``fold_in(key(mask_seed), i)``: the same id always gets the
    same mask (a reproducible score), different ids independent ones.
    """
    check_array("ids_B", ids_B, rank=1, finite=False)
    check_int("ids_B", ids_B)
    base = jax.random.key(mask_seed)

    def one(i):
        perm = jax.random.permutation(jax.random.fold_in(base, i), num_patches)
        return jnp.sort(perm[:num_masked]), jnp.sort(perm[num_masked:])
    return jax.vmap(one)(ids_B)


def _take(tokens_BxNxD, idx_BxK):
    return jnp.take_along_axis(tokens_BxNxD, idx_BxK[..., None], axis=1)


class MaskedAutoencoder(nnx.Module):
    """MAE: encoder on the visible patches, light decoder reconstructing the masked ones (module docstring).

    Called on ``(x, ids)`` — x of shape (B, *encoder.input_shape), ids (B,)
    int example ids that seed the masks — it returns ``(pred_BxMxP,
    target_BxMxP)``: the reconstruction of each example's M masked patches and
    their targets (the patches, normalized if ``norm_pix_loss``), in the order
    of the sorted masked positions.
    """

    def __init__(self, config: MAEConfig, *, rngs: nnx.Rngs):
        self.config = config
        c, e = config, config.encoder
        dtype = jnp.dtype(e.param_dtype)
        self.encoder = EncoderClassifier(e, rngs=rngs)
        self.decoder_embed = nnx.Linear(e.width, c.decoder_width, param_dtype=dtype, rngs=rngs)
        self.mask_token = embedding_param(rngs, (1, c.decoder_width), dtype)
        self.decoder_pos = embedding_param(rngs, (e.num_patches, c.decoder_width), dtype)
        self.decoder_blocks = nnx.List([Block(c.decoder_width, c.decoder_heads, e.mlp_ratio, causal=False,
                                              param_dtype=dtype, rngs=rngs) for _ in range(c.decoder_depth)])
        self.decoder_ln = nnx.LayerNorm(c.decoder_width, param_dtype=dtype, rngs=rngs)
        self.decoder_out = nnx.Linear(c.decoder_width, e.patch_size ** e.spatial_dims * e.channels,
                                      param_dtype=dtype, rngs=rngs)

    def __call__(self, inputs):
        x, ids_B = inputs
        c, e, enc = self.config, self.config.encoder, self.encoder
        expected = (None,) + e.input_shape
        if getattr(x, "ndim", None) != len(expected) or tuple(x.shape[1:]) != e.input_shape:
            raise ValueError(f"x: got shape {tuple(getattr(x, 'shape', ()))}, "
                             f"expected (B, {', '.join(map(str, e.input_shape))})")
        check_same_leading("x", x, "ids_B", ids_B)
        B = x.shape[0]
        patches_BxNxP = enc.patchify(x)
        masked_BxM, visible_BxV = mask_indices(ids_B, e.num_patches, c.num_masked, c.mask_seed)
        pos_NxD = enc.pos_embed[...][1:] if enc.cls_token is not None else enc.pos_embed[...]
        # Only the visible patches are embedded and enter the encoder: nothing of a masked patch leaks in.
        h_BxVxD = enc.patch_embed(_take(patches_BxNxP, visible_BxV)) + pos_NxD[visible_BxV]
        if enc.cls_token is not None:
            cls_Bx1xD = jnp.broadcast_to(enc.cls_token[...] + enc.pos_embed[...][:1], (B, 1, e.width))
            h_BxVxD = jnp.concatenate([cls_Bx1xD.astype(h_BxVxD.dtype), h_BxVxD], axis=1)
        for block in enc.blocks:
            h_BxVxD = block(h_BxVxD)
        h_BxVxD = enc.ln_final(h_BxVxD)
        if enc.cls_token is not None:
            h_BxVxD = h_BxVxD[:, 1:]
        # The decoder sees the visible tokens and a mask token per masked position, each with its position.
        # Attention without a causal mask is permutation-equivariant, so [visible, masked] needs no unshuffling.
        vis_BxVxE = self.decoder_embed(h_BxVxD) + self.decoder_pos[...][visible_BxV]
        mask_BxMxE = jnp.broadcast_to(self.mask_token[...], (B, c.num_masked, c.decoder_width)) \
            + self.decoder_pos[...][masked_BxM]
        d_BxNxE = jnp.concatenate([vis_BxVxE, mask_BxMxE.astype(vis_BxVxE.dtype)], axis=1)
        for block in self.decoder_blocks:
            d_BxNxE = block(d_BxNxE)
        pred_BxMxP = self.decoder_out(self.decoder_ln(d_BxNxE[:, c.num_visible:]))
        target_BxMxP = _take(patches_BxNxP, masked_BxM)
        if c.norm_pix_loss:
            mean = target_BxMxP.mean(axis=-1, keepdims=True)
            var = target_BxMxP.var(axis=-1, keepdims=True)
            target_BxMxP = (target_BxMxP - mean) / jnp.sqrt(var + 1e-6)
        return pred_BxMxP, jax.lax.stop_gradient(target_BxMxP)


def reconstruction_losses(pred_BxMxP: jax.Array, target_BxMxP: jax.Array) -> jax.Array:
    """Per-example reconstruction loss: mean squared error over the masked patches' values, shape (B,).

    What AtteNT ranks during MAE pre-training; never averaged over the batch here.

    Example:
        >>> import jax.numpy as jnp
        >>> reconstruction_losses(jnp.ones((2, 3, 4)), jnp.zeros((2, 3, 4)))
        Array([1., 1.], dtype=float32)
    """
    check_array("pred_BxMxP", pred_BxMxP, rank=3)
    check_array("target_BxMxP", target_BxMxP, rank=3)
    if pred_BxMxP.shape != target_BxMxP.shape:
        raise ValueError(f"target_BxMxP: got shape {target_BxMxP.shape}, expected the prediction's "
                         f"{pred_BxMxP.shape}")
    err = jnp.square(pred_BxMxP - target_BxMxP)
    return jnp.mean(err.reshape(err.shape[0], -1), axis=1)


def classifier_from_mae(model: MaskedAutoencoder, num_classes: int, *, rngs: nnx.Rngs) -> EncoderClassifier:
    """A classifier with the MAE's pre-trained trunk (patch embedding, positions, blocks) and a fresh head.

    Downstream the classifier reads every patch (no mask); its head, never
    trained during pre-training, is initialized from `rngs`.
    """
    e = dataclasses.replace(model.config.encoder, num_classes=num_classes)
    clf = EncoderClassifier(e, rngs=rngs)
    src = model.encoder
    for name in ("patch_embed", "blocks", "ln_final"):
        nnx.update(getattr(clf, name), nnx.state(getattr(src, name), nnx.Param))
    clf.pos_embed[...] = src.pos_embed[...]
    if src.cls_token is not None:
        clf.cls_token[...] = src.cls_token[...]
    return clf


# `attent_jax.models.make_model("mae", ...)` builds MODEL(CONFIG, rngs=...).
CONFIG, MODEL = MAEConfig, MaskedAutoencoder
