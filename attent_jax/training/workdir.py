"""The run folder: its file names, and the checks made at the boundary before anything loads or is written."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import types

import jax
import numpy as np

from attent_jax.training.config import RESUME_MAY_CHANGE, TrainConfig
from attent_jax.training.host_data import num_examples, read_rows, source_spec
from attent_jax.training.run_log import write_atomic

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"
# What config.json cannot see of a user's run (`attent_jax.fit`): its data, model and loss.
FINGERPRINT_FILE = "fingerprint.json"
# Rows of a source hashed into its fingerprint: enough to tell datasets apart, cheap for any size of source.
SAMPLE_ROWS = 64


def check_workdir(workdir) -> str:
    """`workdir` unchanged if a run could be written there; else a one-line ValueError naming it.

    Checked at the boundary, before JAX loads the data: an empty path (which
    would train into the current folder), a file, a path below a file, or a
    folder (or its nearest existing parent) this process may not write into.
    Creates nothing.
    """
    if not isinstance(workdir, (str, os.PathLike)) or not os.fspath(workdir).strip():
        raise ValueError(f"workdir: got {workdir!r}, expected a folder path (a new or existing run folder)")
    path = os.path.abspath(os.fspath(workdir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"workdir: got {os.fspath(workdir)!r}, expected a folder (it is a file)")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"workdir: got {os.fspath(workdir)!r}, expected a folder path, but {existing!r} "
                         f"is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"workdir: got {os.fspath(workdir)!r}, but {existing!r} is not writable")
    return os.fspath(workdir)


def check_run_folder(workdir: str, config: TrainConfig) -> None:
    """A run folder may hold this run (same config but for `RESUME_MAY_CHANGE`) or nothing of attent train's."""
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                saved = TrainConfig.from_dict(json.load(f)).resolve().to_flat()
        except (ValueError, TypeError) as err:
            raise ValueError(f"workdir: {path} is not a TrainConfig ({err}); use another workdir") from None
        new = config.to_flat()
        for key in new:
            if key not in RESUME_MAY_CHANGE and saved.get(key) != new[key]:
                raise ValueError(f"{key}: got {new[key]!r}, but workdir {workdir} holds a run with "
                                 f"{key}={saved.get(key)!r}; resume with the same config or use another workdir")
    else:
        for name in (METRICS_FILE, CHECKPOINT_DIR, RESULTS_FILE):
            if os.path.exists(os.path.join(workdir, name)):
                raise ValueError(f"workdir: {workdir!r} holds {name} but no {CONFIG_FILE}, expected an "
                                 f"empty or new folder, or a run folder of attent train")


def read_results(workdir: str) -> dict | None:
    """The results.json a finished run wrote in `workdir`, or None if there is none (or it is not a JSON object)."""
    try:
        with open(os.path.join(workdir, RESULTS_FILE)) as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def source_fingerprint(source) -> dict:
    """Length, per-example dtypes and shapes, and a hash of up to `SAMPLE_ROWS` evenly spaced rows (first and
    last included) of a source (a dict of arrays or a `host_data.RecordSource`): never the whole source."""
    n = num_examples(source)
    idx = np.unique(np.linspace(0, n - 1, min(n, SAMPLE_ROWS)).round().astype(np.int64))
    rows, digest = read_rows(source, idx), hashlib.sha256()
    for k in sorted(rows):
        digest.update(k.encode() + b"\0" + np.ascontiguousarray(rows[k]).tobytes())
    examples = {k: f"{v.dtype}{list(v.shape[1:])}" for k, v in sorted(source_spec(source).items())}
    return {"length": n, "examples": examples, "sampled_rows_sha256": digest.hexdigest()[:32]}


def run_fingerprint(train, test, abstract_params, loss) -> dict:
    """What identifies a user's run beyond its config: train and eval sources (`test` None: the train source),
    the model's parameter tree (paths, dtypes, shapes; not values, which a resume replaces) and the loss's name."""
    params = {jax.tree_util.keystr(path): f"{leaf.dtype}{list(leaf.shape)}"
              for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_params)}
    return {"train_source": source_fingerprint(train), "model": params, "per_example_loss": loss_identity(loss),
            "eval_source": None if test is None else source_fingerprint(test)}


def loss_identity(fn) -> str:
    """A loss's name, module.qualname; where that name is shared, what tells the functions apart.

    A ``functools.partial`` adds its function's identity and a hash of its bound arguments; a lambda or a
    function defined inside another (``<lambda>``, ``<locals>`` in the name: many share it) a hash of its code,
    constants and closure values, so two different lambdas are two different losses.
    """
    if isinstance(fn, functools.partial):
        bound = hashlib.sha256(_stable((fn.args, sorted(fn.keywords.items()))).encode()).hexdigest()[:16]
        return f"functools.partial({loss_identity(fn.func)}, {bound})"
    name = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    code = getattr(fn, "__code__", None)
    if code is None or "<" not in name:
        return name
    cells = [c.cell_contents for c in (getattr(fn, "__closure__", None) or ())]
    body = hashlib.sha256(_stable((code, cells)).encode()).hexdigest()[:16]
    return f"{name}#{body}"


def _stable(x) -> str:
    """A text of `x` that is the same in every process: code by its bytecode, callables by `loss_identity`,
    memory addresses (``<... at 0x7f...>``) blanked."""
    if isinstance(x, types.CodeType):
        return f"code({x.co_code.hex()}, {_stable(x.co_consts)}, {x.co_names})"
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(_stable(v) for v in x) + ")"
    if callable(x) and not isinstance(x, type):
        return loss_identity(x)
    return re.sub(r"0x[0-9a-fA-F]+", "0x", repr(x))


def _first_difference(saved, new, path: tuple = ()):
    """(keys down to the first differing value, saved value, new value) of two unequal JSON values."""
    if isinstance(saved, dict) and isinstance(new, dict):
        for key in [*new, *(k for k in saved if k not in new)]:
            if saved.get(key) != new.get(key):
                return _first_difference(saved.get(key), new.get(key), (*path, key))
    return path, saved, new


def check_fingerprint(workdir: str, fingerprint: dict) -> None:
    """A folder holding a run of other data, model or loss than `fingerprint`: a one-line ValueError naming what
    differs. Only next to a config.json: a fingerprint alone is from a start killed before it wrote one (its
    fingerprint is written first), which trained nothing. Reads only."""
    path = os.path.join(workdir, FINGERPRINT_FILE)
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(workdir, CONFIG_FILE))):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"workdir: {path} is not a run fingerprint ({err}); use another workdir") from None
    new = json.loads(json.dumps(fingerprint))  # as it would be saved (tuples as lists)
    if not isinstance(saved, dict):
        raise ValueError(f"workdir: {path} is not a run fingerprint (got {type(saved).__name__}); use another workdir")
    if saved != new:
        keys, was, got = _first_difference(saved, new)
        where = keys[0] + "".join(f"[{k!r}]" for k in keys[1:])
        raise ValueError(f"{where}: got {got!r}, but workdir {workdir} holds a run with {was!r}; pass the "
                         "same data, model and loss to resume, or use another workdir")


def write_fingerprint(workdir: str, fingerprint: dict) -> None:
    """Save `fingerprint` in a new run folder, just before its config.json is written (by `Trainer.run`).

    A folder that already holds a config.json keeps what it holds: with a fingerprint, that one (checked
    equal); without one (written before fingerprints existed), none is added, since this session cannot
    know what that run's checkpoints were trained on, and a guessed record could refuse the run's real data.
    """
    if not os.path.isfile(os.path.join(workdir, CONFIG_FILE)):
        os.makedirs(workdir, exist_ok=True)
        write_atomic(os.path.join(workdir, FINGERPRINT_FILE), json.dumps(fingerprint, indent=1) + "\n")
