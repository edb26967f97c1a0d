"""LoRA adapters for any NNX model's linear layers (the paper's LLM fine-tuning, Appendix C), and their merge.

`add_lora(model, rank, rngs)` replaces every `nnx.Linear` of a module, in place,
by an `nnx.LoRALinear` that holds the *same* kernel and bias variables plus
two adapters A (in, r) and B (r, out) of type `nnx.LoRAParam`:
y = x W + b + (x A) B. B starts at zero, so the adapted model computes exactly
what the base computed until B is trained (Hu et al. 2021). `merge_lora`
folds the adapters back in, W ← W + A B, and returns plain `nnx.Linear` layers.

Why Flax's own `nnx.LoRALinear` rather than qwix's `LoraProvider` /
`apply_lora_to_model`: our models are hand-written NNX modules whose projections
are all `nnx.Linear`, so swapping those layers is enough; the swapped layer keeps
the Linear state layout (``kernel``, ``bias`` at the same paths, adapters under
``lora``), and the adapters are `nnx.LoRAParam`, a subclass of `nnx.Param`, so
the trainer's Param-only state accepts them and a type filter
(`nnx.state(model, nnx.LoRAParam)`) names them. qwix intercepts the ops of a
traced call instead (it needs sample inputs and an extra dependency), which
pays off for models one cannot edit, not here.

Scaling: `nnx.LoRA` has no α/r factor; it computes x A B, which is the paper's
setting lora_alpha = r (α/r = 1). Other α are not offered.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from attent_jax.models import decoder
    >>> model = decoder.CausalDecoder(decoder.DecoderConfig(vocab_size=20, context=8, width=16), rngs=nnx.Rngs(0))
    >>> x = jnp.zeros((2, 8), jnp.int32)
    >>> before = model(x)
    >>> add_lora(model, 4, nnx.Rngs(1))
    8
    >>> bool(jnp.array_equal(model(x), before))  # B = 0: the adapted model is the base
    True
"""

from __future__ import annotations

import copy

import jax.numpy as jnp
from flax import nnx


def check_rank(rank) -> int:
    """`rank` as an int >= 0 (0 = no adapters); a one-line ValueError otherwise."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"lora_rank: got {rank!r}, expected an int >= 0 (0 = no LoRA, train all parameters)")
    return rank


def _linear_slots(module: nnx.Module):
    """(parent, key, linear) for every `nnx.Linear` in the module tree (LoRALinear included), depth first."""
    out = []

    def visit(node):
        items = list(enumerate(node)) if isinstance(node, nnx.List) else list(vars(node).items())
        for key, child in items:
            if isinstance(child, nnx.Linear):
                out.append((node, key, child))
            elif isinstance(child, (nnx.Module, nnx.List)):
                visit(child)

    visit(module)
    return out


def _put(parent, key, child) -> None:
    if isinstance(parent, nnx.List):
        parent[key] = child
    else:
        setattr(parent, key, child)


def add_lora(model: nnx.Module, rank: int, rngs: nnx.Rngs) -> int:
    """Give every `nnx.Linear` of `model` rank-`rank` adapters, in place; returns how many layers were adapted.

    Each Linear becomes an `nnx.LoRALinear` sharing the Linear's kernel and bias
    variables (same values, same state paths), with A ~ He-uniform (from
    `rngs.params()`) and B = 0 as `nnx.LoRAParam`s in the Linear's dtype. A
    model without a Linear, or a rank out of range, is a one-line ValueError.
    """
    rank = check_rank(rank)
    if rank == 0:
        raise ValueError("lora_rank: got 0, expected an int >= 1 to add adapters")
    slots = [s for s in _linear_slots(model) if not isinstance(s[2], nnx.LoRALinear)]
    if not slots:
        raise ValueError(f"lora_rank: got {rank}, but model {type(model).__name__} has no nnx.Linear layer to adapt")
    for parent, key, lin in slots:
        if rank > min(lin.in_features, lin.out_features):
            raise ValueError(f"lora_rank: got {rank}, expected at most min(in, out) = "
                             f"{min(lin.in_features, lin.out_features)} of layer {key!r}")
        new = nnx.LoRALinear(lin.in_features, lin.out_features, lora_rank=rank, use_bias=lin.use_bias,
                             dtype=lin.dtype, param_dtype=lin.param_dtype, lora_param_dtype=lin.param_dtype,
                             precision=lin.precision, lora_param_type=nnx.LoRAParam, rngs=rngs)
        # The same Variable objects: the base weights are the Linear's own, not copies of them.
        new.kernel = lin.kernel
        new.bias = lin.bias
        _put(parent, key, new)
    return len(slots)


def merge_lora(model: nnx.Module) -> nnx.Module:
    """A copy of `model` with every `nnx.LoRALinear` replaced by an `nnx.Linear` of kernel W + A B.

    The merged model computes x (W + A B) + b where the adapted one computes
    x W + b + (x A) B: equal in exact arithmetic, so in float32 they agree to
    round-off. `model` itself is left as it is.
    """
    merged = copy.deepcopy(model)
    for parent, key, lin in _linear_slots(merged):
        if not isinstance(lin, nnx.LoRALinear):
            continue
        plain = nnx.Linear(lin.in_features, lin.out_features, use_bias=lin.use_bias, dtype=lin.dtype,
                           param_dtype=lin.param_dtype, precision=lin.precision, rngs=nnx.Rngs(0))
        delta = jnp.matmul(lin.lora.lora_a[...], lin.lora.lora_b[...], precision="highest")
        plain.kernel = nnx.Param((lin.kernel[...] + delta).astype(lin.kernel[...].dtype))
        plain.bias = lin.bias
        _put(parent, key, plain)
    return merged


def lora_paths(model: nnx.Module) -> frozenset:
    """The state paths (tuples of keys, as in `nnx.to_pure_dict`) of the model's adapters (`nnx.LoRAParam`)."""
    return frozenset(path for path, _ in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam)))


def lora_builder(build, rank: int):
    """``build(rngs) -> module`` with `add_lora(module, rank, rngs)` applied: the base draws its init first, as without."""
    check_rank(rank)

    def build_adapted(rngs: nnx.Rngs) -> nnx.Module:
        model = build(rngs)
        add_lora(model, rank, rngs)
        return model
    return build_adapted
