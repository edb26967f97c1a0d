"""Building blocks shared by the encoder and the decoder: pre-LN Transformer blocks and config checks.

Both models are deterministic (no dropout): the greedy teacher ranks examples
by their per-example losses, and a run sharded over 8 devices must rank them
exactly as a 1-device run does.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

PARAM_DTYPES = ("float32", "float64", "bfloat16")



def check_positive(cls_name: str, **fields: int) -> None:
    for name, value in fields.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{cls_name}.{name}: got {value!r}, expected a positive int")


def check_heads(cls_name: str, width: int, num_heads: int) -> None:
    if width % num_heads:
        raise ValueError(f"{cls_name}.num_heads: got {num_heads}, expected a divisor of width={width}")


def check_dtype(cls_name: str, dtype: str) -> None:
    if dtype not in PARAM_DTYPES:
        raise ValueError(f"{cls_name}.param_dtype: got {dtype!r}, expected one of {PARAM_DTYPES}")


def check_int(name: str, x) -> None:
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"{name}: got dtype {x.dtype}, expected integer ids")


def embedding_param(rngs: nnx.Rngs, shape: tuple[int, ...], dtype) -> nnx.Param:
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
