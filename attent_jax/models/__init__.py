"""Models by name: one file each (`attention`, `encoder`, `decoder`, `mae`), chosen with `make_model`.

A model file defines ``CONFIG`` (its frozen config class) and ``MODEL`` (the NNX
module, built as ``MODEL(config, rngs=rngs)``). `make_model` imports the file
by name, as big_vision does: no registry filled by import side effects, so no
import cycle.

Example:
    >>> from flax import nnx
    >>> from attent_jax.models import make_model
    >>> make_model("decoder", None, nnx.Rngs(0)).config.width
    128
"""

from __future__ import annotations

import importlib
from typing import Any

MODEL_NAMES = ("attention", "decoder", "encoder", "mae")


def model_names() -> tuple[str, ...]:
    """Names `make_model` accepts."""
    return MODEL_NAMES


def model_module(name: str):
    if name not in MODEL_NAMES:
        raise ValueError(f"name: got {name!r}, expected one of {list(MODEL_NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


def make_model(name: str, config: Any | None, rngs):
    """Build the model called `name` from its config (`config=None`: that model's default config)."""
    module = model_module(name)
    config = module.CONFIG() if config is None else config
    if not isinstance(config, module.CONFIG):
        raise ValueError(f"config: got {type(config).__name__}, expected {module.CONFIG.__name__} for model {name!r}")
    return module.MODEL(config, rngs=rngs)
